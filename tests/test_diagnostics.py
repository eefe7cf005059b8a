"""Table 1's variance decomposition and Section 4.1's Taylor-bias check against brute-force computations."""

import itertools
import math

import numpy as np
import pytest
import torch

from silentvae.training.diagnostics import (condition_on_free_latents, decompose, enumerate_states, est_pct_interval,
                                   exact_expected_loglik_bernoulli, gradient_variance, taylor_bias_check)
from silentvae.estimators import Reinforce, Reparameterization, SilentGradient
from silentvae.models import LinearDecoder, LinearPrecisionDecoder, MnistEncoder


def _tiny(latent: str, d: int = 3, decoder: str = "fixed", seed: int = 0):
    torch.manual_seed(seed)
    enc = MnistEncoder((1, 6, 6), channels=2, latent_dim=d, latent=latent).double()
    dec = (LinearDecoder(d, (1, 6, 6), sigma2=0.1) if decoder == "fixed"
           else LinearPrecisionDecoder(d, (1, 6, 6), init_std=0.5)).double()
    # a trained-looking W (both linear decoders start at W (W_mu) = 0, where latents do not matter yet)
    torch.nn.init.normal_(dec.linear.weight if decoder == "fixed" else dec.mu.weight, 0.0, 0.3)
    return enc, dec


def _batches(n: int, b: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, 1, 6, 6, generator=g, dtype=torch.float64) for _ in range(n)]


def _all_grads(enc, dec, estimator, batches, num_samples, seed):
    """Every (batch, sample) encoder gradient of the reconstruction estimate alone (no KL), drawing latents in
    gradient_variance's order."""
    params = list(enc.parameters())
    gen = torch.Generator().manual_seed(seed)
    out = []
    for x in batches:
        post = enc(x)
        rows = []
        for _ in range(num_samples):
            grads = torch.autograd.grad(estimator.loss(post, dec, x, gen).mean(), params, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        out.append(torch.stack(rows))
    return torch.stack(out)  # (N, S, P)


@pytest.mark.parametrize("block", [16, 2])
def test_variance_decomposition_matches_law_of_total_variance(block, monkeypatch):
    monkeypatch.setattr("silentvae.training.diagnostics.DRAW_BLOCK", block)   # 2: draws combined over blocks of 2, 2, 1
    enc, dec = _tiny("gaussian")
    batches = _batches(4)
    got = gradient_variance(enc, dec, Reparameterization(), batches, num_samples=5, seed=3)
    g = _all_grads(enc, dec, Reparameterization(), batches, 5, seed=3)
    est_var = g.var(dim=1, unbiased=True).mean(0).sum().item()
    batch_var_raw = g.mean(dim=1).var(dim=0, unbiased=True).sum().item()
    batch_var = batch_var_raw - est_var / 5  # less the estimator noise left in the 5-draw means; never clamped
    assert got["est_var"] == pytest.approx(est_var, rel=1e-9)
    assert got["batch_var_raw"] == pytest.approx(batch_var_raw, rel=1e-6)
    assert got["batch_var"] == pytest.approx(batch_var, rel=1e-6)
    assert got["est_pct"] == pytest.approx(100 * est_var / (est_var + batch_var), rel=1e-6)
    assert got["est_var_per_batch"] == pytest.approx(g.var(dim=1, unbiased=True).sum(-1).tolist(), rel=1e-9)
    assert est_var > 0 and batch_var_raw > 0 and got["num_samples"] == 5 and got["num_batches"] == 4
    low, high = got["est_pct_ci"]
    assert low < got["est_pct"] < high


def test_variance_is_of_the_reconstruction_term_without_kl():
    """The KL is exact for every method: Table 1 decomposes the reconstruction estimate's gradient only."""
    enc, dec = _tiny("gaussian")
    batches = _batches(3)
    got = gradient_variance(enc, dec, SilentGradient(), batches, num_samples=2, confidence_level=None)
    params = list(enc.parameters())
    recon, elbo = [], []
    for x in batches:
        post = enc(x)
        loss = SilentGradient().loss(post, dec, x).mean()
        recon.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)]))
        elbo.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss + post.kl().mean(), params)]))
    recon_var = torch.stack(recon).var(0).sum().item()
    assert got["batch_var"] == pytest.approx(recon_var, rel=1e-7)   # mean gradients kept in float32
    assert abs(torch.stack(elbo).var(0).sum().item() - recon_var) > 1e-5 * recon_var   # with the KL it would differ


