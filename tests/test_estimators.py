"""Gradient estimators (silentvae.estimators) on tiny float64 problems with exactly known gradients.

Setting: an ``nn.Linear`` "encoder" maps fixed features to posterior parameters (2d for Gaussian,
d logits for Bernoulli); a linear decoder scores a few pixels. The exact objective
J(phi) = mean_b -E_q[log p(x_b|z)] is computed independently of :mod:`silentvae.analytic`:

* Bernoulli latents: enumeration of all 2^d states with ``decoder.loglik`` (the TRUE expectation,
  also for :class:`LinearPrecisionDecoder`, whose closed form has a Taylor log term);
* Gaussian latents + :class:`LinearDecoder`: a Gauss-Hermite rule (exact for the quadratic integrand).

Monte Carlo: the batch is repeated R times in one call (vectorised), the gradient w.r.t. the encoder
output h is taken per row and mapped to per-replicate gradients w.r.t. the encoder's weight and bias
(h = F W^T + b is linear, so dJ_r/dW = sum_b G_rb F_b^T); their mean must match the exact gradient within
a few standard errors per coordinate.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from silentvae.estimators import (
    ESTIMATORS,
    GumbelSoftmax,
    Reinforce,
    Reparameterization,
    SampleOnly,
    SilentGradient,
    make_estimator,
)
from silentvae.models import LinearDecoder, LinearPrecisionDecoder, MnistConvDecoder
from silentvae.posteriors import BernoulliPosterior, GaussianPosterior

from helpers import bernoulli_state_probs, bernoulli_states, gaussian_grid_latents

F64 = torch.float64
Z_MAX = 4.5  # per-coordinate |mean - exact| / SE bound (~32 correlated coordinates, fixed seeds)


# ----------------------------------------------------------------------------------------------
# Tiny problems
# ----------------------------------------------------------------------------------------------

def make_setup(kind: str, *, d: int = 4, pixels: int = 5, batch: int = 2, n_in: int = 3, seed: int = 0,
               sigma2: float = 0.5, precision: bool = False):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, n_in, generator=g, dtype=F64)
    out = 2 * d if kind == "gaussian" else d
    enc = nn.Linear(n_in, out).double()
    with torch.no_grad():
        enc.weight.copy_(torch.randn(out, n_in, generator=g, dtype=F64) * 0.7)
        enc.bias.copy_(torch.randn(out, generator=g, dtype=F64) * 0.5)
    torch.manual_seed(seed)
    dec = LinearPrecisionDecoder(d, (pixels,), init_std=0.5) if precision else LinearDecoder(d, (pixels,), sigma2)
    dec = dec.double()
    with torch.no_grad():  # both start at W (W_mu) = 0, where latents do not matter yet: a trained-looking W
        (dec.mu if precision else dec.linear).weight.copy_(torch.randn(pixels, d, generator=g, dtype=F64) * 0.3)
    x = torch.rand(batch, pixels, generator=g, dtype=F64)
    return feats, enc, dec, x


def posterior_of(kind: str, h: torch.Tensor):
    cls = GaussianPosterior if kind == "gaussian" else BernoulliPosterior
    return cls.from_encoder_output(h)


def exact_expected_loglik(kind: str, post, dec, x: torch.Tensor) -> torch.Tensor:
    """E_q[log p(x_b|z)] per row (B,), by enumeration (Bernoulli) or Gauss-Hermite (Gaussian)."""
    batch = x.shape[0]
    if kind == "bernoulli":
        states = bernoulli_states(post.logits.shape[-1])
        q = bernoulli_state_probs(post.probs, states)                       # (B, S)
        s = states.shape[0]
        ll = dec.loglik(x.repeat_interleave(s, 0), states.repeat(batch, 1)).view(batch, s)
        return (q * ll).sum(1)
    assert isinstance(dec, LinearDecoder), "Gauss-Hermite is exact only for the quadratic integrand"
    z, w = gaussian_grid_latents(post.mean, post.var, nodes=3)             # (B, S, d), (S,)
    s = z.shape[1]
    ll = dec.loglik(x.repeat_interleave(s, 0), z.reshape(batch * s, -1)).view(batch, s)
    return ll @ w


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def exact_encoder_grad(kind, enc, dec, feats, x) -> torch.Tensor:
    objective = -exact_expected_loglik(kind, posterior_of(kind, enc(feats)), dec, x).mean()
    return flat(torch.autograd.grad(objective, [enc.weight, enc.bias]))


def per_replicate_grads(kind, est, enc, dec, feats, x, reps: int, gen) -> torch.Tensor:
    """(reps, n_params): gradient of each replicate's mean loss w.r.t. (enc.weight, enc.bias)."""
    batch = x.shape[0]
    h = enc(feats.repeat(reps, 1))
    loss = est.loss(posterior_of(kind, h), dec, x.repeat(reps, 1), gen)
    assert loss.shape == (reps * batch,)
    (g_h,) = torch.autograd.grad(loss.sum() / batch, h, retain_graph=True)
    g_h = g_h.view(reps, batch, -1)
    per_rep = torch.cat([torch.einsum("rbo,bi->roi", g_h, feats).reshape(reps, -1), g_h.sum(1)], 1)
    # the mapping h-gradient -> parameter gradient agrees with autograd on the parameters
    direct = flat(torch.autograd.grad(loss.sum() / (batch * reps), [enc.weight, enc.bias]))
    torch.testing.assert_close(per_rep.mean(0), direct, rtol=1e-9, atol=1e-12)
    return per_rep


