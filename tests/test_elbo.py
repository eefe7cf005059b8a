"""silentvae.silent_elbo (the one-call ELBO) and Algorithm 1's public helpers (silentvae.algorithm1)."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Laplace, Normal, kl_divergence

import silentvae
from silentvae import (BernoulliPosterior, GaussianPosterior, LinearDecoder, LinearPrecisionDecoder, encoder_frozen,
                       silent_elbo, silent_weight, split_gradient)
from silentvae.analytic import expected_loglik_learnable
from silentvae.training.run import RunConfig

B, D, LATENTS = 5, 12, 4


def _linear(dtype, device="cpu"):
    torch.manual_seed(1)
    return nn.Linear(LATENTS, D).to(device=device, dtype=dtype)


def _data(dtype, device="cpu"):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(B, D, generator=g, dtype=dtype)
    loc = torch.randn(B, LATENTS, generator=g, dtype=dtype)
    scale = 0.3 + torch.rand(B, LATENTS, generator=g, dtype=dtype)
    logits = 2 * torch.randn(B, LATENTS, generator=g, dtype=dtype)
    return [t.to(device) for t in (x, loc, scale, logits)]


def _monte_carlo(x, q, dec, sigma2, n=40000):
    """Mean and standard error of log N(x; dec(z), sigma2 I) - KL(q || prior) over n samples z ~ q."""
    with torch.no_grad():
        z = q.sample((n,))
        ll = Normal(dec(z), math.sqrt(sigma2)).log_prob(x).sum(-1)
        prior = Normal(0.0, 1.0) if isinstance(q, Normal) else Bernoulli(probs=torch.tensor(0.5, dtype=x.dtype))
        kl = kl_divergence(q, prior).sum(-1)
        return ll.mean(0) - kl, ll.std(0) / math.sqrt(n)


@pytest.mark.parametrize("kind", ["normal", "bernoulli"])
def test_silent_elbo_equals_a_monte_carlo_estimate(kind):
    x, loc, scale, logits = _data(torch.float64)
    dec = _linear(torch.float64)
    q = Normal(loc, scale) if kind == "normal" else Bernoulli(logits=logits)
    got = silent_elbo(x, q, dec, sigma2=0.05)
    mc, se = _monte_carlo(x, q, dec, 0.05)
    assert got.shape == (B,)
    assert torch.all((got - mc).abs() < 5 * se), (got, mc, se)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_form_of_q_equals_the_package_posteriors_internal_computation(dtype):
    x, loc, scale, logits = _data(dtype)
    torch.manual_seed(3)
    fixed = LinearDecoder(LATENTS, (D,), sigma2=0.05).to(dtype)
    nn.init.normal_(fixed.linear.weight)
    gauss, bern = GaussianPosterior(loc, scale.square()), BernoulliPosterior(logits)
    want_g = fixed.expected_loglik(x, gauss) - gauss.kl()
    want_b = fixed.expected_loglik(x, bern) - bern.kl()
    tol = dict(rtol=1e-5, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-9)
    for q in (gauss, Normal(loc, scale), Independent(Normal(loc, scale), 1)):
        got = silent_elbo(x, q, fixed)
        assert got.dtype == dtype
        torch.testing.assert_close(got, want_g, **tol)
        torch.testing.assert_close(silent_elbo(x, q, fixed.linear, sigma2=0.05), want_g, **tol)
    for q in (bern, Bernoulli(logits=logits), Bernoulli(probs=torch.sigmoid(logits)),
              Independent(Bernoulli(logits=logits), 1)):
        torch.testing.assert_close(silent_elbo(x, q, fixed), want_b, **tol)


def test_learnable_precision_decoder_uses_the_taylor_closed_form():
    x, loc, scale, logits = _data(torch.float64)
    torch.manual_seed(4)
    dec = LinearPrecisionDecoder(LATENTS, (D,)).double()
    nn.init.normal_(dec.mu.weight, std=0.3)
    for q, post in ((Normal(loc, scale), GaussianPosterior(loc, scale.square())),
                    (Bernoulli(logits=logits), BernoulliPosterior(logits))):
        m = post.moments()
        want = expected_loglik_learnable(x, m, dec.mu.weight, dec.mu.bias, dec.alpha.weight, dec.alpha.bias) - post.kl()
        torch.testing.assert_close(silent_elbo(x, q, dec), want)


def test_image_shaped_x_is_flattened_and_a_per_pixel_sigma2_is_taken():
    x, loc, scale, _ = _data(torch.float64)
    dec, q = _linear(torch.float64), Normal(loc, scale)
    sigma2 = torch.linspace(0.01, 0.1, D, dtype=torch.float64)
    flat = silent_elbo(x, q, dec, sigma2=sigma2)
    torch.testing.assert_close(silent_elbo(x.view(B, 1, 3, 4), q, dec, sigma2=sigma2), flat)
    assert not torch.allclose(flat, silent_elbo(x, q, dec, sigma2=0.05))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["normal", "bernoulli_logits", "bernoulli_probs"])
def test_gradients_reach_the_parameters_of_q_and_the_decoder(kind, dtype):
    x, loc, scale, logits = _data(dtype)
    dec = _linear(dtype)
    if kind == "normal":
        params = [loc.requires_grad_(), scale.requires_grad_()]
        q = Normal(*params)
    elif kind == "bernoulli_logits":
        params = [logits.requires_grad_()]
        q = Bernoulli(logits=params[0])
    else:
        params = [torch.sigmoid(logits).requires_grad_()]
        q = Bernoulli(probs=params[0])
    silent_elbo(x, q, dec, sigma2=0.05).sum().backward()
    for t in params + [dec.weight, dec.bias]:
        assert t.grad is not None and t.grad.dtype == dtype and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_the_gradient_is_the_gradient_of_the_expectation():
    """Gaussian q: d/d loc of the exact ELBO equals a large reparameterised Monte Carlo gradient."""
    x, loc, scale, _ = _data(torch.float64)
    dec = _linear(torch.float64)
    loc.requires_grad_()
    (exact,) = torch.autograd.grad(silent_elbo(x, Normal(loc, scale), dec, sigma2=0.05).sum(), loc)
    torch.manual_seed(5)
    eps = torch.randn(20000, B, LATENTS, dtype=torch.float64)
    z = loc + scale * eps
    ll = Normal(dec(z), math.sqrt(0.05)).log_prob(x).sum(-1).mean(0)
    kl = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).sum(-1)
    (mc,) = torch.autograd.grad((ll - kl).sum(), loc)
    torch.testing.assert_close(exact, mc, rtol=0.02, atol=0.05 * exact.abs().max().item())


@pytest.mark.parametrize("q, match", [
    (Laplace(torch.zeros(B, LATENTS), 1.0),
     r"Laplace.*torch\.distributions\.normal\.Normal.*Bernoulli.*Independent.*GaussianPosterior"),
    (torch.zeros(B, LATENTS), r"Tensor.*Normal"),
])
def test_an_unsupported_q_is_refused_naming_the_ones_taken(q, match):
    with pytest.raises(TypeError, match=match):
        silent_elbo(torch.rand(B, D), q, nn.Linear(LATENTS, D), sigma2=0.1)


def test_shape_errors_name_the_problem_and_the_fix():
    x, loc, scale, _ = _data(torch.float32)
    q = Normal(loc, scale)
    with pytest.raises(ValueError, match=r"x has 13 values per example.*out_features=13"):
        silent_elbo(torch.rand(B, 13), q, nn.Linear(LATENTS, D), sigma2=0.1)
    with pytest.raises(ValueError, match=r"q has 4 latents but the decoder takes 3.*in_features=4"):
        silent_elbo(x, q, nn.Linear(3, D), sigma2=0.1)
    with pytest.raises(ValueError, match=r"x has batch size 4 but q has 5"):
        silent_elbo(x[:4], q, nn.Linear(LATENTS, D), sigma2=0.1)
    with pytest.raises(ValueError, match=r"batch shape \(batch, latents\).*unsqueeze"):
        silent_elbo(x[:1], Normal(loc[0], scale[0]), nn.Linear(LATENTS, D), sigma2=0.1)
    with pytest.raises(ValueError, match=r"Independent over 2 dimensions.*Independent\(base, 1\)"):
        silent_elbo(x, Independent(Normal(loc, scale), 2), nn.Linear(LATENTS, D), sigma2=0.1)
    with pytest.raises(ValueError, match=r"x must be a tensor shaped \(batch, D\)"):
        silent_elbo(x[0], q, nn.Linear(LATENTS, D), sigma2=0.1)


def test_sigma2_missing_for_a_plain_linear_or_given_for_a_decoder_that_has_one():
    x, loc, scale, _ = _data(torch.float32)
    q = Normal(loc, scale)
    with pytest.raises(ValueError, match=r"pass sigma2.*0\.01"):
        silent_elbo(x, q, nn.Linear(LATENTS, D))
    with pytest.raises(ValueError, match=r"LinearDecoder carries its own variance; leave sigma2=None"):
        silent_elbo(x, q, LinearDecoder(LATENTS, (D,)), sigma2=0.1)
    with pytest.raises(ValueError, match=r"sigma2 must be a finite positive"):
        silent_elbo(x, q, nn.Linear(LATENTS, D), sigma2=0.0)


def test_a_nonlinear_decoder_points_to_algorithm_1():
    x, loc, scale, _ = _data(torch.float32)
    mlp = nn.Sequential(nn.Linear(LATENTS, 8), nn.ReLU(), nn.Linear(8, D))
    with pytest.raises(TypeError, match=r"Sequential, not a linear Gaussian decoder.*split_gradient.*silent_weight"):
        silent_elbo(x, Normal(loc, scale), mlp, sigma2=0.1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_silent_elbo_on_cuda_equals_cpu(dtype):
    x, loc, scale, logits = _data(dtype)
    dec = _linear(dtype)
    for q, q_cuda in ((Normal(loc, scale), Normal(loc.cuda().requires_grad_(), scale.cuda())),
                      (Bernoulli(logits=logits), Bernoulli(logits=logits.cuda().requires_grad_()))):
        got = silent_elbo(x.cuda(), q_cuda, dec.cuda(), sigma2=0.05)
        assert got.device.type == "cuda"
        got.sum().backward()
        torch.testing.assert_close(got.cpu(), silent_elbo(x, q, dec.cpu(), sigma2=0.05))
        param = q_cuda.loc if isinstance(q_cuda, Normal) else q_cuda.logits
        assert param.grad is not None and torch.isfinite(param.grad).all()


# --- Algorithm 1 helpers ---------------------------------------------------------------------------------

def test_silent_weight_anneals_linearly_to_zero_and_the_encoder_freezes_at_the_cutoff():
    assert [silent_weight(e, 0.25) for e in (1, 2, 3, 4, 5)] == [0.75, 0.5, 0.25, 0.0, 0.0]
    assert silent_weight(7, 0.0) == 1.0
    with pytest.raises(ValueError, match="anneal_rate must be >= 0"):
        silent_weight(1, -0.1)
    assert [encoder_frozen(e, 3) for e in (1, 2, 3, 4)] == [False, False, True, True]
    assert not encoder_frozen(10_000, None)


def test_the_engine_reads_its_schedule_from_the_same_helpers():
    cfg = RunConfig(experiment="learnable", estimator="reparam", silent=True, anneal_rate=0.3, cutoff_epoch=2)
    assert [cfg.silent_weight(e) for e in (1, 2, 3, 4)] == [silent_weight(e, 0.3) for e in (1, 2, 3, 4)]
    assert [cfg.encoder_frozen(e) for e in (1, 2, 3)] == [encoder_frozen(e, 2) for e in (1, 2, 3)]


def _param_of(q):
    base = q.base_dist if isinstance(q, Independent) else q
    return {Normal: lambda d: d.loc, Bernoulli: lambda d: d._param, GaussianPosterior: lambda d: d.mean,
            BernoulliPosterior: lambda d: d.logits}[type(base)](base)


@pytest.mark.parametrize("make", [
    lambda t: Normal(t, torch.ones_like(t)),
    lambda t: Bernoulli(logits=t),
    lambda t: Bernoulli(probs=torch.sigmoid(t)),
    lambda t: Independent(Normal(t, torch.ones_like(t)), 1),
    lambda t: GaussianPosterior(t, torch.ones_like(t)),
    lambda t: BernoulliPosterior(t),
])
@pytest.mark.parametrize("w", [0.3, 1.0, 0.0, "tensor"])
def test_split_gradient_keeps_values_and_scales_the_gradients_by_w_and_one_minus_w(make, w):
    w = torch.tensor(0.7, dtype=torch.float64) if w == "tensor" else w
    t = torch.randn(3, LATENTS, dtype=torch.float64, requires_grad=True)
    q = make(t)
    q_silent, q_sampled = split_gradient(q, w)
    a, b = _param_of(q_silent), _param_of(q_sampled)
    torch.testing.assert_close(a, _param_of(q))
    torch.testing.assert_close(b, _param_of(q))
    weight_a, weight_b = torch.rand(3, LATENTS, dtype=torch.float64), torch.rand(3, LATENTS, dtype=torch.float64)
    grads = []
    for view, weight in ((a, weight_a), (b, weight_b), (_param_of(q), weight_a)):
        if view.requires_grad:
            (g,) = torch.autograd.grad((view * weight).sum(), t, retain_graph=True)
        else:
            g = torch.zeros_like(t)
        grads.append(g)
    (g_full_b,) = torch.autograd.grad((_param_of(q) * weight_b).sum(), t)
    wf = float(w)
    torch.testing.assert_close(grads[0], wf * grads[2])
    torch.testing.assert_close(grads[1], (1 - wf) * g_full_b)


def test_top_level_api():
    assert set(silentvae.__all__) >= {"silent_elbo", "silent_weight", "encoder_frozen", "split_gradient",
                                      "LinearDecoder", "LinearPrecisionDecoder", "__version__"}
    for name in silentvae.__all__:
        assert hasattr(silentvae, name), name


# --- what the closed form cannot compute is refused or handled exactly (issue 29) -------------------------

def _bernoulli_problem(dtype=torch.float64, seed=6):
    """x (B, D), Bernoulli logits (B, LATENTS), an nn.Linear decoder and a per-pixel sigma2, and the exact
    E_q log N(x; W z + b, sigma2) - KL(q || Bern(1/2)) by enumerating all 2^LATENTS codes (tests/helpers.py)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, D, generator=g, dtype=torch.float64)
    logits = 2 * torch.randn(B, LATENTS, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    dec = nn.Linear(LATENTS, D).double()
    sigma2 = torch.linspace(0.02, 0.2, D, dtype=torch.float64)
    return x.to(dtype), logits.to(dtype), dec.to(dtype), sigma2.to(dtype)


def _enumerated_elbo(x, logits, weight, bias, sigma2, prior_p=0.5):
    from helpers import bernoulli_enum_fixed

    x, logits, weight, bias = (t.detach().double() for t in (x, logits, weight, bias))
    p = torch.sigmoid(logits)
    loglik = bernoulli_enum_fixed(x, p, weight, bias, torch.as_tensor(sigma2, dtype=torch.float64))["loglik"]
    kl = (p * torch.log(p / prior_p) + (1 - p) * torch.log((1 - p) / (1 - prior_p))).sum(-1)
    return loglik - kl


class SigmoidLinear(nn.Linear):
    def forward(self, z):
        return torch.sigmoid(super().forward(z))


def test_a_linear_subclass_that_changes_forward_is_refused_and_its_plain_weights_give_the_exact_value():
    x, logits, dec, sigma2 = _bernoulli_problem()
    sub = SigmoidLinear(LATENTS, D).double()
    sub.load_state_dict(dec.state_dict())
    with pytest.raises(TypeError, match=r"SigmoidLinear, a subclass of Linear that overrides forward"):
        silent_elbo(x, Bernoulli(logits=logits), sub, sigma2=sigma2)
    torch.testing.assert_close(silent_elbo(x, Bernoulli(logits=logits), dec, sigma2=sigma2),
                               _enumerated_elbo(x, logits, dec.weight, dec.bias, sigma2))

    class Shifted(LinearDecoder):
        def mean(self, z):
            return super().mean(z) + 1.0

    with pytest.raises(TypeError, match=r"Shifted, a subclass of LinearDecoder that overrides mean"):
        silent_elbo(x, Bernoulli(logits=logits), Shifted(LATENTS, D).double())


@pytest.mark.parametrize("where", ["forward", "pre", "inner", "global"])
def test_forward_hooks_are_refused_and_the_value_is_exact_once_removed(where):
    x, logits, dec, sigma2 = _bernoulli_problem()
    q = Bernoulli(logits=logits)
    fixed = LinearDecoder(LATENTS, D, sigma2=0.05).double()
    fixed.linear.load_state_dict(dec.state_dict())
    target, sig = (fixed, None) if where == "inner" else (dec, sigma2)
    if where == "forward":
        handle = dec.register_forward_hook(lambda mod, args, out: 2 * out)
    elif where == "pre":
        handle = dec.register_forward_pre_hook(lambda mod, args: (args[0] + 1,))
    elif where == "inner":
        handle = fixed.linear.register_forward_hook(lambda mod, args, out: 2 * out)
    else:
        handle = nn.modules.module.register_module_forward_hook(lambda mod, args, out: out)
    try:
        with pytest.raises(TypeError, match=r"forward hooks.*cannot see"):
            silent_elbo(x, q, target, sigma2=sig)
    finally:
        handle.remove()
    want = _enumerated_elbo(x, logits, dec.weight, dec.bias, sigma2 if sig is not None else 0.05)
    torch.testing.assert_close(silent_elbo(x, q, target, sigma2=sig), want)


def test_a_parametrized_weight_is_read_exactly_and_its_gradient_reaches_the_original():
    from torch.nn.utils import parametrize

    class Doubled(nn.Module):
        def forward(self, w):
            return 2 * w

    x, logits, dec, sigma2 = _bernoulli_problem()
    raw = dec.weight.detach().clone()
    parametrize.register_parametrization(dec, "weight", Doubled())
    got = silent_elbo(x, Bernoulli(logits=logits), dec, sigma2=sigma2)
    torch.testing.assert_close(got, _enumerated_elbo(x, logits, 2 * raw, dec.bias, sigma2))
    got.sum().backward()
    assert dec.parametrizations.weight.original.grad.abs().sum() > 0


def test_a_lazy_linear_is_refused_until_it_has_run_then_exact():
    x, logits, dec, sigma2 = _bernoulli_problem()
    lazy = nn.LazyLinear(D, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"nn\.LazyLinear that has not run yet.*call it once"):
        silent_elbo(x, Bernoulli(logits=logits), lazy, sigma2=sigma2)
    lazy(torch.zeros(1, LATENTS, dtype=torch.float64))
    torch.testing.assert_close(silent_elbo(x, Bernoulli(logits=logits), lazy, sigma2=sigma2),
                               _enumerated_elbo(x, logits, lazy.weight, lazy.bias, sigma2))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_and_returned_in_float32(half):
    """bf16 / f16 q and decoder: the value of those (rounded) parameters, in float32 -- not off by a percent."""
    x, logits, dec, sigma2 = _bernoulli_problem()
    with torch.no_grad():
        dec.weight.mul_(200)  # |ELBO| > 65,504 (float16's largest value); bfloat16 sums would be off by ~1%
    dec_h, logits_h = dec.to(half), logits.to(half).requires_grad_()
    got = silent_elbo(x.to(half), Bernoulli(logits=logits_h), dec_h, sigma2=sigma2)
    assert got.dtype == torch.float32
    want = _enumerated_elbo(x.to(half), logits_h, dec_h.weight, dec_h.bias, sigma2.float())
    assert want.abs().min() > 7e4
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)
    got.sum().backward()
    assert logits_h.grad.dtype == half and dec_h.weight.grad.dtype == half


