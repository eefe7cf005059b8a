r"""Encoders and decoders of the paper's experiments (Appendix B.2).

Encoders map images to a mean-field posterior (:mod:`silentvae.posteriors`):

* :class:`MnistEncoder`  - Table 5: 3 x Conv3x3 (ReLU, ReLU, -), Flatten, Linear.
* :class:`CifarEncoder`  - Table 7: 4 x Conv4x4 (strides 2, 2, 2, 1) each + ReLU + BatchNorm, Flatten, Linear.

Decoders score x given z. Every decoder has ``loglik(x, z)`` (sum over pixels of log p(x|z), one
value per sample) and ``mean(z)``/``std(z)`` images; linear decoders also have ``forward(z)`` (p(x|z) as a
``torch.distributions`` object) and the closed form ``expected_loglik(x, q)`` = E_q[log p(x|z)] that gives
Silent Gradients:

* :class:`LinearDecoder`           - Section 3: N(x; W z + b, sigma2 I), fixed sigma2.
* :class:`LinearPrecisionDecoder`  - Section 4.1: N(x; W_mu z + b_mu, diag 1/alpha^2), alpha = W_a z + b_a.
* :class:`MnistConvDecoder`        - Table 6: Linear, Reshape, 4 x Conv3x3 + ReLU, Conv1x1.
* :class:`CifarConvDecoder`        - Table 8: Linear, Reshape, 4 x ConvTranspose4x4 (+ ReLU + BatchNorm but the last).

The conv decoders output a mean and a log standard deviation per pixel (learnable per-pixel
variance). Channel widths the paper leaves out are arguments with documented defaults.
The linear decoders carry their bias as ``nn.Linear``'s bias, which is exactly the paper's
constant-latent trick (a weight column on a latent fixed at 1).
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

from .posteriors import BernoulliPosterior, GaussianPosterior

__all__ = ["MnistEncoder", "CifarEncoder", "LinearDecoder", "LinearPrecisionDecoder", "MnistConvDecoder",
           "CifarConvDecoder", "LATENT_KINDS", "gaussian_loglik_from_log_std"]

LATENT_KINDS = ("gaussian", "bernoulli")
_LOG_2PI = math.log(2.0 * math.pi)
#: Bounds on the conv decoders' per-pixel log standard deviation. exp(-9) ~ 1.2e-4 is well below
#: the std of the dequantisation noise (1/256/sqrt(12) ~ 1.1e-3), so the bound never binds a good model.
LOG_STD_MIN, LOG_STD_MAX = -9.0, 3.0


def _check_latent(latent: str) -> str:
    if latent not in LATENT_KINDS:
        raise ValueError(f"latent must be one of {LATENT_KINDS}, got {latent!r}")
    return latent


class _Encoder(nn.Module):
    """Shared head: features -> Linear -> posterior parameters (2d for Gaussian, d logits for Bernoulli)."""

    def __init__(self, features: nn.Module, num_features: int, latent_dim: int, latent: str):
        super().__init__()
        self.latent = _check_latent(latent)
        self.latent_dim = latent_dim
        self.features = features
        self.head = nn.Linear(num_features, latent_dim * (2 if latent == "gaussian" else 1))

    @torch.no_grad()
    def standardize_head_(self, images: Tensor) -> None:
        """Data-dependent initialisation of the head (as in LSUV, Mishkin & Matas 2016): rescale and shift it so
        that each latent's location -- its Bernoulli logit, or its Gaussian mean -- has mean 0 and standard
        deviation 1 over ``images``: l_j <- (l_j - mean_n l_j) / std_n l_j. The variance outputs keep their init.

        Why (the paper leaves the initialisation open): at PyTorch's default init the Table 5 encoder's logits are
        ~0.02 for every image (p = 1/2 +- 0.005), so samples carry nothing about the image and REINFORCE's noise,
        which AdamW turns into steps of ~lr per weight over 25,088 inputs, walks all codes into the same saturated
        value before any signal arrives (mnist5k, lr 1e-4, 5 epochs: val MSE 51.7 = the mean image's; 36.8 after
        this init). BatchNorm statistics are not touched (the forward pass runs on copies of the buffers).
        """
        if images.shape[0] < 2:
            raise ValueError(f"standardize_head_ needs at least 2 images, got {images.shape[0]}")
        buffers = {name: b.clone() for name, b in self.features.named_buffers()}
        params = dict(self.features.named_parameters())
        feats = torch.func.functional_call(self.features, (params, buffers), (images,)).flatten(1)
        d = self.latent_dim
        loc = self.head(feats)[:, :d]
        mean, std = loc.mean(0), loc.std(0).clamp_min(torch.finfo(loc.dtype).tiny)
        self.head.weight[:d] /= std[:, None]
        self.head.bias[:d] = (self.head.bias[:d] - mean) / std

    def forward(self, x: Tensor) -> GaussianPosterior | BernoulliPosterior:
        h = self.head(self.features(x).flatten(1))
        if self.latent == "gaussian":
            return GaussianPosterior.from_encoder_output(h)
        return BernoulliPosterior.from_encoder_output(h)


class MnistEncoder(_Encoder):
    """Table 5 encoder: Conv3x3(s1,p1)+ReLU, Conv3x3+ReLU, Conv3x3, Flatten, Linear.

    Args:
        in_shape: (C, H, W) of the images, default MNIST (1, 28, 28).
        channels: width of the three conv layers (not given in the paper; default 32).
        latent_dim: number of latents d (paper: 200).
        latent: "gaussian" or "bernoulli".
    """

    def __init__(self, in_shape=(1, 28, 28), channels: int = 32, latent_dim: int = 200, latent: str = "gaussian"):
        c, h, w = in_shape
        features = nn.Sequential(
            nn.Conv2d(c, channels, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1),
        )
        super().__init__(features, channels * h * w, latent_dim, latent)


class CifarEncoder(_Encoder):
    """Table 7 encoder for 32x32 images: Conv4x4 s2 (32->16->8), s2 (->4), s1 p0 (->1), each + ReLU + BatchNorm.

    Widths double per layer: channels, 2c, 4c, 8c (not given in the paper; default channels=32).
    """

    def __init__(self, in_shape=(3, 32, 32), channels: int = 32, latent_dim: int = 200, latent: str = "gaussian"):
        c, h, w = in_shape
        if (h, w) != (32, 32):
            raise ValueError(f"CifarEncoder needs 32x32 images (Table 7 strides), got in_shape={in_shape}")
        widths = [c, channels, 2 * channels, 4 * channels, 8 * channels]
        layers: list[nn.Module] = []
        for i, (stride, pad) in enumerate([(2, 1), (2, 1), (2, 1), (1, 0)]):
            layers += [nn.Conv2d(widths[i], widths[i + 1], 4, stride, pad), nn.ReLU(), nn.BatchNorm2d(widths[i + 1])]
        super().__init__(nn.Sequential(*layers), 8 * channels, latent_dim, latent)


def gaussian_loglik_from_log_std(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """sum_p log N(x_p; mean_p, exp(log_std_p)^2)  ->  (B,)."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - 0.5 * _LOG_2PI).flatten(1).sum(-1)