def z_scores(samples: torch.Tensor, exact: torch.Tensor):
    n = samples.shape[0]
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(n)
    assert bool((se > 0).all())
    return (mean - exact) / se, mean, se


# ----------------------------------------------------------------------------------------------
# Unbiasedness of the sampling estimators
# ----------------------------------------------------------------------------------------------

def test_exact_reference_agrees_with_closed_form():
    """The two exact references (enumeration / quadrature) agree with LinearDecoder's closed form."""
    for kind in ("gaussian", "bernoulli"):
        feats, enc, dec, x = make_setup(kind)
        post = posterior_of(kind, enc(feats))
        torch.testing.assert_close(exact_expected_loglik(kind, post, dec, x), dec.expected_loglik(x, post),
                                   rtol=1e-12, atol=1e-10)


def test_reparameterization_unbiased():
    kind, reps = "gaussian", 20000
    feats, enc, dec, x = make_setup(kind)
    exact = exact_encoder_grad(kind, enc, dec, feats, x)
    g = per_replicate_grads(kind, Reparameterization(), enc, dec, feats, x, reps, torch.Generator().manual_seed(1))
    z, mean, se = z_scores(g, exact)
    assert z.abs().max() < Z_MAX, z
    assert se.norm() < 0.03 * exact.norm()  # the test has power: SE is small next to the gradient


@pytest.mark.parametrize("kind,precision", [("bernoulli", False), ("bernoulli", True), ("gaussian", False)])
def test_reinforce_fixed_baseline_unbiased(kind, precision):
    reps = 40000
    feats, enc, dec, x = make_setup(kind, precision=precision)
    exact = exact_encoder_grad(kind, enc, dec, feats, x)
    est = Reinforce()
    est.baseline = torch.tensor(3.0, dtype=F64)
    est.frozen = True
    g = per_replicate_grads(kind, est, enc, dec, feats, x, reps, torch.Generator().manual_seed(2))
    z, mean, se = z_scores(g, exact)
    assert z.abs().max() < Z_MAX, z
    assert se.norm() < 0.08 * exact.norm()
    assert est.baseline.item() == 3.0  # frozen


def test_reinforce_running_baseline_unbiased():
    """A baseline set by earlier calls (never the current samples) keeps the estimate unbiased."""
    kind, reps = "bernoulli", 40000
    feats, enc, dec, x = make_setup(kind, precision=True)
    exact = exact_encoder_grad(kind, enc, dec, feats, x)
    est = Reinforce(momentum=0.9)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # warm up the running average on other draws
        for _ in range(3):
            est.loss(posterior_of(kind, enc(feats)), dec, x, gen)
    b_before = est.baseline.clone()
    g = per_replicate_grads(kind, est, enc, dec, feats, x, reps, gen)
    assert not torch.equal(est.baseline, b_before)  # the measured call did update it (afterwards)
    z, mean, se = z_scores(g, exact)
    assert z.abs().max() < Z_MAX, z