@pytest.mark.parametrize("latent", ["gaussian", "bernoulli"])
def test_silent_gradient_has_exactly_zero_estimator_variance(latent):
    enc, dec = _tiny(latent)
    got = gradient_variance(enc, dec, SilentGradient(), _batches(3), num_samples=4)
    assert got["est_var"] == 0.0 and got["est_pct"] == 0.0 and got["est_pct_ci"] == [0.0, 0.0]
    assert got["est_var_per_batch"] == [0.0, 0.0, 0.0]
    assert got["num_samples"] == 2    # deterministic: two draws per batch, which must agree exactly
    assert got["batch_var"] > 0 and got["batch_var"] == got["batch_var_raw"]


class _Synthetic(torch.nn.Module):
    """An 'encoder' whose reconstruction gradient is g(batch, eps) = mu_batch + sigma * eps exactly, mu_batch ~
    N(0, tau^2 I) carried by the batch, eps ~ N(0, I): per parameter Est Var = sigma^2, Batch Var = tau^2."""

    def __init__(self, p: int):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(p, dtype=torch.float64))

    def forward(self, x):
        return self.theta


class _SyntheticEstimator:
    deterministic = False

    def __init__(self, sigma: float):
        self.sigma = sigma

    def loss(self, theta, decoder, x, generator=None):
        eps = torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
        return (theta * (x + self.sigma * eps)).sum().reshape(1)


def test_decomposition_recovers_known_variance_components():
    p, tau, sigma = 4000, 1.0, 2.0
    g = torch.Generator().manual_seed(0)
    batches = [tau * torch.randn(p, generator=g, dtype=torch.float64) for _ in range(20)]
    got = gradient_variance(_Synthetic(p), torch.nn.Identity(), _SyntheticEstimator(sigma), batches, num_samples=4,
                            n_resamples=999)
    assert got["est_var"] == pytest.approx(p * sigma ** 2, rel=0.02)
    assert got["batch_var"] == pytest.approx(p * tau ** 2, rel=0.1)
    truth = 100 * sigma ** 2 / (sigma ** 2 + tau ** 2)
    low, high = got["est_pct_ci"]
    assert low < truth < high and high - low < 10


@pytest.mark.parametrize("n_batches, num_samples, p, tau2, sig2", [(20, 8, 50, 1.0, 2.0), (20, 4, 20, 1.0, 1.0)])
def test_est_pct_interval_covers_the_truth_about_95_percent_of_the_time(n_batches, num_samples, p, tau2, sig2):
    """Many synthetic studies with known components: the bootstrap interval over batches covers the true Est % in
    about 95% of them (200 studies: 0.85-0.99 allows the binomial spread and BCa's small-sample error)."""
    rng = np.random.default_rng(0)
    truth = 100 * sig2 / (sig2 + tau2)
    hits, points = 0, []
    for r in range(200):
        grads = (rng.normal(0, np.sqrt(tau2), (n_batches, 1, p))
                 + rng.normal(0, np.sqrt(sig2), (n_batches, num_samples, p)))
        per_batch = grads.var(1, ddof=1).sum(-1)
        means = grads.mean(1) - grads[0].mean(0)
        gram = means @ means.T
        points.append(decompose(per_batch, gram, num_samples)["est_pct"])
        low, high = est_pct_interval(per_batch, gram, num_samples, n_resamples=999, seed=r)
        hits += low <= truth <= high
    assert abs(np.mean(points) - truth) < 0.5       # the corrected decomposition is unbiased enough
    assert 0.85 <= hits / 200 <= 0.99