def test_autocast_to_bfloat16_does_not_change_the_value():
    x, logits, dec, sigma2 = _bernoulli_problem(torch.float32)
    with torch.no_grad():
        dec.weight.mul_(200)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = silent_elbo(x, Bernoulli(logits=logits), dec, sigma2=sigma2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _enumerated_elbo(x, logits, dec.weight, dec.bias, sigma2),
                               rtol=1e-5, atol=0)


def test_integer_images_are_refused_with_the_fix_and_scaled_ones_are_exact():
    x, logits, dec, sigma2 = _bernoulli_problem()
    images = (x * 256).to(torch.uint8)
    with pytest.raises(TypeError, match=r"torch\.uint8.*scale them to \[0, 1\): x\.float\(\) / 256"):
        silent_elbo(images, Bernoulli(logits=logits), dec, sigma2=sigma2)
    scaled = images.double() / 256
    torch.testing.assert_close(silent_elbo(scaled, Bernoulli(logits=logits), dec, sigma2=sigma2),
                               _enumerated_elbo(scaled, logits, dec.weight, dec.bias, sigma2))


@pytest.mark.parametrize("w", [1.5, -0.1, float("nan"), torch.tensor(1.5)])
def test_split_gradient_refuses_w_outside_zero_one(w):
    q = Normal(torch.zeros(2, LATENTS), torch.ones(2, LATENTS))
    with pytest.raises(ValueError, match=r"w must be in \[0, 1\].*silent_weight"):
        split_gradient(q, w)


