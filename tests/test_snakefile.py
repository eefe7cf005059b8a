"""The Snakefile's DAG (dry runs; no training here): jobs, commands and parameters match the plan."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_plan import paper_config

from silentvae.pipeline.plan import load_config, make_plan

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _dry_run(*args, cwd=ROOT):
    """Job counts per rule of a dry run (the training rule's jobs counted by experiment: train_fixed,
    train_learnable)."""
    res = subprocess.run([*SNAKEMAKE, *args, "-n", "--quiet", "rules"], cwd=cwd, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    counts = {}
    per_rule = dict(re.findall(r"^(\w+)\s+(\d+)$", res.stdout + res.stderr, re.M))  # the table comes twice
    for rule, n in per_rule.items():
        rule = next((f"train_{e}" for e in ("fixed", "learnable") if rule.startswith(f"train_{e}_")), rule)
        counts[rule] = counts.get(rule, 0) + int(n)
    counts.pop("total", None)
    return counts


def test_readme_full_protocol_command_dry_runs(tmp_path):
    cfg = paper_config(tmp_path)
    plan = make_plan(cfg)
    # The README's exact spelling, with an empty data root where only ImageNet's first batch is present.
    fresh = f"results={tmp_path / 'results'}"  # independent of whatever lies in the repo's results/
    counts = _dry_run("--cores", "8", "--resources", "gpu=8", "--config", f"data_root={tmp_path}", fresh)
    # the paper config stacks both experiments: every run is in exactly one job, one job per stack
    assert sorted(r for runs in plan.training_jobs.values() for r in runs) == sorted(plan.runs)
    assert counts["train_fixed"] == 2 * len(cfg["fixed_variance"]["methods"])   # per method: its grid, its other seeds
    assert counts["train_fixed"] + counts["train_learnable"] == len(plan.training_jobs) < len(plan.runs)
    assert counts["select"] == len(plan.selections)
    assert counts["variance"] == len(plan.variance) and counts["taylor"] == 1 and counts["report"] == 1
    assert _dry_run("all", "--cores", "8", "--resources", "gpu=8", "--config", f"data_root={tmp_path}", fresh) == counts
    # one GPU shared by 4 jobs: the same DAG
    assert _dry_run("--cores", "4", "--resources", "gpu=4", "--config", "jobs_per_gpu=4", f"data_root={tmp_path}",
                    fresh) == counts


def test_embedded_profile_and_slurm_profile_dry_run(tmp_path):
    fresh = f"results={tmp_path / 'results'}"
    embedded = _dry_run("--profile", "profiles/embedded", "--config", fresh)
    plan = make_plan(load_config(ROOT / "config" / "embedded.yaml"))
    assert embedded["train_fixed"] + embedded["train_learnable"] == len(plan.runs) == len(plan.training_jobs)
    slurm = _dry_run("--profile", "profiles/slurm", "--config", fresh)  # the paper config: stacked grids
    assert slurm["train_fixed"] + slurm["train_learnable"] >= len(
        make_plan({**load_config(ROOT / "config" / "paper.yaml"), "data_root": "/nonexistent"}).training_jobs)


def test_wrong_config_fails_before_any_job(tmp_path):
    bad = yaml.safe_load((ROOT / "config" / "embedded.yaml").read_text())
    bad["fixed_variance"]["run"]["epochz"] = 3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    res = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "--configfile", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "epochz" in res.stdout + res.stderr


def test_snakefile_lint_clean():
    res = subprocess.run([*SNAKEMAKE, "--lint"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_engines_single_and_stacked(tmp_path):
    """stack_grid: false gives one job per run, true one per grid (learnable: the first seed's grid, then the
    other seeds); the two can be mixed."""
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["fixed_variance"]["stack_grid"], cfg["learnable_variance"]["stack_grid"] = False, True
    plan = make_plan({**cfg, "data_root": str(tmp_path)})
    fixed_runs = [r for r in plan.runs if r.startswith("fixed/")]
    stacks = {job: run_ids for job, run_ids in plan.training_jobs.items() if run_ids != [job]}
    assert all(s.startswith("learnable/") for s in stacks)
    assert all(plan.training_jobs[r] == [r] for r in fixed_runs)
    assert len(stacks["learnable/mnist/reparam/grid"]) == len(cfg["learnable_variance"]["lr_grid"])
    assert len(stacks["learnable/mnist/reparam_sg/grid"]) == \
        len(cfg["learnable_variance"]["anneal_grid"]) * len(cfg["learnable_variance"]["cutoff_grid"])
    assert stacks["learnable/mnist/reparam_sg/final"] == plan.final_runs["learnable/mnist/reparam_sg"]
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    counts = _dry_run("--configfile", str(path), "--cores", "8", "--resources", "gpu=8",
                      "--config", f"data_root={tmp_path}")
    assert counts["train_fixed"] == len(fixed_runs)
    assert counts["train_learnable"] == len(stacks)


def test_parameters_reach_papermill_with_types_and_paths_stay_whole(tmp_path):
    """Every printed job command of the paper protocol: the papermill parameters read back exactly as papermill
    reads them (learning rates 1e-05 and 5e-05 stay floats), and a results path with a space and a ";" stays
    one word of the shell command (no stray file, no command run)."""
    from papermill.iorw import NoDatesSafeLoader

    cfg = paper_config(tmp_path)
    results = str(tmp_path / "re sults;touch INJECTED")
    plan = make_plan({**cfg, "results": results})
    res = subprocess.run([*SNAKEMAKE, "-n", "-p", "--cores", "8", "--config", f"data_root={tmp_path}",
                          f"results={results}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    commands = [line.strip() for line in res.stdout.splitlines() if " -m papermill " in line or " select " in line]
    seen_runs = {}
    for command in commands:
        words = shlex.split(command)
        assert "touch" not in words and "INJECTED" not in words, command
        assert words[words.index(">") + 1].startswith(f"{results}/logs/"), command
        if "-y" in words:
            params = yaml.load(words[words.index("-y") + 1], Loader=NoDatesSafeLoader)
            assert Path(words[words.index("-y") - 1]).is_relative_to(results)  # the executed notebook
            seen_runs.update({run["id"]: run for run in params.get("runs", [])})
    assert len(commands) == len(plan.training_jobs) + len(plan.selections) + len(plan.variance) + len(plan.taylor) + 1
    assert sorted(seen_runs) == sorted(plan.runs)
    for rid, run in seen_runs.items():
        assert run["config"] == plan.runs[rid].config, rid
        assert all(type(v) is type(plan.runs[rid].config[k]) for k, v in run["config"].items()), rid
        assert run["out_dir"] == f"{results}/runs/{rid}"
    lrs = {run["config"]["lr"] for run in seen_runs.values() if "lr" in run["config"]}
    assert lrs == set(cfg["fixed_variance"]["lr_grid"]) and all(type(lr) is float for lr in lrs)


def test_snakefile_refuses_root_results_before_any_job(tmp_path):
    res = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "--config", "results=/.", f"data_root={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "is the filesystem root" in res.stdout + res.stderr


def test_variance_epoch_beyond_training_is_refused_at_config_time(tmp_path):
    cfg = paper_config(tmp_path)
    cfg["variance_decomposition"]["epochs"] = [1, 600]
    with pytest.raises(ValueError, match=r"variance_decomposition.epochs \[1, 600\].*fixed_variance.run.epochs \(500"):
        make_plan(cfg)
    cfg["fixed_variance"]["enabled"] = False  # no trained runs, no check
    make_plan(cfg)
    path = tmp_path / "bad.yaml"
    cfg["fixed_variance"]["enabled"] = True
    path.write_text(yaml.safe_dump({**cfg, "results": str(tmp_path / "results")}))
    res = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "--configfile", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "fixed_variance.run.epochs" in res.stdout + res.stderr


@pytest.mark.parametrize("value, expected", [(None, False), ("reduce-overhead", "reduce-overhead")])
def test_compile_setting_reaches_every_training_job(tmp_path, value, expected):
    """`compile` (config/paper.yaml, or --config compile=reduce-overhead on a GPU) is a parameter of every
    training notebook, with its type: false by default, or a torch.compile mode string."""
    from papermill.iorw import NoDatesSafeLoader

    extra = [] if value is None else [f"compile={value}"]
    res = subprocess.run([*SNAKEMAKE, "-n", "-p", "--cores", "8", "--config", f"data_root={tmp_path}", *extra],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    params = [yaml.load(w[w.index("-y") + 1], Loader=NoDatesSafeLoader)
              for w in (shlex.split(line.strip()) for line in res.stdout.splitlines() if " -m papermill " in line)]
    training = [p for p in params if "runs" in p]
    assert training and all(p["compile"] == expected and type(p["compile"]) is type(expected) for p in training)