def test_negative_corrected_batch_variance_is_kept_and_flagged():
    """One batch repeated: no mini-batch variance at all, so the corrected estimate falls below 0 about half the
    time. It is left negative (not clamped and printed as 100%), and Est % exceeds 100."""
    enc, dec = _tiny("gaussian")
    x = _batches(1)[0]
    seen = []
    for seed in range(12):
        got = gradient_variance(enc, dec, Reparameterization(), [x] * 4, num_samples=3, seed=seed,
                                confidence_level=None)
        assert got["batch_var"] == pytest.approx(got["batch_var_raw"] - got["est_var"] / 3, rel=1e-9)
        assert got["batch_var_negative"] == (got["batch_var"] < 0)
        seen.append(got["batch_var"] < 0)
        if got["batch_var"] < 0:
            assert got["est_pct"] > 100
    assert any(seen) and not all(seen)


def test_decompose_on_a_resample_equals_the_decomposition_of_the_resampled_batches():
    """A resample without repeats is just a subset of batches: decompose() with its counts equals decompose() of
    the subset's own statistics."""
    rng = np.random.default_rng(1)
    grads = rng.normal(size=(6, 5, 3)) + rng.normal(size=(6, 1, 3))
    per_batch, means = grads.var(1, ddof=1).sum(-1), grads.mean(1)
    gram = means @ means.T
    counts = np.array([[1, 0, 1, 1, 0, 1]], dtype=float)
    keep = counts[0] > 0
    sub = decompose(per_batch[keep], gram[np.ix_(keep, keep)], 5)
    full = decompose(per_batch, gram, 5, counts)
    for key in ("est_var", "batch_var_raw", "batch_var", "est_pct"):
        assert full[key][0] == pytest.approx(sub[key], rel=1e-12)
    assert sub["batch_var_raw"] == pytest.approx(means[keep].var(0, ddof=1).sum(), rel=1e-12)


def test_reinforce_variance_uses_a_frozen_baseline():
    enc, dec = _tiny("bernoulli")
    est = Reinforce()
    est.baseline = torch.tensor(1.0, dtype=torch.float64)
    got = gradient_variance(enc, dec, est, _batches(2), num_samples=4)
    assert got["est_var"] > 0
    assert est.frozen and est.baseline.item() == 1.0


def test_gradient_variance_rejects_too_few_draws():
    enc, dec = _tiny("gaussian")
    with pytest.raises(ValueError, match="num_samples"):
        gradient_variance(enc, dec, SilentGradient(), _batches(2), num_samples=1)


def test_enumerated_expectation_equals_a_loop_over_states():
    enc, dec = _tiny("bernoulli", d=3, decoder="learnable")
    x = _batches(1, b=2)[0]
    post = enc(x)
    p = post.probs
    expected = torch.zeros(2, dtype=torch.float64)
    for bits in itertools.product((0.0, 1.0), repeat=3):
        z = torch.tensor(bits, dtype=torch.float64).expand(2, 3)
        q = (p ** z * (1 - p) ** (1 - z)).prod(-1)
        expected += q * dec.loglik(x, z)
    torch.testing.assert_close(exact_expected_loglik_bernoulli(post, dec, x), expected, rtol=1e-12, atol=1e-9)
    # chunked over states (3 states a chunk: the last chunk is partial): the same value and the same gradient
    grad = torch.autograd.grad(exact_expected_loglik_bernoulli(post, dec, x).sum(), post.logits, retain_graph=True)
    torch.testing.assert_close(exact_expected_loglik_bernoulli(post, dec, x, chunk_states=3), expected,
                               rtol=1e-12, atol=1e-9)
    grad_chunked = torch.autograd.grad(exact_expected_loglik_bernoulli(post, dec, x, chunk_states=3).sum(),
                                       post.logits)
    torch.testing.assert_close(grad_chunked, grad, rtol=1e-12, atol=1e-12)
    assert torch.equal(enumerate_states(3), torch.tensor(list(itertools.product((0.0, 1.0), repeat=3))).flip(-1))
    assert torch.equal(enumerate_states(3, start=2, stop=5), enumerate_states(3)[2:5])
    with pytest.raises(ValueError, match="d <= 20"):
        enumerate_states(21)


