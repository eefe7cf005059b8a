"""End to end: the Snakefile runs a tiny config through every rule (papermill notebooks on CPU), lands the
tables, figures and report, marks a missing dataset "not run", skips finished work on a rerun and
redoes a job whose output was lost without retraining (its checkpoint holds the finished history), and reruns
the jobs whose run config changed."""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from silentvae.pipeline import paths

ROOT = Path(__file__).resolve().parent.parent


def _tiny_config(tmp: Path) -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    return {**cfg, "results": str(tmp / "results"), "data_root": str(tmp / "data")}


def _snakemake(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SILENTVAE_NUM_GPUS": "0"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--configfile", str(config_path), "--cores", "2",
                           "--nolock", *args], cwd=ROOT, capture_output=True, text=True, timeout=1200, env=env)


@pytest.mark.slow
def test_tiny_pipeline_end_to_end(tmp_path):
    cfg = _tiny_config(tmp_path)
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    res = _snakemake(config_path)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    results = Path(cfg["results"])

    assert (results / "report.html").stat().st_size > 10_000
    for name in ("table1", "table2", "table3", "table4", "table9", "convergence", "taylor_bias"):
        for ext in ("csv", "md", "tex"):
            assert (results / "tables" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    for fig in ("figure2_fixed_reconstructions", "figure3_mnist5k_reconstructions", "fixed_curves", "variance",
                "taylor_bias"):
        assert (results / "figures" / f"{fig}.png").stat().st_size > 0
        assert (results / "figures" / f"{fig}.pdf").stat().st_size > 0

    # Table 2 holds the mean over the selected lr's seeds of each seed's final value (mean of its last 3 epochs).
    sel = json.loads((results / "selected" / "fixed" / "mnist5k" / "reparam.json").read_text())
    seed_runs = [sel["best_run"]] + [f"fixed/mnist5k/reparam/final_s{s}" for s in cfg["fixed_variance"]["seeds"][1:]]
    finals = [statistics.fmean(h["val_bpd"] for h in json.loads((results / "runs" / r / "result.json").read_text()
                                                                 )["history"][-3:]) for r in seed_runs]
    table2 = pd.read_csv(results / "tables" / "table2.csv")
    row = table2[table2["Method"] == "Reparameterization"].iloc[0]
    assert float(row["BPD"]) == pytest.approx(statistics.fmean(finals), abs=1e-4) and row["Seeds"] == f"{len(finals)} of {len(finals)} seeds"
    claims_df = pd.read_csv(results / "tables" / "claims.csv", keep_default_na=False).set_index("Id")
    # 2 seeds a side: the exact test is computed, and says it cannot reach 5%
    assert "2 vs 2 seeds cannot reach 5%" in claims_df.loc["t2_continuous_mse", "Ours"]
    # CIFAR-10 is absent: its cells carry the reason, never a number.
    reason = f"not run: cifar10 not found at {tmp_path / 'data' / 'cifar-10-batches-py'}"
    table3 = pd.read_csv(results / "tables" / "table3.csv")
    assert (table3.astype(str) == reason).any().any()
    # tiny.yaml stacks the learnable grids: one job (notebook, done file) per grid and per grid's other seeds
    for job in ("learnable/mnist5k/reparam/grid", "learnable/mnist5k/reparam/final"):
        assert Path(paths.training_notebook(str(results), job)).exists()
    done = json.loads(Path(paths.training_json(str(results), "learnable/mnist5k/reparam/final")).read_text())
    assert list(done["runs"]) == ["learnable/mnist5k/reparam/final_s1"]
    assert all(Path(p).exists() for p in done["runs"].values())
    # a one-point grid (reparam_sg: one annealing rate, one cut-off) trains its seeds in the grid's job
    done = json.loads(Path(paths.training_json(str(results), "learnable/mnist5k/reparam_sg/grid")).read_text())
    assert list(done["runs"]) == ["learnable/mnist5k/reparam_sg/ar0.5_co2_s0", "learnable/mnist5k/reparam_sg/final_s1"]
    # fixed_variance runs one job per run: a stack of one, with its own done file
    single = json.loads(Path(paths.training_json(str(results), sel["best_run"])).read_text())
    assert list(single["runs"]) == [sel["best_run"]] and single["stack_size"] >= 1

    # A rerun has nothing to do.
    dry = _snakemake(config_path, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    # A changed run config reruns its jobs (Snakemake's params trigger), the other runs stay.
    changed = tmp_path / "changed.yaml"
    longer = {**cfg["fixed_variance"], "run": {**cfg["fixed_variance"]["run"], "epochs": 3}}
    changed.write_text(yaml.safe_dump({**cfg, "fixed_variance": longer}))
    dry = _snakemake(changed, "-n", "--quiet", "rules")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout + dry.stderr, re.M))
    fixed = cfg["fixed_variance"]
    assert sum(int(n) for rule, n in counts.items() if rule.startswith("train_fixed_")) == \
        len(fixed["methods"]) * (len(fixed["lr_grid"]) + len(fixed["seeds"]) - 1)   # the grid and the other seeds
    assert not any(rule.startswith("train_learnable_") for rule in counts)

    # A job killed after epoch 1 of 2 (its last.pt is the epoch-1 checkpoint, nothing downstream exists yet)
    # resumes from that checkpoint and finishes with the same history as the uninterrupted run.
    run_dir = Path(paths.run_dir(str(results), sel["best_run"]))
    before = json.loads((run_dir / "result.json").read_text())
    shutil.copy2(run_dir / "epoch_0001.pt", run_dir / "last.pt")
    for path in (run_dir / "result.json", run_dir / "metrics.json",
                 results / "selected" / "fixed" / "mnist5k" / "reparam.json", results / "report.html"):
        path.unlink()
    redo = _snakemake(config_path)
    assert redo.returncode == 0, redo.stdout[-3000:] + redo.stderr[-3000:]
    log = Path(paths.training_log(str(results), sel["best_run"])).read_text()
    assert "resuming" in log and "after epoch 1" in log
    after = json.loads((run_dir / "result.json").read_text())
    drop = lambda h: [{k: v for k, v in row.items() if not k.endswith("time")} for row in h]  # noqa: E731
    assert drop(after["history"]) == drop(before["history"])
    assert (results / "report.html").exists()
