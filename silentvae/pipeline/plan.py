r"""The experiment plan behind the Snakefile: which runs, selections, training jobs and diagnostics a config
asks for (testable without Snakemake). Protocol (Appendix B.3):

* Fixed variance (Table 2): every method x learning rate at the first of ``seeds``; the best learning rate
  per method is selected on its final validation BPD (:func:`silentvae.training.history.final_value`: the mean of the
  last 3 epochs; ``learnable_variance.run_value: best_epoch`` reads learnable runs at their best validation epoch), then trained for the remaining seeds (Table 2 and its claims: mean ± sd over seeds). Table 1
  uses the selected (first-seed) runs' checkpoints.
* Learnable variance (Tables 3, 4, 9): each method searches its grid (:data:`GRIDS`, named by
  :attr:`silentvae.training.methods.Method.grid`) at the first seed: baselines the learning rate; "X + SG" annealing
  rate x cut-off at X's selected learning rate; "None + SG" learning rate x cut-off. The selected setting is
  then trained for the remaining seeds; the grid's own run is the first seed. With
  ``learnable_variance.selection_seed`` the grids run at that seed instead and only select: the compared runs
  are fresh runs at every one of ``seeds`` (:meth:`Plan.compared_runs`), so no compared value took part in
  choosing its setting.
* A grid of one point selects itself: its other seeds take the point's values directly (no wait for the
  selection; "X + SG" still inherits X's selected learning rate).
* Training jobs (``Plan.training_jobs``): ``stack_grid: false`` trains each run in its own job; ``stack_grid:
  true`` a method's grid in one job (fixed: its learning rates; learnable: the grid at the first seed), then
  one more the selected setting's other seeds; a grid of one point and its other seeds are one job.
* Every grid value is planned as written. A cut-off epoch c freezes the encoder from epoch c on; c beyond the
  run's epochs never freezes it (the same training as no cut-off; such runs are kept, not merged, so that the
  grid the config names is the grid that runs).
* Datasets that are neither on disk nor downloadable (:func:`missing_datasets`) are left out of the plan and
  reported as "not run: <dataset> not found at <path>".

``python -m silentvae.pipeline.plan select OUT.json '{"run id": "result.json", ...}'`` is the Snakefile's ``select``
rule; ``python -m silentvae.pipeline.plan plan CONFIG.yaml`` prints a config's job counts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..training.history import DEFAULT_RUN_VALUE, RUN_VALUES
from ..training.methods import FIXED_METHODS, LEARNABLE_METHODS, Method

__all__ = ["SCHEMA_PATH", "GRIDS", "RunSpec", "Plan", "ConfigError", "read_yaml", "load_config", "merge_config",
           "resolve_config", "validate_config", "missing_datasets", "make_plan", "changed_runs",
           "flag_changed_runs", "lr_tag", "select_best"]

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


@dataclass(frozen=True)
class Axis:
    """One searched value: the RunConfig key, the config list it takes values from, its folder-name tag."""

    key: str
    values: str
    tag: str
    real: bool  # a real number: named by Python's shortest round-trip repr (distinct values, distinct names)

    def folder(self, value: Any) -> str:
        return f"{self.tag}{repr(float(value)) if self.real else value}"


LR = Axis("lr", "lr_grid", "lr", real=True)
ANNEAL = Axis("anneal_rate", "anneal_grid", "ar", real=True)
CUTOFF = Axis("cutoff_epoch", "cutoff_grid", "co", real=False)

#: a method's grid kind -> the axes it searches (the product, first axis outermost)
GRIDS: dict[str, tuple[Axis, ...]] = {"lr": (LR,), "lr_cutoff": (LR, CUTOFF), "anneal_cutoff": (ANNEAL, CUTOFF)}


@dataclass
class RunSpec:
    """One training run: its experiment, base RunConfig fields, and selections it takes values from."""

    id: str
    experiment: str
    config: dict[str, Any]
    inherit: list[tuple[str, list[str]]]

    @property
    def selections(self) -> list[str]:
        return [selection for selection, _ in self.inherit]


@dataclass
class Plan:
    runs: dict[str, RunSpec]
    selections: dict[str, list[str]]        # selection id -> candidate run ids
    final_runs: dict[str, list[str]]        # selection id -> its other seeds' run ids (reported over seeds)
    training_jobs: dict[str, list[str]]     # job id -> the run ids it trains (one, or a stack)
    variance: dict[str, dict[str, Any]]     # job id -> settings (+ "selection")
    taylor: dict[str, dict[str, Any]]       # job id -> settings
    not_run: dict[str, str]                 # dataset -> reason
    selection_only: frozenset[str] = frozenset()  # selections whose grid ran at a selection seed, not compared

    def compared_runs(self, selection_id: str, selection: dict[str, Any] | None) -> list[str]:
        """The runs a selection's method is reported and compared over: the selected grid run (unless its grid ran
        at a selection seed only) then its other seeds' runs. ``selection``: the select rule's output, None while
        it is missing (then only the other seeds)."""
        grid_run = [selection["best_run"]] if selection and selection_id not in self.selection_only else []
        return grid_run + self.final_runs.get(selection_id, [])


class ConfigError(ValueError):
    """A config file that cannot be read (missing, not YAML: the message names the file and line) or a config
    value the protocol refuses (the message names the key)."""


def read_yaml(path: str | Path) -> Any:
    """The content of a YAML file; :class:`ConfigError` naming the file (and the line and column of a syntax
    error) if it is missing, unreadable or not YAML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (looked at {path.absolute()})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = " ".join(str(p) for p in (e.context, e.problem) if p)
        raise ConfigError(f"{path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}; "
                          f"fix that line") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def load_config(path: str | Path) -> dict[str, Any]:
    """The config in ``path`` (:func:`read_yaml`), resolved (:func:`resolve_config`: merged onto the config it
    ``extends``, then validated); :class:`ConfigError` names the file. The Snakefile takes the same route for its
    ``--configfile``."""
    cfg = read_yaml(path) or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys (see config/paper.yaml), got {type(cfg).__name__}")
    try:
        return resolve_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged on top, as Snakemake merges configs (``snakemake.utils.update_config``:
    mappings merged key by key, any other value, lists included, replaced)."""
    import copy

    from snakemake.utils import update_config
    merged = copy.deepcopy(base)
    update_config(merged, copy.deepcopy(override))
    return merged


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config made final. A config with ``extends: NAME`` states only what differs from NAME (a file in
    ``config/``, or a path; it may extend another in turn): it is merged onto that one (:func:`merge_config`)
    and every ``key: null`` then removes the key (an override can take a dataset out of the paper's). The
    result is validated (:func:`validate_config`). A config without ``extends`` stands alone."""
    def drop_removed(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop_removed(v) for k, v in value.items() if v is not None}
        return value

    cfg = dict(cfg)
    base_name = cfg.pop("extends", None)
    if base_name is not None:
        base_path = SCHEMA_PATH.parent / base_name if not Path(base_name).is_absolute() else Path(base_name)
        if not base_path.is_file():
            raise ConfigError(f"invalid config at 'extends': {base_name!r} is not a file in {SCHEMA_PATH.parent} "
                             "(name a config there, e.g. 'extends: paper.yaml', or give an absolute path)")
        cfg = merge_config(load_config(base_path), cfg)
    resolved = drop_removed(cfg)
    validate_config(resolved)
    return resolved