def test_reinforce_first_call_unbiased_for_small_batches():
    """Without a baseline yet, sample i's baseline must not include f(z_i).

    With the plain batch mean (f_i included) a batch of 2 gives half the true gradient in expectation;
    the leave-one-out mean gives the true gradient. Each draw here is a fresh estimator's first call.
    """
    kind, n = "bernoulli", 400
    feats, enc, dec, x = make_setup(kind, batch=2)
    exact = exact_encoder_grad(kind, enc, dec, feats, x)
    gen = torch.Generator().manual_seed(4)
    h = enc(feats)
    grads = []
    for _ in range(n):
        loss = Reinforce().loss(posterior_of(kind, h), dec, x, gen)
        (g_h,) = torch.autograd.grad(loss.mean(), h, retain_graph=True)
        grads.append(torch.cat([(g_h.T @ feats).reshape(-1), g_h.sum(0)]))
    z, mean, se = z_scores(torch.stack(grads), exact)
    assert z.abs().max() < Z_MAX, z
    z_half = (mean - 0.5 * exact) / se
    assert z_half.abs().max() > 5  # power: the biased (half) gradient would be rejected


def test_gumbel_softmax_bias_shrinks_with_temperature():
    kind, reps = "bernoulli", 30000
    feats, enc, dec, x = make_setup(kind)
    exact = exact_encoder_grad(kind, enc, dec, feats, x)
    devs, ses = {}, {}
    for tau in (2.0, 1.0, 0.5, 0.1):
        g = per_replicate_grads(kind, GumbelSoftmax(tau), enc, dec, feats, x, reps, torch.Generator().manual_seed(5))
        z, mean, se = z_scores(g, exact)
        devs[tau], ses[tau] = (mean - exact).norm().item(), se.norm().item()
        if tau == 2.0:
            assert z.abs().max() > 20  # clearly biased at high temperature
    assert devs[2.0] > devs[1.0] > devs[0.5] > devs[0.1], devs
    assert devs[0.1] < 0.1 * devs[2.0], devs
    assert devs[0.1] < 0.05 * exact.norm().item(), devs


# ----------------------------------------------------------------------------------------------
# Silent Gradients: zero variance, exact
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gaussian", "bernoulli"])
@pytest.mark.parametrize("precision", [False, True])
def test_silent_gradient_is_deterministic(kind, precision):
    feats, enc, dec, x = make_setup(kind, precision=precision)
    est = SilentGradient()
    assert est.deterministic
    grads, values = [], []
    for seed in (0, 1, 2):
        loss = est.loss(posterior_of(kind, enc(feats)), dec, x, torch.Generator().manual_seed(seed))
        values.append(loss.detach())
        grads.append(flat(torch.autograd.grad(loss.mean(), [enc.weight, enc.bias])))
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    assert all(torch.equal(values[0], v) for v in values[1:])
    assert grads[0].abs().max() > 0


@pytest.mark.parametrize("kind", ["gaussian", "bernoulli"])
def test_silent_gradient_equals_exact_gradient_for_linear_decoder(kind):
    feats, enc, dec, x = make_setup(kind)
    post = posterior_of(kind, enc(feats))
    loss = SilentGradient().loss(post, dec, x)
    exact_value = -exact_expected_loglik(kind, post, dec, x)
    torch.testing.assert_close(loss, exact_value, rtol=1e-12, atol=1e-10)
    g_sg = flat(torch.autograd.grad(loss.mean(), [enc.weight, enc.bias]))
    torch.testing.assert_close(g_sg, exact_encoder_grad(kind, enc, dec, feats, x), rtol=1e-10, atol=1e-12)
    # the decoder gets the exact gradient too
    post = posterior_of(kind, enc(feats))
    gd_sg = flat(torch.autograd.grad(SilentGradient().loss(post, dec, x).mean(), list(dec.parameters())))
    gd_ex = flat(torch.autograd.grad(-exact_expected_loglik(kind, post, dec, x).mean(), list(dec.parameters())))
    torch.testing.assert_close(gd_sg, gd_ex, rtol=1e-10, atol=1e-12)


def test_sampling_estimators_do_vary_across_draws():
    """Contrast with SG: the noisy estimators' encoder gradients differ between generators."""
    for kind, est in (("gaussian", Reparameterization()), ("bernoulli", GumbelSoftmax(0.5)),
                      ("bernoulli", Reinforce())):
        feats, enc, dec, x = make_setup(kind)
        g = [flat(torch.autograd.grad(
            est.loss(posterior_of(kind, enc(feats)), dec, x, torch.Generator().manual_seed(s)).mean(),
            [enc.weight, enc.bias])) for s in (0, 1)]
        assert not torch.allclose(g[0], g[1]), type(est).__name__
        assert not est.deterministic


