r"""The ELBO of a mean-field VAE with a linear Gaussian decoder, in one call: :func:`silent_elbo`.

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))

The first term is exact (:mod:`silentvae.analytic`, from the latents' moments, :mod:`silentvae.moments`), so its
gradient with respect to q's parameters has zero variance: the Silent Gradient. The prior is the standard one,
N(0, I) for Gaussian latents and Bern(1/2) per latent for Bernoulli ones, with the KL in closed form
(:mod:`silentvae.metrics`), or a Normal / Bernoulli prior of your own (``prior=``, KL by
``torch.distributions.kl_divergence``).

What it takes is looked up by type in two small registries (as ``torch.distributions.kl_divergence`` looks up its
KL rules), the most specific class of the object's MRO first:

* q (:data:`silentvae.posteriors.LATENTS`): ``torch.distributions.Normal``, ``Bernoulli`` (logits or probs),
  ``Independent`` of either over the last dimension, and :class:`~silentvae.posteriors.GaussianPosterior` /
  :class:`~silentvae.posteriors.BernoulliPosterior`;
* the decoder (:data:`DECODERS`): ``torch.nn.Linear`` (fixed variance ``sigma2``, Section 3),
  :class:`~silentvae.models.LinearDecoder` (its own sigma2) and :class:`~silentvae.models.LinearPrecisionDecoder`
  (learnable precision alpha = W_a z + b_a, Section 4.1: exact quadratic term, E[log alpha^2] by the 2nd-order
  Taylor form of Eq. 7).

Each latent rule also rebuilds q from new parameters: cast to float32 (half precision is computed in float32)
or with its gradient scaled (:func:`silentvae.algorithm1.split_gradient`). What the closed form cannot compute
is refused, never silently misread: a decoder subclass that changes forward, forward hooks, integer images,
mismatched dtypes or devices, an empty batch.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Literal, Sequence, Union, overload

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal, kl_divergence
from torch.nn.modules import module as _module
from torch.nn.parameter import is_lazy

from .analytic import expected_loglik_fixed, expected_loglik_learnable
from .models import LinearDecoder, LinearPrecisionDecoder
from .moments import LatentMoments
from .posteriors import LATENTS, Latent, LatentRule, latent_kind, latent_rule

__all__ = ["silent_elbo", "expected_loglik", "LATENTS", "DECODERS", "LatentRule", "DecoderRule", "Decoder"]

#: What :func:`silent_elbo` takes as the decoder.
Decoder = Union[nn.Linear, LinearDecoder, LinearPrecisionDecoder]
#: What it takes as ``sigma2``: a positive scalar, or one variance per value (D,).
Sigma2 = Union[float, Tensor, np.ndarray, np.floating, Sequence[float], None]

_HALF = (torch.float16, torch.bfloat16)
_CLOSED_FORM_DOC = "E_q[log p(x|z)] has a closed form only for a linear Gaussian decoder"


@dataclass(frozen=True)
class DecoderRule:
    """How to score with one kind of linear decoder:

    * ``parts(decoder)`` -> {name: nn.Linear} whose ``weight`` / ``bias`` the closed form reads, the mean's first;
    * ``methods``: the registered class's methods that define p(x|z) (a subclass overriding one is refused: the
      closed form would not compute what its forward does);
    * ``expected_loglik(x, moments, decoder, sigma2, cast)`` -> exact E_q[log p(x|z)] (B,), every weight through
      ``cast`` (to the computation's dtype);
    * ``needs_sigma2``: a plain layer without a variance of its own.
    """

    parts: Callable[[nn.Module], dict[str, nn.Linear]]
    methods: tuple[str, ...]
    expected_loglik: Callable[..., Tensor]
    needs_sigma2: bool


#: decoder's class -> its :class:`DecoderRule`.
DECODERS: dict[type, DecoderRule] = {}


def _no_sigma2(name: str) -> None:
    raise ValueError(f"sigma2 was given, but a {name} carries its own variance; leave sigma2=None (or pass a plain "
                     f"torch.nn.Linear for a fixed variance of your choice)")


def _fixed_linear(x: Tensor, m: LatentMoments, dec: nn.Linear, sigma2, cast) -> Tensor:
    return expected_loglik_fixed(x, m, cast(dec.weight), cast(dec.bias), cast(sigma2))


def _fixed_decoder(x: Tensor, m: LatentMoments, dec: LinearDecoder, sigma2, cast) -> Tensor:
    if sigma2 is not None:
        _no_sigma2("LinearDecoder")
    return expected_loglik_fixed(x, m, cast(dec.linear.weight), cast(dec.linear.bias), dec.sigma2)


def _precision_decoder(x: Tensor, m: LatentMoments, dec: LinearPrecisionDecoder, sigma2, cast) -> Tensor:
    if sigma2 is not None:
        _no_sigma2("LinearPrecisionDecoder (learnable precision)")
    return expected_loglik_learnable(x, m, cast(dec.mu.weight), cast(dec.mu.bias), cast(dec.alpha.weight),
                                     cast(dec.alpha.bias))


_DECODER_METHODS = ("forward", "mean", "std", "loglik", "expected_loglik")
DECODERS[nn.Linear] = DecoderRule(lambda d: {"decoder": d}, ("forward",), _fixed_linear, needs_sigma2=True)
DECODERS[LinearDecoder] = DecoderRule(lambda d: {"decoder.linear": d.linear}, _DECODER_METHODS, _fixed_decoder,
                                      needs_sigma2=False)
DECODERS[LinearPrecisionDecoder] = DecoderRule(lambda d: {"decoder.mu": d.mu, "decoder.alpha": d.alpha},
                                               _DECODER_METHODS, _precision_decoder, needs_sigma2=False)


def _taken(registry: dict[type, object]) -> str:
    return ", ".join(f"{t.__module__}.{t.__qualname__}" for t in registry)


def _decoder_rule(decoder: object) -> tuple[type, DecoderRule]:
    cls = next((t for t in type(decoder).__mro__ if t in DECODERS), None)
    if cls is None:
        raise TypeError(f"decoder is a {type(decoder).__qualname__}, not a linear Gaussian decoder "
                        f"({_taken(DECODERS)}): {_CLOSED_FORM_DOC}. For a nonlinear decoder use Algorithm 1: "
                        f"train a torch.nn.Linear beside it with silent_elbo and mix the encoder gradients with "
                        f"silentvae.split_gradient(q, silentvae.silent_weight(epoch, anneal_rate)) (README, "
                        f"'a nonlinear decoder').")
    return cls, DECODERS[cls]


def _check_decoder(decoder: nn.Module, cls: type, rule: DecoderRule) -> dict[str, nn.Linear]:
    """Refuse a decoder whose output is not what the closed form computes from its weights: a subclass that
    overrides how it computes p(x|z), forward (pre-)hooks, or an nn.LazyLinear not yet built. Parametrizations
    (torch.nn.utils.parametrize) are exact: ``weight`` is the parametrized value its forward uses too."""
    parts = rule.parts(decoder)
    for name, layer in parts.items():
        if any(is_lazy(t) for t in (layer.weight, layer.bias) if t is not None):
            raise ValueError(f"{name} is an nn.LazyLinear that has not run yet, so its in_features are unknown; "
                             f"call it once (e.g. on q's mean) or build nn.Linear(latents, D)")
    classes = [(type(decoder), cls, rule.methods, "decoder")]
    classes += [(type(layer), nn.Linear, ("forward",), name) for name, layer in parts.items() if layer is not decoder]
    for own, base, methods, name in classes:
        changed = [f for f in methods if getattr(own, f) is not getattr(base, f)]
        if changed:
            raise TypeError(f"{name} is a {own.__qualname__}, a subclass of {base.__qualname__} that overrides "
                            f"{', '.join(changed)}: {_CLOSED_FORM_DOC} as {base.__qualname__} computes it, so the "
                            f"closed form would not be your decoder's. Use a plain {base.__qualname__}, or "
                            f"Algorithm 1 for a nonlinear decoder (README, 'a nonlinear decoder').")
    for name, mod in {"decoder": decoder, **parts}.items():
        if mod._forward_hooks or mod._forward_pre_hooks:
            raise TypeError(f"{name} has forward hooks, which the closed form cannot see (it reads the weights, it "
                            f"does not call forward); remove them (handle.remove()) for silent_elbo, or register "
                            f"the change as a parametrization (torch.nn.utils.parametrize), which it reads exactly")
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        raise TypeError("global forward hooks are registered (nn.modules.module.register_module_forward_hook), which "
                        "the closed form cannot see (it reads the weights, it does not call forward); remove them")
    return parts


def _tensor_dtype(tensors) -> torch.dtype:
    dtypes = {t.dtype for t in tensors}
    return dtypes.pop() if len(dtypes) == 1 else torch.promote_types(*sorted(dtypes, key=str)[:2])


def _full(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF else dtype


def _prior_kl(q: Latent, rule: LatentRule, prior: Distribution, shape: torch.Size) -> Tensor:
    """KL(q || prior) summed over latents (B,) for a Normal / Bernoulli prior (or Independent of one over the last
    dimension) of q's kind, by ``torch.distributions.kl_divergence`` (closed form)."""
    base = prior.base_dist if isinstance(prior, Independent) and prior.reinterpreted_batch_ndims == 1 else prior
    kind = latent_kind(q)
    want = {"gaussian": Normal, "bernoulli": Bernoulli}[kind]
    if type(base) is not want:
        inner = "" if base is prior else f" of {type(base).__qualname__}"
        raise TypeError(f"prior is a {type(prior).__qualname__}{inner}, but q has {kind} latents: the KL in closed form needs a {want.__qualname__} prior per "
                        f"latent ({'Normal(0, s)' if kind == 'gaussian' else 'Bernoulli(probs=p)'}, or Independent of "
                        f"it over the last dimension); for another prior estimate the KL by sampling yourself")
    try:
        fits = torch.broadcast_shapes(base.batch_shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"prior has batch shape {tuple(base.batch_shape)}, which does not broadcast to q's "
                         f"{tuple(shape)} (batch, latents); give one value per latent or a scalar")
    return kl_divergence(rule.torch(q), base).sum(-1)


def _terms(x: Tensor, q: Latent, decoder: Decoder, sigma2: Sigma2, prior: Distribution | None
           ) -> tuple[Tensor, Tensor]:
    latents = latent_rule(q)
    cls, dec_rule = _decoder_rule(decoder)
    if dec_rule.needs_sigma2 and sigma2 is None:
        raise ValueError(f"decoder is a plain {type(decoder).__qualname__}, which has no variance: pass sigma2, the "
                         f"fixed variance of p(x|z) = N(Wz + b, sigma2 I) (the paper's Section 3.2 uses 0.01), or use "
                         f"silentvae.LinearPrecisionDecoder to learn it")
    parts = _check_decoder(decoder, cls, dec_rule)
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a tensor shaped (batch, D) or (batch, ...), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x is a {x.dtype} tensor: integer images (0-255) would be scored as values up to 255 "
                        f"against a Gaussian; scale them to [0, 1): x.float() / 256 (the paper's x_int / 256)")
    q_params = latents.params(q)
    weights = [t for layer in parts.values() for t in (layer.weight, layer.bias) if t is not None]
    q_dtype, dec_dtype = _tensor_dtype(q_params), _tensor_dtype(weights)
    if _full(q_dtype) != _full(dec_dtype):
        raise TypeError(f"q's parameters are {q_dtype} but the decoder's weights are {dec_dtype}; use one precision "
                        f"for both (decoder.to(torch.{str(q_dtype).split('.')[1]}), or build q from "
                        f"{dec_dtype} encoder outputs)")
    devices = {"q": q_params[0].device, "decoder": weights[0].device, "x": x.device}
    if devices["q"] != devices["decoder"] or devices["x"] != devices["decoder"]:
        odd = "x" if devices["q"] == devices["decoder"] else "q"
        raise ValueError(f"{odd} is on {devices[odd]} but the decoder is on {devices['decoder']}: move {odd} to the "
                         f"decoder's device ({odd}.to(...){'' if odd == 'x' else ': run the encoder there'})")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (0 examples): there is nothing to average; skip empty batches "
                         "(e.g. DataLoader(..., drop_last=True) when the data size is not a multiple of the batch)")
    dtype = _full(dec_dtype)  # half precision is computed (and returned) in float32, as autocast does for losses
    if q_dtype != dtype:
        q = latents.map(q, lambda t: t.to(dtype))
    cast = lambda t: t.to(dtype) if isinstance(t, Tensor) else t  # noqa: E731 (a no-op for the same dtype)
    device_type = x.device.type
    autocast_off = (torch.autocast(device_type, enabled=False) if torch.is_autocast_enabled(device_type)
                    else nullcontext())
    with autocast_off:
        m, kl = latents.moments_kl(q)
        lin = next(iter(parts.values()))
        if m.mean.dim() != 2:
            raise ValueError(f"q must have batch shape (batch, latents), got {tuple(m.mean.shape)}; for a single "
                             f"example add a batch dimension (unsqueeze(0))")
        batch, latents_q = m.mean.shape
        if latents_q != lin.in_features:
            raise ValueError(f"q has {latents_q} latents but the decoder takes {lin.in_features} "
                             f"(in_features); build the decoder with in_features={latents_q}")
        x2 = cast(x.reshape(x.shape[0], -1))
        if x2.shape[1] != lin.out_features:
            raise ValueError(f"x has {x2.shape[1]} values per example (shape {tuple(x.shape)}) but the decoder makes "
                             f"{lin.out_features} (out_features); build it with out_features={x2.shape[1]}")
        if x.shape[0] != batch:
            raise ValueError(f"x has batch size {x.shape[0]} but q has {batch}; pass q(z|x) of the same examples")
        if prior is not None:
            kl = cast(_prior_kl(q, latents, prior, m.mean.shape))
        return dec_rule.expected_loglik(x2, m, decoder, sigma2, cast), kl


