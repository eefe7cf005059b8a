"""Closed-form expected log-likelihoods (silentvae.analytic) against independent computations.

* Bernoulli latents: exact enumeration of all 2^d latent states (float64 round-off agreement),
  values and autograd gradients.
* Gaussian latents: Isserlis/Wick moments of the jointly Gaussian (mu_p, alpha_p) per pixel, a
  tensor-product Gauss-Hermite rule (exact for the degree <= 4 polynomials involved; also used
  for gradients) and 200k-sample Monte Carlo within 4 standard errors.
* Zero variance: the closed-form encoder gradient is bit-identical across calls, while a
  reparameterised estimate of it varies across draws (and averages to it).
* Input validation: ValueError naming the offending argument.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from silentvae.analytic import (
    MIN_EXPECTED_ALPHA_SQ,
    expected_loglik_fixed,
    expected_loglik_learnable,
    expected_sq_error_fixed,
    learnable_terms,
    taylor_expected_log,
)
from silentvae.moments import bernoulli_moments, gaussian_moments

from helpers import (
    LOG_2PI,
    bernoulli_enum_fixed,
    bernoulli_enum_learnable,
    decoder_outputs,
    gaussian_grid_latents,
    gaussian_pixel_stats,
    isserlis_alpha4,
    isserlis_quad,
    learnable_objective_from_moments,
    make_problem,
    monte_carlo,
    taylor_from_moments,
)

F64 = dict(rtol=1e-10, atol=1e-12)
F64_GRAD = dict(rtol=1e-9, atol=1e-11)


def _close(a, b, **tol):
    torch.testing.assert_close(a, b, **(tol or F64))


def _bias_forms(m, weight, bias, mode):
    """(moments, weight, bias) for the three ways of giving the decoder bias."""
    if mode == "explicit":
        return m, weight, bias
    if mode == "none":
        return m, weight, None
    assert mode == "constant"
    return m.with_constant(1.0), torch.cat([weight, bias[:, None]], dim=1), None


def _sigma2(pr, kind):
    return 0.07 if kind == "scalar" else pr["sigma2"]


# =============================================================================================
# Bernoulli latents, fixed variance: exact enumeration
# =============================================================================================

@pytest.mark.parametrize("latents", [1, 4, 11])
@pytest.mark.parametrize("bias_mode", ["explicit", "none", "constant"])
@pytest.mark.parametrize("sigma2_kind", ["scalar", "per_pixel"])
def test_fixed_bernoulli_matches_enumeration(latents, bias_mode, sigma2_kind):
    pr = make_problem(3, 13, latents, seed=latents)
    probs = torch.sigmoid(pr["logits"])
    s2 = _sigma2(pr, sigma2_kind)
    m, w, b = _bias_forms(bernoulli_moments(probs), pr["weight"], pr["bias"], bias_mode)
    ref = bernoulli_enum_fixed(pr["x"], probs, pr["weight"], None if bias_mode == "none" else pr["bias"], s2)
    _close(expected_sq_error_fixed(pr["x"], m, w, b), ref["sq"])
    got = expected_loglik_fixed(pr["x"], m, w, b, s2)
    assert got.shape == (3,)
    _close(got, ref["loglik"])


@pytest.mark.parametrize("sigma2_kind", ["scalar", "per_pixel"])
def test_fixed_bias_trick_equals_explicit_bias(sigma2_kind):
    pr = make_problem(4, 10, 6, seed=11)
    m = bernoulli_moments(torch.sigmoid(pr["logits"]))
    s2 = _sigma2(pr, sigma2_kind)
    explicit = expected_loglik_fixed(pr["x"], m, pr["weight"], pr["bias"], s2)
    trick = expected_loglik_fixed(pr["x"], *_bias_forms(m, pr["weight"], pr["bias"], "constant")[:3], s2)
    _close(trick, explicit, rtol=1e-13, atol=1e-12)
    without = expected_loglik_fixed(pr["x"], m, pr["weight"], None, s2)
    assert not torch.allclose(without, explicit)  # the bias actually matters in this problem


def test_fixed_bernoulli_deterministic_latents_and_image_shaped_x():
    """p in {0, 1} (a point mass) and x given as (B, C, H, W)."""
    pr = make_problem(2, 12, 5, seed=12)
    probs = torch.sigmoid(pr["logits"])
    probs[0, :2] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    probs[1] = (probs[1] > 0.5).double()          # row 1 fully deterministic
    m = bernoulli_moments(probs)
    x_img = pr["x"].reshape(2, 1, 3, 4)
    ref = bernoulli_enum_fixed(pr["x"], probs, pr["weight"], pr["bias"], 0.2)
    _close(expected_loglik_fixed(x_img, m, pr["weight"], pr["bias"], 0.2), ref["loglik"])
    # deterministic row: the expectation is the log-density at the single state
    mu = decoder_outputs(probs[1], pr["weight"], pr["bias"])
    direct = (-0.5 * (pr["x"][1] - mu).square() / 0.2 - 0.5 * math.log(2 * math.pi * 0.2)).sum()
    _close(expected_loglik_fixed(x_img, m, pr["weight"], pr["bias"], 0.2)[1], direct)


def test_fixed_sigma2_as_zero_dim_tensor_and_grad_tensor():
    pr = make_problem(2, 7, 3, seed=13)
    m = bernoulli_moments(torch.sigmoid(pr["logits"]))
    ref = expected_loglik_fixed(pr["x"], m, pr["weight"], pr["bias"], 0.3)
    _close(expected_loglik_fixed(pr["x"], m, pr["weight"], pr["bias"], torch.tensor(0.3, dtype=torch.float64)), ref)
    s = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)   # stays a tensor
    _close(expected_loglik_fixed(pr["x"], m, pr["weight"], pr["bias"], s), ref)
    row = torch.full((1, 7), 0.3, dtype=torch.float64)
    _close(expected_loglik_fixed(pr["x"], m, pr["weight"], pr["bias"], row), ref)


def test_fixed_bernoulli_gradients_match_enumeration():
    pr = make_problem(3, 9, 7, seed=14, requires_grad=True)
    leaves = [pr["logits"], pr["weight"], pr["bias"], pr["sigma2"]]
    probs = torch.sigmoid(pr["logits"])
    got = expected_loglik_fixed(pr["x"], bernoulli_moments(probs), pr["weight"], pr["bias"], pr["sigma2"])
    ref = bernoulli_enum_fixed(pr["x"], probs, pr["weight"], pr["bias"], pr["sigma2"])["loglik"]
    coef = torch.linspace(0.5, 1.5, 3, dtype=torch.float64)  # distinct weight per batch row
    g_got = torch.autograd.grad((coef * got).sum(), leaves, retain_graph=True)
    g_ref = torch.autograd.grad((coef * ref).sum(), leaves)
    for a, b in zip(g_got, g_ref):
        assert a.abs().max() > 0
        _close(a, b, **F64_GRAD)


def test_fixed_bernoulli_gradient_wrt_probs_leaf():
    pr = make_problem(2, 8, 6, seed=15)
    probs = torch.sigmoid(pr["logits"]).requires_grad_()
    got = expected_loglik_fixed(pr["x"], bernoulli_moments(probs), pr["weight"], pr["bias"], 0.1).sum()
    ref = bernoulli_enum_fixed(pr["x"], probs, pr["weight"], pr["bias"], 0.1)["loglik"].sum()
    _close(torch.autograd.grad(got, probs, retain_graph=True)[0], torch.autograd.grad(ref, probs)[0], **F64_GRAD)


# =============================================================================================
# Bernoulli latents, learnable precision: exact enumeration
# =============================================================================================

def _learnable_bias_forms(m, pr, mode):
    if mode == "explicit":
        return m, pr["weight"], pr["bias"], pr["alpha_weight"], pr["alpha_bias"]
    if mode == "none":
        return m, pr["weight"], None, pr["alpha_weight"], None
    return (m.with_constant(1.0), torch.cat([pr["weight"], pr["bias"][:, None]], 1), None,
            torch.cat([pr["alpha_weight"], pr["alpha_bias"][:, None]], 1), None)


@pytest.mark.parametrize("latents", [1, 5, 10])
@pytest.mark.parametrize("bias_mode", ["explicit", "none", "constant"])
def test_learnable_terms_bernoulli_match_enumeration(latents, bias_mode):
    pr = make_problem(3, 11, latents, seed=20 + latents, alpha_scale=1.0)
    probs = torch.sigmoid(pr["logits"])
    args = _learnable_bias_forms(bernoulli_moments(probs), pr, bias_mode)
    terms = learnable_terms(pr["x"], *args)
    nob = bias_mode == "none"
    ref = bernoulli_enum_learnable(pr["x"], probs, pr["weight"], None if nob else pr["bias"],
                                   pr["alpha_weight"], None if nob else pr["alpha_bias"])
    for k in ("quad", "alpha_sq", "alpha_sq_var"):
        assert terms[k].shape == (3, 11), k
    _close(terms["quad"], ref["quad"])
    _close(terms["alpha_sq"], ref["alpha_sq"])
    _close(terms["alpha_sq_var"], ref["alpha_4"] - ref["alpha_sq"].square())
    # the log term and the full objective, built from ENUMERATED E[a^2], E[a^4]
    _close(taylor_expected_log(terms["alpha_sq"], terms["alpha_sq_var"]),
           taylor_from_moments(ref["alpha_sq"], ref["alpha_4"]))
    got = expected_loglik_learnable(pr["x"], *args)
    assert got.shape == (3,)
    _close(got, learnable_objective_from_moments(ref["quad"], ref["alpha_sq"], ref["alpha_4"]))


def test_learnable_bias_trick_equals_explicit_bias():
    pr = make_problem(4, 10, 6, seed=30)
    m = bernoulli_moments(torch.sigmoid(pr["logits"]))
    explicit = expected_loglik_learnable(pr["x"], *_learnable_bias_forms(m, pr, "explicit"))
    trick = expected_loglik_learnable(pr["x"], *_learnable_bias_forms(m, pr, "constant"))
    _close(trick, explicit, rtol=1e-12, atol=1e-12)
    for k in ("quad", "alpha_sq", "alpha_sq_var"):
        _close(learnable_terms(pr["x"], *_learnable_bias_forms(m, pr, "constant"))[k],
               learnable_terms(pr["x"], *_learnable_bias_forms(m, pr, "explicit"))[k], rtol=1e-12, atol=1e-13)


def test_learnable_bernoulli_gradients_match_enumeration():
    pr = make_problem(3, 8, 7, seed=31, requires_grad=True, alpha_scale=0.8)
    leaves = [pr[k] for k in ("logits", "weight", "bias", "alpha_weight", "alpha_bias")]
    probs = torch.sigmoid(pr["logits"])
    got = expected_loglik_learnable(pr["x"], bernoulli_moments(probs), pr["weight"], pr["bias"],
                                    pr["alpha_weight"], pr["alpha_bias"])
    e = bernoulli_enum_learnable(pr["x"], probs, pr["weight"], pr["bias"], pr["alpha_weight"], pr["alpha_bias"])
    ref = learnable_objective_from_moments(e["quad"], e["alpha_sq"], e["alpha_4"])
    coef = torch.linspace(0.5, 1.5, 3, dtype=torch.float64)
    g_got = torch.autograd.grad((coef * got).sum(), leaves, retain_graph=True)
    g_ref = torch.autograd.grad((coef * ref).sum(), leaves)
    for a, b in zip(g_got, g_ref):
        assert a.abs().max() > 0
        _close(a, b, **F64_GRAD)


def test_learnable_terms_gradients_match_enumeration_individually():
    """Each returned moment (not just their combination) has the enumerated gradient."""
    pr = make_problem(2, 6, 6, seed=32, requires_grad=True, alpha_scale=1.0)
    leaves = [pr[k] for k in ("logits", "weight", "bias", "alpha_weight", "alpha_bias")]
    probs = torch.sigmoid(pr["logits"])
    t = learnable_terms(pr["x"], bernoulli_moments(probs), pr["weight"], pr["bias"], pr["alpha_weight"], pr["alpha_bias"])
    e = bernoulli_enum_learnable(pr["x"], probs, pr["weight"], pr["bias"], pr["alpha_weight"], pr["alpha_bias"])
    refs = {"quad": e["quad"], "alpha_sq": e["alpha_sq"], "alpha_sq_var": e["alpha_4"] - e["alpha_sq"].square()}
    for k, r in refs.items():
        g_got = torch.autograd.grad(t[k].sum(), leaves, retain_graph=True, allow_unused=True)
        g_ref = torch.autograd.grad(r.sum(), leaves, retain_graph=True, allow_unused=True)
        for a, b in zip(g_got, g_ref):
            if b is None or not b.abs().max() > 0:
                assert a is None or torch.allclose(a, torch.zeros_like(a), atol=1e-12), k
            else:
                _close(a, b, **F64_GRAD)


def test_taylor_term_formula_and_clamp():
    mean = torch.tensor([2.0, 0.5, 1e-9, 0.0], dtype=torch.float64)
    var = torch.tensor([0.4, 0.1, 0.0, 0.0], dtype=torch.float64)
    got = taylor_expected_log(mean, var)
    assert torch.isfinite(got).all()
    _close(got[:2], torch.tensor([math.log(2.0) - 0.4 / 8.0, math.log(0.5) - 0.1 / 0.5], dtype=torch.float64))
    _close(got[2:], torch.full((2,), math.log(MIN_EXPECTED_ALPHA_SQ), dtype=torch.float64))
    _close(taylor_expected_log(mean, var, min_mean=1e-3)[2:], torch.full((2,), math.log(1e-3), dtype=torch.float64))


def test_taylor_approximates_enumerated_log_term_when_alpha_concentrated():
    """Sanity of the approximation itself: the error shrinks like the 3rd cumulant term."""
    errs = []
    for scale in (0.2, 0.1, 0.05):
        pr = make_problem(2, 6, 8, seed=33, alpha_scale=scale, alpha_offset=2.0)
        probs = torch.sigmoid(pr["logits"])
        e = bernoulli_enum_learnable(pr["x"], probs, pr["weight"], pr["bias"], pr["alpha_weight"], pr["alpha_bias"])
        errs.append((taylor_from_moments(e["alpha_sq"], e["alpha_4"]) - e["log_alpha_sq"]).abs().max().item())
    assert errs[0] < 1e-3
    assert errs[1] < errs[0] / 4 and errs[2] < errs[1] / 4  # at least O(scale^2) convergence


# =============================================================================================
# Gaussian latents
# =============================================================================================

@pytest.mark.parametrize("bias_mode", ["explicit", "none", "constant"])
@pytest.mark.parametrize("sigma2_kind", ["scalar", "per_pixel"])
def test_fixed_gaussian_matches_gauss_hermite(bias_mode, sigma2_kind):
    pr = make_problem(3, 9, 4, seed=40)
    s2 = _sigma2(pr, sigma2_kind)
    m, w, b = _bias_forms(gaussian_moments(pr["mean"], pr["var"]), pr["weight"], pr["bias"], bias_mode)
    z, wts = gaussian_grid_latents(pr["mean"], pr["var"], nodes=3)   # exact up to degree 5
    mu = decoder_outputs(z, pr["weight"], None if bias_mode == "none" else pr["bias"])  # (B, S, P)
    sq = (pr["x"][:, None, :] - mu).square()
    s2t = torch.as_tensor(s2, dtype=torch.float64)
    ll = (-0.5 * sq / s2t - 0.5 * torch.log(2 * math.pi * s2t)).sum(-1)
    _close(expected_sq_error_fixed(pr["x"], m, w, b), (wts[:, None] * sq).sum(1))
    _close(expected_loglik_fixed(pr["x"], m, w, b, s2), (wts * ll).sum(1))


def test_fixed_gaussian_gradients_match_gauss_hermite():
    pr = make_problem(2, 7, 4, seed=41, requires_grad=True)
    leaves = [pr[k] for k in ("mean", "var", "weight", "bias", "sigma2")]
    got = expected_loglik_fixed(pr["x"], gaussian_moments(pr["mean"], pr["var"]), pr["weight"], pr["bias"], pr["sigma2"])
    z, wts = gaussian_grid_latents(pr["mean"], pr["var"], nodes=3)
    sq = (pr["x"][:, None, :] - decoder_outputs(z, pr["weight"], pr["bias"])).square()
    ref = (wts * (-0.5 * sq / pr["sigma2"] - 0.5 * torch.log(2 * math.pi * pr["sigma2"])).sum(-1)).sum(1)
    coef = torch.tensor([0.7, 1.3], dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((coef * got).sum(), leaves, retain_graph=True), torch.autograd.grad((coef * ref).sum(), leaves)):
        assert a.abs().max() > 0
        _close(a, b, **F64_GRAD)


@pytest.mark.parametrize("bias_mode", ["explicit", "none", "constant"])
def test_learnable_terms_gaussian_match_isserlis(bias_mode):
    pr = make_problem(4, 12, 6, seed=42, alpha_scale=1.0)
    args = _learnable_bias_forms(gaussian_moments(pr["mean"], pr["var"]), pr, bias_mode)
    t = learnable_terms(pr["x"], *args)
    nob = bias_mode == "none"
    st = gaussian_pixel_stats(pr["mean"], pr["var"], pr["weight"], None if nob else pr["bias"],
                              pr["alpha_weight"], None if nob else pr["alpha_bias"])
    e_a2 = st["A"] ** 2 + st["Sv"]
    _close(t["quad"], isserlis_quad(pr["x"], st))
    _close(t["alpha_sq"], e_a2)
    _close(t["alpha_sq_var"], isserlis_alpha4(st) - e_a2.square())
    _close(expected_loglik_learnable(pr["x"], *args),
           learnable_objective_from_moments(isserlis_quad(pr["x"], st), e_a2, isserlis_alpha4(st)))


def test_learnable_gaussian_gradients_match_gauss_hermite():
    """Gradients of [exact quad + Taylor from exact moments], moments by an exact quadrature."""
    pr = make_problem(2, 6, 4, seed=43, requires_grad=True, alpha_scale=0.8)
    leaves = [pr[k] for k in ("mean", "var", "weight", "bias", "alpha_weight", "alpha_bias")]
    got = expected_loglik_learnable(pr["x"], gaussian_moments(pr["mean"], pr["var"]), pr["weight"], pr["bias"],
                                    pr["alpha_weight"], pr["alpha_bias"])
    z, wts = gaussian_grid_latents(pr["mean"], pr["var"], nodes=3)   # integrands have degree <= 4
    mu = decoder_outputs(z, pr["weight"], pr["bias"])
    a2 = decoder_outputs(z, pr["alpha_weight"], pr["alpha_bias"]).square()
    w = wts[:, None]
    quad = (w * (pr["x"][:, None, :] - mu).square() * a2).sum(1)
    ref = learnable_objective_from_moments(quad, (w * a2).sum(1), (w * a2.square()).sum(1))
    _close(got, ref)
    coef = torch.tensor([0.7, 1.3], dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((coef * got).sum(), leaves, retain_graph=True), torch.autograd.grad((coef * ref).sum(), leaves)):
        assert a.abs().max() > 0
        _close(a, b, **F64_GRAD)


def test_fixed_gaussian_matches_monte_carlo():
    pr = make_problem(3, 6, 4, seed=44)
    g = torch.Generator().manual_seed(45)
    n = 200_000
    z = pr["mean"] + pr["var"].sqrt() * torch.randn(n, 3, 4, generator=g, dtype=torch.float64)
    mu = decoder_outputs(z, pr["weight"], pr["bias"])                         # (n, B, P)
    ll = (-0.5 * (pr["x"] - mu).square() / pr["sigma2"] - 0.5 * torch.log(2 * math.pi * pr["sigma2"])).sum(-1)
    est, se = monte_carlo(ll)
    got = expected_loglik_fixed(pr["x"], gaussian_moments(pr["mean"], pr["var"]), pr["weight"], pr["bias"], pr["sigma2"])
    assert torch.all((got - est).abs() <= 4 * se), (got, est, se)


def test_learnable_quad_gaussian_matches_monte_carlo():
    pr = make_problem(2, 6, 4, seed=46, alpha_scale=1.0)
    g = torch.Generator().manual_seed(47)
    n = 200_000
    z = pr["mean"] + pr["var"].sqrt() * torch.randn(n, 2, 4, generator=g, dtype=torch.float64)
    mu = decoder_outputs(z, pr["weight"], pr["bias"])
    a2 = decoder_outputs(z, pr["alpha_weight"], pr["alpha_bias"]).square()
    t = learnable_terms(pr["x"], gaussian_moments(pr["mean"], pr["var"]), pr["weight"], pr["bias"],
                        pr["alpha_weight"], pr["alpha_bias"])
    for key, vals in (("quad", (pr["x"] - mu).square() * a2), ("alpha_sq", a2)):
        est, se = monte_carlo(vals)
        assert torch.all((t[key] - est).abs() <= 4 * se), key
    est, se = monte_carlo(a2.square())
    assert torch.all((t["alpha_sq_var"] + t["alpha_sq"].square() - est).abs() <= 4 * se)


# =============================================================================================
# float32
# =============================================================================================

@pytest.mark.parametrize("latent_kind", ["bernoulli", "gaussian"])
def test_float32_runs_and_agrees_with_float64(latent_kind):
    pr = make_problem(4, 20, 8, seed=50, alpha_scale=0.8)

    def run(dtype):
        p = {k: v.to(dtype).requires_grad_(k != "x") for k, v in pr.items()}
        m = bernoulli_moments(torch.sigmoid(p["logits"])) if latent_kind == "bernoulli" else \
            gaussian_moments(p["mean"], p["var"])
        fixed = expected_loglik_fixed(p["x"], m, p["weight"], p["bias"], p["sigma2"])
        learn = expected_loglik_learnable(p["x"], m, p["weight"], p["bias"], p["alpha_weight"], p["alpha_bias"])
        terms = learnable_terms(p["x"], m, p["weight"], p["bias"], p["alpha_weight"], p["alpha_bias"])
        enc = p["logits"] if latent_kind == "bernoulli" else p["mean"]
        grads = torch.autograd.grad((fixed + learn).sum(), [enc, p["weight"], p["alpha_weight"]])
        return fixed, learn, terms, grads

    f32, l32, t32, g32 = run(torch.float32)
    f64, l64, t64, g64 = run(torch.float64)
    assert f32.dtype == l32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), f64, rtol=2e-5, atol=1e-4)
    torch.testing.assert_close(l32.double(), l64, rtol=2e-5, atol=1e-4)
    for k in t64:
        assert t32[k].dtype == torch.float32
        torch.testing.assert_close(t32[k].double(), t64[k], rtol=1e-4, atol=1e-5)
    for a, b in zip(g32, g64):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_float32_matches_enumeration_to_float32_tolerance():
    pr = make_problem(3, 10, 8, seed=51)
    probs = torch.sigmoid(pr["logits"])
    ref = bernoulli_enum_learnable(pr["x"], probs, pr["weight"], pr["bias"], pr["alpha_weight"], pr["alpha_bias"])
    p32 = {k: v.float() for k, v in pr.items()}
    t = learnable_terms(p32["x"], bernoulli_moments(probs.float()), p32["weight"], p32["bias"],
                        p32["alpha_weight"], p32["alpha_bias"])
    torch.testing.assert_close(t["quad"].double(), ref["quad"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t["alpha_sq"].double(), ref["alpha_sq"], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_enumeration():
    pr = make_problem(4, 16, 10, seed=52, device="cuda")
    probs = torch.sigmoid(pr["logits"])
    m = bernoulli_moments(probs)
    ref_f = bernoulli_enum_fixed(pr["x"], probs, pr["weight"], pr["bias"], pr["sigma2"])
    got_f = expected_loglik_fixed(pr["x"], m, pr["weight"], pr["bias"], pr["sigma2"])
    assert got_f.device.type == "cuda"
    _close(got_f, ref_f["loglik"], rtol=1e-9, atol=1e-9)
    e = bernoulli_enum_learnable(pr["x"], probs, pr["weight"], pr["bias"], pr["alpha_weight"], pr["alpha_bias"])
    got_l = expected_loglik_learnable(pr["x"], m, pr["weight"], pr["bias"], pr["alpha_weight"], pr["alpha_bias"])
    _close(got_l, learnable_objective_from_moments(e["quad"], e["alpha_sq"], e["alpha_4"]), rtol=1e-9, atol=1e-9)
    # and float32 on the GPU agrees with the float64 CPU reference to float32 tolerance
    p32 = {k: v.float() for k, v in pr.items()}
    got32 = expected_loglik_fixed(p32["x"], bernoulli_moments(probs.float()), p32["weight"], p32["bias"], p32["sigma2"])
    torch.testing.assert_close(got32.double().cpu(), ref_f["loglik"].cpu(), rtol=1e-4, atol=1e-3)


# =============================================================================================
# Zero variance of the closed-form encoder gradient
# =============================================================================================

def _encoder(in_dim, out_dim, seed):
    with torch.random.fork_rng():     # do not disturb the global RNG of other tests
        torch.manual_seed(seed)
        return torch.nn.Linear(in_dim, out_dim).double()


def test_closed_form_encoder_gradient_is_bit_identical_gaussian():
    pr = make_problem(8, 12, 4, seed=60)
    enc = _encoder(12, 8, 61)

    def grads(sample_seed=None):
        enc.zero_grad()
        mean, raw = enc(pr["x"]).chunk(2, dim=-1)
        var = F.softplus(raw) + 1e-6
        if sample_seed is None:
            ll = expected_loglik_fixed(pr["x"], gaussian_moments(mean, var), pr["weight"], pr["bias"], 0.05)
        else:
            g = torch.Generator().manual_seed(sample_seed)
            z = mean + var.sqrt() * torch.randn(mean.shape, generator=g, dtype=mean.dtype)
            mu = decoder_outputs(z, pr["weight"], pr["bias"])
            ll = (-0.5 * (pr["x"] - mu).square() / 0.05 - 0.5 * math.log(2 * math.pi * 0.05)).sum(-1)
        (-ll.mean()).backward()
        return torch.cat([enc.weight.grad.flatten(), enc.bias.grad.flatten()]).clone()

    closed = [grads() for _ in range(3)]
    assert closed[0].abs().max() > 0
    assert all(torch.equal(closed[0], c) for c in closed[1:])
    reparam = torch.stack([grads(s) for s in range(8)])
    assert not torch.equal(reparam[0], reparam[1])
    spread = reparam.std(0).max() / reparam.abs().mean()
    assert spread > 1e-2, spread


def test_closed_form_encoder_gradient_is_bit_identical_bernoulli_learnable():
    pr = make_problem(8, 12, 6, seed=62)
    enc = _encoder(12, 6, 63)

    def grads(temperature=None, sample_seed=None):
        enc.zero_grad()
        logits = enc(pr["x"])
        if temperature is None:
            ll = expected_loglik_learnable(pr["x"], bernoulli_moments(torch.sigmoid(logits)), pr["weight"],
                                           pr["bias"], pr["alpha_weight"], pr["alpha_bias"])
        else:  # Binary-Concrete relaxed sample
            g = torch.Generator().manual_seed(sample_seed)
            u = torch.rand(logits.shape, generator=g, dtype=logits.dtype).clamp(1e-12, 1 - 1e-12)
            z = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
            mu = decoder_outputs(z, pr["weight"], pr["bias"])
            a = decoder_outputs(z, pr["alpha_weight"], pr["alpha_bias"])
            ll = (-0.5 * (pr["x"] - mu).square() * a.square() + 0.5 * torch.log(a.square()) - 0.5 * LOG_2PI).sum(-1)
        (-ll.mean()).backward()
        return torch.cat([enc.weight.grad.flatten(), enc.bias.grad.flatten()]).clone()

    closed = [grads() for _ in range(3)]
    assert closed[0].abs().max() > 0
    assert all(torch.equal(closed[0], c) for c in closed[1:])
    relaxed = torch.stack([grads(0.5, s) for s in range(8)])
    assert not torch.equal(relaxed[0], relaxed[1])
    assert relaxed.std(0).max() / relaxed.abs().mean() > 1e-2


def test_reparameterisation_gradient_averages_to_closed_form_gradient():
    """Per-draw reparam gradients w.r.t. (mean, var) are noisy but unbiased for the closed form."""
    pr = make_problem(2, 8, 3, seed=64)
    mean, var = pr["mean"].clone().requires_grad_(), pr["var"].clone().requires_grad_()
    closed = expected_loglik_fixed(pr["x"], gaussian_moments(mean, var), pr["weight"], pr["bias"], 0.2).sum()
    g_closed = torch.cat([t.flatten() for t in torch.autograd.grad(closed, [mean, var])])

    n = 50_000
    g = torch.Generator().manual_seed(65)
    mean_n = pr["mean"].expand(n, -1, -1).clone().requires_grad_()   # one leaf copy per draw
    var_n = pr["var"].expand(n, -1, -1).clone().requires_grad_()
    z = mean_n + var_n.sqrt() * torch.randn(n, 2, 3, generator=g, dtype=torch.float64)
    mu = decoder_outputs(z, pr["weight"], pr["bias"])
    ll = (-0.5 * (pr["x"] - mu).square() / 0.2 - 0.5 * math.log(2 * math.pi * 0.2)).sum()
    gm, gv = torch.autograd.grad(ll, [mean_n, var_n])
    per_draw = torch.cat([gm.reshape(n, -1), gv.reshape(n, -1)], dim=1)   # (n, 12)
    est, se = monte_carlo(per_draw)
    assert torch.all(se > 0)                                  # the estimator has variance ...
    assert torch.all((est - g_closed).abs() <= 5 * se)        # ... around the closed-form gradient


# =============================================================================================
# Validation
# =============================================================================================

def _small():
    pr = make_problem(3, 5, 4, seed=70)
    return pr, bernoulli_moments(torch.sigmoid(pr["logits"]))


def test_rejects_x_pixels_mismatch():
    pr, m = _small()
    with pytest.raises(ValueError, match=r"x has 6 values per sample but weight has 5"):
        expected_loglik_fixed(torch.zeros(3, 6, dtype=torch.float64), m, pr["weight"], pr["bias"], 1.0)
    with pytest.raises(ValueError, match=r"^x must be shaped"):
        expected_sq_error_fixed(torch.zeros(2, 5, dtype=torch.float64), m, pr["weight"], pr["bias"])
    with pytest.raises(ValueError, match=r"^x must be shaped"):
        expected_sq_error_fixed(torch.zeros(5, dtype=torch.float64), m, pr["weight"], pr["bias"])


def test_rejects_m_weight_latent_mismatch():
    pr, m = _small()
    with pytest.raises(ValueError, match=r"weight has 4 latent columns but m has 5 latents"):
        expected_loglik_fixed(pr["x"], m.with_constant(), pr["weight"], pr["bias"], 1.0)
    with pytest.raises(ValueError, match=r"alpha_weight has 3 latent columns but m has 4"):
        learnable_terms(pr["x"], m, pr["weight"], pr["bias"], pr["alpha_weight"][:, :3], pr["alpha_bias"])
    with pytest.raises(ValueError, match=r"^weight must be 2-D"):
        expected_sq_error_fixed(pr["x"], m, pr["weight"][0], None)
    with pytest.raises(ValueError, match=r"^m must"):
        expected_sq_error_fixed(pr["x"], m.mean, pr["weight"], None)


def test_rejects_bias_shape():
    pr, m = _small()
    with pytest.raises(ValueError, match=r"^bias must have shape \(5,\)"):
        expected_loglik_fixed(pr["x"], m, pr["weight"], pr["bias"][:4], 1.0)
    with pytest.raises(ValueError, match=r"^bias must have shape"):
        expected_loglik_learnable(pr["x"], m, pr["weight"], pr["bias"][None], pr["alpha_weight"], pr["alpha_bias"])
    with pytest.raises(ValueError, match=r"^alpha_bias must have shape"):
        learnable_terms(pr["x"], m, pr["weight"], pr["bias"], pr["alpha_weight"], pr["alpha_bias"][:3])


def test_rejects_alpha_weight_pixel_mismatch():
    pr, m = _small()
    with pytest.raises(ValueError, match=r"alpha_weight has 4 rows"):
        learnable_terms(pr["x"], m, pr["weight"], pr["bias"], pr["alpha_weight"][:4], None)


@pytest.mark.parametrize("sigma2", [0.0, -1.0, 0, float("nan"), float("inf"),
                                    "tensor0", "tensor_neg_entry", "tensor_zero_entry_grad", "tensor_bad_shape"])
def test_rejects_bad_sigma2(sigma2):
    pr, m = _small()
    if sigma2 == "tensor0":
        sigma2 = torch.tensor(0.0, dtype=torch.float64)
    elif sigma2 == "tensor_neg_entry":
        sigma2 = torch.tensor([1.0, 1.0, -0.5, 1.0, 1.0], dtype=torch.float64)
    elif sigma2 == "tensor_zero_entry_grad":
        sigma2 = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    elif sigma2 == "tensor_bad_shape":
        sigma2 = torch.ones(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="sigma2"):
        expected_loglik_fixed(pr["x"], m, pr["weight"], pr["bias"], sigma2)