def test_taylor_bias_vanishes_for_constant_precision_and_sampling_error_shrinks():
    # With W_a = 0 the precision is constant: the Taylor term is exact, so SG equals the exact gradient.
    enc, dec = _tiny("bernoulli", d=4, decoder="learnable")
    with torch.no_grad():
        dec.alpha.weight.zero_()
    x = _batches(1)[0]
    small = taylor_bias_check(enc, dec, x, num_samples=200, chunk=100, seed=0)
    large = taylor_bias_check(enc, dec, x, num_samples=6400, chunk=1600, seed=0)
    assert small["sg"] < 1e-9 * small["exact_norm"]
    assert small["alpha_cv"] == 0.0  # constant precision: nothing for the Taylor term to approximate
    assert large["reinforce"] < small["reinforce"]  # Monte-Carlo error ~ 1/sqrt(S)
    assert large["gumbel"] > 10 * large["sg"]        # the relaxation stays biased


def test_taylor_bias_is_small_but_nonzero_with_learned_precision():
    enc, dec = _tiny("bernoulli", d=4, decoder="learnable")
    with torch.no_grad():
        dec.alpha.weight.normal_(0, 1.0)
    res = taylor_bias_check(enc, dec, _batches(1)[0], num_samples=400, chunk=200, seed=0)
    assert 0 < res["sg"] < 0.5 * res["exact_norm"]
    assert res["latent_dim"] == 4 and res["num_samples"] == 400
    assert res["alpha_cv"] > 0.01


def test_reinforce_with_a_training_like_baseline_is_noisier_than_with_the_exact_expected_loss():
    """The default baseline (this batch's exact expected loss) flatters REINFORCE; a data-average baseline as its
    running average settles at in training leaves more variance (the same draws: the same seed)."""
    from silentvae.training.diagnostics import data_average_loss
    enc, dec = _tiny("bernoulli", d=4, decoder="learnable")
    x = _batches(1)[0]
    exact = taylor_bias_check(enc, dec, x, num_samples=800, chunk=400, seed=0)
    other = torch.cat(_batches(8, seed=5))
    baseline = data_average_loss(enc, dec, other, torch.Generator().manual_seed(1))
    assert abs(float(baseline) - exact["reinforce_baseline"]) > 0.01 * abs(exact["reinforce_baseline"])
    shifted = taylor_bias_check(enc, dec, x, num_samples=800, chunk=400, seed=0,
                                reinforce_baseline=exact["reinforce_baseline"] + 50.0)
    assert shifted["reinforce"] > exact["reinforce"]
    assert shifted["sg"] == exact["sg"] and shifted["gumbel"] == exact["gumbel"]


def test_taylor_bias_needs_bernoulli_latents():
    enc, dec = _tiny("gaussian", decoder="learnable")
    with pytest.raises(ValueError, match="Bernoulli"):
        taylor_bias_check(enc, dec, _batches(1)[0], num_samples=10)


class _KnownGradientEncoder(torch.nn.Module):
    """theta (k,); its 'posterior' carries the batch (whose first row is the batch's true mean gradient c_b)."""

    def __init__(self, k):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(k, dtype=torch.float64))

    def forward(self, x):
        theta = self.theta

        class Posterior:
            def kl(self):
                return torch.zeros(x.shape[0], dtype=x.dtype)
        post = Posterior()
        post.theta, post.c = theta, x[0]
        return post


class _KnownNoiseEstimator:
    """Surrogate loss with gradient c_b + sigma * eps, eps ~ N(0, I): Var_eps[g | b] = sigma^2 per coordinate."""

    def __init__(self, sigma):
        self.sigma = sigma

    def loss(self, posterior, decoder, x, generator):
        eps = torch.randn(posterior.c.shape, generator=generator, dtype=torch.float64)
        return ((posterior.c + self.sigma * eps) * posterior.theta).sum().expand(x.shape[0])


