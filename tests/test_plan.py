"""The plan of a config (silentvae.pipeline.plan): validation, the protocol's runs, selections and training jobs, the
dataset filter, and the same plan as before the split of pipeline.py (no training, no Snakemake here)."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from silentvae.pipeline.jobs import resolve_run_config
from silentvae.training.methods import LEARNABLE_METHODS
from silentvae.pipeline.plan import (ConfigError, load_config, lr_tag, make_plan, missing_datasets, read_yaml,
                                     select_best, validate_config)

ROOT = Path(__file__).resolve().parent.parent


def paper_config(tmp_path, with_imagenet=True):
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
        cutoffs = len(lv["cutoff_grid"])  # every cut-off is planned (one beyond the epochs never freezes)
        if spec.estimator == "none":
            grid = len(lv["lr_grid"]) * cutoffs
        elif spec.silent_decoder:
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
    (lambda c: c["taylor_bias"].update(free_latents=[12, 21]), "taylor_bias/free_latents/1"),  # 2^21 states
    (lambda c: c["taylor_bias"].update(free_latents=[]), "taylor_bias/free_latents"),
])
def test_bad_config_names_the_key(mutate, where):
    cfg = load_config(ROOT / "config" / "paper.yaml")
    mutate(cfg)
    with pytest.raises(ValueError, match=re.escape(f"invalid config at '{where}'")):
        validate_config(cfg)


#: issue 31 item 3: bad values in a pipeline config, refused when the config is read and planned (before any job
#: runs), each naming the key or the run. (case, change to config/tiny.yaml, message)
BAD_CONFIG_VALUES = [
    ("nan in lr_grid", lambda c: c["fixed_variance"].update(lr_grid=[1e-3, float("nan")]),
     "invalid config at 'fixed_variance/lr_grid/1': nan is not a finite number"),
    ("inf in lr_grid", lambda c: c["learnable_variance"].update(lr_grid=[float("inf")]),
     "invalid config at 'learnable_variance/lr_grid/0': inf is not a finite number"),
    ("inf in anneal_grid", lambda c: c["learnable_variance"].update(anneal_grid=[float("inf")]),
     "invalid config at 'learnable_variance/anneal_grid/0': inf is not a finite number"),
    ("nan in anneal_grid", lambda c: c["learnable_variance"].update(anneal_grid=[float("nan")]),
     "invalid config at 'learnable_variance/anneal_grid/0': nan is not a finite number"),
    ("nan target_bpd", lambda c: c["fixed_variance"].update(target_bpd=float("nan")),
     "invalid config at 'fixed_variance/target_bpd': nan is not a finite number"),
    ("lr 0", lambda c: c["fixed_variance"].update(lr_grid=[0.0]), "invalid config at 'fixed_variance/lr_grid/0'"),
    ("lr -1", lambda c: c["learnable_variance"].update(lr_grid=[-1.0]),
     "invalid config at 'learnable_variance/lr_grid/0'"),
    ("sigma2 0", lambda c: c["fixed_variance"]["run"].update(sigma2=0),
     "invalid config at 'fixed_variance/run/sigma2'"),
    ("temperature 0", lambda c: c["learnable_variance"]["run"].update(temperature=0),
     "invalid config at 'learnable_variance/run/temperature'"),
    ("cut-off 0", lambda c: c["learnable_variance"].update(cutoff_grid=[0]),
     "invalid config at 'learnable_variance/cutoff_grid/0'"),
    ("negative annealing rate", lambda c: c["learnable_variance"].update(anneal_grid=[-0.1]),
     "invalid config at 'learnable_variance/anneal_grid/0'"),
    ("checkpoint epoch 0", lambda c: c["fixed_variance"]["run"].update(checkpoint_epochs=[0]),
     "invalid config at 'fixed_variance/run/checkpoint_epochs/0'"),
    ("checkpoint epoch beyond the epochs", lambda c: c["learnable_variance"]["run"].update(checkpoint_epochs=[3]),
     "/reparam/lr0.001_s0: checkpoint_epochs [3] are outside 1..epochs=2"),   # the first dataset's run
    ("batch larger than the training split", lambda c: c["fixed_variance"]["run"].update(batch_size=1000),
     "invalid config: run fixed/mnist5k/sg_gaussian/lr0.001: batch_size=1000 is larger than the training split "
     "(128 images of mnist5k, train_limit=128)"),
    ("misspelled dataset", lambda c: c["fixed_variance"].update(dataset="mnist_5k"),
     "invalid config at 'fixed_variance/dataset': 'mnist_5k' is not one of"),
]


@pytest.mark.parametrize("case,mutate,message", BAD_CONFIG_VALUES, ids=[c[0] for c in BAD_CONFIG_VALUES])
def test_bad_config_values_are_refused_before_any_job(tmp_path, case, mutate, message):
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    mutate(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))  # through YAML, as a user writes it (.nan, .inf)
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_plan(load_config(path), not_run={})


@pytest.mark.parametrize("text,where", [
    ("name: tiny\nresults: [results\n", "line 3, column 1"),
    ("name: tiny\n  results: x\n", "line 2, column 10"),
    ("name: tiny\n\tresults: x\n", "line 2, column 1"),
])
def test_yaml_syntax_error_names_file_and_line(tmp_path, text, where):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}, {where}: not valid YAML")):
        read_yaml(path)


def test_missing_or_broken_config_file_is_one_line_from_the_cli(tmp_path):
    import subprocess
    import sys
    missing = subprocess.run([sys.executable, "-m", "silentvae.pipeline.plan", "plan", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and missing.stdout == ""
    nope = tmp_path / "nope.yaml"
    assert missing.stderr == f"error: config file {nope} not found (looked at {nope})\n"
    (tmp_path / "broken.yaml").write_text("name: tiny\nresults: [x\n")
    broken = subprocess.run([sys.executable, "-m", "silentvae.pipeline.plan", "plan", str(tmp_path / "broken.yaml")],
                            capture_output=True, text=True, cwd=ROOT)
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1 and "broken.yaml, line 3" in broken.stderr


def test_paper_plan_has_the_full_protocol(tmp_path):
    cfg = paper_config(tmp_path)
    plan = make_plan(cfg)
    fixed = [r for r in plan.runs if r.startswith("fixed/")]
    fv = cfg["fixed_variance"]
    assert len(fixed) == len(fv["methods"]) * (len(fv["lr_grid"]) + len(fv["seeds"]) - 1)
    # the grid at the first seed, then the selected lr at the other seeds, stacked in one more job
    assert {plan.runs[r].config["seed"] for r in plan.selections["fixed/mnist/reparam"]} == {fv["seeds"][0]}
    assert plan.final_runs["fixed/mnist/reparam"] == [f"fixed/mnist/reparam/final_s{s}" for s in fv["seeds"][1:]]
    assert plan.runs["fixed/mnist/reparam/final_s2"].inherit == [("fixed/mnist/reparam", ["lr"])]
    assert plan.training_jobs["fixed/mnist/reparam/final"] == plan.final_runs["fixed/mnist/reparam"]
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
    plan = make_plan(paper_config(tmp_path, with_imagenet=False))
    assert plan.not_run == {"imagenet32": f"not run: imagenet32 not found at {tmp_path / 'imagenet32'}"}
    assert not any("/imagenet32/" in r for r in plan.runs)


def test_select_best_and_resolve(tmp_path):
    paths = {}
    for name, bpd in [("a", 7.0), ("b", 6.5), ("c", 6.9)]:
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps({"config": {"lr": {"a": 1, "b": 2, "c": 3}[name], "cutoff_epoch": 5},
                                           "history": [{"val_bpd": 9.0}, {"val_bpd": bpd}]}))
    sel = select_best(paths)   # on the final value: the mean of the last (up to 3) epochs
    assert sel["best_run"] == "b" and sel["best_val_bpd"] == 7.75 and sel["best_config"]["lr"] == 2
    (tmp_path / "sel").mkdir()
    (tmp_path / "sel" / "x.json").write_text(json.dumps(sel))
    resolved = resolve_run_config({"lr": 9, "seed": 1, "cutoff_epoch": None}, [("x", ["lr"])], tmp_path / "sel")
    assert resolved == {"lr": 2, "seed": 1, "cutoff_epoch": None}


def test_learning_rate_tags_are_exact_and_duplicates_are_refused(tmp_path):
    assert lr_tag(1e-4) != lr_tag(1.000001e-4)  # equal to 6 significant digits, still two folders
    assert lr_tag(5e-4) == "lr0.0005" and lr_tag(1e-05) == "lr1e-05"
    cfg = paper_config(tmp_path)
    cfg["fixed_variance"]["lr_grid"] = [1e-4, 1.000001e-4]
    cfg["learnable_variance"]["lr_grid"] = [1e-4, 1.000001e-4]
    plan = make_plan(cfg)
    assert len([r for r in plan.runs if r.startswith("fixed/mnist/reparam/lr")]) == 2
    none_sg_grid = plan.training_jobs["learnable/mnist/none_sg_gaussian/grid"]
    assert len(none_sg_grid) == 2 * len(cfg["learnable_variance"]["cutoff_grid"])
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
    plan = make_plan(paper_config(tmp_path))
    cutoffs = {plan.runs[r].config["cutoff_epoch"] for r in plan.training_jobs["learnable/imagenet32/reparam_sg/grid"]}
    assert cutoffs == {50, 80, 100, 150, 200}


def test_bad_compile_mode_is_refused_naming_the_key():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    with pytest.raises(ValueError, match="compile"):
        validate_config({**cfg, "compile": "fastest"})



def test_dataset_filter_is_separate_from_the_grid(tmp_path):
    """missing_datasets looks at the disk; make_plan(cfg, not_run) plans everything else without looking."""
    cfg = paper_config(tmp_path, with_imagenet=False)
    assert missing_datasets(cfg) == {"imagenet32": f"not run: imagenet32 not found at {tmp_path / 'imagenet32'}"}
    everything = make_plan(cfg, not_run={})
    assert any("/imagenet32/" in r for r in everything.runs) and everything.not_run == {}
    no_cifar = make_plan(cfg, not_run={"cifar10": "not run: cifar10 (test)"})
    assert sorted(no_cifar.runs) == sorted(r for r in everything.runs if "/cifar10/" not in r)
    assert no_cifar.not_run == {"cifar10": "not run: cifar10 (test)"}


def _run_digest(spec) -> str:
    """The run as tests/plan_reference.json records it: a digest of its experiment, config and inherit."""
    text = json.dumps({"experiment": spec.experiment, "config": spec.config,
                       "inherit": [[s, k] for s, k in spec.inherit]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.mark.parametrize("name", ["paper", "embedded"])
def test_plan_is_the_one_before_the_split(name):
    """tests/plan_reference.json is the plan of config/<name>.yaml (every dataset present, data_root "DATA") as
    pipeline.make_plan built it before the split into methods / plan / paths / jobs (commit ef58e34), with the
    learnable None + SG ids renamed (sg_* -> none_sg_*): the same runs with the same configs and inherits, the
    same selections, seeds, stacks and diagnostics. Run ids in groups are stored relative to their selection."""
    reference = json.loads((ROOT / "tests" / "plan_reference.json").read_text())[name]
    cfg = load_config(ROOT / "config" / f"{name}.yaml")
    cfg["data_root"] = "DATA"
    plan = make_plan(cfg, not_run={})

    def whole(groups):
        return {key: [f"{'/'.join(key.split('/')[:3])}/{run}" for run in runs] for key, runs in groups.items()}

    assert {r: _run_digest(spec) for r, spec in plan.runs.items()} == reference["run_digests"]
    assert plan.selections == whole(reference["selections"])
    assert plan.final_runs == whole(reference["final_runs"])
    assert {job: runs for job, runs in plan.training_jobs.items() if runs != [job]} == whole(reference["stacks"])
    assert sorted(r for runs in plan.training_jobs.values() for r in runs) == sorted(plan.runs)
    assert plan.variance == reference["variance"] and plan.taylor == reference["taylor"]


def test_one_point_grid_trains_its_seeds_without_waiting_for_the_selection(tmp_path):
    """embedded: one lr, so every seed of a method starts at once (one job where grids are stacked)."""
    cfg = load_config(ROOT / "config" / "embedded.yaml")
    plan = make_plan(cfg, not_run={})
    final = plan.runs["fixed/mnist5k/gumbel/final_s2"]
    assert final.inherit == [] and final.config["lr"] == cfg["fixed_variance"]["lr_grid"][0]
    assert final.config["seed"] == 2
    sg = plan.runs["learnable/mnist5k/reparam_sg/final_s1"]   # "+ SG" still waits for the baseline's lr
    assert sg.inherit == [("learnable/mnist5k/reparam", ["lr"])] and sg.config["cutoff_epoch"] == 3
    cfg["fixed_variance"]["stack_grid"] = cfg["learnable_variance"]["stack_grid"] = True
    jobs = make_plan(cfg, not_run={}).training_jobs
    assert jobs["fixed/mnist5k/gumbel"] == ["fixed/mnist5k/gumbel/lr0.0005"] + [
        f"fixed/mnist5k/gumbel/final_s{s}" for s in cfg["fixed_variance"]["seeds"][1:]]
    assert "fixed/mnist5k/gumbel/final" not in jobs and len(jobs["learnable/mnist5k/reparam_sg/grid"]) == 3
    from silentvae.training.engine import check_stackable   # one stack: the configs differ only in stackable keys
    from silentvae.training.run import RunConfig
    for job in ("fixed/mnist5k/gumbel", "learnable/mnist5k/reparam_sg/grid"):
        check_stackable([RunConfig.from_dict({**plan.runs[r].config, "lr": 5e-4}) for r in jobs[job]])


def test_selection_seed_keeps_the_compared_runs_out_of_the_selection(tmp_path):
    """learnable_variance.selection_seed: the grids run at it and only select; every compared seed is a fresh run
    with the selected values, and compared_runs leaves the grid run out (without the key: the paper's reuse)."""
    cfg = load_config(ROOT / "config" / "tiny.yaml")
    cfg["learnable_variance"].update(seeds=[0, 1, 2], selection_seed=7, lr_grid=[1e-3, 5e-4])
    plan = make_plan(cfg, not_run={})
    sel = "learnable/mnist5k/reparam"
    assert all(r.endswith("_s7") for r in plan.selections[sel])
    assert plan.final_runs[sel] == [f"{sel}/final_s{s}" for s in (0, 1, 2)]
    assert plan.runs[f"{sel}/final_s0"].inherit == [(sel, ["lr", "anneal_rate", "cutoff_epoch"])]
    best = {"best_run": plan.selections[sel][0]}
    assert plan.compared_runs(sel, best) == plan.final_runs[sel]
    sg = "learnable/mnist5k/reparam_sg"   # "+ SG": its grid at the selection seed, at the baseline's lr
    assert all(plan.runs[r].config["seed"] == 7 and plan.runs[r].inherit == [(sel, ["lr"])]
               for r in plan.selections[sg])
    del cfg["learnable_variance"]["selection_seed"]
    paper_way = make_plan(cfg, not_run={})
    assert paper_way.compared_runs(sel, best) == [best["best_run"]] + [f"{sel}/final_s{s}" for s in (1, 2)]
    cfg["learnable_variance"]["selection_seed"] = 1
    with pytest.raises(ConfigError, match=r"selection_seed 1 is also in learnable_variance.seeds \[0, 1, 2\]"):
        make_plan(cfg, not_run={})


CONFIGS = sorted(p for p in (ROOT / "config").glob("*.yaml") if p.name != "schema.yaml")


def test_the_schema_offers_the_run_values_the_code_reads_with_the_same_default():
    from silentvae.training.history import DEFAULT_RUN_VALUE, RUN_VALUES
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    for section in ("fixed_variance", "learnable_variance"):
        spec = schema["properties"][section]["properties"].get("run_value")
        if spec is not None:
            assert tuple(spec["enum"]) == RUN_VALUES and spec["default"] == DEFAULT_RUN_VALUE
    assert "run_value" in schema["properties"]["learnable_variance"]["properties"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_through_the_snakefiles_route(path, tmp_path):
    """Each config in config/ (an override that `extends` another, or one that stands alone) loads and validates
    through load_config, and Snakemake, given it as --configfile, plans the same training jobs (resolve_config
    is the one route for both)."""
    cfg = {**load_config(path), "results": str(tmp_path / "results"), "data_root": str(tmp_path)}
    plan = make_plan(cfg)
    res = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", str(path), "--cores", "1", "-n",
                          "--quiet", "rules", "--config", f"results={cfg['results']}", f"data_root={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    counts = dict(re.findall(r"^(train_\w+)\s+(\d+)$", res.stdout + res.stderr, re.M))
    assert sum(int(n) for n in counts.values()) == len(plan.training_jobs) > 0


def test_overrides_merge_onto_what_they_extend(tmp_path):
    """`extends`: mappings merged key by key, lists and values replaced, `key: null` removes the key, an
    override of an override works; the merged result is validated, and a bad `extends` names the fix."""
    paper = load_config(ROOT / "config" / "paper.yaml")
    child = tmp_path / "child.yaml"
    child.write_text("extends: paper.yaml\nname: child\ndatasets: {mnist: null, mnist5k: {download: false}}\n"
                     "fixed_variance: {lr_grid: [1.0e-3], run: {epochs: 3}}\n")
    cfg = load_config(child)
    assert cfg["name"] == "child" and "extends" not in cfg
    assert cfg["datasets"] == {"mnist5k": {"download": False}, "cifar10": {"download": True},
                               "imagenet32": {"download": False}}
    assert cfg["fixed_variance"]["lr_grid"] == [1e-3]                                  # a list is replaced
    assert cfg["fixed_variance"]["run"] == {**paper["fixed_variance"]["run"], "epochs": 3}  # a mapping merged
    grandchild = tmp_path / "grandchild.yaml"
    grandchild.write_text(f"extends: {child}\nfixed_variance: {{seeds: [7]}}\n")
    assert load_config(grandchild) == {**cfg, "fixed_variance": {**cfg["fixed_variance"], "seeds": [7]}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: paper.yaml\nfixed_variance: {run: {epochz: 3}}\n")
    with pytest.raises(ValueError, match="epochz"):
        load_config(bad)
    bad.write_text("extends: nosuch.yaml\n")
    with pytest.raises(ValueError, match="'nosuch.yaml' is not a file in .*config"):
        load_config(bad)


def test_embedded_and_tiny_state_only_what_differs_from_the_paper():
    """The named configs are small overrides of config/paper.yaml: no key repeats the paper's value."""
    import yaml as _yaml

    paper = _yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())

    def repeated(override, base, where=""):
        for key, value in override.items():
            if key in base and isinstance(value, dict) and isinstance(base[key], dict):
                yield from repeated(value, base[key], f"{where}{key}.")
            elif key in base and value == base[key]:
                yield f"{where}{key}"

    for name in ("embedded", "tiny"):
        override = _yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
        assert override["extends"] == "paper.yaml"
        assert list(repeated(override, paper)) == [], name


def test_a_finished_run_whose_config_changed_is_flagged_newer_than_its_result(tmp_path):
    """Without Snakemake's records, the stored config of each finished run is compared with the plan: a changed
    run gets a planned.json newer than its result.json (its job's input: the job runs again); once they agree it
    is dated 1970 and kept (the job's input files stay the same); unchanged runs get nothing."""
    import os

    from silentvae.pipeline import paths
    from silentvae.pipeline.plan import changed_runs, flag_changed_runs
    from silentvae.training.run import RunConfig
    cfg = load_config(ROOT / "config" / "tiny.yaml")
    plan = make_plan(cfg, not_run={"cifar10": "not run"})
    results = str(tmp_path / "results")
    run_id, other = "fixed/mnist5k/reparam/lr0.001", "fixed/mnist5k/reparam/lr0.0005"
    for r in (run_id, other):
        result = Path(paths.result_json(results, r))
        result.parent.mkdir(parents=True)
        result.write_text(json.dumps({"config": RunConfig.from_dict(plan.runs[r].config).to_dict(), "history": []}))
    assert changed_runs(plan, results) == {} and flag_changed_runs(plan, results) == {}
    longer = make_plan({**cfg, "fixed_variance": {**cfg["fixed_variance"], "run": {
        **cfg["fixed_variance"]["run"], "epochs": 3}}}, not_run={"cifar10": "not run"})
    assert changed_runs(longer, results)[run_id] == "epochs: 2 -> 3"
    flags = flag_changed_runs(longer, results)
    flag = Path(flags[run_id])
    assert flag == Path(paths.planned_in(paths.run_dir(results, run_id)))
    assert set(flags) == set(changed_runs(longer, results))
    assert json.loads(flag.read_text())["changed"] == "epochs: 2 -> 3"
    assert flag.stat().st_mtime > Path(paths.result_json(results, run_id)).stat().st_mtime
    assert flag_changed_runs(plan, results)[run_id] == str(flag) and flag.stat().st_mtime == 0  # in sync again
    os.utime(paths.result_json(results, run_id))
    assert flag_changed_runs(longer, results)[run_id] == str(flag) and flag.stat().st_mtime > 0  # changed again
    # a damaged result.json is named before any job runs
    Path(paths.result_json(results, other)).write_text('{"config": {"lr"')
    with pytest.raises(ValueError, match=re.escape(f"{paths.result_json(results, other)} is truncated or not valid")):
        changed_runs(plan, results)