@pytest.mark.parametrize("make", [lambda s: np.float32(s[0]), lambda s: np.asarray(s), lambda s: list(s),
                                  lambda s: np.asarray(s, dtype=np.float32)])
def test_numpy_and_list_sigma2_equal_the_enumerated_value(make):
    x, logits, dec, sigma2 = _bernoulli_problem()
    s = [float(v) for v in sigma2]
    value = make(s)
    want_s2 = torch.full((D,), float(np.float32(s[0])), dtype=torch.float64) if np.ndim(value) == 0 else \
        torch.as_tensor(np.asarray(value), dtype=torch.float64)
    torch.testing.assert_close(silent_elbo(x, Bernoulli(logits=logits), dec, sigma2=value),
                               _enumerated_elbo(x, logits, dec.weight, dec.bias, want_s2))


def test_a_dtype_mismatch_names_q_and_the_decoder():
    x, logits, dec, sigma2 = _bernoulli_problem()
    with pytest.raises(TypeError, match=r"q's parameters are torch\.float32 but the decoder's weights are "
                                        r"torch\.float64.*decoder\.to\(torch\.float32\)"):
        silent_elbo(x, Bernoulli(logits=logits.float()), dec, sigma2=sigma2)
    # x is data: a float32 x with a float64 model is taken (and computed in float64)
    torch.testing.assert_close(silent_elbo(x.float(), Bernoulli(logits=logits), dec, sigma2=sigma2),
                               _enumerated_elbo(x.float(), logits, dec.weight, dec.bias, sigma2))


