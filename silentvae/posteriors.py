r"""Mean-field posteriors q(z|x): independent Gaussian or Bernoulli latents.

Each posterior exposes what every estimator needs: its moments (for Silent Gradients), its KL
to the prior, samples (hard, reparameterised or relaxed) and log q(z|x) (for REINFORCE).
``scale_grad(w)`` returns the same distribution whose parameters pass gradients scaled by w:
the device behind Algorithm 1's encoder-gradient mixing (Eq. 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import kl_bernoulli_uniform_logits, kl_gaussian_standard
from .moments import LatentMoments, bernoulli_moments, gaussian_moments

__all__ = ["GaussianPosterior", "BernoulliPosterior", "Posterior", "scale_grad", "NOISE"]

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