# ----------------------------------------------------------------------------------------------
# Values at the sample, REINFORCE baseline mechanics
# ----------------------------------------------------------------------------------------------

def test_reinforce_surrogate_value_is_loss_at_its_sample():
    kind = "bernoulli"
    feats, enc, dec, x = make_setup(kind, batch=6, precision=True)
    post = posterior_of(kind, enc(feats))
    est = Reinforce()
    gen = torch.Generator().manual_seed(7)
    z = post.sample(torch.Generator().manual_seed(7))  # the same draw the estimator will make
    surrogate = est.loss(post, dec, x, gen)
    f = -dec.loglik(x, z)
    assert torch.equal(surrogate.detach(), f.detach())
    # decoder gradient is the plain pathwise gradient of f at that sample (baseline term has none)
    gd = flat(torch.autograd.grad(surrogate.mean(), list(dec.parameters()), retain_graph=True))
    torch.testing.assert_close(gd, flat(torch.autograd.grad(f.mean(), list(dec.parameters()))),
                               rtol=1e-12, atol=1e-12)
    # encoder gradient: (f - b) grad log q with the leave-one-out baseline of a first call
    b = (f.detach().sum() - f.detach()) / (f.numel() - 1)
    ref = ((f.detach() - b) * post.log_prob(z)).mean()
    torch.testing.assert_close(torch.autograd.grad(surrogate.mean(), post.logits)[0],
                               torch.autograd.grad(ref, post.logits)[0], rtol=1e-10, atol=1e-12)


def test_reinforce_encoder_gradient_with_baseline():
    kind = "bernoulli"
    feats, enc, dec, x = make_setup(kind, batch=5)
    post = posterior_of(kind, enc(feats))
    est = Reinforce()
    est.baseline = torch.tensor(1.25, dtype=F64)
    z = post.sample(torch.Generator().manual_seed(8))
    surrogate = est.loss(post, dec, x, torch.Generator().manual_seed(8))
    f = -dec.loglik(x, z).detach()
    ref = ((f - 1.25) * post.log_prob(z)).mean()
    torch.testing.assert_close(torch.autograd.grad(surrogate.mean(), post.logits)[0],
                               torch.autograd.grad(ref, post.logits)[0], rtol=1e-10, atol=1e-12)