def test_a_device_mismatch_names_the_argument_on_the_other_device():
    x, logits, dec, sigma2 = _bernoulli_problem()
    with pytest.raises(ValueError, match=r"x is on meta but the decoder is on cpu: move x"):
        silent_elbo(x.to("meta"), Bernoulli(logits=logits), dec, sigma2=sigma2)
    with pytest.raises(ValueError, match=r"q is on meta but the decoder is on cpu: move q"):
        silent_elbo(x, Bernoulli(logits=logits.to("meta"), validate_args=False), dec, sigma2=sigma2)
    torch.testing.assert_close(silent_elbo(x, Bernoulli(logits=logits), dec, sigma2=sigma2),
                               _enumerated_elbo(x, logits, dec.weight, dec.bias, sigma2))


def test_an_empty_batch_is_named():
    x, logits, dec, sigma2 = _bernoulli_problem()
    with pytest.raises(ValueError, match=r"x is an empty batch \(0 examples\).*drop_last"):
        silent_elbo(x[:0], Bernoulli(logits=logits[:0]), dec, sigma2=sigma2)
    torch.testing.assert_close(silent_elbo(x[:1], Bernoulli(logits=logits[:1]), dec, sigma2=sigma2),
                               _enumerated_elbo(x[:1], logits[:1], dec.weight, dec.bias, sigma2))


