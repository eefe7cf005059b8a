"""What the initialisation does to each estimator: the Table 2 (fixed-variance) methods trained from each of
``silentvae.training.methods.INITS`` at the paper config's size, a few seeds, and how far each got.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python tools/init_ablation.py --epochs 10 --seeds 0 1 --jobs 2 \\
        --out results/init_ablation_10ep.csv        # the README's table: 5 methods x 3 inits x 2 seeds = 30 runs

The runs are ``config/paper.yaml``'s ``fixed_variance`` runs (latent 200, channels 32, sigma2 0.01, batch 64,
temperature 0.5, REINFORCE momentum 0.99) at ``--lr`` (default 5e-4), with ``init`` and ``seed`` replaced:

* ``pytorch``: nn.Linear's default init for the linear decoder's W and the encoder head;
* ``zero_decoder``: W = 0, default encoder head;
* ``zero_decoder_head``: W = 0 and the head's data-dependent init (the project's default).

Each finished run appends one row to ``--out`` (CSV) at once, so an interrupted ablation keeps what it measured;
``--out`` with ``.md`` instead of ``.csv`` gets the markdown table of the rows so far. Runs go to ``--runs``;
finished ones are read back, an interrupted one resumes. The distinct codes are
:func:`silentvae.metrics.code_diversity` of the validation images' Bernoulli probabilities.
"""

from __future__ import annotations

import argparse
import sys
import csv
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from lr_grid import markdown, run_config, train_and_describe   # tools/: the paper config's fixed-variance runs
from silentvae.training.methods import FIXED_METHODS, INITS

ROOT = Path(__file__).resolve().parent.parent
TABLE2_METHODS = ["sg_gaussian", "reparam", "sg_bernoulli", "gumbel", "reinforce"]
COLUMNS = ["method", "init", "seed", "lr", "epochs", "val_bpd", "val_mse", "val_kld", "kl_vs_max", "distinct_codes",
           "code_spread"]


def train_and_measure(method: str, init: str, seed: int, lr: float, epochs: int, dataset: str, runs: Path) -> dict:
    cfg = run_config(method, lr, epochs, dataset, seed=seed, init=init)
    row = train_and_describe(cfg, runs / method / init / f"seed{seed}", f"{method} {init} {seed}")
    return {"method": method, "init": init, "seed": seed, **{c: row.get(c) for c in COLUMNS[3:]}}


def append_row(out: Path, row: dict) -> None:
    """One finished run's row, appended (header first if the file is new) and flushed at once."""
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists() or out.stat().st_size == 0
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_rows(out: Path) -> list[dict]:
    """The CSV's rows, numbers parsed, in Table 2's method order, then initialisation, then seed."""
    with out.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["seed"], r["epochs"] = int(r["seed"]), int(r["epochs"])
        for k in ("lr", "val_bpd", "val_mse", "val_kld", "kl_vs_max", "code_spread"):
            r[k] = float(r[k]) if r.get(k) else None
    order = {m: i for i, m in enumerate(TABLE2_METHODS)}
    return sorted(rows, key=lambda r: (order.get(r["method"], len(order)), INITS.index(r["init"]), r["seed"]))


def write_markdown(out: Path) -> str:
    """The markdown table of the rows so far, beside the CSV (``.md``); returns it."""
    table = markdown(read_rows(out), COLUMNS) if out.exists() else markdown([], COLUMNS)
    out.with_suffix(".md").write_text(table + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=TABLE2_METHODS, choices=sorted(FIXED_METHODS))
    ap.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=ROOT / "results" / "init_ablation")
    ap.add_argument("--out", type=Path, required=True, help="CSV, one row appended per finished run")
    args = ap.parse_args(argv)
    if args.out.suffix != ".csv":
        raise SystemExit(f"--out must end in .csv (the markdown goes beside it), got {args.out}")
    done = set()
    if args.out.exists():
        with args.out.open() as f:
            done = {(r["method"], r["init"], int(r["seed"])) for r in csv.DictReader(f)}
    grid = [(m, i, s) for s in args.seeds for m in args.methods for i in args.inits if (m, i, s) not in done]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(train_and_measure, m, i, s, args.lr, args.epochs, args.dataset, args.runs)
                   for m, i, s in grid]
        for future in as_completed(futures):
            append_row(args.out, future.result())
            write_markdown(args.out)
    print(write_markdown(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
