r"""Mean-field posteriors q(z|x): independent Gaussian or Bernoulli latents.

Each posterior exposes what every estimator needs: its moments (for Silent Gradients), its KL
to the prior, samples (hard, reparameterised or relaxed) and log q(z|x) (for REINFORCE).
``scale_grad(w)`` returns the same distribution whose parameters pass gradients scaled by w:
the device behind Algorithm 1's encoder-gradient mixing (Eq. 8).

The q's the closed forms can read are looked up by type in :data:`LATENTS` (as
``torch.distributions.kl_divergence`` looks up its KL rules, the most specific class of the MRO first):
``torch.distributions.Normal``, ``Bernoulli`` (logits or probs), ``Independent`` of either over the last
dimension, and the two posteriors here. :func:`latent_rule` finds a q's :class:`LatentRule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Bernoulli, Independent, Normal

from .metrics import kl_bernoulli_uniform_logits, kl_gaussian_standard
from .moments import LatentMoments, bernoulli_moments, gaussian_moments

__all__ = ["GaussianPosterior", "BernoulliPosterior", "Posterior", "scale_grad", "NOISE", "Latent", "LatentRule",
           "LATENTS", "latent_rule"]

#: The one random draw behind every sample of a posterior kind: eps ~ N(0, I) for Gaussian latents
#: (``rsample``/``sample``), u ~ U[0, 1) for Bernoulli latents (``sample``/``relaxed_sample``). Each sampler
#: takes that draw as ``noise=`` instead of drawing it (``silentvae.training.engine`` draws per run, outside vmap).
NOISE = {"gaussian": torch.randn, "bernoulli": torch.rand}


def scale_grad(t: Tensor, w: float | Tensor) -> Tensor:
    """Identity in the forward pass; multiplies the gradient flowing back into ``t`` by ``w``.

    Value: w t + (1 - w) t = t exactly when w is 0 or 1, and to round-off otherwise. ``w`` may be a
    0-d tensor (one weight per run under ``vmap``), which always takes the w t + (1 - w) t path.
    """
    if isinstance(w, Tensor):
        return w * t + (1.0 - w) * t.detach()
    if w == 1.0:
        return t
    if w == 0.0:
        return t.detach()
    return w * t + (1.0 - w) * t.detach()


@dataclass
class GaussianPosterior:
    """q(z|x) = N(mean, diag(var)), prior N(0, I)."""

    mean: Tensor
    var: Tensor
    kind = "gaussian"

    @classmethod
    def from_encoder_output(cls, h: Tensor) -> "GaussianPosterior":
        """Split (B, 2d) into mean and a softplus-positive variance (floored at 1e-6)."""
        mean, raw = h.chunk(2, dim=-1)
        return cls(mean=mean, var=F.softplus(raw) + 1e-6)

    def moments(self, validate: bool = False) -> LatentMoments:
        return gaussian_moments(self.mean, self.var, validate=validate)

    def kl(self) -> Tensor:
        return kl_gaussian_standard(self.mean, self.var)

    def rsample(self, generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
        """Reparameterised sample z = mean + sqrt(var) * eps, eps ~ N(0, I) (``noise``: eps given)."""
        eps = noise if noise is not None else torch.randn(self.mean.shape, generator=generator,
                                                          device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.var.sqrt() * eps

    def sample(self, generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
        return self.rsample(generator, noise).detach()

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over latents -> (B,)."""
        return (-0.5 * ((z - self.mean).square() / self.var + torch.log(2 * torch.pi * self.var))).sum(-1)

    def scale_grad(self, w: float | Tensor) -> "GaussianPosterior":
        return GaussianPosterior(scale_grad(self.mean, w), scale_grad(self.var, w))

    def detach(self) -> "GaussianPosterior":
        return GaussianPosterior(self.mean.detach(), self.var.detach())


