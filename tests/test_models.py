"""Encoders, decoders (silentvae.models) and the posteriors' gradient-scaling device.

* Shapes of every encoder/decoder for both latent kinds, architecture per Tables 5-8.
* ``loglik`` of every decoder equals a direct ``torch.distributions.Normal`` computation with that
  decoder's ``mean``/``std``.
* The linear decoders' closed forms collapse to ``loglik`` at a (nearly) deterministic posterior.
* ``posterior.scale_grad(w)``: value unchanged, gradient multiplied by w.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from silentvae.models import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    CifarConvDecoder,
    CifarEncoder,
    LinearDecoder,
    LinearPrecisionDecoder,
    MnistConvDecoder,
    MnistEncoder,
    gaussian_loglik_from_log_std,
)
from silentvae.posteriors import BernoulliPosterior, GaussianPosterior, scale_grad

F64 = torch.float64


def normal_loglik(x, mean, std):
    return Normal(mean, std).log_prob(x).flatten(1).sum(-1)


# ----------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("latent", ["gaussian", "bernoulli"])
def test_mnist_encoder_shapes(latent):
    torch.manual_seed(0)
    enc = MnistEncoder((1, 28, 28), channels=3, latent_dim=7, latent=latent)
    post = enc(torch.rand(4, 1, 28, 28))
    if latent == "gaussian":
        assert isinstance(post, GaussianPosterior)
        assert post.mean.shape == post.var.shape == (4, 7)
        assert bool((post.var > 0).all())
    else:
        assert isinstance(post, BernoulliPosterior)
        assert post.logits.shape == (4, 7)
        assert bool(((post.probs > 0) & (post.probs < 1)).all())
    assert enc.head.out_features == 7 * (2 if latent == "gaussian" else 1)
    convs = [m for m in enc.features if isinstance(m, nn.Conv2d)]  # Table 5
    assert [(c.kernel_size, c.stride, c.padding) for c in convs] == [((3, 3), (1, 1), (1, 1))] * 3
    assert isinstance(enc.features[-1], nn.Conv2d)  # no activation after the last conv
    assert enc.head.in_features == 3 * 28 * 28


@pytest.mark.parametrize("latent", ["gaussian", "bernoulli"])
def test_cifar_encoder_shapes(latent):
    torch.manual_seed(0)
    enc = CifarEncoder((3, 32, 32), channels=2, latent_dim=5, latent=latent)
    post = enc(torch.rand(3, 3, 32, 32))
    assert post.mean.shape == (3, 5)
    assert post.kind == latent
    convs = [m for m in enc.features if isinstance(m, nn.Conv2d)]  # Table 7
    assert [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [(4, 2, 1), (4, 2, 1), (4, 2, 1),
                                                                            (4, 1, 0)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in enc.features) == 4
    assert enc.head.in_features == 8 * 2
    with pytest.raises(ValueError, match="32x32"):
        CifarEncoder((3, 28, 28))


def test_encoder_rejects_unknown_latent():
    with pytest.raises(ValueError, match="latent must be one of"):
        MnistEncoder(latent="categorical")


def test_gaussian_posterior_from_encoder_output():
    h = torch.tensor([[0.5, -1.0, -30.0, 2.0]], dtype=F64)
    post = GaussianPosterior.from_encoder_output(h)
    assert torch.equal(post.mean, h[:, :2])
    torch.testing.assert_close(post.var, nn.functional.softplus(h[:, 2:]) + 1e-6)
    assert bool((post.var >= 1e-6).all())


# ----------------------------------------------------------------------------------------------
# Decoders
# ----------------------------------------------------------------------------------------------

def _decoders():
    torch.manual_seed(0)
    return {
        "linear": (LinearDecoder(6, (1, 28, 28), sigma2=0.04), (1, 28, 28)),
        "precision": (LinearPrecisionDecoder(6, (1, 28, 28), init_std=0.2), (1, 28, 28)),
        "mnist_conv": (MnistConvDecoder(6, (1, 28, 28), channels=3), (1, 28, 28)),
        "cifar_conv": (CifarConvDecoder(6, (3, 32, 32), channels=2), (3, 32, 32)),
    }


@pytest.mark.parametrize("name", ["linear", "precision", "mnist_conv", "cifar_conv"])
def test_decoder_shapes_and_loglik_match_normal(name):
    dec, shape = _decoders()[name]
    dec = dec.double().eval()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, 6, generator=g, dtype=F64)
    x = torch.rand(5, *shape, generator=g, dtype=F64)
    mean, std = dec.mean(z), dec.std(z)
    assert mean.shape == std.shape == (5, *shape)
    assert bool((std > 0).all())
    ll = dec.loglik(x, z)
    assert ll.shape == (5,)
    torch.testing.assert_close(ll, normal_loglik(x, mean, std), rtol=1e-10, atol=1e-8)


def test_linear_decoder_std_and_validation():
    dec = LinearDecoder(3, (1, 2, 2), sigma2=0.09)
    assert torch.equal(dec.std(torch.zeros(2, 3)), torch.full((2, 1, 2, 2), 0.3))
    with pytest.raises(ValueError, match="sigma2 must be positive"):
        LinearDecoder(3, (1, 2, 2), sigma2=0.0)


def test_linear_precision_decoder_init_and_std():
    torch.manual_seed(0)
    dec = LinearPrecisionDecoder(4, (1, 3, 3), init_std=0.25)
    assert torch.equal(dec.alpha.bias, torch.full((9,), 4.0))
    z = torch.randn(2, 4)
    torch.testing.assert_close(dec.std(z), 1.0 / dec.alpha(z).abs().view(2, 1, 3, 3))
    torch.testing.assert_close(dec.std(torch.zeros(1, 4)), torch.full((1, 1, 3, 3), 0.25))


def test_conv_decoder_log_std_is_clamped():
    torch.manual_seed(0)
    dec = MnistConvDecoder(3, (1, 28, 28), channels=2).double()
    with torch.no_grad():
        last = dec.net[-1]
        last.bias[1] = 50.0   # log-std channel far above the bound
    std = dec.std(torch.zeros(2, 3, dtype=F64))
    torch.testing.assert_close(std, torch.full_like(std, math.exp(LOG_STD_MAX)))
    with torch.no_grad():
        last.bias[1] = -50.0
    std = dec.std(torch.zeros(2, 3, dtype=F64))
    torch.testing.assert_close(std, torch.full_like(std, math.exp(LOG_STD_MIN)))


def test_gaussian_loglik_from_log_std_matches_normal():
    g = torch.Generator().manual_seed(2)
    x, mean = torch.rand(3, 2, 4, 4, generator=g, dtype=F64), torch.rand(3, 2, 4, 4, generator=g, dtype=F64)
    log_std = torch.randn(3, 2, 4, 4, generator=g, dtype=F64)
    torch.testing.assert_close(gaussian_loglik_from_log_std(x, mean, log_std),
                               normal_loglik(x, mean, log_std.exp()), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("cls", [LinearDecoder, LinearPrecisionDecoder])
def test_expected_loglik_collapses_to_loglik_at_a_point_mass(cls):
    """Gaussian with var -> 0 and Bernoulli with saturated logits: E_q[log p(x|z)] = log p(x|z*)."""
    torch.manual_seed(3)
    dec = cls(5, (1, 3, 3)).double()
    # both start at W (W_mu) = 0, where latents do not matter yet: give them a trained-looking W
    torch.nn.init.normal_(dec.linear.weight if cls is LinearDecoder else dec.mu.weight)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 3, 3, generator=g, dtype=F64)
    mean = torch.randn(4, 5, generator=g, dtype=F64)
    gauss = GaussianPosterior(mean, torch.full_like(mean, 1e-14))
    torch.testing.assert_close(dec.expected_loglik(x, gauss), dec.loglik(x, mean), rtol=1e-9, atol=1e-9)
    bits = (torch.rand(4, 5, generator=g, dtype=F64) < 0.5).to(F64)
    bern = BernoulliPosterior(60.0 * (2 * bits - 1))
    torch.testing.assert_close(dec.expected_loglik(x, bern), dec.loglik(x, bits), rtol=1e-9, atol=1e-9)
    # and with real spread the closed form differs (the comparison above is not vacuous)
    wide = GaussianPosterior(mean, torch.ones_like(mean))
    assert (dec.expected_loglik(x, wide) - dec.loglik(x, mean)).abs().min() > 1e-3


# ----------------------------------------------------------------------------------------------
# scale_grad
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_scale_grad_function(w):
    t = torch.tensor([1.5, -2.0, 0.25], dtype=F64, requires_grad=True)
    out = scale_grad(t, w)
    if w in (0.0, 1.0):
        assert torch.equal(out, t)
    else:
        torch.testing.assert_close(out, t, rtol=1e-15, atol=0)
    up = torch.tensor([2.0, 3.0, -1.0], dtype=F64)
    y = (out * up).sum() + (t * 0).sum()  # keep t in the graph even when out is detached (w = 0)
    (g,) = torch.autograd.grad(y, t)
    torch.testing.assert_close(g, w * up, rtol=1e-15, atol=0)
    assert out.requires_grad == (w != 0.0)


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("kind", ["gaussian", "bernoulli"])
def test_posterior_scale_grad(kind, w):
    torch.manual_seed(4)
    d = 4
    enc = nn.Linear(3, 2 * d if kind == "gaussian" else d).double()
    dec = LinearDecoder(d, (6,), sigma2=0.3).double()
    feats = torch.randn(5, 3, dtype=F64)
    x = torch.rand(5, 6, dtype=F64)
    cls = GaussianPosterior if kind == "gaussian" else BernoulliPosterior

    def objective(scale):
        post = cls.from_encoder_output(enc(feats))
        post = post if scale is None else post.scale_grad(scale)
        # exercises every parameter of the posterior (moments, KL, log-prob) through the scaled view
        value = -dec.expected_loglik(x, post).sum() + post.kl().sum() + post.log_prob(post.mean.detach()).sum()
        params = list(enc.parameters())
        grads = torch.autograd.grad(value, params, allow_unused=True)  # w = 0: nothing reaches the encoder
        return value, [torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads)]

    v_ref, g_ref = objective(None)
    v, g = objective(w)
    if w in (0.0, 1.0):
        assert torch.equal(v, v_ref)
    else:
        torch.testing.assert_close(v, v_ref, rtol=1e-13, atol=0)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, w * b, rtol=1e-12, atol=1e-14)
    assert max(b.abs().max() for b in g_ref) > 0


def test_scale_grad_mixes_two_paths():
    """w * grad(A) + (1 - w) * grad(B): the trainer's Eq. 8 device, on one shared tensor."""
    t = torch.tensor([0.7, -0.2], dtype=F64, requires_grad=True)
    w = 0.3
    total = (scale_grad(t, w) ** 3).sum() + (scale_grad(t, 1 - w).sin()).sum()
    (g,) = torch.autograd.grad(total, t)
    torch.testing.assert_close(g, w * 3 * t.detach() ** 2 + (1 - w) * t.detach().cos(), rtol=1e-14, atol=0)


