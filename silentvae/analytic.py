r"""Closed-form expected reconstruction log-likelihoods of linear Gaussian decoders.

Everything here is an exact function of the latents' moments (:class:`LatentMoments`), so its
gradient with respect to the encoder has zero estimator variance: these are the *Silent
Gradients*. All sums are per pixel p in natural log, summed over pixels, one value per sample;
no dequantisation constant is included (see :func:`silentvae.metrics.bits_per_dim`).

Notation (per sample; i runs over latents, p over pixels). The latents are independent with
mean m_i and central moments s2_i, s3_i, s4_i; k4_i = s4_i - 3 s2_i^2 is the fourth cumulant.
``weight`` is shaped like ``nn.Linear.weight``: (pixels, latents), so w_pi is pixel p's weight on
latent i. With z~ = z - m:

    mu_p(z)    = M_p + U_p,  M_p = sum_i W_pi m_i + b_p,  U_p = sum_i W_pi z~_i
    alpha_p(z) = A_p + V_p,  A_p = sum_i Wa_pi m_i + ba_p, V_p = sum_i Wa_pi z~_i

Independence and E[z~_i] = 0 give every mixed moment needed as one matrix product
(moments (B, d) @ (d, P)), hence O(B * P * d) time and O(B * P) memory:

    E[U^2]     = sum_i W^2 s2            E[V^2]     = sum_i Wa^2 s2        E[UV] = sum_i W Wa s2
    E[U V^2]   = sum_i W Wa^2 s3         E[U^2 V]   = sum_i W^2 Wa s3      E[V^3] = sum_i Wa^3 s3
    E[U^2 V^2] = sum_i W^2 Wa^2 k4 + E[U^2] E[V^2] + 2 E[UV]^2
    E[V^4]     = sum_i Wa^4 k4 + 3 E[V^2]^2

(the last two from the four index patterns i=j=k=l, i=j!=k=l, i=k!=j=l, i=l!=j=k; the paper's
Eqs. 33-34 and 61 state the same with index slips).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .moments import LatentMoments

__all__ = [
    "expected_sq_error_fixed",
    "expected_loglik_fixed",
    "learnable_terms",
    "taylor_expected_log",
    "expected_loglik_learnable",
    "MIN_EXPECTED_ALPHA_SQ",
]

#: Lower clamp on E[alpha_p^2] inside the log/Taylor terms. Below it a pixel's standard
#: deviation would exceed 1000 for data in [0, 1): not a model, a numerical accident. The clamp
#: keeps log and 1/E[alpha^2]^2 finite (no NaN/inf in training) and is documented, not silent.
MIN_EXPECTED_ALPHA_SQ = 1e-6

_LOG_2PI = math.log(2.0 * math.pi)


def expected_sq_error_fixed(x: Tensor, m: LatentMoments, weight: Tensor, bias: Tensor | None) -> Tensor:
    r"""Per-pixel E_q[(x_p - mu_p(z))^2] for mu(z) = W z + b  ->  (B, P).

        E[(x_p - mu_p)^2] = (x_p - sum_i W_pi m_i - b_p)^2 + sum_i W_pi^2 Var(z_i)

    (paper Eq. 4 with the cross terms removed by independence; Appendix A.1).
    """
    x2 = _check_inputs(x, m, weight=weight, bias=bias)
    mean = m.mean @ weight.T
    if bias is not None:
        mean = mean + bias
    return (x2 - mean).square() + m.var @ weight.square().T


def expected_loglik_fixed(x: Tensor, m: LatentMoments, weight: Tensor, bias: Tensor | None,
                          sigma2: float | Tensor) -> Tensor:
    r"""E_q[log N(x; W z + b, sigma2 I)], summed over pixels  ->  (B,).

        = -1/(2 sigma2) * E||x - W z - b||^2 - P/2 * log(2 pi sigma2)        (paper Eq. 3)

    ``sigma2`` is a positive scalar or a per-pixel tensor broadcastable to (P,).
    """
    sigma2 = _check_sigma2(sigma2, weight)
    sq = expected_sq_error_fixed(x, m, weight, bias)
    if isinstance(sigma2, float):
        num_pixels = sq.shape[-1]
        return -0.5 * sq.sum(-1) / sigma2 - 0.5 * num_pixels * math.log(2.0 * math.pi * sigma2)
    return (-0.5 * sq / sigma2 - 0.5 * torch.log(2.0 * math.pi * sigma2)).sum(-1)


def learnable_terms(x: Tensor, m: LatentMoments, mu_weight: Tensor, mu_bias: Tensor | None,
                    alpha_weight: Tensor, alpha_bias: Tensor | None) -> dict[str, Tensor]:
    r"""Per-pixel exact moments of the learnable-precision decoder, each (B, P).

    Returns a dict with

    * ``quad``:     E[(x_p - mu_p)^2 alpha_p^2]  (exact, moments up to order 4)
    * ``alpha_sq``: E[alpha_p^2] = A^2 + E[V^2]
    * ``alpha_sq_var``: Var(alpha_p^2) = E[alpha^4] - E[alpha^2]^2
      = 4 A^2 E[V^2] + 4 A E[V^3] + E[V^4] - E[V^2]^2   (written cancellation-free)

    With r = x - M, expanding (r - U)^2 (A + V)^2 and dropping the terms with E[U] = E[V] = 0:

        quad = r^2 (A^2 + E[V^2]) - 4 r A E[UV] - 2 r E[U V^2]
               + A^2 E[U^2] + 2 A E[U^2 V] + E[U^2 V^2]
    """
    x2 = _check_inputs(x, m, weight=mu_weight, bias=mu_bias)
    _check_inputs(x, m, weight=alpha_weight, bias=alpha_bias, prefix="alpha_")
    num_pixels = mu_weight.shape[0]
    w, wa = mu_weight, alpha_weight
    w2, wa2 = w.square(), wa.square()
    k4 = m.m4 - 3.0 * m.var.square()

    # Four matrix products, each (B, d) @ (d, k*P), then split per pixel.
    mean_mu, mean_alpha = (m.mean @ torch.cat([w, wa]).T).split(num_pixels, dim=-1)
    e_u2, e_v2, e_uv = (m.var @ torch.cat([w2, wa2, w * wa]).T).split(num_pixels, dim=-1)
    e_uv2, e_u2v, e_v3 = (m.m3 @ torch.cat([w * wa2, w2 * wa, wa2 * wa]).T).split(num_pixels, dim=-1)
    c_u2v2, c_v4 = (k4 @ torch.cat([w2 * wa2, wa2.square()]).T).split(num_pixels, dim=-1)

    big_m = mean_mu if mu_bias is None else mean_mu + mu_bias
    big_a = mean_alpha if alpha_bias is None else mean_alpha + alpha_bias
    r = x2 - big_m
    a2 = big_a.square()
    e_u2v2 = c_u2v2 + e_u2 * e_v2 + 2.0 * e_uv.square()

    quad = (r.square() * (a2 + e_v2) - 4.0 * r * big_a * e_uv - 2.0 * r * e_uv2
            + a2 * e_u2 + 2.0 * big_a * e_u2v + e_u2v2)
    alpha_sq = a2 + e_v2
    alpha_sq_var = 4.0 * a2 * e_v2 + 4.0 * big_a * e_v3 + c_v4 + 2.0 * e_v2.square()
    return {"quad": quad, "alpha_sq": alpha_sq, "alpha_sq_var": alpha_sq_var}


def taylor_expected_log(mean: Tensor, var: Tensor, min_mean: float = MIN_EXPECTED_ALPHA_SQ) -> Tensor:
    r"""Second-order Taylor estimate of E[log Y] from E[Y] and Var(Y) (paper Eq. 7):

        E[log Y] ~= log E[Y] - Var(Y) / (2 E[Y]^2)

    E[Y] is clamped below at ``min_mean`` (see :data:`MIN_EXPECTED_ALPHA_SQ`).
    """
    mean = mean.clamp_min(min_mean)
    return torch.log(mean) - var / (2.0 * mean.square())


def expected_loglik_learnable(x: Tensor, m: LatentMoments, mu_weight: Tensor, mu_bias: Tensor | None,
                              alpha_weight: Tensor, alpha_bias: Tensor | None, *,
                              min_alpha_sq: float = MIN_EXPECTED_ALPHA_SQ) -> Tensor:
    r"""E_q[log N(x; mu(z), diag(1/alpha(z)^2))], summed over pixels  ->  (B,).

    mu = W_mu z + b_mu, alpha = W_a z + b_a (precision = 1/std, paper Eq. 5):

        log N = -1/2 (x - mu)^2 alpha^2 + 1/2 log alpha^2 - 1/2 log 2 pi        (paper Eq. 6)

    The quadratic term is exact (:func:`learnable_terms`); E[log alpha^2] uses the 2nd-order
    Taylor form log E[alpha^2] - Var(alpha^2) / (2 E[alpha^2]^2) (paper Eq. 7, taken per pixel),
    with E[alpha^2] clamped below at ``min_alpha_sq``. So the result approximates the expectation and is not a
    bound: it can lie above it (a measured example in :func:`silentvae.silent_elbo`'s docstring).
    """
    t = learnable_terms(x, m, mu_weight, mu_bias, alpha_weight, alpha_bias)
    e_log_a2 = taylor_expected_log(t["alpha_sq"], t["alpha_sq_var"], min_alpha_sq)
    return (-0.5 * t["quad"] + 0.5 * e_log_a2).sum(-1) - 0.5 * _LOG_2PI * t["quad"].shape[-1]


def _check_inputs(x: Tensor, m: LatentMoments, *, weight: Tensor, bias: Tensor | None,
                  prefix: str = "") -> Tensor:
    """Validate shapes (no host sync) and return x flattened to (B, P)."""
    wname, bname = f"{prefix}weight" if prefix else "weight", f"{prefix}bias" if prefix else "bias"
    if not isinstance(m, LatentMoments):
        raise ValueError(f"m must be a LatentMoments (from gaussian_moments / bernoulli_moments), "
                         f"got {type(m).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"{wname} must be 2-D (pixels, latents) like nn.Linear.weight, "
                         f"got shape {tuple(weight.shape)}")
    num_pixels, num_latents = weight.shape
    if m.mean.dim() != 2:
        raise ValueError(f"m must hold moments shaped (batch, latents), got {tuple(m.mean.shape)}")
    if m.dim != num_latents:
        raise ValueError(f"{wname} has {num_latents} latent columns but m has {m.dim} latents; "
                         f"append the constant latent with m.with_constant() if {wname} includes the bias column")
    if x.dim() < 2 or x.shape[0] != m.mean.shape[0]:
        raise ValueError(f"x must be shaped (batch, ...) with batch {m.mean.shape[0]} like m, "
                         f"got shape {tuple(x.shape)}")
    x2 = x.reshape(x.shape[0], -1)
    if x2.shape[1] != num_pixels:
        raise ValueError(f"x has {x2.shape[1]} values per sample but {wname} has {num_pixels} "
                         f"rows (pixels)")
    if bias is not None and bias.shape != (num_pixels,):
        raise ValueError(f"{bname} must have shape ({num_pixels},) or be None, got {tuple(bias.shape)}")
    return x2


def _check_sigma2(sigma2, weight: Tensor) -> float | Tensor:
    """sigma2 as a float (a scalar that needs no gradient) or a tensor on the weight's device; numpy scalars and
    arrays and lists are taken as tensors of the weight's dtype."""
    if not isinstance(sigma2, (Tensor, int, float)):
        try:
            sigma2 = torch.as_tensor(sigma2, dtype=weight.dtype, device=weight.device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"sigma2 must be a positive number or per-pixel variances (a tensor, numpy array or "
                             f"list), got {type(sigma2).__name__}") from err
    if isinstance(sigma2, Tensor) and sigma2.numel() == 1 and not sigma2.requires_grad:
        sigma2 = float(sigma2)
    if isinstance(sigma2, (int, float)):
        if not sigma2 > 0 or not math.isfinite(sigma2):
            raise ValueError(f"sigma2 must be a finite positive variance, got {sigma2}")
        return float(sigma2)
    s = sigma2.detach()
    if bool((~(s > 0) | ~torch.isfinite(s)).any()):
        raise ValueError("sigma2 has entries <= 0 or non-finite; the decoder variance must be positive and finite")
    if sigma2.numel() != 1 and sigma2.shape not in {(weight.shape[0],), (1, weight.shape[0])}:
        raise ValueError(f"sigma2 must be a scalar or shaped ({weight.shape[0]},), got {tuple(sigma2.shape)}")
    if sigma2.device != weight.device:
        raise ValueError(f"sigma2 is on {sigma2.device} but the decoder's weight is on {weight.device}; "
                         f"move sigma2 there")
    return sigma2.to(weight.dtype)
