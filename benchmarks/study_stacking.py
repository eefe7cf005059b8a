"""The learnable-variance study on a CPU: one job per run against a method's seeds stacked in one job (issue 27).

For each method asked for, the study's compared runs (``config/study.yaml``'s plan, seeds of the selected setting;
values a run inherits from a selection are taken from the first grid point) are trained for ``--epochs`` epochs in
two ways, each on one thread (``torch.set_num_threads(1)``: a 2-core machine runs two such jobs side by side):

* ``single``: each run alone (``silentvae.training.engine.train``, a stack of one: ``stack_grid: false``);
* ``stacked``: the K runs in one ``vmap``ped step (``train_stacked``; ``stack_grid: true`` stacks a method's seeds).

It prints, and appends to ``--out`` (CSV), the CPU seconds per run-epoch (training and validation, as a job
spends them; ``time.process_time``, which leaves out other processes' time on a shared machine), and the study's
projected wall time on ``--cores`` cores from the plan's run-epochs, at the faster way's mean rate per run-epoch.

    OMP_NUM_THREADS=1 python benchmarks/study_stacking.py --methods reparam gumbel_sg reinforce --epochs 2
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from silentvae.pipeline.plan import load_config, make_plan  # noqa: E402
from silentvae.training.engine import train_stacked  # noqa: E402
from silentvae.training.methods import LEARNABLE_METHODS  # noqa: E402
from silentvae.training.run import RunConfig  # noqa: E402

FIELDS = ["method", "runs", "way", "epochs", "cpu_s_per_run_epoch", "wall_s_per_run_epoch"]


def compared_configs(cfg: dict, method: str, epochs: int) -> list[RunConfig]:
    """The study's compared runs of ``method`` (its ``final_s<seed>`` runs), ``epochs`` long; each value a run
    inherits from a selection taken from that selection's first grid point."""
    plan = make_plan(cfg, not_run={})
    dataset = next(iter(cfg["learnable_variance"]["datasets"]))

    def first_point(selection: str) -> dict:
        spec = plan.runs[plan.selections[selection][0]]
        inherited = {k: v for s, keys in spec.inherit for k, v in first_point(s).items() if k in keys}
        return RunConfig.from_dict({**spec.config, **inherited}).to_dict()

    configs = []
    for run_id in plan.final_runs[f"learnable/{dataset}/{method}"]:
        spec = plan.runs[run_id]
        values = {k: first_point(selection)[k] for selection, keys in spec.inherit for k in keys}
        configs.append(RunConfig.from_dict({**spec.config, **values, "epochs": epochs, "checkpoint_epochs": []}))
    return configs


def timed(configs: list[RunConfig], stacked: bool) -> tuple[float, float]:
    """(CPU seconds, wall seconds) to train ``configs`` one job per run or as one stack."""
    cpu, wall = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        groups = [configs] if stacked else [[c] for c in configs]
        for g, group in enumerate(groups):
            train_stacked(group, out_dirs=[Path(tmp) / f"{g}_{i}" for i in range(len(group))], log=lambda s: None)
    return time.process_time() - cpu, time.perf_counter() - wall


def study_run_epochs(cfg: dict) -> int:
    """Every planned run's epochs (selection grids and compared seeds)."""
    return sum(spec.config["epochs"] for spec in make_plan(cfg, not_run={}).runs.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "config" / "study.yaml"))
    p.add_argument("--methods", nargs="+", default=["reparam", "gumbel_sg", "reinforce"],
                   choices=sorted(LEARNABLE_METHODS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--out", default=None, help="CSV to append the rows to")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    rows = []
    for method in args.methods:
        configs = compared_configs(cfg, method, args.epochs)
        for way in ("single", "stacked"):
            cpu, wall = timed(configs, way == "stacked")
            n = len(configs) * args.epochs
            rows.append({"method": method, "runs": len(configs), "way": way, "epochs": args.epochs,
                         "cpu_s_per_run_epoch": round(cpu / n, 3), "wall_s_per_run_epoch": round(wall / n, 3)})
            print(rows[-1], flush=True)
    if args.out:
        new = not Path(args.out).exists()
        with open(args.out, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)
    for way in ("single", "stacked"):
        rate = [r["cpu_s_per_run_epoch"] for r in rows if r["way"] == way]
        mean = sum(rate) / len(rate)
        total = study_run_epochs(cfg)
        print(f"{way}: {mean:.2f} CPU s per run-epoch; the study's {total:,} run-epochs on {args.cores} cores: "
              f"{total * mean / args.cores / 3600:.2f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