def test_batch_variance_is_that_of_the_true_batch_mean_not_of_the_sample_mean():
    """Synthetic estimator with known parts: per-batch mean gradients c_b (their spread is the batch variance)
    and estimator noise of variance sigma^2 per coordinate. Batch Var must match the spread of the c_b, not the
    spread of the S-draw means (which adds k sigma^2 / S)."""
    k, n_batches, S, sigma = 50, 400, 8, 10.0
    c = torch.randn(n_batches, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    batches = [c_b.expand(2, k).clone() for c_b in c]
    out = gradient_variance(_KnownGradientEncoder(k), torch.nn.Identity(), _KnownNoiseEstimator(sigma), batches, num_samples=S)
    true_batch_var = float(c.var(0).sum())  # ~ k
    assert out["est_var"] == pytest.approx(k * sigma ** 2, rel=0.05)
    assert out["batch_var"] == pytest.approx(true_batch_var, abs=25.0)  # sd of the estimate ~ 7
    assert out["batch_var_raw"] == pytest.approx(true_batch_var + k * sigma ** 2 / S, abs=25.0)
    assert out["est_pct"] == pytest.approx(100 * k * sigma ** 2 / (true_batch_var + k * sigma ** 2), abs=0.5)


def test_held_latents_are_point_masses_and_only_free_ones_are_enumerated():
    """q conditioned on z_j = v_j outside ``free``: the exact expectation sums the free latents' states only, with
    the held ones at their values, and the encoder gradient reaches the free logits only."""
    enc, dec = _tiny("bernoulli", d=5, decoder="learnable")
    x = _batches(1, b=2)[0]
    logits = enc(x).logits
    free, values = torch.tensor([1, 3]), torch.tensor([[1.0, 0, 0, 1, 1], [0, 0, 1, 0, 1]], dtype=torch.float64)
    post = type(enc(x))(condition_on_free_latents(logits, free, values))
    p = post.probs
    held = torch.tensor([0, 2, 4])
    assert torch.equal(p[:, held], values[:, held])  # exactly 0 or 1
    expected = torch.zeros(2, dtype=torch.float64)
    for bits in itertools.product((0.0, 1.0), repeat=2):
        z = values.clone()
        z[:, free] = torch.tensor(bits, dtype=torch.float64)
        q = (p[:, free] ** z[:, free] * (1 - p[:, free]) ** (1 - z[:, free])).prod(-1)
        expected += q * dec.loglik(x, z)
    value = exact_expected_loglik_bernoulli(post, dec, x)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-9)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert torch.count_nonzero(grad[:, held]) == 0 and torch.count_nonzero(grad[:, free]) == 4


def test_exact_expectation_refuses_more_than_20_free_latents():
    post = type(_tiny("bernoulli", d=3)[0](_batches(1)[0]))(torch.zeros(2, 21, dtype=torch.float64))
    with pytest.raises(ValueError, match="21 latents are stochastic.*condition_on_free_latents"):
        exact_expected_loglik_bernoulli(post, None, torch.zeros(2, 1, 6, 6))


def test_taylor_check_on_free_latents():
    """All latents free = no conditioning; fewer free: the same check on the conditioned model (constant
    precision: SG exact there too), and the settings say so."""
    enc, dec = _tiny("bernoulli", d=6, decoder="learnable")
    x = _batches(1)[0]
    full = taylor_bias_check(enc, dec, x, num_samples=200, chunk=100, seed=0)
    assert taylor_bias_check(enc, dec, x, num_samples=200, chunk=100, seed=0, free_latents=6) == full
    part = taylor_bias_check(enc, dec, x, num_samples=200, chunk=100, seed=0, free_latents=3)
    assert (part["latent_dim"], part["free_latents"], full["free_latents"]) == (6, 3, 6)
    assert 0 < part["exact_norm"] != full["exact_norm"] and 0 < part["sg"] < part["reinforce"]
    with torch.no_grad():
        dec.alpha.weight.zero_()
    const = taylor_bias_check(enc, dec, x, num_samples=200, chunk=100, seed=0, free_latents=3)
    assert const["sg"] < 1e-9 * const["exact_norm"]


