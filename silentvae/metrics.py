r"""Evaluation metrics: bits per dimension and KL divergences of mean-field posteriors.

Bits per dimension (paper Appendix B.1, with the sign of its Eq. 65 corrected). Pixels are
scaled as x = x_int / 256 and dequantised y = x + u, u ~ U[0, 1/256). Jensen gives

    P(x_int) = int_{bin} p(y) dy = 256^{-D} E_u[p(y)]  =>  log P(x_int) >= E_u[log p(y)] - D ln 256,

and with ELBO <= log p(y):  log P(x_int) >= ELBO - D ln 256, so

    bpd = -log2 P(x_int) / D <= (-ELBO / D + ln 256) / ln 2.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bits_per_dim", "kl_gaussian_standard", "kl_bernoulli_uniform_logits",
           "sum_squared_error", "code_diversity"]

_LN_256 = math.log(256.0)
_LN_2 = math.log(2.0)


def bits_per_dim(elbo_nats: Tensor | float, num_dims: int) -> Tensor | float:
    """Upper bound on bits per dimension of 8-bit data from a per-image ELBO in nats on [0, 1) data:

        bpd = (-ELBO / D + ln 256) / ln 2
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, numbers.Integral) or num_dims <= 0:
        raise ValueError(f"num_dims must be a positive int (pixels x channels), got {num_dims!r}")
    return (-elbo_nats / int(num_dims) + _LN_256) / _LN_2


def kl_gaussian_standard(mean: Tensor, var: Tensor) -> Tensor:
    """KL(N(mean, diag var) || N(0, I)) summed over the last axis:

        1/2 sum_i (mean_i^2 + var_i - log var_i - 1)
    """
    if mean.shape != var.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and var {tuple(var.shape)} must have the same shape")
    return 0.5 * (mean.square() + var - torch.log(var) - 1.0).sum(-1)


def kl_bernoulli_uniform_logits(logits: Tensor) -> Tensor:
    """KL(Bern(p) || Bern(1/2)) summed over the last axis, from logits l (p = sigmoid(l)), stable for large |l|:

        sum_i p_i log p_i + (1 - p_i) log(1 - p_i) + log 2,
        p log p + (1-p) log(1-p) = p logsigmoid(l) + (1-p) logsigmoid(-l)
    """
    p = torch.sigmoid(logits)
    return (p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits) + _LN_2).sum(-1)


def sum_squared_error(x: Tensor, x_hat: Tensor) -> Tensor:
    """Per-image sum of squared errors (the paper's "MSE"): sum_p (x_p - x_hat_p)^2  ->  (B,)."""
    return (x - x_hat).square().reshape(x.shape[0], -1).sum(-1)


def code_diversity(probs: Tensor) -> tuple[int, float]:
    """How much a Bernoulli posterior's code depends on the image, over a set of images (N, d) of p = q(z=1|x):

    * distinct codes: how many different thresholded codes (p > 1/2) the N images get (1: one code for all);
    * spread: mean over latents of the standard deviation over images of p_j (0: every image gets the same q).

    A collapsed encoder (the failure of issue 11) shows 1 (or a few) codes and a spread near 0, typically with the
    KL at its maximum d ln 2, i.e. a deterministic, image-independent code.
    """
    if probs.ndim != 2 or probs.shape[0] < 2:
        raise ValueError(f"code_diversity wants probabilities of shape (N >= 2, d), got {tuple(probs.shape)}")
    distinct = torch.unique(probs > 0.5, dim=0).shape[0]
    return int(distinct), probs.std(0).mean().item()
