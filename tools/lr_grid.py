"""Train the paper's fixed-variance (Table 2) runs over a learning-rate grid and print how far each got.

The runs are exactly the ones ``config/paper.yaml``'s ``fixed_variance`` block defines (same model, optimiser,
sigma^2, temperature, REINFORCE baseline), on the dataset and for the epochs given here; each row adds what tells
a learned Bernoulli code from a collapsed one (silentvae.metrics.code_diversity on the validation images):

    .venv/bin/python tools/lr_grid.py --epochs 5 --out results/lr_grid_5ep.csv        # issue 11's acceptance grid
    .venv/bin/python tools/lr_grid.py --methods sg_gaussian reparam sg_bernoulli gumbel reinforce \\
        --lrs 5e-4 --epochs 30 --out results/table2_30ep.csv                          # the 30-epoch comparison

Runs go to ``--runs`` (default ``results/lr_grid/<method>/lr<lr>``); finished ones are read back, not retrained,
and an interrupted one resumes from its last epoch. ``--jobs`` runs train side by side, one thread each.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from silentvae.metrics import code_diversity
from silentvae.training.methods import FIXED_METHODS
from silentvae.pipeline.paths import last_checkpoint_in
from silentvae.pipeline.plan import load_config, lr_tag
from silentvae.training.run import RunConfig, load_run, load_splits
from silentvae.training.engine import train

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["method", "lr", "epochs", "val_bpd", "val_mse", "val_kld", "kl_vs_max", "distinct_codes",
           "code_spread", "mean_image_mse"]


def run_config(method: str, lr: float, epochs: int, dataset: str, **fields) -> RunConfig:
    """The paper config's fixed-variance run for ``method`` at ``lr``, with ``epochs`` and ``dataset`` replaced
    (and any other RunConfig ``fields``, e.g. ``seed`` or ``init``; the seed defaults to the config's first)."""
    fixed = load_config(ROOT / "config" / "paper.yaml")["fixed_variance"]
    run = {k: v for k, v in fixed["run"].items() if k != "checkpoint_epochs"}
    return RunConfig.from_dict({**run, **FIXED_METHODS[method].run_fields(), "experiment": "fixed", "dataset": dataset,
                                "epochs": epochs, "lr": lr, "seed": fixed["seeds"][0],
                                "data_root": str(ROOT / "data"), **fields})


def train_and_describe(cfg: RunConfig, out: Path, tag: str) -> dict:
    """Train (or resume, or read back) the run ``cfg`` in ``out``, one thread; its final validation numbers and,
    for Bernoulli latents, how far its code is from a collapsed one (KL / its maximum, distinct codes, spread)."""
    torch.set_num_threads(1)
    history = train(cfg, out, log=lambda line: print(f"[{tag}] {line}", flush=True))
    _, models, _ = load_run(last_checkpoint_in(out))
    _, val = load_splits(cfg)
    with torch.no_grad():
        post = models["encoder"].eval()(val.images.to(cfg.torch_dtype))
    last = history[-1]
    row = {"lr": cfg.lr, "epochs": last["epoch"], **{k: last[k] for k in ("val_bpd", "val_mse", "val_kld")},
           "mean_image_mse": (val.images - val.images.mean(0)).square().flatten(1).sum(-1).mean().item()}
    if cfg.latent == "bernoulli":
        distinct, spread = code_diversity(post.probs)
        row |= {"kl_vs_max": last["val_kld"] / (cfg.latent_dim * math.log(2)), "distinct_codes": distinct,
                "code_spread": spread}
    return row


def train_and_measure(method: str, lr: float, epochs: int, dataset: str, runs: Path) -> dict:
    cfg = run_config(method, lr, epochs, dataset)
    return {"method": method, **train_and_describe(cfg, runs / method / lr_tag(lr), f"{method} {lr:g}")}


def markdown(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    """``rows`` as a markdown table of ``columns`` (empty cells where a row has no value)."""
    fmt = {"val_bpd": "{:.3f}", "val_mse": "{:.2f}", "val_kld": "{:.1f}", "kl_vs_max": "{:.2f}",
           "code_spread": "{:.3f}", "mean_image_mse": "{:.1f}", "lr": "{:g}"}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [fmt.get(c, "{}").format(r[c]) if r.get(c) not in (None, "") else "" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["sg_bernoulli", "gumbel", "reinforce"],
                    choices=sorted(FIXED_METHODS))
    ap.add_argument("--lrs", nargs="+", type=float, default=None, help="default: paper.yaml's lr_grid")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=ROOT / "results" / "lr_grid")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows as CSV here")
    args = ap.parse_args(argv)
    lrs = args.lrs or load_config(ROOT / "config" / "paper.yaml")["fixed_variance"]["lr_grid"]
    grid = [(m, lr) for m in args.methods for lr in lrs]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(train_and_measure, m, lr, args.epochs, args.dataset, args.runs) for m, lr in grid]
        rows = [f.result() for f in futures]
    print(markdown(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