def validate_config(cfg: dict[str, Any]) -> None:
    """Validate against config/schema.yaml (the one validator: the Snakefile calls it too), and refuse non-finite
    numbers anywhere (JSON Schema cannot: .nan passes every bound, .inf every minimum); :class:`ConfigError`
    names the offending key and value. Values that depend on each other (a checkpoint epoch beyond the epochs,
    a batch larger than the training split) are checked per run by :func:`make_plan`."""
    import jsonschema
    schema = read_yaml(SCHEMA_PATH)
    try:
        jsonschema.validate(cfg, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<top level>"
        raise ConfigError(f"invalid config at '{where}': {e.message}") from None
    for where, value in _numbers(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"invalid config at '{where}': {value!r} is not a finite number")


def _numbers(node: Any, where: str = "") -> list[tuple[str, float]]:
    """(path, value) of every float in a config."""
    if isinstance(node, float):
        return [(where or "<top level>", node)]
    if isinstance(node, dict):
        return [n for k, v in node.items() for n in _numbers(v, f"{where}/{k}" if where else str(k))]
    if isinstance(node, list):
        return [n for i, v in enumerate(node) for n in _numbers(v, f"{where}/{i}")]
    return []


def _planned_datasets(cfg: dict[str, Any]) -> list[str]:
    sections = [(cfg["fixed_variance"], [cfg["fixed_variance"]["dataset"]]),
                (cfg["learnable_variance"], list(cfg["learnable_variance"]["datasets"])),
                (cfg["taylor_bias"], [cfg["taylor_bias"]["dataset"]])]
    return list(dict.fromkeys(ds for section, names in sections if section["enabled"] for ds in names))


def _download(cfg: dict[str, Any], dataset: str) -> bool:
    return cfg["datasets"].get(dataset, {}).get("download", False)


def missing_datasets(cfg: dict[str, Any]) -> dict[str, str]:
    """{dataset: "not run: <dataset> not found at <path>"} for each dataset the config uses that is neither on
    disk under ``data_root`` nor allowed to download."""
    from ..training.data import locate_dataset
    missing = {}
    for name in _planned_datasets(cfg):
        present, path = locate_dataset(name, cfg["data_root"])
        if not (present or _download(cfg, name)):
            missing[name] = f"not run: {name} not found at {path}"
    return missing


def lr_tag(lr: float) -> str:
    """The folder name of a fixed-variance run at learning rate ``lr`` (e.g. "lr0.0005", "lr1e-05")."""
    return LR.folder(lr)


def _grid_points(method: Method, section: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(folder name, RunConfig values) of each point of a method's grid."""
    points: list[tuple[str, dict[str, Any]]] = [("", {})]
    for axis in GRIDS[method.grid]:
        points = [(f"{name}_{axis.folder(v)}" if name else axis.folder(v), {**values, axis.key: v})
                  for name, values in points for v in section[axis.values]]
    return points


class _PlanBuilder:
    """Accumulates a plan's runs, refusing two grid points that give the same run."""

    def __init__(self) -> None:
        self.runs: dict[str, RunSpec] = {}
        self.selections: dict[str, list[str]] = {}

    def add(self, run_id: str, experiment: str, config: dict[str, Any],
            inherit: list[tuple[str, list[str]]] | None = None) -> str:
        """Add a run, checked by RunConfig as its job will be (values it inherits from a selection are checked
        there), so that a bad value stops the plan before anything trains."""
        from ..training.run import RunConfig
        if run_id in self.runs:
            raise ValueError(f"two grid points give the same run {run_id!r}: remove the duplicated grid value")
        try:
            RunConfig.from_dict(config)
        except ValueError as e:
            raise ConfigError(f"invalid config: run {run_id}: {e}") from None
        self.runs[run_id] = RunSpec(run_id, experiment, config, inherit or [])
        return run_id


def _check_variance_epochs(cfg: dict[str, Any]) -> None:
    from ..training.run import RunConfig
    fixed, variance = cfg["fixed_variance"], cfg["variance_decomposition"]
    fixed_epochs = fixed["run"].get("epochs", RunConfig.epochs)
    if fixed["enabled"] and variance["enabled"] and max(variance["epochs"]) > fixed_epochs:
        raise ValueError(f"variance_decomposition.epochs {variance['epochs']} go beyond fixed_variance.run.epochs "
                         f"({fixed_epochs}): the variance study reads the checkpoints of those epochs of the "
                         f"trained runs; lower the one or raise the other")


def _other_seeds(builder: _PlanBuilder, selection: str, experiment: str, base: dict[str, Any],
                 points: list[tuple[str, dict[str, Any]]], keys: list[str], seeds: list[int],
                 inherit: list[tuple[str, list[str]]]) -> list[str]:
    """The selected setting's runs at ``seeds`` (``<selection>/final_s<seed>``): the selection's ``keys`` are
    inherited, or, for a grid of one point, taken from that point (then only ``inherit`` remains)."""
    if len(points) == 1:
        values, inherit_final = points[0][1], list(inherit)
    else:
        values, inherit_final = {}, [(selection, keys)]
    return [builder.add(f"{selection}/final_s{seed}", experiment, {**base, **values, "seed": seed}, inherit_final)
            for seed in seeds]


def _plan_fixed(cfg: dict[str, Any], builder: _PlanBuilder, variance: dict[str, dict[str, Any]],
                final_runs: dict[str, list[str]]) -> None:
    fixed = cfg["fixed_variance"]
    dataset = fixed["dataset"]
    first_seed, other_seeds = fixed["seeds"][0], fixed["seeds"][1:]
    variance_epochs = cfg["variance_decomposition"]["epochs"] if cfg["variance_decomposition"]["enabled"] else []
    checkpoints = sorted(set(fixed["run"].get("checkpoint_epochs", [])) | set(variance_epochs))
    for method_id in fixed["methods"]:
        method = FIXED_METHODS[method_id]
        selection = f"fixed/{dataset}/{method_id}"
        # every seed saves the checkpoints Table 1 reads (the same config but for the seed: one stack can hold them)
        base = {"data_root": cfg["data_root"], **fixed["run"], **method.run_fields(), "experiment": "fixed",
                "dataset": dataset, "checkpoint_epochs": checkpoints, "download": _download(cfg, dataset)}
        points = _grid_points(method, fixed)
        builder.selections[selection] = [
            builder.add(f"{selection}/{name}", "fixed", {**base, **values, "seed": first_seed})
            for name, values in points]
        final_runs[selection] = _other_seeds(builder, selection, "fixed", base, points, ["lr"], other_seeds, [])
        if cfg["variance_decomposition"]["enabled"]:
            # Table 1 over seeds: the selected run's and the first seeds - 1 of its other seeds' checkpoints
            seed_runs = final_runs[selection][: cfg["variance_decomposition"].get("seeds", 3) - 1]
            variance[f"variance/{dataset}/{method_id}"] = {**cfg["variance_decomposition"], "selection": selection,
                                                           "method": method_id, "dataset": dataset,
                                                           "seed_runs": seed_runs}


def _learnable_seeds(learnable: dict[str, Any]) -> tuple[int, list[int]]:
    """(the seed the grids run at, the seeds of the selected setting's other runs)."""
    seeds, selection_seed = list(learnable["seeds"]), learnable.get("selection_seed")
    if selection_seed is None:
        return seeds[0], seeds[1:]
    if selection_seed in seeds:
        raise ConfigError(f"invalid config: learnable_variance.selection_seed {selection_seed} is also in "
                          f"learnable_variance.seeds {seeds}: the compared runs must be fresh seeds; choose a "
                          f"selection seed outside seeds (or remove selection_seed to reuse the grid run as the "
                          f"first seed, as the paper does)")
    return selection_seed, seeds


def _plan_learnable(cfg: dict[str, Any], builder: _PlanBuilder, dataset: str,
                    final_runs: dict[str, list[str]], selection_only: set[str]) -> None:
    learnable = cfg["learnable_variance"]
    sizes = learnable["datasets"][dataset]
    first_seed, other_seeds = _learnable_seeds(learnable)
    if learnable.get("selection_seed") is not None:
        selection_only.update(f"learnable/{dataset}/{m}" for m in learnable["methods"])
    for method_id in learnable["methods"]:
        method = LEARNABLE_METHODS[method_id]
        epochs = sizes.get("reinforce_epochs", sizes["epochs"]) if method.estimator == "reinforce" else sizes["epochs"]
        limits = {k: sizes[k] for k in ("train_limit", "val_limit") if k in sizes}
        base = {"data_root": cfg["data_root"], **learnable["run"], **method.run_fields(), **limits,
                "experiment": "learnable", "dataset": dataset, "epochs": epochs, "batch_size": sizes["batch_size"],
                "download": _download(cfg, dataset)}
        selection = f"learnable/{dataset}/{method_id}"
        inherit = []
        if method.baseline is not None:
            if f"learnable/{dataset}/{method.baseline}" not in builder.selections:
                raise ValueError(f"learnable method {method_id!r} needs its baseline {method.baseline!r} in "
                                 f"learnable_variance.methods (it takes the baseline's selected learning rate)")
            inherit = [(f"learnable/{dataset}/{method.baseline}", ["lr"])]
        points = _grid_points(method, learnable)
        builder.selections[selection] = [
            builder.add(f"{selection}/{name}_s{first_seed}", "learnable", {**base, **values, "seed": first_seed},
                        inherit)
            for name, values in points]
        final_runs[selection] = _other_seeds(builder, selection, "learnable", base, points,
                                             ["lr", "anneal_rate", "cutoff_epoch"], other_seeds, inherit)


def _training_jobs(cfg: dict[str, Any], builder: _PlanBuilder,
                   final_runs: dict[str, list[str]]) -> dict[str, list[str]]:
    """``stack_grid: false``: a job per run (its id is the run's); true: a job per grid (fixed: the selection id;
    learnable: ``<selection>/grid``), then ``<selection>/final`` for the other seeds; a grid of one point and
    its other seeds in the grid's job."""
    jobs: dict[str, list[str]] = {}
    for experiment in ("fixed", "learnable"):
        stacked = cfg[f"{experiment}_variance"].get("stack_grid", False)
        for selection, run_ids in builder.selections.items():
            if not selection.startswith(f"{experiment}/"):
                continue
            grid_job = selection if experiment == "fixed" else f"{selection}/grid"
            finals = final_runs.get(selection, [])
            if len(run_ids) == 1:   # a grid of one point: its other seeds do not wait for the selection
                groups = {grid_job: run_ids + finals}
            else:
                groups = {grid_job: run_ids, f"{selection}/final": finals}
            for job, group in groups.items():
                if stacked and group:
                    jobs[job] = group
                elif not stacked:
                    jobs.update({run_id: [run_id] for run_id in group})
    return jobs


def make_plan(cfg: dict[str, Any], not_run: dict[str, str] | None = None) -> Plan:
    """Expand a validated config into runs, selections, training jobs and diagnostics, leaving out the datasets
    of ``not_run`` ({dataset: reason}; default: :func:`missing_datasets`, which looks at the disk)."""
    not_run = missing_datasets(cfg) if not_run is None else dict(not_run)
    _check_variance_epochs(cfg)
    builder = _PlanBuilder()
    variance: dict[str, dict[str, Any]] = {}
    taylor: dict[str, dict[str, Any]] = {}
    final_runs: dict[str, list[str]] = {}
    selection_only: set[str] = set()
    if cfg["fixed_variance"]["enabled"] and cfg["fixed_variance"]["dataset"] not in not_run:
        _plan_fixed(cfg, builder, variance, final_runs)
    if cfg["learnable_variance"]["enabled"]:
        for dataset in cfg["learnable_variance"]["datasets"]:
            if dataset not in not_run:
                _plan_learnable(cfg, builder, dataset, final_runs, selection_only)
    taylor_cfg = cfg["taylor_bias"]
    if taylor_cfg["enabled"] and taylor_cfg["dataset"] not in not_run:
        taylor[f"taylor/{taylor_cfg['dataset']}"] = {**taylor_cfg, "data_root": cfg["data_root"]}
    return Plan(builder.runs, builder.selections, final_runs, _training_jobs(cfg, builder, final_runs), variance,
                taylor, not_run, frozenset(selection_only))


#: RunConfig keys a run may change without being another run (where it runs, where its data are, extra checkpoints)
def changed_runs(plan: Plan, results: str) -> dict[str, str]:
    """{run id: what changed} for each finished run of ``plan`` whose stored config (in its result.json) is not
    the planned one. Values a run inherits from a selection are not compared (a new selection reruns the job by
    its file's time). A damaged result.json is a :class:`~silentvae.training.io.JSONFileError` naming it."""
    from ..training.io import read_json
    from ..training.run import RunConfig, config_changes
    from . import paths
    changed = {}
    for run_id, spec in plan.runs.items():
        path = paths.result_json(results, run_id)
        if not Path(path).exists():
            continue
        saved = read_json(path)["config"]
        inherited = {k: saved[k] for _, keys in spec.inherit for k in keys if k in saved}
        diff = config_changes(saved, RunConfig.from_dict({**spec.config, **inherited}))
        if diff:
            changed[run_id] = ", ".join(diff)
    return changed


def flag_changed_runs(plan: Plan, results: str) -> dict[str, str]:
    """{run id: its ``planned.json``} for the runs that have one. A finished run whose stored config is not the
    planned one (:func:`changed_runs`) gets a planned.json saying what changed, newer than its result.json; once
    they agree again it is dated 1970 (kept: its job's set of input files stays the same). The Snakefile makes a
    run's planned.json an input of its job, so a newer one reruns the job (which continues a run whose ``epochs``
    grew, or refuses any other change naming the folder to delete), with or without Snakemake's own records of
    the job, which its params trigger needs. Only runs whose config changed get a file; nothing else is written."""
    import os

    from ..training.io import atomic_write_json, read_json
    from . import paths
    changed = changed_runs(plan, results)
    flags = {}
    for run_id in plan.runs:
        folder = paths.run_dir(results, run_id)
        flag, result = Path(paths.planned_in(folder)), Path(paths.result_in(folder))
        if run_id in changed:
            content = {"run": run_id, "changed": changed[run_id]}
            if not flag.exists() or read_json(flag) != content:
                atomic_write_json(flag, content)
            if flag.stat().st_mtime <= result.stat().st_mtime:
                os.utime(flag)
        elif flag.exists():
            os.utime(flag, (0, 0))  # older than any output: it reruns nothing
        else:
            continue
        flags[run_id] = str(flag)
    return flags


def run_value_rule(cfg: dict[str, Any], experiment: str) -> str:
    """How an experiment's runs are read, for its selections and its report (``<experiment>_variance.run_value``,
    :data:`silentvae.training.history.RUN_VALUES`; default :data:`~silentvae.training.history.DEFAULT_RUN_VALUE`)."""
    return cfg[f"{experiment}_variance"].get("run_value", DEFAULT_RUN_VALUE)


def select_best(candidates: dict[str, str | Path], rule: str = DEFAULT_RUN_VALUE) -> dict[str, Any]:
    """Pick the run with the lowest validation BPD among {run id: result.json path}, each run read by ``rule``
    (:func:`silentvae.training.history.run_value`: by default the final value, the mean of the last 3 epochs)."""
    from ..training.history import run_value
    from ..training.io import read_json
    scored = []
    for run_id, path in candidates.items():
        result = read_json(path)
        scored.append((run_value(result, "val_bpd", rule), run_id, result["config"]))
    scored.sort(key=lambda t: (t[0], t[1]))
    bpd, run_id, config = scored[0]
    return {"best_run": run_id, "best_val_bpd": bpd, "best_config": config,
            "candidates": {r: b for b, r, _ in scored}}


def main(argv: list[str] | None = None) -> int:
    """``python -m silentvae.pipeline.plan select OUT.json '{"run id": "result.json", ...}'`` (the Snakefile's
    ``select`` rule) and ``python -m silentvae.pipeline.plan plan CONFIG.yaml`` (job counts)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m silentvae.pipeline.plan")
    sub = parser.add_subparsers(dest="command", required=True)
    select_parser = sub.add_parser("select", help="pick the best run of a grid on final validation BPD")
    select_parser.add_argument("out")
    select_parser.add_argument("candidates", help="JSON object: run id -> its finished result file")
    select_parser.add_argument("--run-value", default=DEFAULT_RUN_VALUE, choices=list(RUN_VALUES),
                               help="how each run is read (silentvae.training.history.RUN_VALUES)")
    plan_parser = sub.add_parser("plan", help="print the job counts of a config")
    plan_parser.add_argument("config")
    args = parser.parse_args(argv)
    try:
        _run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _run(args) -> None:
    import sys

    from ..training.io import atomic_write_json
    if args.command == "select":
        selection = select_best(json.loads(args.candidates), args.run_value)
        atomic_write_json(args.out, selection)
        print(f"selected {selection['best_run']} (val bpd {selection['best_val_bpd']:.4f})")
    else:
        plan = make_plan(load_config(args.config))
        print(json.dumps({"training_runs": len(plan.runs), "training_jobs": len(plan.training_jobs),
                          "selections": len(plan.selections), "variance_jobs": len(plan.variance),
                          "taylor_jobs": len(plan.taylor), "not_run": plan.not_run}, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
