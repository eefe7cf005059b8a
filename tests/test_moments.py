"""Latent moments (silentvae.moments) against independent computations.

Bernoulli: the direct definition E[(z - p)^k] = p (1-p)^k + (1-p) (-p)^k over z in {0, 1}.
Gaussian: a 1-D Gauss-Hermite rule (exact for polynomials of degree <= 2n-1) and a large
Monte-Carlo estimate (within 4 standard errors).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from silentvae.moments import LatentMoments, bernoulli_moments, gaussian_moments

from helpers import monte_carlo


def _bernoulli_central_direct(p: torch.Tensor, k: int) -> torch.Tensor:
    """E[(z - p)^k] by summing over the two outcomes z = 1 (prob p) and z = 0 (prob 1 - p)."""
    return p * (1 - p) ** k + (1 - p) * (0 - p) ** k


PROBS = torch.tensor([[0.0, 1.0, 0.5, 1e-12, 1 - 1e-12],
                      [0.1, 0.25, 0.7, 0.9, 0.333]], dtype=torch.float64)


def test_bernoulli_moments_match_definition():
    p = torch.cat([PROBS, torch.rand(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)])
    m = bernoulli_moments(p)
    assert isinstance(m, LatentMoments) and m.dim == 5
    torch.testing.assert_close(m.mean, p, rtol=0, atol=0)
    # mean by definition: E[z] = 1 * p + 0 * (1 - p)
    torch.testing.assert_close(m.mean, 1.0 * p + 0.0 * (1 - p), rtol=0, atol=0)
    for k, got in ((2, m.var), (3, m.m3), (4, m.m4)):
        torch.testing.assert_close(got, _bernoulli_central_direct(p, k), rtol=1e-13, atol=1e-16)


def test_bernoulli_moments_boundary_values_are_exactly_zero():
    m = bernoulli_moments(torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    for t in (m.var, m.m3, m.m4):
        assert torch.equal(t, torch.zeros_like(t))


def test_bernoulli_moment_gradients_match_definition():
    p = torch.rand(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64).requires_grad_()
    m = bernoulli_moments(p)
    coef = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = torch.autograd.grad((coef[0] * m.var + coef[1] * m.m3 + coef[2] * m.m4).sum(), p)[0]
    ref_obj = sum((coef[k - 2] * _bernoulli_central_direct(p, k)).sum() for k in (2, 3, 4))
    ref = torch.autograd.grad(ref_obj, p)[0]
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)


def test_gaussian_moments_match_gauss_hermite_quadrature():
    g = torch.Generator().manual_seed(4)
    mean = torch.randn(3, 7, generator=g, dtype=torch.float64) * 2
    var = torch.rand(3, 7, generator=g, dtype=torch.float64) * 3 + 1e-3
    var[0, 0] = 0.0  # degenerate latent: all central moments 0
    m = gaussian_moments(mean, var)
    t, w = np.polynomial.hermite_e.hermegauss(8)  # exact for degree <= 15
    t = torch.tensor(t, dtype=torch.float64)
    w = torch.tensor(w / math.sqrt(2 * math.pi), dtype=torch.float64)
    z = mean[..., None] + var.sqrt()[..., None] * t          # (3, 7, nodes)
    e = lambda f: (w * f).sum(-1)                             # noqa: E731
    torch.testing.assert_close(m.mean, e(z), rtol=1e-12, atol=1e-13)
    for k, got in ((2, m.var), (3, m.m3), (4, m.m4)):
        torch.testing.assert_close(got, e((z - mean[..., None]) ** k), rtol=1e-11, atol=1e-12)


def test_gaussian_moments_match_monte_carlo():
    g = torch.Generator().manual_seed(5)
    mean = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    var = torch.tensor([0.5, 2.0, 0.1], dtype=torch.float64)
    m = gaussian_moments(mean[None], var[None])
    n = 400_000
    z = mean + var.sqrt() * torch.randn(n, 3, generator=g, dtype=torch.float64)
    for k, got in ((1, m.mean), (2, m.var), (3, m.m3), (4, m.m4)):
        vals = z if k == 1 else (z - mean) ** k
        est, se = monte_carlo(vals)
        assert torch.all((got[0] - est).abs() <= 4 * se), (k, got, est, se)


@pytest.mark.parametrize("make", ["bernoulli", "gaussian"])
def test_float32_agrees_with_float64(make):
    g = torch.Generator().manual_seed(6)
    a = torch.rand(5, 9, generator=g, dtype=torch.float64)
    b = torch.rand(5, 9, generator=g, dtype=torch.float64) * 2
    fn = (lambda dt: bernoulli_moments(a.to(dt))) if make == "bernoulli" else \
         (lambda dt: gaussian_moments(b.to(dt) - 1, a.to(dt)))
    m32, m64 = fn(torch.float32), fn(torch.float64)
    for name in ("mean", "var", "m3", "m4"):
        t32, t64 = getattr(m32, name), getattr(m64, name)
        assert t32.dtype == torch.float32
        torch.testing.assert_close(t32.double(), t64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", [1.0, -2.5, 0.0])
def test_with_constant_appends_deterministic_latent(value):
    g = torch.Generator().manual_seed(7)
    p = torch.rand(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    m = bernoulli_moments(p)
    mc = m.with_constant(value)
    assert mc.dim == 4 and m.dim == 3
    for name in ("mean", "var", "m3", "m4"):
        full, orig = getattr(mc, name), getattr(m, name)
        assert full.shape == (4, 4) and full.dtype == torch.float64
        assert torch.equal(full[:, :3], orig)
    assert torch.equal(mc.mean[:, 3], torch.full((4,), value, dtype=torch.float64))
    for name in ("var", "m3", "m4"):
        assert torch.equal(getattr(mc, name)[:, 3], torch.zeros(4, dtype=torch.float64))
    # gradients still reach the original parameters
    (grad,) = torch.autograd.grad(mc.var.sum(), p)
    torch.testing.assert_close(grad, 1 - 2 * p.detach())


def test_with_constant_keeps_dtype_float32():
    mc = gaussian_moments(torch.zeros(2, 3), torch.ones(2, 3)).with_constant()
    assert mc.mean.dtype == torch.float32 and mc.mean[0, -1].item() == 1.0


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [-0.1, 1.1, -1e-9])
def test_bernoulli_rejects_probs_outside_unit_interval(bad):
    p = torch.full((2, 3), 0.5, dtype=torch.float64)
    p[1, 2] = bad
    with pytest.raises(ValueError, match="probs"):
        bernoulli_moments(p)
    bernoulli_moments(p, validate=False)  # explicit opt-out skips the value check


def test_bernoulli_rejects_integer_probs():
    with pytest.raises(ValueError, match="probs"):
        bernoulli_moments(torch.ones(2, 3, dtype=torch.int64))


def test_gaussian_rejects_negative_variance():
    var = torch.ones(2, 3, dtype=torch.float64)
    var[0, 1] = -1e-3
    with pytest.raises(ValueError, match="var"):
        gaussian_moments(torch.zeros(2, 3, dtype=torch.float64), var)
    gaussian_moments(torch.zeros(2, 3, dtype=torch.float64), var, validate=False)


def test_gaussian_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="mean"):
        gaussian_moments(torch.zeros(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="var"):
        gaussian_moments(torch.zeros(2, 3), torch.ones(3, 3))


def test_gaussian_rejects_integer_inputs():
    with pytest.raises(ValueError, match="mean"):
        gaussian_moments(torch.zeros(2, 3, dtype=torch.int32), torch.ones(2, 3))


def test_latent_moments_rejects_mismatched_shapes():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="m4"):
        LatentMoments(mean=z, var=z, m3=z, m4=torch.zeros(2, 4))
