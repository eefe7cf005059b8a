"""The pipeline plan, config validation and the Snakefile's DAG (dry runs; no training here)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from silentvae.pipeline import (LEARNABLE_METHODS, load_config, make_plan, resolve_run_config, select_best,
                                validate_config)

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _paper(tmp_path, with_imagenet=True):
    cfg = load_config(ROOT / "config" / "paper.yaml")
    cfg["data_root"] = str(tmp_path)
    if with_imagenet:
        (tmp_path / "imagenet32").mkdir(exist_ok=True)
        (tmp_path / "imagenet32" / "train_data_batch_1.npz").write_bytes(b"")
    return cfg


def _expected_learnable_runs(cfg, dataset):
    """Count the protocol's runs from the config: grid points + remaining seeds per method."""
    lv = cfg["learnable_variance"]
    ds = lv["datasets"][dataset]
    total = 0
    for method in lv["methods"]:
        spec = LEARNABLE_METHODS[method]
        epochs = ds.get("reinforce_epochs", ds["epochs"]) if spec["estimator"] == "reinforce" else ds["epochs"]
        cutoffs = len([c for c in lv["cutoff_grid"] if c <= epochs]) or 1
        if spec["estimator"] == "none":
            grid = len(lv["lr_grid"]) * cutoffs
        elif spec["silent"]:
            grid = len(lv["anneal_grid"]) * cutoffs
        else:
            grid = len(lv["lr_grid"])
        total += grid + len(lv["seeds"]) - 1
    return total


def test_both_configs_are_valid():
    for name in ("paper", "embedded"):
        load_config(ROOT / "config" / f"{name}.yaml")


@pytest.mark.parametrize("mutate, where", [
    (lambda c: c.update(learning_rate=1), "<top level>"),
    (lambda c: c["fixed_variance"].update(methods=["sg_gaussian", "adam"]), "fixed_variance/methods/1"),
    (lambda c: c["learnable_variance"]["run"].update(epocs=3), "learnable_variance/run"),
    (lambda c: c["fixed_variance"].update(lr_grid=[-1e-3]), "fixed_variance/lr_grid/0"),
    (lambda c: c["datasets"].update(svhn={"download": True}), "datasets"),
])
def test_bad_config_names_the_key(mutate, where):
    cfg = load_config(ROOT / "config" / "paper.yaml")
    mutate(cfg)
    with pytest.raises(ValueError, match=re.escape(f"invalid config at '{where}'")):
        validate_config(cfg)


def test_paper_plan_has_the_full_protocol(tmp_path):
    cfg = _paper(tmp_path)
    plan = make_plan(cfg)
    fixed = [r for r in plan.runs if r.startswith("fixed/")]
    assert len(fixed) == len(cfg["fixed_variance"]["methods"]) * len(cfg["fixed_variance"]["lr_grid"])
    for ds in cfg["learnable_variance"]["datasets"]:
        runs = [r for r in plan.runs if r.startswith(f"learnable/{ds}/")]
        assert len(runs) == _expected_learnable_runs(cfg, ds), ds
    assert set(plan.variance) == {f"variance/mnist/{m}" for m in cfg["fixed_variance"]["methods"]}
    assert list(plan.taylor) == ["taylor/mnist"]
    assert plan.not_run == {}
    # Fixed runs checkpoint the epochs Table 1 needs; SG variants take the baseline's selected lr.
    assert all(set(plan.runs[r].config["checkpoint_epochs"]) >= {1, 50, 250} for r in fixed)
    sg_run = plan.runs["learnable/cifar10/gumbel_sg/ar0.01_co50_s0"]
    assert sg_run.inherit == [("learnable/cifar10/gumbel", ["lr"])]
    assert plan.runs["learnable/mnist/reinforce/lr0.0001_s0"].config["epochs"] == 300
    final = plan.runs["learnable/imagenet32/reparam_sg/final_s2"]
    assert final.config["seed"] == 2 and final.selections == ["learnable/imagenet32/reparam_sg"]


