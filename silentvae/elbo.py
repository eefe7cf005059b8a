r"""The ELBO of a mean-field VAE with a linear Gaussian decoder, in one call: :func:`silent_elbo`.

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))

The first term is exact (:mod:`silentvae.analytic`, from the latents' moments, :mod:`silentvae.moments`), so its
gradient with respect to q's parameters has zero variance: the Silent Gradient. The prior is the standard one,
N(0, I) for Gaussian latents and Bern(1/2) per latent for Bernoulli ones, with the KL in closed form
(:mod:`silentvae.metrics`).

What it takes is looked up by type in two small registries (as ``torch.distributions.kl_divergence`` looks up its
KL rules), the most specific class of the object's MRO first:

* q (:data:`LATENTS`): ``torch.distributions.Normal``, ``Bernoulli`` (logits or probs), ``Independent`` of either
  over the last dimension, and :class:`~silentvae.posteriors.GaussianPosterior` /
  :class:`~silentvae.posteriors.BernoulliPosterior`;
* the decoder (:data:`DECODERS`): ``torch.nn.Linear`` (fixed variance ``sigma2``, Section 3),
  :class:`~silentvae.models.LinearDecoder` (its own sigma2) and :class:`~silentvae.models.LinearPrecisionDecoder`
  (learnable precision alpha = W_a z + b_a, Section 4.1: exact quadratic term, E[log alpha^2] by the 2nd-order
  Taylor form of Eq. 7).

Each latent rule also rebuilds q with its gradient scaled (:func:`silentvae.algorithm1.split_gradient`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Independent, Normal

from .analytic import expected_loglik_fixed, expected_loglik_learnable
from .metrics import kl_bernoulli_uniform_logits, kl_gaussian_standard
from .models import LinearDecoder, LinearPrecisionDecoder
from .moments import LatentMoments, bernoulli_moments, gaussian_moments
from .posteriors import BernoulliPosterior, GaussianPosterior, scale_grad

__all__ = ["silent_elbo", "LATENTS", "DECODERS", "LatentRule", "DecoderRule"]


@dataclass(frozen=True)
class LatentRule:
    """How to read one kind of q(z|x): ``moments_kl(q)`` -> (moments, KL to the standard prior (B,)), and
    ``scale_grad(q, w)`` -> the same distribution whose parameters pass gradients scaled by w."""

    moments_kl: Callable[[Any], tuple[LatentMoments, Tensor]]
    scale_grad: Callable[[Any, float | Tensor], Any]


@dataclass(frozen=True)
class DecoderRule:
    """How to score with one kind of linear decoder: ``linear(decoder)`` -> the nn.Linear of its mean (for the
    shape checks), ``expected_loglik(x, moments, decoder, sigma2)`` -> exact E_q[log p(x|z)] (B,)."""

    linear: Callable[[Any], nn.Linear]
    expected_loglik: Callable[[Tensor, LatentMoments, Any, Any], Tensor]
    needs_sigma2: bool


#: q's class -> its :class:`LatentRule`.
LATENTS: dict[type, LatentRule] = {}
#: decoder's class -> its :class:`DecoderRule`.
DECODERS: dict[type, DecoderRule] = {}


def _lookup(registry: dict[type, Any], obj: Any) -> Any:
    return next((registry[t] for t in type(obj).__mro__ if t in registry), None)


def _taken(registry: dict[type, Any]) -> str:
    return ", ".join(f"{t.__module__}.{t.__qualname__}" for t in registry)


# --- latents -----------------------------------------------------------------------------------------------

def _normal(q: Normal) -> tuple[LatentMoments, Tensor]:
    var = q.scale.square()
    return gaussian_moments(q.loc, var, validate=False), kl_gaussian_standard(q.loc, var)


def _bernoulli(q: Bernoulli) -> tuple[LatentMoments, Tensor]:
    # q.logits of a probs-built Bernoulli is log p - log(1 - p) (p clamped to [eps, 1 - eps]): differentiable.
    return bernoulli_moments(q.probs, validate=False), kl_bernoulli_uniform_logits(q.logits)


def _bernoulli_scaled(q: Bernoulli, w: float | Tensor) -> Bernoulli:
    if q._param is q.probs:  # built from probs: keep them the parameter
        return Bernoulli(probs=scale_grad(q.probs, w), validate_args=False)
    return Bernoulli(logits=scale_grad(q.logits, w), validate_args=False)


def _independent(q: Independent) -> tuple[LatentMoments, Tensor]:
    _check_independent(q)
    return _latent_rule(q.base_dist).moments_kl(q.base_dist)


def _independent_scaled(q: Independent, w: float | Tensor) -> Independent:
    _check_independent(q)
    return Independent(_latent_rule(q.base_dist).scale_grad(q.base_dist, w), 1, validate_args=False)


def _check_independent(q: Independent) -> None:
    if q.reinterpreted_batch_ndims != 1:
        raise ValueError(f"q is Independent over {q.reinterpreted_batch_ndims} dimensions; silent_elbo needs "
                         f"latents over the last one: Independent(base, 1) with base of batch shape (B, latents)")


LATENTS[Normal] = LatentRule(_normal, lambda q, w: Normal(scale_grad(q.loc, w), scale_grad(q.scale, w),
                                                          validate_args=False))
LATENTS[Bernoulli] = LatentRule(_bernoulli, _bernoulli_scaled)
LATENTS[Independent] = LatentRule(_independent, _independent_scaled)
LATENTS[GaussianPosterior] = LatentRule(lambda q: (q.moments(), q.kl()), lambda q, w: q.scale_grad(w))
LATENTS[BernoulliPosterior] = LatentRule(lambda q: (q.moments(), q.kl()), lambda q, w: q.scale_grad(w))


def _latent_rule(q: Any) -> LatentRule:
    rule = _lookup(LATENTS, q)
    if rule is None:
        raise TypeError(f"q is a {type(q).__module__}.{type(q).__qualname__}, which has no closed-form moments here; "
                        f"pass a mean-field Gaussian or Bernoulli q(z|x): one of {_taken(LATENTS)} "
                        f"(Independent over the last dimension). Other latents need a sampling estimator.")
    return rule


# --- decoders ----------------------------------------------------------------------------------------------

def _no_sigma2(name: str) -> None:
    raise ValueError(f"sigma2 was given, but a {name} carries its own variance; leave sigma2=None (or pass a plain "
                     f"torch.nn.Linear for a fixed variance of your choice)")


def _fixed_linear(x: Tensor, m: LatentMoments, dec: nn.Linear, sigma2) -> Tensor:
    return expected_loglik_fixed(x, m, dec.weight, dec.bias, sigma2)


def _fixed_decoder(x: Tensor, m: LatentMoments, dec: LinearDecoder, sigma2) -> Tensor:
    if sigma2 is not None:
        _no_sigma2("LinearDecoder")
    return expected_loglik_fixed(x, m, dec.linear.weight, dec.linear.bias, dec.sigma2)


def _precision_decoder(x: Tensor, m: LatentMoments, dec: LinearPrecisionDecoder, sigma2) -> Tensor:
    if sigma2 is not None:
        _no_sigma2("LinearPrecisionDecoder (learnable precision)")
    return expected_loglik_learnable(x, m, dec.mu.weight, dec.mu.bias, dec.alpha.weight, dec.alpha.bias)


DECODERS[nn.Linear] = DecoderRule(lambda d: d, _fixed_linear, needs_sigma2=True)
DECODERS[LinearDecoder] = DecoderRule(lambda d: d.linear, _fixed_decoder, needs_sigma2=False)
DECODERS[LinearPrecisionDecoder] = DecoderRule(lambda d: d.mu, _precision_decoder, needs_sigma2=False)


def _decoder_rule(decoder: Any) -> DecoderRule:
    rule = _lookup(DECODERS, decoder)
    if rule is None:
        raise TypeError(f"decoder is a {type(decoder).__qualname__}, not a linear Gaussian decoder "
                        f"({_taken(DECODERS)}): "
                        f"E_q[log p(x|z)] has a closed form only for those. For a nonlinear decoder use Algorithm 1: "
                        f"train a torch.nn.Linear beside it with silent_elbo and mix the encoder gradients with "
                        f"silentvae.split_gradient(q, silentvae.silent_weight(epoch, anneal_rate)) (README, "
                        f"'a nonlinear decoder').")
    return rule


# --- the call ----------------------------------------------------------------------------------------------

def silent_elbo(x: Tensor, q: Any, decoder: nn.Module, sigma2: float | Tensor | None = None) -> Tensor:
    r"""Per-example ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) with the exact expectation  ->  (B,).

    Args:
        x: data, (B, D) or image-shaped (B, ...) (flattened to (B, D)).
        q: mean-field q(z|x) over (B, d) latents: ``torch.distributions.Normal`` (prior N(0, I)),
            ``Bernoulli`` (prior Bern(1/2)), ``Independent`` of either over the last dimension, or
            :class:`~silentvae.posteriors.GaussianPosterior` / :class:`~silentvae.posteriors.BernoulliPosterior`.
        decoder: ``torch.nn.Linear(d, D)``: p(x|z) = N(W z + b, sigma2 I) (paper Eq. 3);
            :class:`~silentvae.models.LinearDecoder` (the same with its own sigma2);
            :class:`~silentvae.models.LinearPrecisionDecoder`: N(W_mu z + b_mu, diag 1/alpha^2), alpha = W_a z + b_a
            (Eq. 6, E[log alpha^2] by the Taylor form of Eq. 7).
        sigma2: the fixed variance, a positive scalar or per-pixel (D,) tensor; required for ``nn.Linear`` and
            refused for the package's decoders (they carry theirs).

    Gradients reach q's parameters (hence the encoder) with zero variance, and the decoder's. Float32 or float64,
    CPU or CUDA, O(B D d). Raises TypeError for a q or decoder it cannot take (naming those it takes) and
    ValueError for shapes that do not fit the decoder or a missing / superfluous ``sigma2``.
    """
    latents, dec_rule = _latent_rule(q), _decoder_rule(decoder)
    if dec_rule.needs_sigma2 and sigma2 is None:
        raise ValueError(f"decoder is a plain {type(decoder).__qualname__}, which has no variance: pass sigma2, the "
                         f"fixed variance of p(x|z) = N(Wz + b, sigma2 I) (the paper's Section 3.2 uses 0.01), or use "
                         f"silentvae.LinearPrecisionDecoder to learn it")
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a tensor shaped (batch, D) or (batch, ...), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    m, kl = latents.moments_kl(q)
    lin = dec_rule.linear(decoder)
    if m.mean.dim() != 2:
        raise ValueError(f"q must have batch shape (batch, latents), got {tuple(m.mean.shape)}; for a single "
                         f"example add a batch dimension (unsqueeze(0))")
    batch, latents_q = m.mean.shape
    if latents_q != lin.in_features:
        raise ValueError(f"q has {latents_q} latents but the decoder takes {lin.in_features} "
                         f"(in_features); build the decoder with in_features={latents_q}")
    x2 = x.reshape(x.shape[0], -1)
    if x2.shape[1] != lin.out_features:
        raise ValueError(f"x has {x2.shape[1]} values per example (shape {tuple(x.shape)}) but the decoder makes "
                         f"{lin.out_features} (out_features); build it with out_features={x2.shape[1]}")
    if x.shape[0] != batch:
        raise ValueError(f"x has batch size {x.shape[0]} but q has {batch}; pass q(z|x) of the same examples")
    return dec_rule.expected_loglik(x2, m, decoder, sigma2) - kl