def _taylor_objective_by_enumeration(enc, dec, x, free, held):
    """-mean_i E_q[log p(x_i|z)] with E[log alpha^2] replaced by its 2nd-order Taylor form (paper Eq. 7), every
    moment (E[(x - mu)^2 alpha^2], E[alpha^2], Var[alpha^2]) summed over the free latents' states one by one, q
    conditioned on ``held`` outside ``free``. Independent of silentvae.analytic's closed forms."""
    post = enc(x)
    p = post.probs
    terms = []
    for bits in itertools.product((0.0, 1.0), repeat=len(free)):
        z = held.clone()
        z[:, free] = torch.tensor(bits, dtype=x.dtype)
        q = (p[:, free] ** z[:, free] * (1 - p[:, free]) ** (1 - z[:, free])).prod(-1, keepdim=True)  # (B, 1)
        a2 = dec.alpha(z).square()
        terms.append((q, (x.flatten(1) - dec.mu(z)).square() * a2, a2))
    quad = sum(q * t for q, t, _ in terms)
    e_a2 = sum(q * a2 for q, _, a2 in terms)
    var_a2 = sum(q * (a2 - e_a2).square() for q, _, a2 in terms)
    assert e_a2.min() > 1e-3  # the closed form's clamp of E[alpha^2] does not bind here
    e_log_a2 = torch.log(e_a2) - var_a2 / (2 * e_a2.square())
    return -(-0.5 * quad + 0.5 * e_log_a2 - 0.5 * math.log(2 * math.pi)).sum(-1).mean()


def _exact_objective_by_enumeration(enc, dec, x, free, held):
    post = enc(x)
    p = post.probs
    total = 0.0
    for bits in itertools.product((0.0, 1.0), repeat=len(free)):
        z = held.clone()
        z[:, free] = torch.tensor(bits, dtype=x.dtype)
        q = (p[:, free] ** z[:, free] * (1 - p[:, free]) ** (1 - z[:, free])).prod(-1)
        total = total + q * dec.loglik(x, z)
    return -total.mean()


@pytest.mark.parametrize("free_latents", [None, 3])
def test_sg_deviation_is_the_taylor_objectives_gradient_minus_the_exact_one(free_latents):
    """SG's deviation equals ||grad(Taylor objective) - grad(exact objective)||, both objectives summed state by
    state, with the k most uncertain latents free and the others held at the check's one draw from q."""
    enc, dec = _tiny("bernoulli", d=5, decoder="learnable")
    with torch.no_grad():
        dec.alpha.weight.normal_(0, 1.0)
    x = _batches(1)[0]
    res = taylor_bias_check(enc, dec, x, num_samples=64, chunk=32, seed=3, free_latents=free_latents)
    post = enc(x)
    if free_latents is None:
        free, held = list(range(5)), torch.zeros(4, 5, dtype=torch.float64)
    else:
        p = post.probs.detach()
        free = sorted((p * (1 - p)).mean(0).argsort(descending=True)[:free_latents].tolist())
        held = post.sample(torch.Generator().manual_seed(3))
    params = list(enc.parameters())
    grad = lambda loss: torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])  # noqa: E731
    g_exact = grad(_exact_objective_by_enumeration(enc, dec, x, free, held))
    g_taylor = grad(_taylor_objective_by_enumeration(enc, dec, x, free, held))
    assert res["exact_norm"] == pytest.approx(float(g_exact.norm()), rel=1e-9)
    assert res["sg"] == pytest.approx(float((g_taylor - g_exact).norm()), rel=1e-7)
    assert res["sg"] > 1e-4 * res["exact_norm"]  # a real Taylor error is measured, not round-off