def test_bits_per_dim_takes_numpy_integers():
    assert silentvae.bits_per_dim(-100.0, np.int64(784)) == silentvae.bits_per_dim(-100.0, 784) == \
        pytest.approx((100.0 / 784 + math.log(256)) / math.log(2))
    with pytest.raises(ValueError, match="num_dims must be a positive int"):
        silentvae.bits_per_dim(-100.0, True)


# --- prior, terms, types, the package's names (issue 29) -------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_normal_prior_of_another_scale_changes_only_the_kl(dtype):
    x, loc, scale, _ = _data(dtype)
    dec = _linear(dtype)
    q = Normal(loc, scale)
    s = 2.5
    rec, kl = silent_elbo(x, q, dec, sigma2=0.05, prior=Normal(torch.tensor(0.0, dtype=dtype), s),
                          return_terms=True)
    want_kl = (math.log(s) - torch.log(scale) + (scale.square() + loc.square()) / (2 * s * s) - 0.5).sum(-1)
    torch.testing.assert_close(kl, want_kl)
    std_rec, std_kl = silent_elbo(x, q, dec, sigma2=0.05, return_terms=True)
    torch.testing.assert_close(rec, std_rec)
    torch.testing.assert_close(std_kl, (-torch.log(scale) + (scale.square() + loc.square()) / 2 - 0.5).sum(-1))
    torch.testing.assert_close(silent_elbo(x, Independent(q, 1), dec, sigma2=0.05,
                                           prior=Independent(Normal(torch.zeros(LATENTS, dtype=dtype), s), 1)),
                               rec - want_kl)


