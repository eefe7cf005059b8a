r"""Gradient estimators for the reconstruction term E_q[log p(x|z)].

One interface: ``estimator.loss(posterior, decoder, x, generator=None, noise=None)`` returns a per-sample
surrogate loss (B,) whose *value* estimates -E_q[log p(x|z)] and whose *gradient* is that estimator's
gradient. The sampling estimators draw their one latent noise tensor from ``generator``, or take it as
``noise`` (shape (B, d), drawn by :data:`silentvae.posteriors.NOISE` of the latent kind):

* :class:`SilentGradient`     - the closed form -E_q[log p(x|z)] of a linear decoder (zero variance).
* :class:`Reparameterization` - z = mean + std * eps (Gaussian latents).
* :class:`GumbelSoftmax`      - binary Concrete relaxation z = sigmoid((logit + logistic noise) / tau) (Bernoulli).
* :class:`Reinforce`          - score function with a running-average baseline b (Appendix B.3):
  surrogate = f(z) + (f(z) - b) * (log q(z) - log q(z))|_stop-grad, so the value is f(z) and the encoder
  gradient is (f(z) - b) grad log q(z); f = -log p(x|z).
* :class:`SampleOnly`         - hard/plain samples, no gradient to the posterior (decoder training only).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SilentGradient", "Reparameterization", "GumbelSoftmax", "Reinforce", "SampleOnly",
           "make_estimator", "ESTIMATORS"]


class SilentGradient:
    """Exact -E_q[log p(x|z)] from the decoder's closed form; needs ``decoder.expected_loglik``."""

    name = "sg"
    deterministic = True

    def loss(self, posterior, decoder, x: Tensor, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> Tensor:
        if not hasattr(decoder, "expected_loglik"):
            raise TypeError(f"Silent Gradients need a decoder with a closed-form expected_loglik "
                            f"(LinearDecoder / LinearPrecisionDecoder), got {type(decoder).__name__}")
        return -decoder.expected_loglik(x, posterior)


class Reparameterization:
    """Single-sample reparameterisation estimate -log p(x | mean + std * eps) (Gaussian latents)."""

    name = "reparam"
    deterministic = False

    def loss(self, posterior, decoder, x: Tensor, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> Tensor:
        if posterior.kind != "gaussian":
            raise ValueError("the reparameterization estimator needs Gaussian latents; use 'gumbel' or "
                             "'reinforce' for Bernoulli latents")
        return -decoder.loglik(x, posterior.rsample(generator, noise))


class GumbelSoftmax:
    """Binary Concrete (Gumbel-Softmax) relaxation of Bernoulli latents at ``temperature``."""

    name = "gumbel"
    deterministic = False

    def __init__(self, temperature: float = 0.5):
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def loss(self, posterior, decoder, x: Tensor, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> Tensor:
        if posterior.kind != "bernoulli":
            raise ValueError("the gumbel estimator needs Bernoulli latents; use 'reparam' for Gaussian latents")
        return -decoder.loglik(x, posterior.relaxed_sample(self.temperature, generator, noise))


class Reinforce:
    """Score-function estimator with a running-average baseline of the reconstruction loss.

    b <- momentum * b + (1 - momentum) * mean_batch f(z), updated after each call (so the baseline a
    batch uses never depends on that batch's samples: the estimate stays unbiased). The first call
    starts b at that batch's mean; while no b exists yet (first call, or frozen before any call) each
    sample's baseline is the mean f of the *other* samples of its batch (leave-one-out, still
    independent of its own z; 0 for a batch of one). ``frozen = True`` stops updates (for diagnostics).
    """

    name = "reinforce"
    deterministic = False

    def __init__(self, momentum: float = 0.99):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.baseline: Tensor | None = None
        self.frozen = False

    def loss(self, posterior, decoder, x: Tensor, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> Tensor:
        surrogate, batch_mean = self.surrogate(posterior, decoder, x, self.baseline, generator, noise)
        if not self.frozen:
            self.baseline = self.next_baseline(self.baseline, batch_mean)
        return surrogate

    @staticmethod
    def surrogate(posterior, decoder, x: Tensor, baseline: Tensor | None, generator: torch.Generator | None = None,
                  noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The stateless part of :meth:`loss`: (surrogate (B,), batch mean of f) for a given ``baseline``
        (None: leave-one-out). ``silentvae.training.engine`` calls it under vmap with one baseline per run."""
        z = posterior.sample(generator, noise)
        f = -decoder.loglik(x, z)
        log_q = posterior.log_prob(z)
        f_det = f.detach()
        if baseline is not None:
            b = baseline
        else:  # leave-one-out: the batch mean including f_i itself would bias sample i's term by -1/B
            n = f_det.shape[0]
            b = (f_det.sum() - f_det) / (n - 1) if n > 1 else torch.zeros_like(f_det)
        return f + (f_det - b) * (log_q - log_q.detach()), f_det.mean()

    def next_baseline(self, baseline: Tensor | None, batch_mean: Tensor) -> Tensor:
        """b <- batch mean on the first call, then momentum * b + (1 - momentum) * batch mean."""
        return batch_mean if baseline is None else self.momentum * baseline + (1.0 - self.momentum) * batch_mean

    def state_dict(self) -> dict:
        return {"baseline": None if self.baseline is None else self.baseline.detach().cpu()}

    def load_state_dict(self, state: dict, device=None) -> None:
        b = state.get("baseline")
        self.baseline = None if b is None else b.to(device)


class SampleOnly:
    """-log p(x|z) at a sample that passes no gradient to the posterior (hard Bernoulli or Gaussian draw).

    Trains a decoder on the encoder's latents while the encoder learns from elsewhere
    (Algorithm 1's "None + SG" mode).
    """

    name = "none"
    deterministic = False

    def loss(self, posterior, decoder, x: Tensor, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> Tensor:
        return -decoder.loglik(x, posterior.sample(generator, noise))


ESTIMATORS = ("sg", "reparam", "gumbel", "reinforce", "none")


def make_estimator(name: str, *, temperature: float = 0.5, reinforce_momentum: float = 0.99):
    """Build an estimator by its config name: one of :data:`ESTIMATORS`."""
    if name == "sg":
        return SilentGradient()
    if name == "reparam":
        return Reparameterization()
    if name == "gumbel":
        return GumbelSoftmax(temperature)
    if name == "reinforce":
        return Reinforce(reinforce_momentum)
    if name == "none":
        return SampleOnly()
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {name!r}")