def test_per_image_reinforce_baseline_removes_the_spread_across_images():
    """Images with very different expected losses: one scalar baseline leaves that spread in every term, the
    per-image leave-one-out one does not (the same draws); both are Monte Carlo error ~ 1/sqrt(S)."""
    enc, dec = _tiny("bernoulli", d=4, decoder="learnable")
    x = _batches(1, b=6)[0]
    x[:3] *= 0.1  # three dark images: expected losses far apart
    res = taylor_bias_check(enc, dec, x, num_samples=3200, chunk=400, seed=0)
    assert res["image_loss_std"] > 0.1 * abs(res["reinforce_baseline"])
    assert res["reinforce_per_image"] < 0.5 * res["reinforce"]
    curve = res["curve"]
    assert curve["num_samples"] == [200, 800, 3200]
    for key in ("reinforce", "reinforce_per_image"):  # unbiased: 16x the draws, ~1/4 the error
        assert 1.5 < curve[key][0] / curve[key][-1] < 10
    assert res["reinforce"] == curve["reinforce"][-1] and res["gumbel"] == curve["gumbel"][-1]
    assert res["reinforce_baselines"] == {"reinforce": "scalar", "reinforce_per_image": "per-image leave-one-out"}


def test_several_free_latent_counts_share_one_held_draw():
    """A list of k: one result per k (ascending), the largest on top, each the same as asking for that k alone;
    alpha's variation under the full q is reported beside the conditioned one."""
    enc, dec = _tiny("bernoulli", d=6, decoder="learnable")
    with torch.no_grad():
        dec.alpha.weight.normal_(0, 1.0)
    x = _batches(1)[0]
    both = taylor_bias_check(enc, dec, x, num_samples=64, chunk=32, seed=0, free_latents=[4, 2])
    assert [r["free_latents"] for r in both["by_free_latents"]] == [2, 4]
    assert both["free_latents"] == 4 and both["sg"] == both["by_free_latents"][1]["sg"]
    alone = taylor_bias_check(enc, dec, x, num_samples=64, chunk=32, seed=0, free_latents=2)
    assert alone["by_free_latents"][0] == both["by_free_latents"][0]
    assert both["by_free_latents"][0]["alpha_cv"] < both["alpha_cv"] < both["alpha_cv_full"]
    full = taylor_bias_check(enc, dec, x, num_samples=64, chunk=32, seed=0)
    assert full["alpha_cv"] == pytest.approx(full["alpha_cv_full"])
    with pytest.raises(ValueError, match="free_latents must be"):
        taylor_bias_check(enc, dec, x, num_samples=64, free_latents=[])
    with pytest.raises(ValueError, match="chunk must be >= 4"):
        taylor_bias_check(enc, dec, x, num_samples=64, chunk=2)


def test_two_batches_give_no_interval_rather_than_nan():
    enc, dec = _tiny("gaussian")
    got = gradient_variance(enc, dec, Reparameterization(), _batches(2), num_samples=3)
    assert got["est_pct_ci"] is None and got["est_var"] > 0
    low, high = est_pct_interval(got["est_var_per_batch"], got["gram"], 3)
    assert np.isnan(low) and np.isnan(high)


# ---------------------------------------------------------------------------------------------------
# Table 1 over seeds, the Taylor check over draws (the pipeline's jobs)
# ---------------------------------------------------------------------------------------------------

def _seed_result(sigma, tau=1.0, p=2000, seed=0):
    """gradient_variance of synthetic batches: Est % = 100 sigma^2 / (sigma^2 + tau^2) in expectation."""
    g = torch.Generator().manual_seed(seed)
    batches = [tau * torch.randn(p, generator=g, dtype=torch.float64) for _ in range(20)]
    return gradient_variance(_Synthetic(p), torch.nn.Identity(), _SyntheticEstimator(sigma), batches, num_samples=4,
                             seed=seed, n_resamples=999)