def test_a_bernoulli_prior_and_return_terms_equal_enumeration():
    x, logits, dec, sigma2 = _bernoulli_problem()
    prior = Bernoulli(probs=torch.tensor(0.2, dtype=torch.float64))
    rec, kl = silent_elbo(x, Bernoulli(logits=logits), dec, sigma2=sigma2, prior=prior, return_terms=True)
    torch.testing.assert_close(rec - kl, _enumerated_elbo(x, logits, dec.weight, dec.bias, sigma2, prior_p=0.2))
    torch.testing.assert_close(silent_elbo(x, Bernoulli(logits=logits), dec, sigma2=sigma2, prior=prior), rec - kl)


def test_a_prior_without_a_closed_form_kl_is_refused():
    x, loc, scale, logits = _data(torch.float64)
    dec = _linear(torch.float64)
    with pytest.raises(TypeError, match=r"prior is a Laplace, but q has gaussian latents.*Normal\(0, s\)"):
        silent_elbo(x, Normal(loc, scale), dec, sigma2=0.05, prior=Laplace(0.0, 1.0))
    with pytest.raises(TypeError, match=r"prior is a Normal, but q has bernoulli latents.*Bernoulli\(probs=p\)"):
        silent_elbo(x, Bernoulli(logits=logits), dec, sigma2=0.05, prior=Normal(0.0, 1.0))
    with pytest.raises(ValueError, match=r"prior has batch shape \(3,\), which does not broadcast"):
        silent_elbo(x, Normal(loc, scale), dec, sigma2=0.05, prior=Normal(torch.zeros(3), 1.0))