def test_missing_dataset_is_reported_not_replaced(tmp_path):
    plan = make_plan(_paper(tmp_path, with_imagenet=False))
    assert plan.not_run == {"imagenet32": f"not run: imagenet32 not found at {tmp_path / 'imagenet32'}"}
    assert not any("/imagenet32/" in r for r in plan.runs)


def test_select_best_and_resolve(tmp_path):
    paths = {}
    for name, bpd in [("a", 7.0), ("b", 6.5), ("c", 6.9)]:
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps({"config": {"lr": {"a": 1, "b": 2, "c": 3}[name], "cutoff_epoch": 5},
                                           "history": [{"val_bpd": 9.0}, {"val_bpd": bpd}]}))
    sel = select_best(paths)
    assert sel["best_run"] == "b" and sel["best_val_bpd"] == 6.5 and sel["best_config"]["lr"] == 2
    (tmp_path / "sel").mkdir()
    (tmp_path / "sel" / "x.json").write_text(json.dumps(sel))
    resolved = resolve_run_config({"lr": 9, "seed": 1, "cutoff_epoch": None}, [("x", ["lr"])], tmp_path / "sel")
    assert resolved == {"lr": 2, "seed": 1, "cutoff_epoch": None}


def _dry_run(*args, cwd=ROOT):
    res = subprocess.run([*SNAKEMAKE, *args, "-n", "--quiet", "rules"], cwd=cwd, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", res.stdout + res.stderr, re.M))
    return {k: int(v) for k, v in counts.items() if k != "total"}


def test_readme_full_protocol_command_dry_runs(tmp_path):
    cfg = _paper(tmp_path)
    plan = make_plan(cfg)
    # The README's exact spelling, with an empty data root where only ImageNet's first batch is present.
    fresh = f"results={tmp_path / 'results'}"  # independent of whatever lies in the repo's results/
    counts = _dry_run("--cores", "8", "--resources", "gpu=8", "--config", f"data_root={tmp_path}", fresh)
    # the paper config stacks both experiments: every run is in exactly one stack, one job per stack
    assert sorted(r for runs in plan.stacks.values() for r in runs) == sorted(plan.runs)
    assert counts["train_stack"] == len(plan.stacks)
    assert "train_fixed" not in counts and "train_learnable" not in counts
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
    assert embedded["train_fixed"] + embedded["train_learnable"] == len(plan.runs)
    slurm = _dry_run("--profile", "profiles/slurm", "--config", fresh)  # the paper config: stacked grids
    assert slurm["train_stack"] >= len(make_plan({**load_config(ROOT / "config" / "paper.yaml"),
                                                  "data_root": "/nonexistent"}).stacks)


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
    """engine: single gives one job per run, stacked one per grid (learnable: the first seed's grid, then the
    other seeds); the two can be mixed."""
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    cfg["results"] = str(tmp_path / "results")
    cfg["fixed_variance"]["engine"], cfg["learnable_variance"]["engine"] = "single", "stacked"
    plan = make_plan({**cfg, "data_root": str(tmp_path)})
    fixed_runs = [r for r in plan.runs if r.startswith("fixed/")]
    assert all(s.startswith("learnable/") for s in plan.stacks)
    assert len(plan.stacks["learnable/mnist/reparam/grid"]) == len(cfg["learnable_variance"]["lr_grid"])
    assert len(plan.stacks["learnable/mnist/reparam_sg/grid"]) == \
        len(cfg["learnable_variance"]["anneal_grid"]) * len(cfg["learnable_variance"]["cutoff_grid"])
    assert plan.stacks["learnable/mnist/reparam_sg/final"] == plan.final_runs["learnable/mnist/reparam_sg"]
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    counts = _dry_run("--configfile", str(path), "--cores", "8", "--resources", "gpu=8",
                      "--config", f"data_root={tmp_path}")
    assert counts["train_fixed"] == len(fixed_runs)
    assert counts["train_stack"] == len(plan.stacks) and "train_learnable" not in counts
