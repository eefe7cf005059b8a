"""Evaluation metrics (silentvae.metrics) against hand-computed values and torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from silentvae.metrics import (
    code_diversity,
    bits_per_dim,
    kl_bernoulli_uniform_logits,
    kl_gaussian_standard,
    sum_squared_error,
)

# ---------------------------------------------------------------------------------------------
# bits per dimension
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_dims", [1, 784, 3072])
def test_bpd_uniform_density_is_8_bits(num_dims):
    # a uniform density on [0, 1)^D has log p = 0, so ELBO = 0 nats: every 8-bit value is equally
    # likely (probability 1/256 each), i.e. exactly 8 bits per dimension
    assert bits_per_dim(0.0, num_dims) == pytest.approx(8.0, abs=1e-12)


@pytest.mark.parametrize("num_dims", [1, 784])
def test_bpd_hand_values(num_dims):
    ln2, ln256 = math.log(2.0), math.log(256.0)
    d = num_dims
    # ELBO = D ln 256: the density 256^D on the bins -> probability one per pixel -> 0 bits
    assert bits_per_dim(d * ln256, d) == pytest.approx(0.0, abs=1e-12)
    # ELBO = -D ln 2: one bit per dimension worse than the uniform density's 8
    assert bits_per_dim(-d * ln2, d) == pytest.approx(9.0, abs=1e-12)
    # ELBO = +D * 4 ln 2: 4 bits saved per dimension
    assert bits_per_dim(4 * d * ln2, d) == pytest.approx(4.0, abs=1e-12)


def test_bpd_mnist_like_value_and_tensor_input():
    # -ELBO = 1000 nats over 784 pixels: 1000 / (784 ln 2) + 8 bits
    expected = 1000.0 / (784 * math.log(2.0)) + 8.0
    assert bits_per_dim(-1000.0, 784) == pytest.approx(expected, rel=1e-14)
    assert expected == pytest.approx(9.84017, abs=1e-5)  # hand-computed: 1.84017... + 8
    elbo = torch.tensor([-1000.0, 0.0, 784 * math.log(256.0)], dtype=torch.float64)
    out = bits_per_dim(elbo, 784)
    assert isinstance(out, torch.Tensor) and out.shape == (3,)
    torch.testing.assert_close(out, torch.tensor([expected, 8.0, 0.0], dtype=torch.float64), rtol=0, atol=1e-12)
    # monotone: a better (larger) ELBO means fewer bits
    assert out[0] > out[1] > out[2]


@pytest.mark.parametrize("bad", [0, -3, 2.5, "784"])
def test_bpd_rejects_bad_num_dims(bad):
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(0.0, bad)


# ---------------------------------------------------------------------------------------------
# KL divergences
# ---------------------------------------------------------------------------------------------


def test_kl_gaussian_standard_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 7, generator=g, dtype=torch.float64) * 2
    var = torch.rand(5, 7, generator=g, dtype=torch.float64) * 3 + 1e-3
    ref = kl_divergence(Normal(mean, var.sqrt()), Normal(torch.zeros_like(mean), torch.ones_like(var))).sum(-1)
    got = kl_gaussian_standard(mean, var)
    assert got.shape == (5,)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    # zero exactly at the prior
    assert torch.equal(kl_gaussian_standard(torch.zeros(2, 3), torch.ones(2, 3)), torch.zeros(2))


def test_kl_gaussian_standard_gradients_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(3, 4, generator=g, dtype=torch.float64).requires_grad_()
    var = (torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    ref = kl_divergence(Normal(mean, var.sqrt()), Normal(0.0, 1.0)).sum()
    g_ref = torch.autograd.grad(ref, [mean, var])
    g_got = torch.autograd.grad(kl_gaussian_standard(mean, var).sum(), [mean, var])
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_kl_gaussian_standard_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="mean"):
        kl_gaussian_standard(torch.zeros(2, 3), torch.ones(2, 4))


def _torch_bernoulli_kl(p: torch.Tensor) -> torch.Tensor:
    return kl_divergence(Bernoulli(probs=p), Bernoulli(probs=torch.full_like(p, 0.5))).sum(-1)


def test_kl_bernoulli_uniform_matches_torch_distributions():
    g = torch.Generator().manual_seed(2)
    p = torch.rand(6, 9, generator=g, dtype=torch.float64) * 0.98 + 0.01
    ref = _torch_bernoulli_kl(p)
    direct = (p * torch.log(2 * p) + (1 - p) * torch.log(2 * (1 - p))).sum(-1)
    logits = torch.log(p) - torch.log1p(-p)
    got = kl_bernoulli_uniform_logits(logits)
    assert got.shape == (6,)
    torch.testing.assert_close(got, ref, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(got, direct, rtol=1e-11, atol=1e-12)
    # zero at the prior
    torch.testing.assert_close(kl_bernoulli_uniform_logits(torch.zeros(2, 3)), torch.zeros(2), rtol=0, atol=1e-7)


def test_kl_bernoulli_finite_at_boundaries():
    ln2 = math.log(2.0)
    for dtype in (torch.float32, torch.float64):
        logits = torch.tensor([[50.0, -50.0, 0.0], [100.0, -100.0, 3.0]], dtype=dtype, requires_grad=True)
        kl = kl_bernoulli_uniform_logits(logits)
        assert torch.isfinite(kl).all()
        # saturated latents contribute ln 2 each, the logit-0 latent contributes 0
        torch.testing.assert_close(kl[0], torch.tensor(2 * ln2, dtype=dtype), rtol=0, atol=1e-6)
        p3 = torch.sigmoid(torch.tensor(3.0, dtype=torch.float64))
        exp_row1 = 2 * ln2 + (p3 * torch.log(2 * p3) + (1 - p3) * torch.log(2 * (1 - p3))).item()
        torch.testing.assert_close(kl[1], torch.tensor(exp_row1, dtype=dtype), rtol=1e-6, atol=1e-6)
        (grad,) = torch.autograd.grad(kl.sum(), logits)
        assert torch.isfinite(grad).all()
        # d KL / d l = p (1 - p) l: tiny at +-50, exactly 0 at l = 0
        assert grad[0, 2] == 0 and grad[0, :2].abs().max() < 1e-15


def test_kl_bernoulli_gradients_match_torch_distributions():
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(4, 5, generator=g, dtype=torch.float64) * 3).requires_grad_()
    ref = kl_divergence(Bernoulli(logits=logits), Bernoulli(probs=torch.full_like(logits, 0.5))).sum()
    g_ref = torch.autograd.grad(ref, logits)[0]
    g_log = torch.autograd.grad(kl_bernoulli_uniform_logits(logits).sum(), logits)[0]
    torch.testing.assert_close(g_log, g_ref, rtol=1e-10, atol=1e-12)
    # closed form d/dl [KL] = p (1 - p) l
    p = torch.sigmoid(logits.detach())
    torch.testing.assert_close(g_log, p * (1 - p) * logits.detach(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# sum of squared errors
# ---------------------------------------------------------------------------------------------


def test_sum_squared_error():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 2, 4, 5, generator=g, dtype=torch.float64)
    x_hat = torch.rand(3, 2, 4, 5, generator=g, dtype=torch.float64)
    got = sum_squared_error(x, x_hat)
    assert got.shape == (3,)
    ref = torch.tensor([sum((a - b) ** 2 for a, b in zip(x[i].flatten().tolist(), x_hat[i].flatten().tolist()))
                        for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=0)
    # flat input, hand value, zero for a perfect reconstruction
    torch.testing.assert_close(sum_squared_error(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 2.0, 5.0]])),
                               torch.tensor([5.0]))
    assert torch.equal(sum_squared_error(x, x), torch.zeros(3, dtype=torch.float64))


def test_code_diversity_tells_a_collapsed_code_from_a_varying_one():
    collapsed = torch.full((10, 4), 0.999)
    assert code_diversity(collapsed) == (1, 0.0)
    varying = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.9, 0.9], [0.9, 0.1]])
    distinct, spread = code_diversity(varying)
    assert distinct == 3
    col_std = [torch.tensor(c).std().item() for c in ([0.9, 0.1, 0.9, 0.9], [0.1, 0.9, 0.9, 0.1])]
    assert spread == pytest.approx(sum(col_std) / 2)
    with pytest.raises(ValueError, match=r"shape \(N >= 2, d\)"):
        code_diversity(torch.rand(1, 3))