def test_linear_decoders_start_at_zero_weight():
    """W = 0 at init (see LinearDecoder's docstring: the default init collapses Bernoulli codes); b is nn.Linear's."""
    dec = LinearDecoder(200, (1, 28, 28))
    assert torch.count_nonzero(dec.linear.weight) == 0 and torch.count_nonzero(dec.linear.bias) > 0
    prec = LinearPrecisionDecoder(200, (1, 28, 28))
    assert torch.count_nonzero(prec.mu.weight) == 0 and torch.count_nonzero(prec.mu.bias) > 0
    assert torch.count_nonzero(prec.alpha.weight) > 0


@pytest.mark.parametrize("cls, shape, latent", [(MnistEncoder, (1, 28, 28), "bernoulli"),
                                                (MnistEncoder, (1, 28, 28), "gaussian"),
                                                (CifarEncoder, (3, 32, 32), "bernoulli")])
def test_standardize_head_gives_unit_spread_locations(cls, shape, latent):
    """After the data-dependent init each latent's location (logit / mean) has mean 0 and std 1 over the images;
    the Gaussian variance outputs and the BatchNorm statistics are left as they were."""
    torch.manual_seed(0)
    enc = cls(shape, 4, 6, latent=latent).double()
    images = torch.rand(64, *shape, dtype=F64)
    before_head = enc.head.weight[6:].clone(), enc.head.bias[6:].clone()
    before_buffers = {n: b.clone() for n, b in enc.named_buffers()}
    enc.standardize_head_(images)
    for n, b in enc.named_buffers():
        torch.testing.assert_close(b, before_buffers[n], rtol=0, atol=0)
    loc = enc.head(enc.features(images).flatten(1))[:, :6]  # training-mode forward, as standardize_head_ uses
    torch.testing.assert_close(loc.mean(0), torch.zeros(6, dtype=F64), rtol=0, atol=1e-10)
    torch.testing.assert_close(loc.std(0), torch.ones(6, dtype=F64), rtol=1e-10, atol=0)
    torch.testing.assert_close(enc.head.weight[6:], before_head[0], rtol=0, atol=0)
    torch.testing.assert_close(enc.head.bias[6:], before_head[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="at least 2 images"):
        enc.standardize_head_(images[:1])


# ----------------------------------------------------------------------------------------------
# The linear decoders as ordinary modules (issue 29)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [LinearDecoder, LinearPrecisionDecoder])
@pytest.mark.parametrize("out_features, shape", [(6, (6,)), ((1, 2, 3), (1, 2, 3))])
def test_linear_decoders_are_called_like_modules_and_give_a_normal(cls, out_features, shape):
    import inspect

    from torch.distributions import Independent

    assert inspect.signature(cls).parameters["out_features"].default is inspect.Parameter.empty  # no MNIST default
    torch.manual_seed(5)
    dec = cls(4, out_features).double()
    lin = dec.linear if cls is LinearDecoder else dec.mu
    nn.init.normal_(lin.weight)
    z = torch.randn(3, 4, dtype=F64)
    p = dec(z)
    assert isinstance(p, Independent) and p.batch_shape == (3,) and p.event_shape == shape
    mean = (z @ lin.weight.T + lin.bias).view(3, *shape)
    std = (torch.full_like(mean, 0.1) if cls is LinearDecoder
           else 1 / (z @ dec.alpha.weight.T + dec.alpha.bias).abs().view(3, *shape))
    torch.testing.assert_close(p.mean, mean)
    torch.testing.assert_close(p.stddev, std)
    x = torch.rand(3, *shape, dtype=F64)
    torch.testing.assert_close(p.log_prob(x), normal_loglik(x, mean, std))
    torch.testing.assert_close(p.log_prob(x), dec.loglik(x, z))
    assert dec(torch.randn(7, 3, 4, dtype=F64)).sample().shape == (7, 3, *shape)  # sample dimensions kept


def test_out_features_must_be_sizes():
    with pytest.raises(ValueError, match=r"out_features must be a positive int.*\(1, 28, 28\)"):
        LinearPrecisionDecoder(8, 0)
    with pytest.raises(ValueError, match=r"out_features must be a positive int"):
        LinearDecoder(8, (1, "28"))


@pytest.mark.parametrize("cls", [LinearDecoder, LinearPrecisionDecoder])
def test_expected_loglik_takes_torch_distributions_and_equals_enumeration(cls):
    """decoder.expected_loglik(x, q) for q a torch Bernoulli / Independent Normal: the enumerated expectation
    (tests/helpers.py), the same as for the package's posteriors."""
    from torch.distributions import Bernoulli, Independent

    from helpers import bernoulli_enum_fixed, bernoulli_enum_learnable, learnable_objective_from_moments

    torch.manual_seed(6)
    dec = cls(4, 5).double()
    lin = dec.linear if cls is LinearDecoder else dec.mu
    nn.init.normal_(lin.weight)
    g = torch.Generator().manual_seed(6)
    x, logits = torch.rand(3, 5, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64)
    p = torch.sigmoid(logits)
    if cls is LinearDecoder:
        want = bernoulli_enum_fixed(x, p, lin.weight, lin.bias, torch.tensor(dec.sigma2, dtype=F64))["loglik"]
    else:
        e = bernoulli_enum_learnable(x, p, lin.weight, lin.bias, dec.alpha.weight, dec.alpha.bias)
        want = learnable_objective_from_moments(e["quad"], e["alpha_sq"], e["alpha_4"])
    for q in (Bernoulli(logits=logits), Independent(Bernoulli(probs=p), 1), BernoulliPosterior(logits)):
        torch.testing.assert_close(dec.expected_loglik(x, q), want)
    loc, var = torch.randn(3, 4, generator=g, dtype=F64), torch.rand(3, 4, generator=g, dtype=F64) + 0.1
    torch.testing.assert_close(dec.expected_loglik(x, Independent(Normal(loc, var.sqrt()), 1)),
                               dec.expected_loglik(x, GaussianPosterior(loc, var)))