def _out_shape(out_features: int | Sequence[int]) -> tuple[int, ...]:
    """``out_features`` as a shape: an int D -> (D,), a shape (C, H, W) -> itself; every size a positive int."""
    shape = (out_features,) if isinstance(out_features, numbers.Integral) else tuple(out_features)
    if not shape or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(f"out_features must be a positive int (values per example) or a shape of positive ints "
                         f"such as (1, 28, 28), got {out_features!r}")
    return tuple(int(n) for n in shape)


def _expected_loglik(decoder: nn.Module, x: Tensor, q) -> Tensor:
    from .elbo import expected_loglik  # elbo imports this module: look it up at call time
    return expected_loglik(x, q, decoder)


class LinearDecoder(nn.Module):
    """p(x|z) = N(x; W z + b, sigma2 I) with fixed sigma2 (paper Eq. 2; Section 3.2 uses sigma2 = 0.01).

    Args:
        latent_dim: d, the number of latents.
        out_features: values per example D, or the shape of one example (e.g. (1, 28, 28)); x is flattened.
        sigma2: the fixed variance of every value.
        zero_init: W = 0 at the start (see below); False keeps nn.Linear's default init.

    ``decoder(z)`` is p(x|z) as a ``torch.distributions`` object (Independent Normal over the example's shape), for
    sampling loops; :meth:`expected_loglik` is the closed form E_q[log p(x|z)] that gives Silent Gradients.

    W starts at zero (the paper leaves the initialisation open). Why: the expected error is
    ||x - W E[z] - b||^2 + sum_i ||w_i||^2 Var(z_i) (Eq. 4), divided by 2 sigma2 = 0.02. With nn.Linear's
    default init (||w_i||^2 ~ 784/600) the variance term is ~16 nats per latent at p = 1/2 and its gradient
    pushes every Bernoulli p_i towards 0 or 1 in the same direction for every image, long before the
    image-dependent mean term has organised anything; once p(1-p) ~ 0 the sigmoid passes no gradient and the
    encoder is stuck in an image-independent code (KL = 200 ln 2, MSE of the mean image) -- for discrete SG,
    Gumbel-Softmax and REINFORCE alike, at every learning rate of the paper's grid. Even a small random init
    (std 0.01) collapses; from W = 0 the variance penalty grows only as fast as W learns image structure
    from the encoder's (image-dependent) initial codes. Gaussian latents do not saturate, and learn faster
    from W = 0 too (mnist5k, lr 5e-4, epoch 5: 7.14 vs 7.28 val BPD). tests/test_models.py and
    tests/test_discrete_learns.py hold the evidence; ``zero_init=False`` keeps nn.Linear's default init
    (RunConfig ``init="pytorch"``, for the initialisation ablation tools/init_ablation.py).
    """

    def __init__(self, latent_dim: int, out_features: int | Sequence[int], sigma2: float = 0.01,
                 zero_init: bool = True):
        super().__init__()
        if not sigma2 > 0:
            raise ValueError(f"sigma2 must be positive, got {sigma2}")
        self.out_shape = _out_shape(out_features)
        self.sigma2 = float(sigma2)
        self.linear = nn.Linear(latent_dim, math.prod(self.out_shape))
        if zero_init:
            nn.init.zeros_(self.linear.weight)

    def forward(self, z: Tensor) -> Independent:
        """p(x|z) = N(W z + b, sigma2 I) for latents z (..., d), over values shaped ``out_shape``."""
        return Independent(Normal(self.mean(z), math.sqrt(self.sigma2)), len(self.out_shape))

    def mean(self, z: Tensor) -> Tensor:
        return self.linear(z).unflatten(-1, self.out_shape)

    def std(self, z: Tensor) -> Tensor:
        return torch.full_like(self.mean(z), math.sqrt(self.sigma2))

    def loglik(self, x: Tensor, z: Tensor) -> Tensor:
        sq = (x.flatten(1) - self.linear(z)).square().sum(-1)
        return -0.5 * sq / self.sigma2 - 0.5 * sq.new_tensor(x[0].numel() * math.log(2 * math.pi * self.sigma2))

    def expected_loglik(self, x: Tensor, q) -> Tensor:
        """Closed-form E_q[log p(x|z)] in nats per example (B,) (:func:`silentvae.analytic.expected_loglik_fixed`);
        q is any q :func:`silentvae.silent_elbo` takes."""
        return _expected_loglik(self, x, q)


