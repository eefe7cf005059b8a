r"""Algorithm 1 (Section 4.2) in any training loop: Silent Gradients for a VAE with a nonlinear decoder.

A linear Gaussian decoder trains beside the nonlinear one, and the encoder's reconstruction gradient mixes the
linear decoder's exact (silent) gradient with the nonlinear decoder's sampled one (paper Eq. 8):

    grad_phi = w_lin * grad_phi(silent) + (1 - w_lin) * grad_phi(sampled),   w_lin = max(0, 1 - epoch * lambda)

(epochs count from 1), plus the KL's gradient; from the cut-off epoch on the encoder is frozen. Three helpers, the
ones the pipeline's engine (:mod:`silentvae.training.engine`, via :class:`silentvae.training.run.RunConfig`) uses too:

* :func:`silent_weight` -- w_lin at an epoch;
* :func:`encoder_frozen` -- whether the encoder is frozen at an epoch;
* :func:`split_gradient` -- two views of q(z|x) with the same values whose gradients reach the encoder scaled by
  w and by 1 - w: score the linear decoder on the first (:func:`silentvae.silent_elbo`), the nonlinear one on
  samples of the second, add the two losses, call backward once.

The linear helper's variance sigma^2 is the silent gradient's strength: its reconstruction term is
-||x - W z - b||^2 / (2 sigma^2) + const, so the silent gradient scales as 1 / sigma^2. Measured
(``benchmarks/helper_variance.py``, README "The helper's variance, measured": an MLP VAE on mnist5k, 3 seeds), a
fixed sigma^2 = 10 gave the best ELBO (+17.8 nats over reparameterisation); the decoder's own 0.01 and a learned
variance (:class:`~silentvae.models.LinearPrecisionDecoder`, which learns a small one) lost 60-80 nats. 10 is the
documented default for data in [0, 1); it is a hyper-parameter.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor

from .posteriors import Latent, latent_rule, scale_grad

Q = TypeVar("Q", bound=Latent)

__all__ = ["silent_weight", "encoder_frozen", "split_gradient"]


def silent_weight(epoch: int, anneal_rate: float) -> float:
    """w_lin = max(0, 1 - epoch * anneal_rate) at 1-based ``epoch`` (Algorithm 1's linear annealing, lambda =
    ``anneal_rate``): the share of the encoder's reconstruction gradient that comes from the silent gradient."""
    if not anneal_rate >= 0:
        raise ValueError(f"anneal_rate must be >= 0, got {anneal_rate}")
    return max(0.0, 1.0 - epoch * anneal_rate)


def encoder_frozen(epoch: int, cutoff_epoch: int | None) -> bool:
    """Whether the encoder is frozen at 1-based ``epoch``: from ``cutoff_epoch`` on (never if None)."""
    return cutoff_epoch is not None and epoch >= cutoff_epoch


def split_gradient(q: Q, w: float | Tensor) -> tuple[Q, Q]:
    """``(q_silent, q_sampled)``: q twice, with equal values, passing gradients to q's parameters scaled by ``w``
    and by ``1 - w``. With q_silent scored by the linear decoder and q_sampled by the nonlinear one, the encoder
    gets w * silent + (1 - w) * sampled gradient (Eq. 8) and each decoder its full gradient.

    q: any q :func:`silentvae.silent_elbo` takes (torch.distributions Normal / Bernoulli / Independent, or the
    package's posteriors). ``w`` in [0, 1]: a float or a 0-d tensor (one weight per run under ``vmap``, where its
    value is not checked: that would need the values of every run).
    """
    rule = latent_rule(q)
    if isinstance(w, Tensor):
        if w.dim() != 0:
            raise ValueError(f"w must be a float or a 0-d tensor, got shape {tuple(w.shape)}")
        try:  # under vmap / torch.compile w holds one weight per run and has no single value to check
            value = 0.5 if torch.compiler.is_compiling() else float(w)
        except RuntimeError:
            value = 0.5
    else:
        value = w
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"w must be in [0, 1] (the silent share of the encoder's gradient), got {value}; "
                         f"silentvae.silent_weight(epoch, anneal_rate) gives Algorithm 1's w")
    return rule.map(q, lambda t: scale_grad(t, w)), rule.map(q, lambda t: scale_grad(t, 1.0 - w))
