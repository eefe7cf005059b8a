"""silentvae.silent_elbo (the one-call ELBO) and Algorithm 1's public helpers (silentvae.algorithm1)."""

import math

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