class LinearPrecisionDecoder(nn.Module):
    """p(x|z) = N(x; W_mu z + b_mu, diag(1/alpha(z)^2)), alpha(z) = W_a z + b_a (paper Eq. 5).

    Args:
        latent_dim: d, the number of latents.
        out_features: values per example D, or the shape of one example (e.g. (1, 28, 28)); x is flattened.
        init_std: the standard deviation 1/alpha every value starts near (b_a = 1/init_std).
        zero_init: W_mu = 0 at the start; False keeps nn.Linear's default init.

    ``decoder(z)`` is p(x|z) as a ``torch.distributions`` object (Independent Normal, scale 1/|alpha(z)|);
    :meth:`expected_loglik` is the paper's closed form: exact quadratic term, E[log alpha^2] by the 2nd-order
    Taylor form of Eq. 7 -- an approximation, not a bound (:func:`silentvae.silent_elbo`).

    W_mu starts at zero, for the reason given in :class:`LinearDecoder` (the variance term of the closed form,
    here sum_i ||w_mu,i * alpha||^2 Var(z_i), would otherwise saturate Bernoulli codes before they carry the image);
    alpha starts near 1/init_std everywhere (small random W_a, b_a = 1/init_std).
    """

    def __init__(self, latent_dim: int, out_features: int | Sequence[int], init_std: float = 0.1,
                 zero_init: bool = True):
        super().__init__()
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        self.out_shape = _out_shape(out_features)
        pixels = math.prod(self.out_shape)
        self.mu = nn.Linear(latent_dim, pixels)
        self.alpha = nn.Linear(latent_dim, pixels)
        if zero_init:
            nn.init.zeros_(self.mu.weight)
        with torch.no_grad():
            self.alpha.weight.mul_(0.1 / init_std)  # keeps W_a z small relative to b_a
            self.alpha.bias.fill_(1.0 / init_std)

    def forward(self, z: Tensor) -> Independent:
        """p(x|z) = N(W_mu z + b_mu, 1/alpha(z)^2) for latents z (..., d), over values shaped ``out_shape``."""
        return Independent(Normal(self.mean(z), self.std(z)), len(self.out_shape))

    def mean(self, z: Tensor) -> Tensor:
        return self.mu(z).unflatten(-1, self.out_shape)

    def std(self, z: Tensor) -> Tensor:
        return 1.0 / self.alpha(z).abs().clamp_min(1e-6).unflatten(-1, self.out_shape)

    def loglik(self, x: Tensor, z: Tensor) -> Tensor:
        """sum_p -1/2 (x - mu)^2 alpha^2 + 1/2 log alpha^2 - 1/2 log 2 pi (paper Eq. 6, sampled z)."""
        a2 = self.alpha(z).square().clamp_min(1e-12)
        return (-0.5 * (x.flatten(1) - self.mu(z)).square() * a2 + 0.5 * torch.log(a2) - 0.5 * _LOG_2PI).sum(-1)

    def expected_loglik(self, x: Tensor, q) -> Tensor:
        """E_q[log p(x|z)] in nats per example (B,), exact quadratic term and Taylor log term
        (:func:`silentvae.analytic.expected_loglik_learnable`); q is any q :func:`silentvae.silent_elbo` takes."""
        return _expected_loglik(self, x, q)


