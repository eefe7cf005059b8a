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
    # A deleted run folder (what the error messages advise) reruns exactly the job that trained it, and the report.
    final_dir = Path(paths.run_dir(str(results), "fixed/mnist5k/reparam/final_s1"))
    shutil.copytree(final_dir, tmp_path / "kept_run")
    shutil.rmtree(final_dir)
    # (and reparam's Table 1 job, which reads that seed's checkpoints: variance_decomposition.seeds)
    assert _dry_run_counts(config_path) == {"train_fixed_mnist5k_reparam_final_s1": 1, "variance": 1, "report": 1,
                                            "all": 1}
    shutil.copytree(tmp_path / "kept_run", final_dir)  # copy2: the files' times come back too
    # A truncated result.json is named before any job runs; following the advice reruns the job that writes it.
    result = final_dir / "result.json"
    result.write_text(result.read_text()[:300])
    dry = _snakemake(config_path, "-n")
    assert dry.returncode != 0 and f"{result} is truncated or not valid JSON" in dry.stdout + dry.stderr
    assert "Delete it and rerun" in dry.stdout + dry.stderr
    result.unlink()
    # (and reparam's Table 1 job, which reads that seed's checkpoints: variance_decomposition.seeds)
    assert _dry_run_counts(config_path) == {"train_fixed_mnist5k_reparam_final_s1": 1, "variance": 1, "report": 1,
                                            "all": 1}
    shutil.copy2(tmp_path / "kept_run" / "result.json", result)
    # A changed run config reruns its jobs (Snakemake's params trigger), the other runs stay.
    changed = tmp_path / "changed.yaml"
    longer = {**cfg["fixed_variance"], "run": {**cfg["fixed_variance"]["run"], "epochs": 3}}
    changed.write_text(yaml.safe_dump({**cfg, "fixed_variance": longer}))
    counts = _dry_run_counts(changed)
    fixed = cfg["fixed_variance"]
    assert sum(n for rule, n in counts.items() if rule.startswith("train_fixed_")) == \
        len(fixed["methods"]) * (len(fixed["lr_grid"]) + len(fixed["seeds"]) - 1)   # the grid and the other seeds
    assert not any(rule.startswith("train_learnable_") for rule in counts)
    # ... also where Snakemake has no records of the jobs (the results copied to a new path): each run's stored
    # config is compared; the unchanged config has nothing to do there.
    copied = tmp_path / "copied"
    shutil.copytree(results, copied)
    for name, source in (("copied.yaml", cfg), ("copied_changed.yaml", {**cfg, "fixed_variance": longer})):
        (tmp_path / name).write_text(yaml.safe_dump({**source, "results": str(copied)}))
    assert _dry_run_counts(tmp_path / "copied.yaml") == {}
    assert _dry_run_counts(tmp_path / "copied_changed.yaml") == counts
    assert _dry_run_counts(tmp_path / "copied.yaml") == {}  # back to the config the runs were trained with

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

    # A finished run's damaged last.pt (the report draws the selected run's reconstructions from it): the report
    # job fails naming it, the old report stays; following the advice trains the run again and the report is made.
    report = (results / "report.html").read_bytes()
    last = run_dir / "last.pt"
    os.truncate(last, last.stat().st_size // 2)
    taylor = Path(paths.diagnostic_json(str(results), "taylor/mnist5k"))
    taylor.write_text(taylor.read_text() + "\n")  # a changed input of the report alone: the report job runs
    failed = _snakemake(config_path)
    assert failed.returncode != 0 and (results / "report.html").read_bytes() == report
    log = Path(paths.job_log(str(results), "report")).read_text()
    assert f"{last} is truncated or corrupt" in log and "delete both last.pt and result.json there and rerun" in log
    last.unlink()
    (run_dir / "result.json").unlink()
    redo = _snakemake(config_path)
    assert redo.returncode == 0, redo.stdout[-3000:] + redo.stderr[-3000:]
    log = Path(paths.training_log(str(results), sel["best_run"])).read_text()
    assert "resuming" not in log and "epoch    2/2" in log
    assert drop(json.loads((run_dir / "result.json").read_text())["history"]) == drop(before["history"])
    assert (results / "report.html").read_bytes() != report


def _dry_run_counts(config_path: Path) -> dict[str, int]:
    """{rule: jobs} that ``snakemake -n`` would run for a config ({} when there is nothing to do)."""
    dry = _snakemake(config_path, "-n", "--quiet", "rules")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    if "Nothing to be done" in dry.stdout + dry.stderr:
        return {}
    table = (dry.stdout + dry.stderr).split("Job stats:")[1].split("total")[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.slow
def test_the_readme_way_to_end_the_jobs_of_a_killed_snakemake(tmp_path):
    """After `kill -9` of Snakemake its running job trains on alone; `kill -INT -- -PGID` (the README's advice)
    ends it: no process of the group is left and the run stops training (its kernel, in a group of its own,
    ends with papermill)."""
    import signal
    import time
    cfg = _tiny_config(tmp_path)
    cfg["fixed_variance"] = {**cfg["fixed_variance"], "methods": ["reparam"], "lr_grid": [1e-3], "seeds": [0],
                             "run": {**cfg["fixed_variance"]["run"], "epochs": 500, "train_limit": 1024}}
    for section in ("variance_decomposition", "learnable_variance", "taylor_bias"):
        cfg[section] = {**cfg.get(section, {}), "enabled": False}
    config_path = tmp_path / "long.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    metrics = Path(paths.run_dir(cfg["results"], "fixed/mnist5k/reparam/lr0.001")) / "metrics.json"
    epochs = lambda: len(json.loads(metrics.read_text())["history"])  # noqa: E731
    snakemake = subprocess.Popen([sys.executable, "-m", "snakemake", "--configfile", str(config_path), "--cores",
                                  "1", "--nolock"], cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env={**os.environ, "SILENTVAE_NUM_GPUS": "0"})
    group = snakemake.pid
    try:
        deadline = time.monotonic() + 300
        while not metrics.exists() and time.monotonic() < deadline:
            time.sleep(1)
        os.kill(snakemake.pid, signal.SIGKILL)
        snakemake.wait()
        before = epochs()
        time.sleep(8)
        assert epochs() > before  # the job trains on without Snakemake
        # the README: Ctrl-C, and once more if a job is still there half a minute later (one CI run saw the group
        # outlive a single interrupt by more than a minute; a second interrupt ends a process stuck in its exit)
        for wait in (30, 60):
            os.killpg(group, signal.SIGINT)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(group):
                time.sleep(0.5)
            if not _group_alive(group):
                break
        assert not _group_alive(group)
        time.sleep(3)
        stopped = epochs()
        time.sleep(8)
        assert epochs() == stopped  # no kernel trains on
    finally:
        if _group_alive(group):
            os.killpg(group, signal.SIGKILL)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False
