"""The pipeline plan, config validation and the Snakefile's DAG (dry runs; no training here)."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from silentvae.pipeline import (LEARNABLE_METHODS, OWNER_FILE, check_results_dir, load_config, lr_tag, make_plan,
                                resolve_run_config, select_best, validate_config)

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
        cutoffs = len(lv["cutoff_grid"])  # every cut-off is planned (one beyond the epochs never freezes)
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
    (lambda c: c["taylor_bias"].pop("free_latents"), "taylor_bias"),  # 200 latents: too many to enumerate
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
    """Job counts per rule of a dry run (the generated train_stack_<stack> rules counted as train_stack)."""
    res = subprocess.run([*SNAKEMAKE, *args, "-n", "--quiet", "rules"], cwd=cwd, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    counts = {}
    per_rule = dict(re.findall(r"^(\w+)\s+(\d+)$", res.stdout + res.stderr, re.M))  # the table comes twice
    for rule, n in per_rule.items():
        rule = "train_stack" if rule.startswith("train_stack_") else rule
        counts[rule] = counts.get(rule, 0) + int(n)
    counts.pop("total", None)
    return counts


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


def test_parameters_reach_papermill_with_types_and_paths_stay_whole(tmp_path):
    """Every printed job command of the paper protocol: the papermill parameters read back exactly as papermill
    reads them (learning rates 1e-05 and 5e-05 stay floats), and a results path with a space and a ";" stays
    one word of the shell command (no stray file, no command run)."""
    from papermill.iorw import NoDatesSafeLoader

    cfg = _paper(tmp_path)
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
    assert len(commands) == len(plan.stacks) + len(plan.selections) + len(plan.variance) + len(plan.taylor) + 1
    assert sorted(seen_runs) == sorted(plan.runs)
    for rid, run in seen_runs.items():
        assert run["config"] == plan.runs[rid].config, rid
        assert all(type(v) is type(plan.runs[rid].config[k]) for k, v in run["config"].items()), rid
        assert run["out_dir"] == f"{results}/runs/{rid}"
    lrs = {run["config"]["lr"] for run in seen_runs.values() if "lr" in run["config"]}
    assert lrs == set(cfg["fixed_variance"]["lr_grid"]) and all(type(lr) is float for lr in lrs)


@pytest.mark.parametrize("results, message", [("", "results' is empty"), ("/", "filesystem root"),
                                              ("/.", "filesystem root"), ("a/../..", None)])
def test_results_folder_empty_or_root_is_refused(tmp_path, results, message):
    workdir = tmp_path / "w"
    workdir.mkdir()
    if message is None:  # resolves to tmp_path: allowed
        assert check_results_dir(results, workdir) == tmp_path
        return
    with pytest.raises(ValueError, match=message):
        check_results_dir(results, workdir)
    if results in ("", "/"):  # the schema says so too, before any path is built
        cfg = load_config(ROOT / "config" / "paper.yaml")
        with pytest.raises(ValueError, match="invalid config at 'results'"):
            validate_config({**cfg, "results": results})


def test_snakefile_refuses_root_results_before_any_job(tmp_path):
    res = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "--config", "results=/.", f"data_root={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "is the filesystem root" in res.stdout + res.stderr


def test_results_folder_of_another_working_directory_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    shared = str(tmp_path / "shared")
    check_results_dir(shared, a)  # a check writes nothing
    assert not (tmp_path / "shared").exists()
    assert check_results_dir(shared, a, claim=True) == tmp_path / "shared"
    assert (tmp_path / "shared" / OWNER_FILE).read_text() == f"{a}\n"
    check_results_dir(shared, a, claim=True)  # its owner goes on
    with pytest.raises(ValueError, match=f"belongs to the Snakemake working directory {a}.*this one \\({b}\\)"):
        check_results_dir(shared, b)
    # the Snakefile checks it before planning any job
    res = subprocess.run([*SNAKEMAKE, "-n", "--cores", "1", "--config", f"results={shared}", f"data_root={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and f"belongs to the Snakemake working directory {a}" in res.stdout + res.stderr


def test_learning_rate_tags_are_exact_and_duplicates_are_refused(tmp_path):
    assert lr_tag(1e-4) != lr_tag(1.000001e-4)  # equal to 6 significant digits, still two folders
    assert lr_tag(5e-4) == "lr0.0005" and lr_tag(1e-05) == "lr1e-05"
    cfg = _paper(tmp_path)
    cfg["fixed_variance"]["lr_grid"] = [1e-4, 1.000001e-4]
    cfg["learnable_variance"]["lr_grid"] = [1e-4, 1.000001e-4]
    plan = make_plan(cfg)
    assert len([r for r in plan.runs if r.startswith("fixed/mnist/reparam/")]) == 2
    assert len(plan.stacks["learnable/mnist/sg_gaussian/grid"]) == 2 * len(cfg["learnable_variance"]["cutoff_grid"])
    for section, key, value in [("fixed_variance", "lr_grid", [1e-4, 1.0e-4]),
                                ("learnable_variance", "anneal_grid", [0.01, 0.01]),
                                ("learnable_variance", "cutoff_grid", [50, 50]),
                                ("variance_decomposition", "epochs", [1, 1])]:
        bad = json.loads(json.dumps(cfg))
        bad[section][key] = value
        with pytest.raises(ValueError, match=rf"invalid config at '{section}/{key}'.*non-unique"):
            validate_config(bad)
        if key != "epochs":  # the planner refuses it too (a config that skipped the schema)
            with pytest.raises(ValueError, match="same run .*remove the duplicated grid value"):
                make_plan(bad)


def test_every_cutoff_is_planned_even_beyond_the_epochs(tmp_path):
    """imagenet32 trains 100 epochs: cut-offs 150 and 200 are kept (never frozen), so the grid is the config's."""
    plan = make_plan(_paper(tmp_path))
    cutoffs = {plan.runs[r].config["cutoff_epoch"] for r in plan.stacks["learnable/imagenet32/reparam_sg/grid"]}
    assert cutoffs == {50, 80, 100, 150, 200}


def test_variance_epoch_beyond_training_is_refused_at_config_time(tmp_path):
    cfg = _paper(tmp_path)
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


def test_bad_compile_mode_is_refused_naming_the_key():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    with pytest.raises(ValueError, match="compile"):
        validate_config({**cfg, "compile": "fastest"})