def test_reinforce_baseline_momentum_and_frozen():
    kind = "bernoulli"
    feats, enc, dec, x = make_setup(kind, batch=4)
    est = Reinforce(momentum=0.75)
    assert est.baseline is None
    post = posterior_of(kind, enc(feats))
    f1 = est.loss(post, dec, x, torch.Generator().manual_seed(1)).detach()
    torch.testing.assert_close(est.baseline, f1.mean(), rtol=0, atol=0)  # first call starts at the mean
    f2 = est.loss(post, dec, x, torch.Generator().manual_seed(2)).detach()
    expected = 0.75 * f1.mean() + 0.25 * f2.mean()
    torch.testing.assert_close(est.baseline, expected, rtol=1e-15, atol=0)
    assert est.baseline.requires_grad is False
    est.frozen = True
    est.loss(post, dec, x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(est.baseline, expected, rtol=0, atol=0)
    # frozen before any call: no baseline is ever created
    fresh = Reinforce()
    fresh.frozen = True
    fresh.loss(post, dec, x, torch.Generator().manual_seed(4))
    assert fresh.baseline is None


def test_reinforce_state_dict_round_trip():
    kind = "bernoulli"
    feats, enc, dec, x = make_setup(kind, batch=4)
    est = Reinforce(momentum=0.5)
    assert est.state_dict() == {"baseline": None}
    other = Reinforce()
    other.baseline = torch.tensor(9.0)
    other.load_state_dict(est.state_dict())
    assert other.baseline is None
    post = posterior_of(kind, enc(feats))
    for s in range(3):
        est.loss(post, dec, x, torch.Generator().manual_seed(s))
    state = est.state_dict()
    restored = Reinforce(momentum=0.5)
    restored.load_state_dict(state, device="cpu")
    assert torch.equal(restored.baseline, est.baseline)
    # both continue identically
    a = est.loss(post, dec, x, torch.Generator().manual_seed(10))
    b = restored.loss(post, dec, x, torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and torch.equal(est.baseline, restored.baseline)


def test_reparameterization_value_at_its_sample():
    kind = "gaussian"
    feats, enc, dec, x = make_setup(kind, batch=3)
    post = posterior_of(kind, enc(feats))
    loss = Reparameterization().loss(post, dec, x, torch.Generator().manual_seed(3))
    eps = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(loss, -dec.loglik(x, post.mean + post.var.sqrt() * eps), rtol=1e-14, atol=1e-12)


def test_gumbel_value_at_relaxed_sample():
    kind = "bernoulli"
    feats, enc, dec, x = make_setup(kind, batch=3)
    post = posterior_of(kind, enc(feats))
    loss = GumbelSoftmax(0.3).loss(post, dec, x, torch.Generator().manual_seed(4))
    u = torch.rand(post.logits.shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    z = torch.sigmoid((post.logits + torch.log(u) - torch.log1p(-u)) / 0.3)
    torch.testing.assert_close(loss, -dec.loglik(x, z), rtol=1e-12, atol=1e-12)
    assert bool(((z > 0) & (z < 1)).all())


@pytest.mark.parametrize("kind", ["gaussian", "bernoulli"])
def test_sample_only_trains_decoder_not_posterior(kind):
    feats, enc, dec, x = make_setup(kind, batch=3)
    h = enc(feats)
    loss = SampleOnly().loss(posterior_of(kind, h), dec, x, torch.Generator().manual_seed(0))
    g_h, g_w = torch.autograd.grad(loss.sum(), [h, dec.linear.weight], allow_unused=True)
    assert g_h is None or bool((g_h == 0).all())
    assert g_w is not None and g_w.abs().max() > 0
    if kind == "bernoulli":  # hard samples
        z = posterior_of(kind, h).sample(torch.Generator().manual_seed(0))
        assert set(z.unique().tolist()) <= {0.0, 1.0}
        torch.testing.assert_close(loss, -dec.loglik(x, z), rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# Errors and the factory
# ----------------------------------------------------------------------------------------------

def test_reparameterization_rejects_bernoulli():
    feats, enc, dec, x = make_setup("bernoulli")
    with pytest.raises(ValueError, match="reparameterization estimator needs Gaussian latents"):
        Reparameterization().loss(posterior_of("bernoulli", enc(feats)), dec, x)


def test_gumbel_rejects_gaussian():
    feats, enc, dec, x = make_setup("gaussian")
    with pytest.raises(ValueError, match="gumbel estimator needs Bernoulli latents"):
        GumbelSoftmax().loss(posterior_of("gaussian", enc(feats)), dec, x)


def test_silent_gradient_rejects_nonlinear_decoder():
    torch.manual_seed(0)
    dec = MnistConvDecoder(4, out_shape=(1, 4, 4), channels=2).double()
    post = GaussianPosterior(torch.zeros(2, 4, dtype=F64), torch.ones(2, 4, dtype=F64))
    with pytest.raises(TypeError, match=r"closed-form expected_loglik.*MnistConvDecoder"):
        SilentGradient().loss(post, dec, torch.zeros(2, 1, 4, 4, dtype=F64))


def test_constructor_validation():
    with pytest.raises(ValueError, match="temperature must be positive"):
        GumbelSoftmax(0.0)
    with pytest.raises(ValueError, match="momentum must be in"):
        Reinforce(1.0)
    with pytest.raises(ValueError, match="momentum must be in"):
        Reinforce(-0.1)


def test_make_estimator():
    kinds = {"sg": SilentGradient, "reparam": Reparameterization, "gumbel": GumbelSoftmax,
             "reinforce": Reinforce, "none": SampleOnly}
    assert set(kinds) == set(ESTIMATORS)
    for name, cls in kinds.items():
        est = make_estimator(name, temperature=0.7, reinforce_momentum=0.3)
        assert isinstance(est, cls) and est.name == name
    assert make_estimator("gumbel", temperature=0.7).temperature == 0.7
    assert make_estimator("reinforce", reinforce_momentum=0.3).momentum == 0.3
    with pytest.raises(ValueError, match="estimator must be one of"):
        make_estimator("rebar")
