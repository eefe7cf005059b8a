r"""Diagnostics of the paper: gradient-variance decomposition (Table 1) and the Taylor-bias check (Sec. 4.1).

Gradient variance (Table 1). For the encoder gradient g(batch, eps) of the reconstruction estimate (the term
the estimators differ in; the KL is exact for every method), which depends on a data batch and on latent draws
eps, the law of total variance splits, per parameter,

    Var[g] = E_batch[ Var_eps(g | batch) ]  +  Var_batch( E_eps[g | batch] )
             (estimator variance)              (mini-batch variance)

Both are estimated from N batches x S latent draws, then summed over encoder parameters. Per-batch statistics
(each batch's estimator variance, the Gram matrix of the batches' mean gradients) are kept, so the whole
decomposition is recomputed on resamples of the batches: Est % gets a bootstrap confidence interval. Pixels are
not dequantised here (the paper fixes the batch to isolate latent sampling noise).

Taylor bias (Sec. 4.1). With Bernoulli latents (small d) and the learnable-precision linear decoder, the
exact encoder gradient of E_q[log p(x|z)] is computed by enumerating all 2^d latent states and compared
(L2 distance) with the SG gradient (exact quadratic term, 2nd-order Taylor log term), the mean
Gumbel-Softmax gradient and the mean REINFORCE gradient over S samples.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..estimators import GumbelSoftmax, Reinforce, SilentGradient
from ..posteriors import BernoulliPosterior

__all__ = ["CONFIDENCE_LEVEL", "BOOTSTRAP_RESAMPLES", "decompose", "est_pct_interval", "gradient_variance",
           "pool_seeds",
           "enumerate_states", "exact_expected_loglik_bernoulli", "condition_on_free_latents",
           "taylor_bias_check", "REINFORCE_BASELINES"]


def _flat_grad(loss: Tensor, params: list[nn.Parameter], retain_graph: bool) -> Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


#: Table 1's intervals: 95% bootstrap (BCa) over batches, this many resamples
CONFIDENCE_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 9999
#: latent draws whose encoder gradients are held at once (block x #params) and reduced in one pass
DRAW_BLOCK = 16


def _mean_m2(block: Tensor, chunk: int = 1 << 20) -> tuple[Tensor, Tensor]:
    """Per column of a (k, P) block: mean and sum of squared deviations, in float64, ``chunk`` columns at a time
    (two passes over a float64 copy of the chunk; faster on CPU than ``torch.var_mean`` over dim 0)."""
    mean = torch.empty(block.shape[1], dtype=torch.float64, device=block.device)
    m2 = torch.empty_like(mean)
    for start in range(0, block.shape[1], chunk):
        x = block[:, start:start + chunk].double()
        mu = x.mean(0)
        mean[start:start + chunk] = mu
        m2[start:start + chunk] = (x - mu).square_().sum(0)
    return mean, m2


def decompose(est_var_per_batch, gram, num_samples: int, counts=None) -> dict[str, Any]:
    r"""Table 1's decomposition from per-batch statistics, for the batches as measured or a resample of them.

    Args:
        est_var_per_batch: (N,) V_i = sum_p Var_eps[g_p | batch i], unbiased over the S draws of batch i.
        gram: (N, N) G_ij = <d_i, d_j> of the batches' S-draw mean gradients less a common shift c,
            d_i = mean_s g(i, s) - c (any c: variances do not see it).
        num_samples: S, the draws per batch.
        counts: (R, N) how often each batch is in each of R resamples (rows sum to n); default: each once.
    Returns (arrays of shape (R,), or scalars without ``counts``), with n = sum_i w_i over a resample w:

        est_var       = sum_i w_i V_i / n                                    E_batch Var_eps (estimator variance)
        batch_var_raw = sum_{i != j} w_i w_j |d_i - d_j|^2 / 2 / sum_{i != j} w_i w_j
                      = (n sum_i w_i G_ii - w^T G w) / (n^2 - sum_i w_i^2)   Var_batch of the S-draw means
        batch_var     = batch_var_raw - est_var / S                          Var_batch E_eps (unbiased; can be < 0)
        est_pct       = 100 est_var / (batch_var + est_var)

    With every w_i = 1, batch_var_raw is the usual unbiased sample variance of the N means. Pairs of distinct
    batches only: a batch drawn twice into a resample is not two independent S-draw means (its copies would pull
    the resample's variance, and so its noise correction, down).
    batch_var_raw still carries the estimator noise of each S-draw mean, E_b Var[g | b] / S (law of total
    variance), hence the correction. The corrected batch_var is an unbiased estimate and is left negative when
    the noise floor exceeds what was measured; est_pct then exceeds 100, which flags it (the total
    batch_var + est_var = batch_var_raw + est_var (S - 1) / S is never negative).
    """
    v = np.asarray(est_var_per_batch, dtype=np.float64)
    g = np.asarray(gram, dtype=np.float64)
    single = counts is None
    w = np.ones((1, v.size)) if single else np.atleast_2d(np.asarray(counts, dtype=np.float64))
    n = w.sum(-1)
    est = w @ v / n
    # half the mean squared distance over pairs of distinct batches, |d_i - d_j|^2 = G_ii + G_jj - 2 G_ij
    pairs = n * n - (w * w).sum(-1)                       # 0 when a resample holds one batch only: no spread
    spread = n * (w @ np.diag(g)) - np.einsum("ri,ij,rj->r", w, g, w)
    raw = np.where(pairs > 0, spread / np.where(pairs > 0, pairs, 1.0), 0.0)
    batch = raw - est / num_samples
    total = batch + est
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(est == 0, 0.0, 100.0 * est / np.where(total > 0, total, np.nan))
    out = {"est_var": est, "batch_var_raw": raw, "batch_var": batch, "est_pct": pct}
    return {k: float(a[0]) for k, a in out.items()} if single else out


def est_pct_interval(est_var_per_batch, gram, num_samples: int, *, confidence_level: float = CONFIDENCE_LEVEL,
                     n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Confidence interval of Est % from resampling the batches (``scipy.stats.bootstrap``, BCa): each resample
    recomputes the whole :func:`decompose` from the resampled batches' statistics. An estimator whose draws
    never differ (every V_i == 0, e.g. Silent Gradients) has the interval (0, 0); fewer than 3 batches give no
    interval (nan, nan)."""
    v = np.asarray(est_var_per_batch, dtype=np.float64)
    if not np.any(v):
        return 0.0, 0.0
    if v.size < 3:
        return math.nan, math.nan
    try:
        from scipy.stats import bootstrap
    except ImportError as e:  # the library alone needs only torch and numpy
        raise ImportError("Table 1's interval needs scipy: pip install 'silentvae[pipeline]' (or scipy), or call "
                          "gradient_variance(..., confidence_level=None)") from e
    n_batches = v.size

    def statistic(idx, axis=-1):
        idx = np.asarray(idx)
        flat = idx.reshape(-1, idx.shape[-1])
        counts = np.zeros((flat.shape[0], n_batches))
        np.add.at(counts, (np.arange(flat.shape[0])[:, None], flat), 1.0)
        return decompose(v, gram, num_samples, counts)["est_pct"].reshape(idx.shape[:-1])

    res = bootstrap((np.arange(n_batches),), statistic, vectorized=True, n_resamples=n_resamples,
                    confidence_level=confidence_level, method="BCa", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def gradient_variance(encoder: nn.Module, decoder: nn.Module, estimator, batches: list[Tensor], *,
                      num_samples: int, seed: int = 0, confidence_level: float | None = CONFIDENCE_LEVEL,
                      n_resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    r"""Decompose the variance of the encoder gradient of the reconstruction estimate (Table 1).

    g(i, s) = d/d(encoder) of the batch mean of ``estimator.loss`` (its estimate of -E_q[log p(x|z)]; no KL,
    which is exact for every method) for batch i and latent draw s. Per parameter, then summed over the encoder's:

        Var[g] = E_batch[ Var_eps(g | batch) ]  +  Var_batch( E_eps[g | batch] )
                 (estimator variance, est_var)     (mini-batch variance, batch_var)

    Args:
        batches: N fixed data batches (not dequantised), each (B, C, H, W).
        num_samples: S latent draws per batch (S >= 2). A deterministic estimator (``estimator.deterministic``,
            Silent Gradients) is drawn twice per batch: its two gradients must agree exactly (est_var == 0).
        confidence_level: of Est %'s interval from resampling the batches (:func:`est_pct_interval`); None: none.
    Returns:
        :func:`decompose`'s ``est_var``, ``batch_var_raw``, ``batch_var`` (can be negative), ``est_pct``;
        ``est_pct_ci`` [low, high] (None when not asked for or not computable, e.g. 2 batches);
        ``batch_var_negative``; the per-batch statistics that let any resample
        recompute it all: ``est_var_per_batch`` (N,) and ``gram`` (N x N, of the mean gradients less the first
        batch's); ``num_batches``, ``num_samples`` (S used), ``confidence_level``.

    Memory: the N mean gradients (float32, N x #params) for the Gram matrix; up to DRAW_BLOCK draws' gradients
    at a time, combined in float64.
    """
    if num_samples < 2 or len(batches) < 2:
        raise ValueError("gradient_variance needs num_samples >= 2 and at least 2 batches")
    draws = 2 if getattr(estimator, "deterministic", False) else num_samples
    params = [p for p in encoder.parameters() if p.requires_grad]
    if isinstance(estimator, Reinforce):
        estimator.frozen = True
    gen = torch.Generator(device=batches[0].device).manual_seed(seed)
    was_training = encoder.training, decoder.training
    encoder.eval()
    decoder.eval()
    est_var_b, deviations, shift = [], [], None
    for x in batches:
        posterior = encoder(x)
        n_s, mean_s, m2_s = 0, None, None
        for start in range(0, draws, DRAW_BLOCK):
            k = min(DRAW_BLOCK, draws - start)
            block = torch.stack([_flat_grad(estimator.loss(posterior, decoder, x, gen).mean(), params,
                                            retain_graph=True) for _ in range(k)])
            mean_k, m2_k = _mean_m2(block)
            if mean_s is None:
                n_s, mean_s, m2_s = k, mean_k, m2_k
            else:  # Chan et al.'s pairwise update of (count, mean, sum of squared deviations)
                delta, n_new = mean_k - mean_s, n_s + k
                mean_s, m2_s = mean_s + delta * (k / n_new), m2_s + m2_k + delta.square() * (n_s * k / n_new)
                n_s = n_new
        est_var_b.append(float(m2_s.sum()) / (draws - 1))
        shift = mean_s if shift is None else shift
        deviations.append((mean_s - shift).float())
    encoder.train(was_training[0])
    decoder.train(was_training[1])
    d = torch.stack(deviations)
    gram = torch.zeros(len(batches), len(batches), dtype=torch.float64, device=d.device)
    for chunk in d.split(1 << 20, dim=1):
        c = chunk.double()
        gram += c @ c.T
    gram = gram.cpu().numpy()
    out: dict[str, Any] = decompose(est_var_b, gram, draws)
    ci = None
    if confidence_level is not None:
        ci = list(est_pct_interval(est_var_b, gram, draws, confidence_level=confidence_level,
                                   n_resamples=n_resamples, seed=seed))
        ci = ci if all(math.isfinite(c) for c in ci) else None   # too few batches, or a degenerate resample
    return {**out, "est_pct_ci": ci, "batch_var_negative": out["batch_var"] < 0, "est_var_per_batch": est_var_b,
            "gram": gram.tolist(), "num_batches": len(batches), "num_samples": draws,
            "confidence_level": confidence_level}


def pool_seeds(per_seed: list[dict[str, Any]], *, confidence_level: float = CONFIDENCE_LEVEL,
               n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Table 1 at one training stage over several seeds' checkpoints (each a :func:`gradient_variance` result of a
    differently seeded run): the seeds' mean of ``est_var``, ``batch_var_raw``, ``batch_var`` and ``est_pct``, and
    Est %'s interval over seeds and batches from a two-stage percentile bootstrap: each resample draws the seeds
    with replacement, then each drawn seed's batches with replacement (:func:`decompose` of that resample), and
    averages the drawn seeds' Est %. ``by_seed`` keeps each seed's own result. An estimator whose draws never
    differ (every V_i == 0 in every seed) has the interval (0, 0)."""
    if not per_seed:
        raise ValueError("pool_seeds needs at least one seed's result")
    keys = ("est_var", "batch_var_raw", "batch_var", "est_pct")
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in per_seed])) for k in keys}
    rng = np.random.default_rng(seed)
    if all(not np.any(r["est_var_per_batch"]) for r in per_seed):
        ci = [0.0, 0.0]
    else:
        pct = []
        for r in per_seed:                                            # R batch resamples of each seed
            n = len(r["est_var_per_batch"])
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples)
            pct.append(decompose(r["est_var_per_batch"], r["gram"], r["num_samples"], counts)["est_pct"])
        pct = np.stack(pct)                                           # (seeds, R)
        picks = rng.integers(0, len(per_seed), size=(n_resamples, len(per_seed)))
        means = pct[picks, np.arange(n_resamples)[:, None]].mean(1)
        alpha = (1 - confidence_level) / 2
        ci = [float(np.nanquantile(means, alpha)), float(np.nanquantile(means, 1 - alpha))]
    return {**out, "est_pct_ci": ci if all(math.isfinite(c) for c in ci) else None,
            "batch_var_negative": out["batch_var"] < 0, "num_seeds": len(per_seed),
            "num_batches": int(per_seed[0]["num_batches"]), "num_samples": int(per_seed[0]["num_samples"]),
            "confidence_level": confidence_level, "by_seed": per_seed}


def enumerate_states(d: int, device=None, dtype=torch.float64, start: int = 0, stop: int | None = None) -> Tensor:
    """Binary latent states number ``start`` .. ``stop`` - 1 (default all 2^d) as rows of a (K, d) tensor; state k
    is the binary expansion of k, latent j = bit j."""
    if d > 20:
        raise ValueError(f"enumerating 2^{d} latent states is too large; use d <= 20")
    k = torch.arange(start, 2 ** d if stop is None else stop, device=device)
    return ((k[:, None] >> torch.arange(d, device=device)) & 1).to(dtype)


def exact_expected_loglik_bernoulli(posterior, decoder: nn.Module, x: Tensor, chunk_states: int = 1024) -> Tensor:
    """E_q[log p(x|z)] = sum_k q(z_k|x) log p(x|z_k) over all states z_k of the free latents  ->  (B,). Exact;
    differentiable in the posterior (the encoder), not in the decoder.

    Free latents are those with 0 < p < 1 in some row; the others are point masses (p exactly 0 or 1, e.g. from
    :func:`condition_on_free_latents`) and keep their value, so 2^f states are summed for f free latents (f <= 20).
    log p(x|z) does not depend on q, so it is computed without a graph, ``chunk_states`` states at a time (memory
    O(chunk_states * B * pixels)); only q(z_k|x) = prod_j p_j^{z_kj} (1 - p_j)^{1 - z_kj} over the free j carries
    the gradient, d/dl_j E = sum_k q_k log p(x|z_k) (z_kj - p_j) for the logits l.
    """
    logits = posterior.logits
    b, d = logits.shape
    probs = torch.sigmoid(logits.detach())
    free = ((probs > 0) & (probs < 1)).any(0).nonzero().squeeze(-1)
    f = free.numel()
    if f > 20:
        raise ValueError(f"{f} latents are stochastic, too many to enumerate (2^{f} states); use d <= 20 or "
                         "condition the others on a value (condition_on_free_latents)")
    z_fixed = probs.round()                                                          # the point masses' values
    log_p = torch.empty(2 ** f, b, device=logits.device, dtype=logits.dtype)
    with torch.no_grad():
        for start in range(0, 2 ** f, chunk_states):
            states = enumerate_states(f, logits.device, logits.dtype, start, min(start + chunk_states, 2 ** f))
            k = states.shape[0]
            z = z_fixed.unsqueeze(0).repeat(k, 1, 1)                                  # (k, B, d)
            z[:, :, free] = states.unsqueeze(1).expand(k, b, f)
            x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
            log_p[start:start + k] = decoder.loglik(x_rep, z.reshape(k * b, d)).view(k, b)
    states = enumerate_states(f, logits.device, logits.dtype)                                   # (K, f)
    free_logits = logits[:, free]
    log_q = states @ nn.functional.logsigmoid(free_logits).T + (1 - states) @ nn.functional.logsigmoid(-free_logits).T
    return (log_q.exp() * log_p).sum(0)


#: |logit| of a latent held at a value: sigmoid(+-1e4) is exactly 1 or 0 in float32 and float64.
POINT_MASS_LOGIT = 1e4


def condition_on_free_latents(logits: Tensor, free: Tensor, values: Tensor) -> Tensor:
    """Logits of q conditioned on z_j = values_j for every latent j not in ``free``: those latents become point
    masses (logit +-:data:`POINT_MASS_LOGIT`, no gradient), the free ones keep their logits. Lets the Taylor check
    enumerate a 200-latent model exactly over its ``free`` latents."""
    mask = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    mask[free] = True
    held = POINT_MASS_LOGIT * (2 * values.to(logits.dtype) - 1)
    return torch.where(mask, logits, held.detach())


def _sample_counts(num_samples: int) -> list[int]:
    """The sample counts at which the running means are read: S/16, S/4 and S (each >= 2, increasing)."""
    out: list[int] = []
    for n in (num_samples // 16, num_samples // 4, num_samples):
        if n >= 2 and (not out or n - out[-1] >= 2):
            out.append(n)
    return out


def _running_means(step, num_samples: int, chunk: int) -> dict[int, list[Tensor]]:
    """{n: [mean over the first n draws of each gradient step returns]} for n in :func:`_sample_counts`.

    ``step(c)`` draws c samples per image and returns a list of gradient *sums* over them; chunks never straddle
    a reading and are >= 2 draws (REINFORCE's per-image leave-one-out baseline needs two)."""
    totals, done, out = None, 0, {}
    for n in _sample_counts(num_samples):
        while done < n:
            left = n - done
            c = left if left <= chunk else min(chunk, left - 2)
            grads = step(c)
            totals = grads if totals is None else [t + g for t, g in zip(totals, grads)]
            done += c
        out[n] = [t / n for t in totals]
    return out


def data_average_loss(encoder: nn.Module, decoder: nn.Module, images: Tensor, generator: torch.Generator,
                      batch_size: int = 256) -> Tensor:
    """Mean over ``images`` (dequantised) of -log p(x|z), one z ~ q(z|x) each: the value REINFORCE's running-average
    baseline (b <- 0.99 b + 0.01 mean_batch f over training batches) settles at."""
    total = 0.0
    with torch.no_grad():
        for x in images.split(batch_size):
            post = encoder(x)
            total += float(-decoder.loglik(x, post.sample(generator)).sum())
    return torch.tensor(total / images.shape[0], device=images.device, dtype=images.dtype)


@torch.no_grad()
def _alpha_cv(posterior, decoder: nn.Module) -> float:
    """Mean of Std_q[alpha(z)] / |E_q[alpha(z)]| over images and pixels for alpha = W_a z + b_a (mean-field q)."""
    if not hasattr(decoder, "alpha"):
        return 0.0
    m = posterior.moments()
    w = decoder.alpha.weight
    mean = m.mean @ w.T + decoder.alpha.bias
    std = (m.var @ w.square().T).sqrt()
    return float((std / mean.abs().clamp_min(1e-12)).mean())


#: REINFORCE's baselines in :func:`taylor_bias_check`: one scalar for every image (as in training, or the
#: batch's exact expected loss by default), and per image the mean loss of the other samples drawn for that image.
REINFORCE_BASELINES = {"reinforce": "scalar", "reinforce_per_image": "per-image leave-one-out"}


def _free_latent_counts(free_latents: int | Sequence[int] | None, d: int) -> list[int]:
    ks = [d] if free_latents is None else [free_latents] if isinstance(free_latents, int) else list(free_latents)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k for k in ks):
        raise ValueError(f"free_latents must be a positive int or a non-empty list of them, got {free_latents!r}")
    return sorted({min(k, d) for k in ks})


def taylor_bias_check(encoder: nn.Module, decoder: nn.Module, x: Tensor, *, num_samples: int = 100_000,
                      temperature: float = 0.5, chunk: int = 2_000, seed: int = 0,
                      reinforce_baseline: Tensor | float | None = None,
                      free_latents: int | Sequence[int] | None = None) -> dict[str, Any]:
    """L2 deviation of each estimator's encoder gradient from the exact one (Bernoulli latents).

    The objective is the batch mean of -E_q[log p(x|z)] (KL is exact for every method and left out); g* is its
    exact gradient (all 2^k states of the free latents summed). Deviations ||g - g*||_2 of:

    * ``sg``: Silent Gradients (exact quadratic term, 2nd-order Taylor log term; no samples);
    * ``gumbel``: the mean Gumbel-Softmax gradient over S = ``num_samples`` draws per image (biased: relaxed);
    * ``reinforce``: the mean score-function gradient (f(z) - b) grad log q(z) over S draws, with one scalar
      baseline b for every image: ``reinforce_baseline``, e.g. the data-average loss its running average settles
      at in training (:func:`data_average_loss`), by default the batch's exact expected loss;
    * ``reinforce_per_image``: the same draws with b_is = the mean f of the *other* draws of image i in the same
      chunk (leave-one-out: independent of z_is, so still unbiased). A scalar b leaves the spread of E_q[f] across
      images in every term; this one does not.

    The sampled deviations are Monte Carlo error (plus Gumbel's bias), ~ 1/sqrt(S); ``curve`` gives them after
    S/16, S/4 and S draws (the same draws, running means). ``exact_norm`` = ||g*||; ``alpha_cv`` = the mean over
    images and pixels of Std_q[alpha] / |E_q[alpha]| for the decoder's precision alpha(z) = W_a z + b_a (0 for a
    constant precision, where the Taylor term is exact), under the conditioned q; ``alpha_cv_full`` the same
    under the full q; ``image_loss_std`` the standard deviation over images of E_q[-log p(x|z)].

    ``free_latents`` (k, or a list of them): the check is exact over the k most uncertain latents (largest batch
    mean p(1 - p)), the other d - k held at one draw from q (:func:`condition_on_free_latents`, the same draw for
    every k), and every method sees that conditioned q. With a list, ``by_free_latents`` holds one result per k
    and the top-level values are the largest k's; None (or k >= d): all d latents (d <= 20).
    """
    if chunk < 4:
        raise ValueError(f"chunk must be >= 4 draws (REINFORCE's per-image baseline needs two per chunk), got {chunk}")
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    params = [p for p in encoder.parameters() if p.requires_grad]
    gen = torch.Generator(device=x.device).manual_seed(seed)
    was = encoder.training
    encoder.eval()
    post = encoder(x)
    if post.kind != "bernoulli":
        raise ValueError("taylor_bias_check needs an encoder with Bernoulli latents")
    d = post.logits.shape[-1]
    ks = _free_latent_counts(free_latents, d)
    with torch.no_grad():
        p = post.probs
        order = torch.sort((p * (1 - p)).mean(0), descending=True, stable=True).indices
        held = post.sample(gen) if ks[0] < d else None
    baseline = None if reinforce_baseline is None else torch.as_tensor(reinforce_baseline, device=x.device,
                                                                       dtype=x.dtype)
    by_k = [_taylor_at(encoder, decoder, x, params, order[:k] if k < d else None, held, num_samples, temperature,
                       chunk, torch.Generator(device=x.device).manual_seed(seed * 1_000_003 + k), baseline)
            for k in ks]
    encoder.train(was)
    main = by_k[-1]
    return {**{k: v for k, v in main.items()}, "by_free_latents": by_k, "alpha_cv_full": _alpha_cv(post, decoder),
            "num_samples": num_samples, "temperature": temperature, "latent_dim": d,
            "sqrt_d_over_S": math.sqrt(main["free_latents"] / num_samples),
            "reinforce_baselines": dict(REINFORCE_BASELINES)}


def _taylor_at(encoder, decoder, x, params, free, held, num_samples, temperature, chunk, gen, baseline):
    """One :func:`taylor_bias_check` result: q conditioned on ``held`` outside ``free`` (None: all free)."""
    b = x.shape[0]

    def posterior(c: int = 1):
        """q(z|x) for the batch repeated c times (conditioned on the held latents)."""
        logits = encoder(x).logits
        if free is not None:
            logits = condition_on_free_latents(logits, free, held)
        return BernoulliPosterior(logits.repeat(c, 1))

    post = posterior()
    image_loss = -exact_expected_loglik_bernoulli(post, decoder, x)
    exact_loss = image_loss.mean()
    g_exact = _flat_grad(exact_loss, params, retain_graph=True)
    g_sg = _flat_grad(SilentGradient().loss(post, decoder, x).mean(), params, retain_graph=False)
    gumbel = GumbelSoftmax(temperature)
    scalar = exact_loss.detach() if baseline is None else baseline

    def gumbel_step(c: int) -> list[Tensor]:
        x_rep = x.repeat(c, *([1] * (x.dim() - 1)))
        return [_flat_grad(gumbel.loss(posterior(c), decoder, x_rep, gen).sum() / b, params, retain_graph=False)]

    def reinforce_step(c: int) -> list[Tensor]:
        """Sum over c draws per image of (f - b) grad log q(z), for the scalar and the per-image baselines."""
        q = posterior(c)
        x_rep = x.repeat(c, *([1] * (x.dim() - 1)))
        z = q.sample(gen)
        with torch.no_grad():
            f = -decoder.loglik(x_rep, z).view(c, b)
            loo = (f.sum(0) - f) / (c - 1)
        log_q = q.log_prob(z).view(c, b)
        return [_flat_grad(((f - scalar) * log_q).sum() / b, params, retain_graph=True),
                _flat_grad(((f - loo) * log_q).sum() / b, params, retain_graph=False)]

    g_gumbel = _running_means(gumbel_step, num_samples, chunk)
    g_reinforce = _running_means(reinforce_step, num_samples, chunk)
    dist = lambda g: float(torch.linalg.vector_norm((g - g_exact).double()))  # noqa: E731
    counts = list(g_gumbel)
    curve = {"num_samples": counts, "gumbel": [dist(g_gumbel[n][0]) for n in counts],
             "reinforce": [dist(g_reinforce[n][0]) for n in counts],
             "reinforce_per_image": [dist(g_reinforce[n][1]) for n in counts]}
    return {"free_latents": int(post.logits.shape[-1] if free is None else free.numel()),
            "sg": dist(g_sg), "gumbel": curve["gumbel"][-1], "reinforce": curve["reinforce"][-1],
            "reinforce_per_image": curve["reinforce_per_image"][-1],
            "exact_norm": float(torch.linalg.vector_norm(g_exact.double())), "alpha_cv": _alpha_cv(post, decoder),
            "reinforce_baseline": float(scalar),
            "image_loss_std": float(image_loss.detach().std()) if b > 1 else 0.0, "curve": curve}