def test_pool_seeds_averages_the_seeds_and_its_interval_covers_their_spread():
    """Two seeds' models far apart (Est % ~50 and ~90): the pooled Est % is their mean, and its interval over seeds
    and batches is wide enough to hold both (a one-seed interval over batches would not)."""
    from silentvae.training.diagnostics import pool_seeds
    low_seed, high_seed = _seed_result(1.0, seed=1), _seed_result(3.0, seed=2)
    pooled = pool_seeds([low_seed, high_seed], n_resamples=2000)
    assert pooled["est_pct"] == pytest.approx((low_seed["est_pct"] + high_seed["est_pct"]) / 2)
    assert pooled["est_var"] == pytest.approx((low_seed["est_var"] + high_seed["est_var"]) / 2)
    lo, hi = pooled["est_pct_ci"]
    assert lo < low_seed["est_pct"] + 3 and hi > high_seed["est_pct"] - 3 and pooled["num_seeds"] == 2
    assert len(pooled["by_seed"]) == 2
    single = pool_seeds([high_seed], n_resamples=2000)                        # one seed: the batch interval
    assert single["est_pct_ci"][1] - single["est_pct_ci"][0] < hi - lo
    zero = {**high_seed, "est_var": 0.0, "est_pct": 0.0, "est_var_per_batch": [0.0] * 20}
    assert pool_seeds([zero, zero])["est_pct_ci"] == [0.0, 0.0]                  # SG: exactly zero, every seed
    with pytest.raises(ValueError, match="at least one"):
        pool_seeds([])


def test_variance_job_measures_every_seed_given_and_pools_them(tmp_path):
    import json

    from silentvae.pipeline.jobs import variance_job
    from silentvae.training.engine import train
    from silentvae.training.run import RunConfig

    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        cfg = {"experiment": "fixed", "dataset": "mnist5k", "latent": "gaussian", "estimator": "reparam",
               "epochs": 1, "checkpoint_epochs": [1], "latent_dim": 4, "channels": 2, "lr": 1e-3,
               "train_limit": 128, "val_limit": 32, "seed": seed, "device": "cpu"}
        train(RunConfig.from_dict(cfg), runs / f"m/s{seed}", log=lambda *_: None)
    (tmp_path / "sel.json").write_text(json.dumps({"best_run": "m/s0"}))
    settings = {"method": "reparam", "dataset": "mnist5k", "epochs": [1], "num_batches": 3, "num_samples": 3,
                "batch_size": 8, "seed_runs": ["m/s1", "m/s2"]}
    out = variance_job(settings, str(tmp_path / "sel.json"), str(runs), str(tmp_path / "v.json"), device="cpu")
    point = out[1]
    assert point["seeds"] == [0, 1, 2] and point["runs"] == ["m/s0", "m/s1", "m/s2"] and point["num_seeds"] == 3
    assert point["est_pct"] == pytest.approx(np.mean([r["est_pct"] for r in point["by_seed"]]))
    assert len({r["est_pct"] for r in point["by_seed"]}) == 3                # three different models measured
    assert json.loads((tmp_path / "v.json").read_text())["runs"] == ["m/s0", "m/s1", "m/s2"]


def test_taylor_job_checks_independent_validation_batches():
    from silentvae.pipeline.jobs import taylor_job
    from silentvae.report import claims
    settings = {"dataset": "mnist5k", "latent_dim": 3, "channels": 2, "train_epochs": 0, "batch_size": 4,
                "num_samples": 64, "train_limit": 64, "draws": 5}
    result = taylor_job(settings, "", "", device="cpu")
    assert result["num_draws"] == 5 and len(result["draws"]) == 5
    assert result["sg"] == result["draws"][0]["sg"]                             # the top level is the first draw
    assert len({d["exact_norm"] for d in result["draws"]}) == 5                # five different batches
    row = claims.claim_taylor(result)
    assert "(5 draws" in row["Ours"] and ">= 5 independent draws" not in row["Details"]
