r"""Diagnostics of the paper: gradient-variance decomposition (Table 1) and the Taylor-bias check (Sec. 4.1).

Gradient variance (Table 1). For an encoder gradient g(batch, eps) that depends on a data batch and on
latent draws eps, the law of total variance splits, per parameter,

    Var[g] = E_batch[ Var_eps(g | batch) ]  +  Var_batch( E_eps[g | batch] )
             (estimator variance)              (mini-batch variance)

Both are estimated from N batches x S latent draws (streaming Welford sums, O(#params) memory), then
summed over encoder parameters. Pixels are not dequantised here (the paper fixes the batch to isolate
latent sampling noise).

Taylor bias (Sec. 4.1). With Bernoulli latents (small d) and the learnable-precision linear decoder, the
exact encoder gradient of E_q[log p(x|z)] is computed by enumerating all 2^d latent states and compared
(L2 distance) with the SG gradient (exact quadratic term, 2nd-order Taylor log term), the mean
Gumbel-Softmax gradient and the mean REINFORCE gradient over S samples.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .estimators import GumbelSoftmax, Reinforce, SilentGradient
from .posteriors import BernoulliPosterior

__all__ = ["gradient_variance", "enumerate_states", "exact_expected_loglik_bernoulli", "condition_on_free_latents",
           "taylor_bias_check", "REINFORCE_BASELINES"]


def _flat_grad(loss: Tensor, params: list[nn.Parameter], retain_graph: bool) -> Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def gradient_variance(encoder: nn.Module, decoder: nn.Module, estimator, batches: list[Tensor], *,
                      num_samples: int, seed: int = 0) -> dict[str, float]:
    """Decompose the encoder-gradient variance of the per-batch mean loss (recon surrogate + KL).

    Args:
        batches: N fixed data batches (not dequantised), each (B, C, H, W).
        num_samples: S latent draws per batch (S >= 2).
    Returns:
        ``est_var``: E_b Var_eps[g | b], the mean over batches of the variance over draws (unbiased).
        ``batch_var``: Var_b E_eps[g | b], the variance over batches of the *true* per-batch mean gradient.
        The variance over batches of the S-draw means, ``batch_var_raw``, also carries the estimator noise
        left in each mean: E[batch_var_raw] = Var_b E[g | b] + E_b Var[g | b] / S (law of total variance),
        so ``batch_var = max(0, batch_var_raw - est_var / S)``. Without that correction Est % could never
        pass S / (S + 1) (99.5% for S = 200), while the paper reports 99.60% for REINFORCE.
        ``est_pct`` = 100 * est_var / (batch_var + est_var). Each is summed over encoder parameters; a
        deterministic estimator (SG) gives est_var == 0 exactly.
    """
    if num_samples < 2 or len(batches) < 2:
        raise ValueError("gradient_variance needs num_samples >= 2 and at least 2 batches")
    params = [p for p in encoder.parameters() if p.requires_grad]
    if isinstance(estimator, Reinforce):
        estimator.frozen = True
    gen = torch.Generator(device=batches[0].device).manual_seed(seed)
    was_training = encoder.training, decoder.training
    encoder.eval()
    decoder.eval()
    n_b, mean_b, m2_b, est_var_total = 0, None, None, 0.0
    for x in batches:
        posterior = encoder(x)
        kl = posterior.kl().mean()
        mean_s, m2_s = None, None
        for s in range(num_samples):
            loss = estimator.loss(posterior, decoder, x, gen).mean() + kl
            g = _flat_grad(loss, params, retain_graph=True).double()
            if mean_s is None:
                mean_s, m2_s = g.clone(), torch.zeros_like(g)
            else:
                delta = g - mean_s
                mean_s += delta / (s + 1)
                m2_s += delta * (g - mean_s)
        est_var_total += float((m2_s / (num_samples - 1)).sum())
        n_b += 1
        if mean_b is None:
            mean_b, m2_b = mean_s.clone(), torch.zeros_like(mean_s)
        else:
            delta = mean_s - mean_b
            mean_b += delta / n_b
            m2_b += delta * (mean_s - mean_b)
    encoder.train(was_training[0])
    decoder.train(was_training[1])
    batch_var_raw = float((m2_b / (n_b - 1)).sum())
    est_var = est_var_total / n_b
    batch_var = max(0.0, batch_var_raw - est_var / num_samples)
    total = batch_var + est_var
    return {"batch_var": batch_var, "est_var": est_var, "est_pct": 100.0 * est_var / total if total > 0 else 0.0,
            "batch_var_raw": batch_var_raw, "num_batches": n_b, "num_samples": num_samples}


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
