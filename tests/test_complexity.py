"""Cost of the closed forms, measured by counting, not by wall clock.

* FLOPs (torch.utils.flop_counter.FlopCounterMode) of expected_loglik_fixed and
  expected_loglik_learnable, forward and forward+backward, double when pixels double and when
  latents double: O(B * P * d) time.
* A TorchDispatchMode records the numel of every tensor every aten op returns; the largest is
  bounded by 8 (B P + P d + B d): O(B P + P d + B d) memory, no P^2, d^2, B^2 or B P d term.
  Each shape below is chosen so that the forbidden term it targets exceeds that bound, and a
  meta-test shows the recorder does catch a naive (B, P, d) implementation.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from silentvae.analytic import expected_loglik_fixed, expected_loglik_learnable
from silentvae.moments import bernoulli_moments, gaussian_moments

from helpers import make_problem


class LargestOutput(TorchDispatchMode):
    """Records the numel of every tensor returned by every dispatched op."""

    def __init__(self):
        super().__init__()
        self.largest = 0
        self.largest_op = None
        self.num_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.num_ops += 1
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() > self.largest:
                self.largest, self.largest_op = t.numel(), str(func)
        return out


def _setup(kind, latent_kind, batch, pixels, latents, requires_grad):
    pr = make_problem(batch, pixels, latents, seed=0, dtype=torch.float32, requires_grad=requires_grad)

    def loss():
        if latent_kind == "bernoulli":
            m = bernoulli_moments(torch.sigmoid(pr["logits"]), validate=False)
        else:
            m = gaussian_moments(pr["mean"], pr["var"], validate=False)
        if kind == "fixed":
            return expected_loglik_fixed(pr["x"], m, pr["weight"], pr["bias"], pr["sigma2"]).sum()
        return expected_loglik_learnable(pr["x"], m, pr["weight"], pr["bias"],
                                         pr["alpha_weight"], pr["alpha_bias"]).sum()

    return pr, loss


def _flops(kind, latent_kind, batch, pixels, latents, backward):
    pr, loss = _setup(kind, latent_kind, batch, pixels, latents, requires_grad=backward)
    with FlopCounterMode(display=False) as fc:
        out = loss()
        if backward:
            out.backward()
    return fc.get_total_flops()


BASE = (8, 64, 16)  # batch, pixels, latents


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
@pytest.mark.parametrize("latent_kind", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("kind", ["fixed", "learnable"])
def test_flops_linear_in_pixels_and_latents(kind, latent_kind, backward):
    b, p, d = BASE
    base = _flops(kind, latent_kind, b, p, d, backward)
    assert base > 0
    two_p = _flops(kind, latent_kind, b, 2 * p, d, backward)
    two_d = _flops(kind, latent_kind, b, p, 2 * d, backward)
    four_p = _flops(kind, latent_kind, b, 4 * p, d, backward)
    assert two_p / base == pytest.approx(2.0, rel=0.03)
    assert two_d / base == pytest.approx(2.0, rel=0.03)
    assert four_p / base == pytest.approx(4.0, rel=0.03)
    # and the constant is O(1) per (sample, pixel, latent): no hidden large factor
    assert base / (b * p * d) < (96 if backward else 32)


def test_flop_counter_detects_quadratic_pixel_cost():
    """Meta-test: a pixel-covariance computation (P x P) is seen as 4x cost when P doubles."""
    def naive(p):
        pr = make_problem(4, p, 8, seed=0, dtype=torch.float32)
        with FlopCounterMode(display=False) as fc:
            (pr["weight"] * pr["var"][0]) @ pr["weight"].T      # (P, P) covariance of mu(z)
        return fc.get_total_flops()
    assert naive(128) / naive(64) == pytest.approx(4.0, rel=0.03)


# shapes each chosen so that the forbidden term exceeds 8 (B P + P d + B d)
SHAPES = {
    "pixels_dominant(P^2)": (4, 2048, 8),
    "latents_dominant(d^2)": (4, 16, 512),
    "batch_dominant(B^2)": (1024, 8, 8),
    "balanced(BPd)": (32, 256, 32),
}
FORBIDDEN = {
    "pixels_dominant(P^2)": lambda b, p, d: p * p,
    "latents_dominant(d^2)": lambda b, p, d: d * d,
    "batch_dominant(B^2)": lambda b, p, d: b * b,
    "balanced(BPd)": lambda b, p, d: b * p * d,
}


def _bound(b, p, d):
    return 8 * (b * p + p * d + b * d)


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
@pytest.mark.parametrize("latent_kind", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("kind", ["fixed", "learnable"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_largest_intermediate_is_linear_in_sizes(shape, kind, latent_kind, backward):
    b, p, d = SHAPES[shape]
    assert FORBIDDEN[shape](b, p, d) > _bound(b, p, d)  # the shape can expose that term
    pr, loss = _setup(kind, latent_kind, b, p, d, requires_grad=backward)
    rec = LargestOutput()
    with rec:
        out = loss()
        if backward:
            out.backward()
    assert rec.num_ops > 5
    assert rec.largest <= _bound(b, p, d), (rec.largest, rec.largest_op, _bound(b, p, d))


def test_recorder_detects_naive_broadcast_implementation():
    """Meta-test: computing E[mu] by broadcasting to (B, P, d) violates the bound."""
    b, p, d = SHAPES["balanced(BPd)"]
    pr = make_problem(b, p, d, seed=0, dtype=torch.float32)
    rec = LargestOutput()
    with rec:
        (pr["weight"][None] * pr["mean"][:, None, :]).sum(-1)
    assert rec.largest == b * p * d > _bound(b, p, d)
