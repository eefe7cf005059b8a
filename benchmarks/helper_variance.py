"""Algorithm 1's helper decoder variance: fixed sigma^2 from 0.01 to 100 against a learned one (issue 29, item 5).

The model is the README's Algorithm-1 example at tutorial size, on real digits (mnist5k: 4,500 training and 500
validation images, x_int / 256): an MLP encoder 784-256-2x16 giving q(z|x) = N(mean, softplus(raw) + 1e-4), an MLP
decoder 16-256-784 with p(x|z) = N(decoder(z), 0.1^2 I), AdamW lr 1e-3, batch 128, 30 epochs. The encoder's
reconstruction gradient is w * silent + (1 - w) * sampled (Eq. 8, ``silentvae.split_gradient``) with
w = max(0, 1 - epoch * 0.05) (zero from epoch 20 on), no cut-off. The helper linear decoder is

* ``reparam``: none (w = 0 throughout: the plain reparameterised VAE, the baseline);
* ``fixed_0.01`` / ``fixed_0.1`` / ``fixed_1`` / ``fixed_10`` / ``fixed_100``: ``nn.Linear`` with
  ``silent_elbo(..., sigma2=s)``;
* ``fixed_inf``: the limit sigma^2 -> infinity, where the silent gradient vanishes: the encoder's sampled
  reconstruction gradient is scaled by 1 - w and nothing is added (the control that tells the silent gradient's
  effect from the down-weighting of the sampled one);
* ``learned_0.1`` / ``learned_1``: ``silentvae.LinearPrecisionDecoder`` (precision alpha(z) = W_a z + b_a learned,
  as the paper's Section 4.2), its initial standard deviation ``init_std`` 0.1 or 1.

Reported per run: the nonlinear model's validation ELBO in nats per image (the mean over the 500 images of a
64-sample Monte-Carlo estimate of E_q[log p(x|z)] minus the analytic KL; higher is better) after the last epoch,
the helper's variance at the end (learned: the effective variance 1 / mean alpha(E[z])^2 over validation images and
pixels; the helper stops training when w reaches 0) and the seconds the run took. One row per run goes to the CSV
at once.

    OMP_NUM_THREADS=1 python benchmarks/helper_variance.py --seeds 0 1 2 --out benchmarks/results/helper_variance.csv

(9 helpers x 3 seeds = 27 runs, about 5 CPU-minutes on one thread.) Finished rows are kept: a rerun trains only the
missing (helper, seed) pairs.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import silentvae  # noqa: E402
from silentvae.training.data import load_dataset  # noqa: E402

HELPERS = {"reparam": None, "fixed_0.01": 0.01, "fixed_0.1": 0.1, "fixed_1": 1.0, "fixed_10": 10.0, "fixed_100": 100.0,
           "fixed_inf": math.inf, "learned_0.1": "learned:0.1", "learned_1": "learned:1.0"}
LATENT, HIDDEN, DECODER_STD, LR, BATCH, ANNEAL = 16, 256, 0.1, 1e-3, 128, 0.05
COLUMNS = ["helper", "seed", "epochs", "val_elbo", "helper_sigma2", "seconds"]


def make_models(helper, seed: int, pixels: int = 784):
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(pixels, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT))
    decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, pixels))
    if helper is None or helper == math.inf:
        linear = None
    elif isinstance(helper, str):
        linear = silentvae.LinearPrecisionDecoder(LATENT, (pixels,), init_std=float(helper.split(":")[1]))
    else:
        linear = nn.Linear(LATENT, pixels)
    return encoder, decoder, linear


def posterior(encoder, x):
    mean, raw = encoder(x).chunk(2, dim=-1)
    return Normal(mean, nn.functional.softplus(raw) + 1e-4)


@torch.no_grad()
def validation_elbo(encoder, decoder, x, samples: int = 64) -> float:
    """Mean over images of (1/S) sum_s log N(x; decoder(z_s), 0.1^2 I) - KL(q || N(0, I)), z_s ~ q (seeded)."""
    gen = torch.Generator().manual_seed(1234)
    q = posterior(encoder, x)
    eps = torch.randn((samples, *q.loc.shape), generator=gen)
    loglik = Normal(decoder(q.loc + q.scale * eps), DECODER_STD).log_prob(x).sum(-1).mean(0)
    kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
    return (loglik - kl).mean().item()


def train(helper, seed: int, epochs: int, train_x, val_x) -> dict:
    encoder, decoder, linear = make_models(helper, seed)
    params = [*encoder.parameters(), *decoder.parameters(), *([] if linear is None else linear.parameters())]
    opt = torch.optim.AdamW(params, lr=LR)
    prior = Normal(0.0, 1.0)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        w = 0.0 if helper is None else silentvae.silent_weight(epoch, anneal_rate=ANNEAL)
        for idx in torch.randperm(train_x.shape[0], generator=gen).split(BATCH):
            x = train_x[idx]
            q = posterior(encoder, x)
            q_silent, q_sampled = silentvae.split_gradient(q, w)
            loglik = Normal(decoder(q_sampled.rsample()), DECODER_STD).log_prob(x).sum(-1)
            loss = -(loglik - kl_divergence(q_sampled, prior).sum(-1)).mean()
            if linear is not None and w > 0:  # the helper trains while it steers the encoder
                sigma2 = None if isinstance(helper, str) else helper
                loss = loss - silentvae.silent_elbo(x, q_silent, linear, sigma2=sigma2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"epochs": epochs, "val_elbo": validation_elbo(encoder, decoder, val_x),
            "helper_sigma2": helper_sigma2(helper, linear, encoder, val_x), "seconds": time.perf_counter() - start}


@torch.no_grad()
def helper_sigma2(helper, linear, encoder, x) -> float:
    """The helper's variance as it sets the silent gradient's strength: the fixed sigma^2, or for the learned one the
    effective variance 1 / mean(alpha(E[z])^2) over images and pixels -- the fixed sigma^2 of the same mean
    precision, which scales the reconstruction term -(x - mu)^2 alpha^2 / 2 (nan without a helper)."""
    if helper is None:
        return math.nan
    if not isinstance(helper, str):
        return helper
    return 1.0 / linear.alpha(posterior(encoder, x).loc).square().mean().item()


def summary(rows: list[dict]) -> str:
    """Per helper: mean +- sd over seeds, and the paired difference to ``reparam`` (same seed: same initialisation
    and batches) as its mean and [min, max] over seeds."""
    value = {(r["helper"], int(r["seed"])): float(r["val_elbo"]) for r in rows}
    lines = ["helper       seeds  val ELBO (nats/image)   minus reparam, same seed: mean [min, max]"]
    for name in HELPERS:
        seeds = sorted(s for h, s in value if h == name)
        if not seeds:
            continue
        vals = [value[name, s] for s in seeds]
        sd = statistics.stdev(vals) if len(vals) > 1 else math.nan
        diffs = [value[name, s] - value["reparam", s] for s in seeds if ("reparam", s) in value]
        paired = f"{statistics.mean(diffs):+7.1f} [{min(diffs):+.1f}, {max(diffs):+.1f}]" if diffs else ""
        lines.append(f"{name:<12} {len(vals):>5}  {statistics.mean(vals):7.1f} +- {sd:4.1f}          {paired}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--helpers", nargs="+", default=list(HELPERS), choices=list(HELPERS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/helper_variance.csv"))
    args = parser.parse_args(argv)
    train_x = load_dataset("mnist5k", split="train").images.flatten(1)
    val_x = load_dataset("mnist5k", split="val").images.flatten(1)
    done = set()
    if args.out.exists():
        with args.out.open() as f:
            done = {(r["helper"], int(r["seed"]), int(r["epochs"])) for r in csv.DictReader(f)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for name in args.helpers:
            if (name, seed, args.epochs) in done:
                continue
            row = {"helper": name, "seed": seed, **train(HELPERS[name], seed, args.epochs, train_x, val_x)}
            new = not args.out.exists() or args.out.stat().st_size == 0
            with args.out.open("a", newline="") as f:
                writer = csv.DictWriter(f, COLUMNS)
                if new:
                    writer.writeheader()
                writer.writerow({**row, "val_elbo": f"{row['val_elbo']:.3f}",
                                 "helper_sigma2": f"{row['helper_sigma2']:.4g}", "seconds": f"{row['seconds']:.1f}"})
            print(f"{name} seed {seed}: val ELBO {row['val_elbo']:.2f} nats ({row['seconds']:.0f}s)", flush=True)
    with args.out.open() as f:
        print(summary(list(csv.DictReader(f))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