def test_the_taylor_gap_in_the_docstring_is_what_enumeration_measures():
    """silent_elbo's docstring: the learnable-precision value is an approximation above the exact expectation."""
    from helpers import LOG_2PI, bernoulli_enum_learnable

    dec = LinearPrecisionDecoder(8, 16).double()
    x = torch.full((1, 16), 0.5, dtype=torch.float64)
    q = Bernoulli(probs=torch.full((1, 8), 0.5, dtype=torch.float64))
    gaps = []
    for signs, bias in ((torch.tensor([1.0, -1.0] * 4), 1.1), (torch.ones(8), 1.0)):
        with torch.no_grad():
            dec.mu.bias.zero_()
            dec.alpha.weight.copy_(0.5 * signs.double().expand(16, 8))
            dec.alpha.bias.fill_(bias)
        rec, _ = silent_elbo(x, q, dec, return_terms=True)
        e = bernoulli_enum_learnable(x, q.probs, dec.mu.weight, dec.mu.bias, dec.alpha.weight, dec.alpha.bias)
        exact = (-0.5 * e["quad"] + 0.5 * e["log_alpha_sq"]).sum(-1) - 8 * LOG_2PI
        gaps.append((rec.item(), exact.item()))
    assert [round(v, 2) for v in gaps[0]] == [-17.74, -20.50]
    assert round(gaps[0][0] - gaps[0][1], 2) == 2.76 and round(gaps[1][0] - gaps[1][1], 2) == 0.10
    doc = " ".join(silent_elbo.__doc__.split())
    assert "-17.74 nats" in doc and "-20.50" in doc and "2.76 nats *above*" in doc and "0.10 nats" in doc


def test_type_hints_name_the_accepted_types():
    import typing

    hints = typing.get_type_hints(silent_elbo)
    for name, types in (("q", {Normal, Bernoulli, Independent, GaussianPosterior, BernoulliPosterior}),
                        ("decoder", {nn.Linear, LinearDecoder, LinearPrecisionDecoder})):
        assert set(typing.get_args(hints[name])) == types, name
    assert np.ndarray in typing.get_args(hints["sigma2"])


def test_dir_lists_each_public_name_once_and_no_imports():
    import subprocess
    import sys

    program = ("import silentvae; a = dir(silentvae); silentvae.silent_elbo; silentvae.LinearDecoder; "
               "b = dir(silentvae); print(repr((a, b)))")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout
    for names in eval(out):
        assert len(names) == len(set(names)) and set(silentvae.__all__) <= set(names)
        assert not {"Any", "importlib", "annotations", "TYPE_CHECKING"} & set(names)
