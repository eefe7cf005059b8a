"""Independent reference computations shared by the closed-form tests.

Nothing here calls :mod:`silentvae.analytic`: every expectation is obtained either by brute-force
enumeration of all 2^d Bernoulli latent states, by a tensor-product Gauss-Hermite rule (exact for
the polynomial integrands involved), by Isserlis/Wick moments of jointly Gaussian pixel
quantities, or by Monte Carlo.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------------------------
# Random problems
# ----------------------------------------------------------------------------------------------

def make_problem(batch: int, pixels: int, latents: int, *, dtype=torch.float64, device="cpu",
                 seed: int = 0, alpha_offset: float = 1.5, alpha_scale: float = 0.3,
                 requires_grad: bool = False) -> dict[str, Tensor]:
    """A random linear-decoder problem.

    Keys: x (batch, pixels) in [0, 1); logits (batch, latents); mean/var (batch, latents) for a
    Gaussian posterior (var > 0); weight/bias (mu decoder); alpha_weight/alpha_bias (precision
    decoder, biased away from 0 so E[alpha^2] is far above the clamp); sigma2 (pixels,) > 0.
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift)

    p = {
        "x": torch.rand(batch, pixels, generator=g, dtype=torch.float64),
        "logits": rnd(batch, latents, scale=1.5),
        "mean": rnd(batch, latents),
        "var": torch.rand(batch, latents, generator=g, dtype=torch.float64) * 1.5 + 0.05,
        "weight": rnd(pixels, latents, scale=1.0 / math.sqrt(latents)),
        "bias": rnd(pixels, scale=0.3),
        "alpha_weight": rnd(pixels, latents, scale=alpha_scale / math.sqrt(latents)),
        "alpha_bias": rnd(pixels, scale=0.2, shift=alpha_offset),
        "sigma2": torch.rand(pixels, generator=g, dtype=torch.float64) * 0.5 + 0.05,
    }
    out = {}
    for k, v in p.items():
        v = v.to(dtype=dtype, device=device)
        if requires_grad and k != "x":
            v.requires_grad_(True)
        out[k] = v
    return out


# ----------------------------------------------------------------------------------------------
# Bernoulli: exact enumeration of all 2^d states
# ----------------------------------------------------------------------------------------------

def bernoulli_states(latents: int, *, dtype=torch.float64, device="cpu") -> Tensor:
    """All 2^d binary vectors as a (2^d, d) matrix (row s = binary digits of s)."""
    s = torch.arange(2 ** latents, device=device)
    bits = (s[:, None] >> torch.arange(latents, device=device)[None, :]) & 1
    return bits.to(dtype)


def bernoulli_state_probs(probs: Tensor, states: Tensor) -> Tensor:
    """q(z_s) = prod_i p_i^z_si (1 - p_i)^(1 - z_si) for every batch row -> (B, 2^d).

    Uses where(), so p in {0, 1} gives exact zeros (no 0 * log 0).
    """
    factors = torch.where(states[None, :, :] > 0.5, probs[:, None, :], 1.0 - probs[:, None, :])
    return factors.prod(-1)