class _ConvGaussianDecoder(nn.Module):
    """Shared part of the conv decoders: a network emitting 2C channels = (mean, raw log-std)."""

    def __init__(self, net: nn.Module, out_shape):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = net

    def _params(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(z)
        mean, log_std = h.chunk(2, dim=1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def mean(self, z: Tensor) -> Tensor:
        return self._params(z)[0]

    def std(self, z: Tensor) -> Tensor:
        return self._params(z)[1].exp()

    def loglik(self, x: Tensor, z: Tensor) -> Tensor:
        mean, log_std = self._params(z)
        return gaussian_loglik_from_log_std(x, mean, log_std)


class MnistConvDecoder(_ConvGaussianDecoder):
    """Table 6: Linear -> Reshape (channels, H, W) -> 4 x [Conv3x3 + ReLU] -> Conv1x1 to (mean, log-std).

    ``channels`` (default 32) is not given in the paper.
    """

    def __init__(self, latent_dim: int, out_shape=(1, 28, 28), channels: int = 32):
        c, h, w = out_shape
        layers: list[nn.Module] = [nn.Linear(latent_dim, channels * h * w), nn.Unflatten(1, (channels, h, w))]
        for _ in range(4):
            layers += [nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU()]
        layers.append(nn.Conv2d(channels, 2 * c, 1, 1, 0))
        super().__init__(nn.Sequential(*layers), out_shape)


class CifarConvDecoder(_ConvGaussianDecoder):
    """Table 8: Linear -> Reshape (8c, 1, 1) -> ConvT4x4 s1 p0 (->4), s2 (->8), s2 (->16), s2 (->32).

    Each ConvTranspose but the last is followed by ReLU + BatchNorm; widths 8c, 4c, 2c, c, 2C
    (``channels`` = c, default 32, not given in the paper).
    """

    def __init__(self, latent_dim: int, out_shape=(3, 32, 32), channels: int = 32):
        c, h, w = out_shape
        if (h, w) != (32, 32):
            raise ValueError(f"CifarConvDecoder makes 32x32 images (Table 8 strides), got out_shape={out_shape}")
        widths = [8 * channels, 4 * channels, 2 * channels, channels]
        layers: list[nn.Module] = [nn.Linear(latent_dim, widths[0]), nn.Unflatten(1, (widths[0], 1, 1)),
                                   nn.ConvTranspose2d(widths[0], widths[1], 4, 1, 0), nn.ReLU(), nn.BatchNorm2d(widths[1])]
        for i in (1, 2):
            layers += [nn.ConvTranspose2d(widths[i], widths[i + 1], 4, 2, 1), nn.ReLU(), nn.BatchNorm2d(widths[i + 1])]
        layers.append(nn.ConvTranspose2d(widths[3], 2 * c, 4, 2, 1))
        super().__init__(nn.Sequential(*layers), out_shape)
