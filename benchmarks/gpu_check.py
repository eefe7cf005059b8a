#!/usr/bin/env python
r"""Everything meant for a GPU, in one prepared call (issue 23): a CUDA machine's time is short and each start
costs minutes, so this runs every GPU check once, within about 8 minutes of wall time, and writes all its outputs
under one folder:

1. ``pytest tests/test_cuda.py`` (the CUDA tests compare parameters and AdamW state with the reference
   trainer)                                                                   -> pytest.txt
2. ``benchmarks/bench_steps.py --device cuda`` at paper size (channels 32, latent 200, batch 64) with stacks
   of 1, 4 and 20, and with ``--compile reduce-overhead``                     -> bench-<gpu>-stack<K>.txt,
                                                                                 bench-<gpu>-compile.txt
3. a reduced paper-config pipeline through the Snakefile (``--until select``): ``config/paper.yaml`` with
   overrides (``pipeline-overrides.yaml`` as a second ``--configfile``, and ``--config``: Table 2's five methods on mnist5k, paper-size model, 2 epochs of 2,048 images; the other experiments
   off), stacked, once with ``jobs_per_gpu`` 1 and once with 4, ``nvidia-smi`` sampled every 0.5 s beside
   each                                                                        -> pipeline-jpg<N>/ (results,
                                                                                 snakemake.log), utilisation-jpg<N>.csv
4. a summary: each step's command, exit status and wall time, the stack sizes ``stack_size: auto`` picked
   (the training jobs' done files), utilisation mean / max                     -> wall_times.tsv, stack_sizes.tsv,
                                                                                 summary.txt

Without CUDA it says so and exits 2 at once. ``--dry-run`` runs the same steps on the CPU at tiny sizes
(``bench_steps.py --quick`` with one method, the pipeline's model shrunk, CPU load sampled instead of nvidia-smi), which
``tests/test_gpu_check.py`` runs in CI so this script cannot break unseen. Every step runs even if an earlier
one failed; the exit status is 1 if any step failed.

    benchmarks/gpu_check.sh                      # on the GPU machine: results in benchmarks/results/gpu-check-<gpu>
    benchmarks/gpu_check.sh --dry-run --out /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
STACKS = (1, 4, 20)
# Seconds allowed per step on the GPU (sum 450 s: under 8 minutes with start-up).
BUDGET = {"pytest": 90, "bench": 45, "compile": 120, "pipeline": 60}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def pipeline_overrides(out: Path, dry_run: bool) -> Path:
    """The reduced paper config's overrides, written to ``out/pipeline-overrides.yaml`` (Snakemake merges a
    second ``--configfile`` into ``config/paper.yaml`` key by key; nested ``--config`` values would arrive as
    strings): Table 2 on mnist5k, 2 epochs of 2,048 images, the other experiments off; the dry run shrinks the
    model and the grid."""
    import yaml
    run = {"epochs": 2, "train_limit": 2048, "val_limit": 512, "checkpoint_epochs": [1]}
    fixed = {"dataset": "mnist5k", "run": run}
    if dry_run:
        run.update(latent_dim=4, channels=2, train_limit=128, val_limit=64)
        fixed.update(methods=["sg_gaussian", "reinforce"], lr_grid=[1.0e-3, 5.0e-4])
    values = {"datasets": {"mnist5k": {"download": False}}, "fixed_variance": fixed,
              "variance_decomposition": {"enabled": False}, "learnable_variance": {"enabled": False},
              "taylor_bias": {"enabled": False}}
    path = out / "pipeline-overrides.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


class Sampler:
    """Samples utilisation every ``period`` s into a CSV while a step runs: ``nvidia-smi`` on a GPU machine, the
    1-minute load average and this machine's CPU count in the dry run."""

    def __init__(self, path: Path, gpu: bool, period: float = 0.5):
        self.path, self.gpu, self.period = path, gpu, period
        self.proc = None
        self.stop = threading.Event()
        self.thread = None

    def __enter__(self):
        if self.gpu:
            self.file = self.path.open("w")
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,index,utilization.gpu,memory.used,"
                                          "memory.total,power.draw", "--format=csv,nounits",
                                          f"-lms={int(self.period * 1000)}"], stdout=self.file,
                                         stderr=subprocess.STDOUT)
        else:
            def loop():
                with self.path.open("w") as f:
                    f.write("timestamp, load_1min, cpus\n")
                    while not self.stop.is_set():
                        f.write(f"{time.strftime('%H:%M:%S')}, {os.getloadavg()[0]:.2f}, {os.cpu_count()}\n")
                        f.flush()
                        self.stop.wait(self.period)
            self.thread = threading.Thread(target=loop, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.file.close()
        if self.thread is not None:
            self.stop.set()
            self.thread.join()


def utilisation(path: Path) -> str:
    """Mean and max of the sampled utilisation column (GPU %, or load average in the dry run)."""
    rows = [r.split(",") for r in path.read_text().splitlines()[1:] if r.count(",") >= 2]
    col = 2 if "utilization" in path.read_text().splitlines()[0] else 1
    values = []
    for r in rows:
        try:
            values.append(float(r[col]))
        except (ValueError, IndexError):
            pass
    if not values:
        return "no samples"
    what = "GPU utilisation %" if col == 2 else "load average (1 min)"
    return f"{what}: mean {sum(values) / len(values):.1f}, max {max(values):.1f} over {len(values)} samples"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at tiny sizes (CI)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default benchmarks/results/gpu-check-<gpu>; dry run: required)")
    args = ap.parse_args(argv)

    import torch
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, or "
              "use --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    if args.dry_run and args.out is None:
        ap.error("--dry-run needs --out (its figures are not GPU figures: keep them out of benchmarks/results)")
    gpu_name = torch.cuda.get_device_name(0) if not args.dry_run else "cpu-dry-run"
    out = (args.out or ROOT / "benchmarks" / "results" / f"gpu-check-{slug(gpu_name)}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    scale = 3.0 if args.dry_run else 1.0  # the dry run's timeouts: a shared 2-core CI machine
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    steps: list[tuple[str, list[str], Path, float, Sampler | None]] = []

    pytest = [PY, "-m", "pytest", "tests/test_cuda.py", "-v", "-p", "no:nbval", "-o", "addopts=-ra",
              "-p", "no:cacheprovider"]
    steps.append(("pytest", pytest, out / "pytest.txt", BUDGET["pytest"], None))
    bench = [PY, "benchmarks/bench_steps.py", "--no-table3", "--no-protocol"]
    bench += ["--device", "cpu", "--quick", "--steps", "2", "--warmup", "1", "--methods", "sg_gaussian"] \
        if args.dry_run else \
        ["--device", "cuda", "--steps", "50", "--warmup", "3"]
    for k in STACKS:
        steps.append((f"bench stack {k}", bench + ["--stack", str(k)], out / f"bench-{slug(gpu_name)}-stack{k}.txt",
                      BUDGET["bench"], None))
    compiled = bench + ["--stack", "4", "--compile", "reduce-overhead"]
    # compile time counts: three of the five methods on the GPU, one in the dry run (inductor's C++ on a CPU)
    compiled += ["--methods", "sg_gaussian" if args.dry_run else "sg_gaussian,reparam,reinforce"]
    steps.append(("bench compile", compiled, out / f"bench-{slug(gpu_name)}-compile.txt", BUDGET["compile"], None))
    overrides = pipeline_overrides(out, args.dry_run)
    for jpg in (1, 4):
        results = out / f"pipeline-jpg{jpg}"
        cmd = [PY, "-m", "snakemake", "--cores", "4", "--until", "select", "--resources", f"gpu={jpg}",
               "--configfile", "config/paper.yaml", str(overrides), "--config", f"results={results}",
               f"jobs_per_gpu={jpg}", f"device={'cpu' if args.dry_run else 'auto'}"]
        steps.append((f"pipeline jobs_per_gpu {jpg}", cmd, out / f"pipeline-jpg{jpg}.log", BUDGET["pipeline"],
                      Sampler(out / f"utilisation-jpg{jpg}.csv", gpu=not args.dry_run)))

    failed = 0
    with (out / "wall_times.tsv").open("w") as times:
        times.write("step\trc\twall_s\tcommand\n")
        for name, cmd, log, budget, sampler in steps:
            print(f"gpu_check: {name} ...", flush=True)
            t0 = time.perf_counter()
            with log.open("w") as f:
                f.write(f"$ {' '.join(cmd)}\n\n")
                f.flush()
                try:
                    if sampler is not None:
                        with sampler:
                            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                                timeout=budget * scale).returncode
                    else:
                        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                            timeout=budget * scale).returncode
                except subprocess.TimeoutExpired:
                    rc = 124
                    f.write(f"\ngpu_check: timed out after {budget * scale:.0f} s\n")
            wall = time.perf_counter() - t0
            failed += rc != 0
            times.write(f"{name}\t{rc}\t{wall:.1f}\t{' '.join(cmd)}\n")
            times.flush()
            print(f"gpu_check: {name}: rc {rc}, {wall:.1f} s -> {log.name}", flush=True)

    with (out / "stack_sizes.tsv").open("w") as f:
        f.write("jobs_per_gpu\tjob\tstack_size\truns\n")
        for jpg in (1, 4):
            for done in sorted((out / f"pipeline-jpg{jpg}").rglob("*.json")):
                try:
                    data = json.loads(done.read_text())
                except (ValueError, OSError):
                    continue
                if isinstance(data, dict) and "stack_size" in data:
                    f.write(f"{jpg}\t{done.relative_to(out)}\t{data['stack_size']}\t{len(data.get('runs', {}))}\n")
    lines = [f"gpu_check {'--dry-run ' if args.dry_run else ''}on {gpu_name}, {time.strftime('%Y-%m-%d %H:%M')}, "
             f"torch {torch.__version__}", ""]
    lines += (out / "wall_times.tsv").read_text().splitlines() + [""]
    lines += (out / "stack_sizes.tsv").read_text().splitlines() + [""]
    for jpg in (1, 4):
        lines.append(f"jobs_per_gpu {jpg}: {utilisation(out / f'utilisation-jpg{jpg}.csv')}")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"gpu_check: {failed} step(s) failed; outputs in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
