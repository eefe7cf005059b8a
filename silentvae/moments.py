"""Per-latent mean and central moments 2..4 of a mean-field posterior q(z|x).

The closed forms in :mod:`silentvae.analytic` need, for every independent latent z_i,
its mean m_i = E[z_i] and its central moments s_k,i = E[(z_i - m_i)^k] for k = 2, 3, 4
(paper Proposition 1):

* Gaussian N(mu, v):   m = mu, s2 = v, s3 = 0, s4 = 3 v^2
* Bernoulli Bern(p):   m = p,  s2 = p(1-p), s3 = p(1-p)(1-2p), s4 = p(1-p)(1-3p+3p^2)

A constant latent (value c, all central moments 0) implements the paper's bias trick:
``moments.with_constant(1.0)`` appends it, so a decoder ``W @ [z; 1]`` carries its bias in
its last column.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LatentMoments", "gaussian_moments", "bernoulli_moments"]


@dataclass(frozen=True)
class LatentMoments:
    """Mean and central moments 2..4 of independent latents, each a tensor shaped (..., d).

    Attributes:
        mean: E[z]
        var:  E[(z - E z)^2]
        m3:   E[(z - E z)^3]
        m4:   E[(z - E z)^4]
    """

    mean: Tensor
    var: Tensor
    m3: Tensor
    m4: Tensor

    def __post_init__(self) -> None:
        shape = self.mean.shape
        for name in ("var", "m3", "m4"):
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"LatentMoments.{name} has shape {tuple(getattr(self, name).shape)} but mean has "
                    f"shape {tuple(shape)}; all four moments must share one shape (..., latents)"
                )

    @property
    def dim(self) -> int:
        """Number of latents d (the last axis)."""
        return self.mean.shape[-1]

    def with_constant(self, value: float = 1.0) -> "LatentMoments":
        """Append one deterministic latent equal to ``value`` (the paper's bias trick).

        Its mean is ``value`` and its central moments are all zero, so a weight column on it
        acts exactly like a bias: E[w_c * c] = w_c * c with no variance contribution.
        """
        const = torch.full_like(self.mean[..., :1], float(value))
        zero = torch.zeros_like(const)
        return LatentMoments(
            mean=torch.cat([self.mean, const], dim=-1),
            var=torch.cat([self.var, zero], dim=-1),
            m3=torch.cat([self.m3, zero], dim=-1),
            m4=torch.cat([self.m4, zero], dim=-1),
        )


def gaussian_moments(mean: Tensor, var: Tensor, *, validate: bool = True) -> LatentMoments:
    """Moments of independent z_i ~ N(mean_i, var_i): s2 = var, s3 = 0, s4 = 3 var^2 (Eq. 16).

    ``validate=False`` skips the value check (var >= 0), which costs a host sync on CUDA.
    """
    if mean.shape != var.shape:
        raise ValueError(
            f"gaussian_moments: mean has shape {tuple(mean.shape)} but var has shape "
            f"{tuple(var.shape)}; pass one variance per latent mean"
        )
    _check_float("mean", mean)
    _check_float("var", var)
    if validate and bool((~(var.detach() >= 0)).any()):
        raise ValueError("gaussian_moments: var has negative or NaN entries; variances must be >= 0 "
                         "(produce them with softplus/exp of the encoder output)")
    return LatentMoments(mean=mean, var=var, m3=torch.zeros_like(var), m4=3.0 * var * var)


def bernoulli_moments(probs: Tensor, *, validate: bool = True) -> LatentMoments:
    """Moments of independent z_i ~ Bern(p_i) (paper Eqs. 18-20):

    s2 = p(1-p),  s3 = p(1-p)(1-2p),  s4 = p(1-p)(1 - 3p + 3p^2).

    ``validate=False`` skips the value check (0 <= p <= 1), which costs a host sync on CUDA.
    """
    _check_float("probs", probs)
    p = probs
    if validate and bool((~((p.detach() >= 0) & (p.detach() <= 1))).any()):
        raise ValueError("bernoulli_moments: probs has entries outside [0, 1] (or NaN); pass probabilities "
                         "(e.g. torch.sigmoid(logits)), not logits")
    var = p * (1 - p)
    return LatentMoments(
        mean=p,
        var=var,
        m3=var * (1 - 2 * p),
        m4=var * (1 - 3 * p + 3 * p * p),
    )


def _check_float(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (float32 or float64), got {t.dtype}")