@dataclass
class BernoulliPosterior:
    """q(z|x) = prod_i Bern(sigmoid(logits_i)), prior Bern(1/2)."""

    logits: Tensor
    kind = "bernoulli"

    @classmethod
    def from_encoder_output(cls, h: Tensor) -> "BernoulliPosterior":
        return cls(logits=h)

    @property
    def probs(self) -> Tensor:
        return torch.sigmoid(self.logits)

    @property
    def mean(self) -> Tensor:
        return self.probs

    def moments(self, validate: bool = False) -> LatentMoments:
        return bernoulli_moments(self.probs, validate=validate)

    def kl(self) -> Tensor:
        return kl_bernoulli_uniform_logits(self.logits)

    def _uniform(self, generator: torch.Generator | None, noise: Tensor | None) -> Tensor:
        if noise is not None:
            return noise
        return torch.rand(self.logits.shape, generator=generator, device=self.logits.device, dtype=self.logits.dtype)

    def sample(self, generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
        """Hard sample z = [u < p] in {0, 1}^d (no gradient); ``noise``: u given."""
        return (self._uniform(generator, noise) < self.probs.detach()).to(self.logits.dtype)

    def relaxed_sample(self, temperature: float, generator: torch.Generator | None = None,
                       noise: Tensor | None = None) -> Tensor:
        """Binary Concrete / Gumbel-Softmax sample: sigmoid((logits + logistic noise) / temperature).

        The logistic noise is log u - log(1 - u) of u ~ U[0, 1) (``noise``: u given)."""
        u = self._uniform(generator, noise)
        u = u.clamp(torch.finfo(u.dtype).tiny, 1.0 - torch.finfo(u.dtype).eps)
        logistic = torch.log(u) - torch.log1p(-u)
        return torch.sigmoid((self.logits + logistic) / temperature)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) = sum_i z_i logsigmoid(l_i) + (1 - z_i) logsigmoid(-l_i)  -> (B,)."""
        return (z * F.logsigmoid(self.logits) + (1 - z) * F.logsigmoid(-self.logits)).sum(-1)

    def scale_grad(self, w: float | Tensor) -> "BernoulliPosterior":
        return BernoulliPosterior(scale_grad(self.logits, w))

    def detach(self) -> "BernoulliPosterior":
        return BernoulliPosterior(self.logits.detach())


Posterior = GaussianPosterior | BernoulliPosterior


# --- the q's the closed forms read ---------------------------------------------------------------------------

#: What :func:`silentvae.silent_elbo` and the linear decoders' ``expected_loglik`` take as q(z|x).
Latent = Union[Normal, Bernoulli, Independent, GaussianPosterior, BernoulliPosterior]


@dataclass(frozen=True)
class LatentRule:
    """How to read one kind of q(z|x):

    * ``kind``: "gaussian" or "bernoulli" (for Independent: None, its base distribution's);
    * ``params(q)`` -> q's parameter tensors; ``rebuild(q, params)`` -> the same kind of q from new ones;
    * ``moments_kl(q)`` -> (moments, KL to the standard prior N(0, I) / Bern(1/2), (B,));
    * ``torch(q)`` -> q as a ``torch.distributions`` object with batch shape (B, d) (for another prior's KL).
    """

    kind: str | None
    params: Callable[[Latent], tuple[Tensor, ...]]
    rebuild: Callable[[Latent, tuple[Tensor, ...]], Latent]
    moments_kl: Callable[[Latent], tuple[LatentMoments, Tensor]]
    torch: Callable[[Latent], Normal | Bernoulli]

    def map(self, q: Latent, fn: Callable[[Tensor], Tensor]) -> Latent:
        """q rebuilt from ``fn`` of each of its parameter tensors (cast them, scale their gradient, ...)."""
        return self.rebuild(q, tuple(fn(t) for t in self.params(q)))


#: q's class -> its :class:`LatentRule`.
LATENTS: dict[type, LatentRule] = {}


def _normal(q: Normal) -> tuple[LatentMoments, Tensor]:
    var = q.scale.square()
    return gaussian_moments(q.loc, var, validate=False), kl_gaussian_standard(q.loc, var)


def _bernoulli(q: Bernoulli) -> tuple[LatentMoments, Tensor]:
    # q.logits of a probs-built Bernoulli is log p - log(1 - p) (p clamped to [eps, 1 - eps]): differentiable.
    return bernoulli_moments(q.probs, validate=False), kl_bernoulli_uniform_logits(q.logits)


def _bernoulli_rebuild(q: Bernoulli, params: tuple[Tensor, ...]) -> Bernoulli:
    if q._param is q.probs:  # built from probs: keep them the parameter
        return Bernoulli(probs=params[0], validate_args=False)
    return Bernoulli(logits=params[0], validate_args=False)


def _check_independent(q: Independent) -> Latent:
    if q.reinterpreted_batch_ndims != 1:
        raise ValueError(f"q is Independent over {q.reinterpreted_batch_ndims} dimensions; silent_elbo needs "
                         f"latents over the last one: Independent(base, 1) with base of batch shape (B, latents)")
    return q.base_dist


def _base_rule(q: Independent) -> LatentRule:
    return latent_rule(_check_independent(q))


LATENTS[Normal] = LatentRule("gaussian", lambda q: (q.loc, q.scale),
                             lambda q, p: Normal(*p, validate_args=False), _normal, lambda q: q)
LATENTS[Bernoulli] = LatentRule("bernoulli", lambda q: (q._param,), _bernoulli_rebuild, _bernoulli, lambda q: q)
LATENTS[Independent] = LatentRule(
    None, lambda q: _base_rule(q).params(q.base_dist),
    lambda q, p: Independent(_base_rule(q).rebuild(q.base_dist, p), 1, validate_args=False),
    lambda q: _base_rule(q).moments_kl(q.base_dist), lambda q: _base_rule(q).torch(q.base_dist))
LATENTS[GaussianPosterior] = LatentRule("gaussian", lambda q: (q.mean, q.var), lambda q, p: GaussianPosterior(*p),
                                        lambda q: (q.moments(), q.kl()),
                                        lambda q: Normal(q.mean, q.var.sqrt(), validate_args=False))
LATENTS[BernoulliPosterior] = LatentRule("bernoulli", lambda q: (q.logits,), lambda q, p: BernoulliPosterior(*p),
                                         lambda q: (q.moments(), q.kl()),
                                         lambda q: Bernoulli(logits=q.logits, validate_args=False))


def _taken(registry: dict[type, object]) -> str:
    return ", ".join(f"{t.__module__}.{t.__qualname__}" for t in registry)


def latent_rule(q: object) -> LatentRule:
    """q's :class:`LatentRule` (the most specific class of its MRO in :data:`LATENTS`); TypeError naming the q's
    taken if it has none."""
    rule = next((LATENTS[t] for t in type(q).__mro__ if t in LATENTS), None)
    if rule is None:
        raise TypeError(f"q is a {type(q).__module__}.{type(q).__qualname__}, which has no closed-form moments here; "
                        f"pass a mean-field Gaussian or Bernoulli q(z|x): one of {_taken(LATENTS)} "
                        f"(Independent over the last dimension). Other latents need a sampling estimator.")
    return rule


def latent_kind(q: Latent) -> str:
    """"gaussian" or "bernoulli": the kind of q's latents (through Independent)."""
    rule = latent_rule(q)
    return rule.kind if rule.kind is not None else latent_kind(_check_independent(q))