@overload
def silent_elbo(x: Tensor, q: Latent, decoder: Decoder, sigma2: Sigma2 = None, *,
                prior: Normal | Bernoulli | Independent | None = None, return_terms: Literal[False] = False) -> Tensor:
    ...


@overload
def silent_elbo(x: Tensor, q: Latent, decoder: Decoder, sigma2: Sigma2 = None, *,
                prior: Normal | Bernoulli | Independent | None = None, return_terms: Literal[True]
                ) -> tuple[Tensor, Tensor]:
    ...


def silent_elbo(x: Tensor, q: Latent, decoder: Decoder, sigma2: Sigma2 = None, *,
                prior: Normal | Bernoulli | Independent | None = None, return_terms: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
    r"""Per-example ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) in nats, with the exact expectation  ->  (B,).

    A lower bound on log p(x) of each example, to *maximise* (train on ``-silent_elbo(...).mean()``); not divided
    by the number of pixels (:func:`silentvae.bits_per_dim` converts).

    Args:
        x: data in [0, 1), (B, D) or image-shaped (B, ...) (flattened to (B, D)); floating point (integer images
            are refused: scale them, ``x.float() / 256``).
        q: mean-field q(z|x) over (B, d) latents: ``torch.distributions.Normal``, ``Bernoulli`` (logits or probs),
            ``Independent`` of either over the last dimension, or
            :class:`~silentvae.posteriors.GaussianPosterior` / :class:`~silentvae.posteriors.BernoulliPosterior`.
        decoder: ``torch.nn.Linear(d, D)``: p(x|z) = N(W z + b, sigma2 I) (paper Eq. 3);
            :class:`~silentvae.models.LinearDecoder` (the same with its own sigma2);
            :class:`~silentvae.models.LinearPrecisionDecoder`: N(W_mu z + b_mu, diag 1/alpha^2), alpha = W_a z + b_a
            (Eq. 6, E[log alpha^2] by the Taylor form of Eq. 7: see below). Refused: subclasses that override
            forward, forward hooks (parametrizations are read exactly), a LazyLinear not yet run.
        sigma2: the fixed variance, a positive scalar or per-pixel (D,) tensor (numpy scalars, arrays and lists
            too); required for ``nn.Linear`` and refused for the package's decoders (they carry theirs).
        prior: p(z); None is N(0, I) for Gaussian latents and Bern(1/2) for Bernoulli ones. Otherwise a
            ``Normal(loc, scale)`` (e.g. ``Normal(0., s)``) or ``Bernoulli(probs=p)`` per latent, or ``Independent``
            of it over the last dimension, broadcastable to (B, d): the priors whose KL has a closed form.
        return_terms: return ``(reconstruction, kl)``, each (B,), instead of their difference.

    Gradients reach q's parameters (hence the encoder) with zero variance, and the decoder's. Float32 or float64,
    CPU or CUDA, O(B D d); float16 / bfloat16 inputs (and autocast) are computed and returned in float32. Raises
    TypeError for a q, decoder, prior or dtype it cannot take (naming those it takes) and ValueError for shapes
    that do not fit the decoder, a device mismatch, an empty batch or a missing / superfluous ``sigma2``.

    With :class:`~silentvae.models.LinearPrecisionDecoder` the value is the paper's 2nd-order Taylor
    approximation of E_q[log p(x|z)], **not a bound**: the Taylor form of E[log alpha^2] can lie above the true
    expectation when alpha(z) varies strongly over q. Example (``tests/test_elbo.py`` measures it): 8 Bernoulli
    latents at p = 1/2, 16 pixels with x = 0.5, W_mu = 0, b_mu = 0 and alpha = 1.1 + 0.5 (z_1 - z_2 + z_3 - ... - z_8)
    (from -0.9 to 3.1 over the codes): the Taylor value is -17.74 nats, the exact expectation (all 256 codes
    enumerated) -20.50, so the value is 2.76 nats *above* it. Where |alpha| stays far from 0 relative to its
    spread over q the gap is small (alpha = 1 + 0.5 (z_1 + ... + z_8), from 1 to 5: 0.10 nats).
    """
    rec, kl = _terms(x, q, decoder, sigma2, prior)
    return (rec, kl) if return_terms else rec - kl


def expected_loglik(x: Tensor, q: Latent, decoder: Decoder, sigma2: Sigma2 = None) -> Tensor:
    """E_q[log p(x|z)] in nats per example (B,): the reconstruction term of :func:`silent_elbo`, same arguments
    and checks (the linear decoders' ``expected_loglik(x, q)`` call it)."""
    return _terms(x, q, decoder, sigma2, None)[0]