def decoder_outputs(z: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Linear decoder W z + b for a batch of latent vectors z (..., d) -> (..., P)."""
    out = z @ weight.T
    return out if bias is None else out + bias


def bernoulli_enum_fixed(x: Tensor, probs: Tensor, weight: Tensor, bias: Tensor | None,
                         sigma2) -> dict[str, Tensor]:
    """Enumerated E_q[(x - mu)^2] per pixel (B, P) and E_q[log N(x; mu(z), sigma2 I)] (B,)."""
    states = bernoulli_states(probs.shape[-1], dtype=probs.dtype, device=probs.device)
    q = bernoulli_state_probs(probs, states)                      # (B, S)
    mu = decoder_outputs(states, weight, bias)                    # (S, P)
    sq = (x[:, None, :] - mu[None, :, :]).square()                # (B, S, P)
    s2 = torch.as_tensor(sigma2, dtype=x.dtype, device=x.device)
    loglik = (-0.5 * sq / s2 - 0.5 * torch.log(2 * math.pi * s2)).sum(-1)   # (B, S)
    return {"sq": (q[:, :, None] * sq).sum(1), "loglik": (q * loglik).sum(1)}


def bernoulli_enum_learnable(x: Tensor, probs: Tensor, weight: Tensor, bias: Tensor | None,
                             alpha_weight: Tensor, alpha_bias: Tensor | None) -> dict[str, Tensor]:
    """Enumerated per-pixel E[(x - mu)^2 alpha^2], E[alpha^2], E[alpha^4], E[log alpha^2] (B, P)."""
    states = bernoulli_states(probs.shape[-1], dtype=probs.dtype, device=probs.device)
    q = bernoulli_state_probs(probs, states)[:, :, None]          # (B, S, 1)
    mu = decoder_outputs(states, weight, bias)[None]              # (1, S, P)
    alpha = decoder_outputs(states, alpha_weight, alpha_bias)[None]
    a2 = alpha.square()
    return {
        "quad": (q * (x[:, None, :] - mu).square() * a2).sum(1),
        "alpha_sq": (q * a2).sum(1).expand(x.shape[0], -1),
        "alpha_4": (q * a2.square()).sum(1).expand(x.shape[0], -1),
        "log_alpha_sq": (q * torch.log(a2)).sum(1).expand(x.shape[0], -1),
    }


def taylor_from_moments(e_a2: Tensor, e_a4: Tensor) -> Tensor:
    """log E[Y] - Var(Y) / (2 E[Y]^2) with Y = alpha^2, Var(Y) = E[alpha^4] - E[alpha^2]^2."""
    return torch.log(e_a2) - (e_a4 - e_a2.square()) / (2.0 * e_a2.square())


def learnable_objective_from_moments(quad: Tensor, e_a2: Tensor, e_a4: Tensor) -> Tensor:
    """sum_p [-1/2 E[(x-mu)^2 alpha^2] + 1/2 Taylor(E log alpha^2)] - P/2 log 2 pi  -> (B,)."""
    num_pixels = quad.shape[-1]
    return (-0.5 * quad + 0.5 * taylor_from_moments(e_a2, e_a4)).sum(-1) - 0.5 * num_pixels * LOG_2PI


# ----------------------------------------------------------------------------------------------
# Gaussian: Isserlis/Wick per pixel, Gauss-Hermite grid, Monte Carlo
# ----------------------------------------------------------------------------------------------

def gaussian_pixel_stats(mean: Tensor, var: Tensor, weight: Tensor, bias: Tensor | None,
                         alpha_weight: Tensor, alpha_bias: Tensor | None) -> dict[str, Tensor]:
    """Per-pixel 2x2 Gaussian moments of (mu_p, alpha_p) for z ~ N(mean, diag var), each (B, P).

    Computed by explicit broadcasting over (B, P, d) - deliberately a different code path from
    the library's matrix products.
    """
    w, wa, v = weight[None], alpha_weight[None], var[:, None, :]
    m_mu = (w * mean[:, None, :]).sum(-1) + (0 if bias is None else bias)
    m_a = (wa * mean[:, None, :]).sum(-1) + (0 if alpha_bias is None else alpha_bias)
    return {
        "M": m_mu, "A": m_a,
        "Su": (w * w * v).sum(-1), "Sv": (wa * wa * v).sum(-1), "C": (w * wa * v).sum(-1),
    }


def isserlis_quad(x: Tensor, st: dict[str, Tensor]) -> Tensor:
    """E[X^2 Y^2] for jointly Gaussian X = x - mu, Y = alpha (Isserlis):

    with means mx, my, variances sx, sy and covariance c,
        E[X^2 Y^2] = mx^2 my^2 + mx^2 sy + my^2 sx + sx sy + 2 c^2 + 4 mx my c.
    Here mx = x - M, sx = Su, my = A, sy = Sv, c = Cov(x - mu, alpha) = -C.
    """
    mx, my, sx, sy, c = x - st["M"], st["A"], st["Su"], st["Sv"], -st["C"]
    return (mx**2 * my**2 + mx**2 * sy + my**2 * sx + sx * sy + 2 * c**2 + 4 * mx * my * c)


def isserlis_alpha4(st: dict[str, Tensor]) -> Tensor:
    """E[alpha^4] = A^4 + 6 A^2 Sv + 3 Sv^2 for alpha ~ N(A, Sv)."""
    a, sv = st["A"], st["Sv"]
    return a**4 + 6 * a**2 * sv + 3 * sv**2


def gauss_hermite_grid(latents: int, nodes: int, *, dtype=torch.float64, device="cpu"):
    """Tensor-product probabilists' Gauss-Hermite rule for N(0, I_d): (nodes^d, d) points, weights.

    Exact for every polynomial of degree <= 2*nodes - 1 in each coordinate.
    """
    t, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / math.sqrt(2.0 * math.pi)
    pts = torch.tensor(list(itertools.product(t, repeat=latents)), dtype=dtype, device=device)
    wts = torch.tensor([math.prod(c) for c in itertools.product(w, repeat=latents)], dtype=dtype,
                       device=device)
    return pts, wts


def gaussian_grid_latents(mean: Tensor, var: Tensor, nodes: int = 4):
    """Quadrature latents z = mean + sqrt(var) * t for every batch row -> (B, S, d), weights (S,).

    Differentiable in mean and var, so gradients of grid expectations are exact gradients.
    """
    pts, wts = gauss_hermite_grid(mean.shape[-1], nodes, dtype=mean.dtype, device=mean.device)
    z = mean[:, None, :] + var.sqrt()[:, None, :] * pts[None]
    return z, wts


def monte_carlo(values: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard error over the leading (sample) axis."""
    n = values.shape[0]
    return values.mean(0), values.std(0) / math.sqrt(n)


# ----------------------------------------------------------------------------------------------
# Training on another device: compare what training changed
# ----------------------------------------------------------------------------------------------

def training_state(state: dict) -> dict[str, dict[str, Tensor]]:
    """A run's ``last.pt`` (or :meth:`silentvae.training.run.Run.state_dict`) as float64 CPU tensors by name:
    ``params`` (the floating tensors of the models' state dict), ``exp_avg`` and ``exp_avg_sq`` (AdamW's moments,
    by parameter index) and ``steps`` (AdamW's step count per parameter index)."""
    models = state["models"]
    opt = state["optimizer"]["state"]
    return {"params": {n: t.detach().double().cpu() for n, t in models.items() if t.is_floating_point()},
            "exp_avg": {str(k): opt[k]["exp_avg"].detach().double().cpu() for k in opt},
            "exp_avg_sq": {str(k): opt[k]["exp_avg_sq"].detach().double().cpu() for k in opt},
            "steps": {str(k): float(opt[k]["step"]) for k in opt}}


def _relative(error: Tensor, size: Tensor) -> float:
    """||error|| / ||size||; 0 if both are zero, infinite if only ``size`` is."""
    e, s = float(error.norm()), float(size.norm())
    return e / s if s > 0 else (0.0 if e == 0 else math.inf)


def assert_same_training(initial: dict, reference: dict, candidate: dict, *, rtol: float,
                         min_change: float = 1e-3, label: str = "") -> dict[str, float]:
    """Assert that ``candidate`` trained what ``reference`` trained from the same ``initial`` state (each a
    :func:`training_state`; ``initial``'s ``params`` only), comparing what training changed.

    For every parameter tensor t, with Delta_t = p_r,t - p_0,t the reference's change, and for AdamW's moments
    (which start at zero, so that they are their own change) m = exp_avg, v = exp_avg_sq:

        ||p_c,t - p_r,t|| <= rtol ||Delta_t||,   ||m_c,t - m_r,t|| <= rtol ||m_r,t||  (same for v),
        identical AdamW step counts,

    i.e. the devices may disagree by at most ``rtol`` of what training did, so a candidate that did not train (or
    trained a step less) is off by ~100% of it. And the comparison must compare something: the reference moved
    every parameter tensor (Delta_t != 0), and all parameters together by ||Delta|| / ||p_r|| >= ``min_change``
    (relative change; a run that moved its parameters by less is too short to tell a wrong step apart).

    Returns the largest errors (``param_error``, ``exp_avg_error``, ``exp_avg_sq_error``, each as the fraction
    of the change above) and ``param_change`` (||Delta|| / ||p_r||); raises AssertionError naming the failed
    check and its numbers.
    """
    p0, pr, pc = initial["params"], reference["params"], candidate["params"]
    if not (p0.keys() == pr.keys() == pc.keys()):
        raise AssertionError(f"{label}: the parameter names differ")
    delta = {n: pr[n] - p0[n] for n in pr}
    change = float(torch.sqrt(sum(d.square().sum() for d in delta.values()))
                   / torch.sqrt(sum(p.square().sum() for p in pr.values())))
    found = {"param_change": change}
    if change == 0.0:
        raise AssertionError(f"{label}: training moved the parameters by 0 (relative): nothing was trained, "
                             f"there is nothing to compare")
    if change < min_change:
        raise AssertionError(f"{label}: training moved the parameters by {change:.3g} (relative) < {min_change:g}: "
                             f"too little to tell a wrong step apart; train longer or with a larger lr")
    still = [n for n, d in delta.items() if not bool(d.abs().max() > 0)]
    if still:
        raise AssertionError(f"{label}: training did not change {still}: a comparison of them shows nothing")
    if reference["steps"] != candidate["steps"]:
        raise AssertionError(f"{label}: AdamW step counts differ: {reference['steps']} vs {candidate['steps']}")
    found["param_error"] = max(float((pc[n] - pr[n]).norm() / delta[n].norm()) for n in pr)
    if found["param_error"] > rtol:
        worst = max(pr, key=lambda n: float((pc[n] - pr[n]).norm() / delta[n].norm()))
        raise AssertionError(f"{label}: parameters differ by {found['param_error']:.3g} of what training changed "
                             f"(worst: {worst}) > rtol {rtol:g}")
    for key in ("exp_avg", "exp_avg_sq"):
        r, c = reference[key], candidate[key]
        found[f"{key}_error"] = max(_relative(c[n] - r[n], r[n]) for n in r)
        if found[f"{key}_error"] > rtol:
            raise AssertionError(f"{label}: AdamW {key} differs by {found[f'{key}_error']:.3g} (relative) > "
                                 f"rtol {rtol:g}")
    return found
