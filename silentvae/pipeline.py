r"""The experiment plan behind the Snakefile: which runs, selections and diagnostics a config asks for.

The Snakefile stays a table of contents; this module (testable without Snakemake) turns a validated config
into job specs. Protocol (Appendix B.3):

* Fixed variance (Table 2): every method x learning rate (one seed); the best learning rate per method is
  selected on final validation BPD. Table 1 uses the selected runs' checkpoints.
* Learnable variance (Tables 3, 4, 9): baselines (reparam, gumbel, reinforce) over the learning-rate grid;
  "+ SG" variants take the selected baseline learning rate and search annealing rate x cut-off; "None + SG"
  (sg_gaussian, sg_bernoulli) searches learning rate x cut-off. The selected setting is then trained for the
  remaining seeds; the grid's own run is the first seed.
* ``engine: stacked`` (either experiment) makes a method's grid one job (``Plan.stacks``): the fixed-variance
  learning rates; the learnable grid at the first seed, then the selected setting's other seeds.
* Every grid value is planned as written. A cut-off epoch c freezes the encoder from epoch c on; c beyond the
  run's epochs never freezes it (the same training as no cut-off; such runs are kept, not merged, so that the
  grid the config names is the grid that runs).
* Datasets that are neither on disk nor downloadable are left out of the plan and reported as
  "not run: <dataset> not found at <path>".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import locate_dataset

__all__ = ["FIXED_METHODS", "LEARNABLE_METHODS", "RunSpec", "Plan", "make_plan", "load_config", "validate_config",
           "resolve_run_config", "select_best", "SCHEMA_PATH", "job_device", "prepare_run",
           "variance_job", "taylor_job", "gather_results", "write_report", "train_runs", "lr_tag",
           "check_results_dir", "OWNER_FILE"]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"

FIXED_METHODS: dict[str, dict[str, Any]] = {
    "sg_gaussian": {"latent": "gaussian", "estimator": "sg"},
    "reparam": {"latent": "gaussian", "estimator": "reparam"},
    "sg_bernoulli": {"latent": "bernoulli", "estimator": "sg"},
    "gumbel": {"latent": "bernoulli", "estimator": "gumbel"},
    "reinforce": {"latent": "bernoulli", "estimator": "reinforce"},
}
LEARNABLE_METHODS: dict[str, dict[str, Any]] = {
    "sg_gaussian": {"latent": "gaussian", "estimator": "none", "silent": True},
    "reparam": {"latent": "gaussian", "estimator": "reparam", "silent": False},
    "reparam_sg": {"latent": "gaussian", "estimator": "reparam", "silent": True},
    "sg_bernoulli": {"latent": "bernoulli", "estimator": "none", "silent": True},
    "gumbel": {"latent": "bernoulli", "estimator": "gumbel", "silent": False},
    "gumbel_sg": {"latent": "bernoulli", "estimator": "gumbel", "silent": True},
    "reinforce": {"latent": "bernoulli", "estimator": "reinforce", "silent": False},
    "reinforce_sg": {"latent": "bernoulli", "estimator": "reinforce", "silent": True},
}


@dataclass
class RunSpec:
    """One training run: its experiment, base RunConfig fields, and selections it takes values from."""

    id: str
    experiment: str
    config: dict[str, Any]
    inherit: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def selections(self) -> list[str]:
        return [sel for sel, _ in self.inherit]


@dataclass
class Plan:
    runs: dict[str, RunSpec]
    selections: dict[str, list[str]]        # selection id -> candidate run ids
    variance: dict[str, dict[str, Any]]     # job id -> settings (+ "selection")
    taylor: dict[str, dict[str, Any]]       # job id -> settings
    final_runs: dict[str, list[str]]        # learnable selection id -> run ids reported over seeds
    not_run: dict[str, str]                 # dataset -> reason
    stacks: dict[str, list[str]] = field(default_factory=dict)  # engine "stacked": stack id -> run ids (one job)


def load_config(path: str | Path) -> dict[str, Any]:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict[str, Any]) -> None:
    """Validate against config/schema.yaml; the error names the offending key and value."""
    import jsonschema
    with open(SCHEMA_PATH) as f:
        schema = yaml.safe_load(f)
    try:
        jsonschema.validate(cfg, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<top level>"
        raise ValueError(f"invalid config at '{where}': {e.message}") from None


OWNER_FILE = ".silentvae-workdir"  # in a results folder: the Snakemake working directory that writes it


def check_results_dir(results: str, workdir: str | Path, claim: bool = False) -> Path:
    """The resolved results folder, refused when it is empty, the filesystem root, or the results folder of
    another Snakemake working directory (recorded in ``<results>/.silentvae-workdir``; Snakemake's lock and
    run records live in the working directory, so two of them would overwrite each other's outputs unseen).
    ``claim=True`` records ``workdir`` there (the Snakefile does so when jobs start)."""
    if not str(results).strip():
        raise ValueError("config 'results' is empty: every output path would start at the filesystem root; "
                         "set results to an output folder, e.g. results")
    workdir = Path(workdir).resolve()
    root = (workdir / results).resolve()
    if root == Path(root.anchor):
        raise ValueError(f"config 'results' ({results!r}) is the filesystem root {root}; set it to an output "
                         f"folder, e.g. results")
    marker = root / OWNER_FILE
    owner = marker.read_text().strip() if marker.exists() else None
    if owner is not None and owner != str(workdir):
        raise ValueError(f"results folder {root} belongs to the Snakemake working directory {owner} (see {marker}), "
                         f"not to this one ({workdir}): two working directories would overwrite each other's "
                         f"outputs. Use another results folder, or delete {marker} if {owner} no longer uses it.")
    if claim and owner is None:
        from .io import atomic_write_text
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, f"{workdir}\n")
    return root


def _dataset_ok(cfg: dict[str, Any], name: str, not_run: dict[str, str]) -> bool:
    download = cfg["datasets"].get(name, {}).get("download", False)
    present, path = locate_dataset(name, cfg["data_root"])
    if present or download:
        return True
    not_run[name] = f"not run: {name} not found at {path}"
    return False


def _fmt(x: float) -> str:
    """A grid value in a folder name: Python's shortest round-trip repr (distinct values, distinct names)."""
    return repr(float(x))


def lr_tag(lr: float) -> str:
    """The folder name of a fixed-variance run at learning rate ``lr`` (e.g. "lr0.0005", "lr1e-05")."""
    return f"lr{_fmt(lr)}"


def _check_new(run_id: str, runs: dict[str, RunSpec]) -> None:
    if run_id in runs:
        raise ValueError(f"two grid points give the same run {run_id!r}: remove the duplicated grid value")


def make_plan(cfg: dict[str, Any]) -> Plan:
    """Expand a validated config into runs, selections and diagnostics."""
    from .train import RunConfig
    runs: dict[str, RunSpec] = {}
    selections: dict[str, list[str]] = {}
    variance: dict[str, dict[str, Any]] = {}
    taylor: dict[str, dict[str, Any]] = {}
    final_runs: dict[str, list[str]] = {}
    not_run: dict[str, str] = {}
    common = {"data_root": cfg["data_root"]}

    fx = cfg["fixed_variance"]
    vd = cfg["variance_decomposition"]
    fx_epochs = fx["run"].get("epochs", RunConfig.epochs)
    if fx["enabled"] and vd["enabled"] and max(vd["epochs"]) > fx_epochs:
        raise ValueError(f"variance_decomposition.epochs {vd['epochs']} go beyond fixed_variance.run.epochs "
                         f"({fx_epochs}): the variance study reads the checkpoints of those epochs of the "
                         f"trained runs; lower the one or raise the other")
    if fx["enabled"] and _dataset_ok(cfg, fx["dataset"], not_run):
        ds = fx["dataset"]
        ckpt = sorted(set(fx["run"].get("checkpoint_epochs", [])) | set(cfg["variance_decomposition"]["epochs"]))
        for method in fx["methods"]:
            sel = f"fixed/{ds}/{method}"
            selections[sel] = []
            for lr in fx["lr_grid"]:
                rid = f"{sel}/{lr_tag(lr)}"
                _check_new(rid, runs)
                conf = {**common, **fx["run"], **FIXED_METHODS[method], "experiment": "fixed", "dataset": ds,
                        "lr": lr, "seed": fx["seed"], "checkpoint_epochs": ckpt,
                        "download": cfg["datasets"].get(ds, {}).get("download", False)}
                runs[rid] = RunSpec(rid, "fixed", conf)
                selections[sel].append(rid)
            if cfg["variance_decomposition"]["enabled"]:
                variance[f"variance/{ds}/{method}"] = {**cfg["variance_decomposition"], "selection": sel,
                                                       "method": method, "dataset": ds}

    lv = cfg["learnable_variance"]
    if lv["enabled"]:
        for ds, ds_cfg in lv["datasets"].items():
            if not _dataset_ok(cfg, ds, not_run):
                continue
            download = cfg["datasets"].get(ds, {}).get("download", False)
            for method in lv["methods"]:
                spec = LEARNABLE_METHODS[method]
                epochs = ds_cfg.get("reinforce_epochs", ds_cfg["epochs"]) if spec["estimator"] == "reinforce" \
                    else ds_cfg["epochs"]
                limits = {k: ds_cfg[k] for k in ("train_limit", "val_limit") if k in ds_cfg}
                base = {**common, **lv["run"], **spec, **limits, "experiment": "learnable", "dataset": ds,
                        "epochs": epochs, "batch_size": ds_cfg["batch_size"], "download": download}
                cutoffs = lv["cutoff_grid"]
                sel = f"learnable/{ds}/{method}"
                selections[sel] = []
                seed0 = lv["seeds"][0]
                grid: list[tuple[str, dict[str, Any], list[tuple[str, list[str]]]]] = []
                if method in ("sg_gaussian", "sg_bernoulli"):
                    for lr in lv["lr_grid"]:
                        for co in cutoffs:
                            grid.append((f"lr{_fmt(lr)}_co{co}", {"lr": lr, "cutoff_epoch": co}, []))
                elif spec["silent"]:
                    baseline = f"learnable/{ds}/{method.removesuffix('_sg')}"
                    if baseline not in selections:
                        raise ValueError(f"learnable method {method!r} needs its baseline "
                                         f"{method.removesuffix('_sg')!r} in learnable_variance.methods (it takes "
                                         f"the baseline's selected learning rate)")
                    for ar in lv["anneal_grid"]:
                        for co in cutoffs:
                            grid.append((f"ar{_fmt(ar)}_co{co}", {"anneal_rate": ar, "cutoff_epoch": co},
                                         [(baseline, ["lr"])]))
                else:
                    for lr in lv["lr_grid"]:
                        grid.append((f"lr{_fmt(lr)}", {"lr": lr}, []))
                for name, values, inherit in grid:
                    rid = f"{sel}/{name}_s{seed0}"
                    _check_new(rid, runs)
                    runs[rid] = RunSpec(rid, "learnable", {**base, **values, "seed": seed0}, inherit)
                    selections[sel].append(rid)
                final_runs[sel] = []
                for seed in lv["seeds"][1:]:
                    rid = f"{sel}/final_s{seed}"
                    runs[rid] = RunSpec(rid, "learnable", {**base, "seed": seed},
                                        [(sel, ["lr", "anneal_rate", "cutoff_epoch"])])
                    final_runs[sel].append(rid)

    tb = cfg["taylor_bias"]
    if tb["enabled"] and _dataset_ok(cfg, tb["dataset"], not_run):
        taylor[f"taylor/{tb['dataset']}"] = {**tb, "data_root": cfg["data_root"]}
    stacks: dict[str, list[str]] = {}
    if fx.get("engine", "single") == "stacked":  # a method's learning-rate grid
        stacks.update({sel: rids for sel, rids in selections.items() if sel.startswith("fixed/")})
    if lv.get("engine", "single") == "stacked":  # a method's grid (first seed), then its other seeds
        for sel, rids in selections.items():
            if sel.startswith("learnable/"):
                stacks[f"{sel}/grid"] = rids
                if final_runs.get(sel):
                    stacks[f"{sel}/final"] = final_runs[sel]
    return Plan(runs, selections, variance, taylor, final_runs, not_run, stacks)


def resolve_run_config(config: dict[str, Any], inherit: list[tuple[str, list[str]]],
                       selections_dir: str | Path) -> dict[str, Any]:
    """Base config + the named keys of each selected best config (read from ``<selections_dir>/<id>.json``)."""
    out = dict(config)
    for sel, keys in inherit:
        with open(Path(selections_dir) / f"{sel}.json") as f:
            best = json.load(f)["best_config"]
        out.update({k: best[k] for k in keys})
    return out


def select_best(candidates: dict[str, str | Path]) -> dict[str, Any]:
    """Pick the run with the lowest final validation BPD among {run id: result.json path}."""
    scored = []
    for rid, path in candidates.items():
        with open(path) as f:
            result = json.load(f)
        final = result["history"][-1]
        scored.append((final["val_bpd"], rid, result["config"]))
    scored.sort(key=lambda t: (t[0], t[1]))
    bpd, rid, config = scored[0]
    return {"best_run": rid, "best_val_bpd": bpd, "best_config": config,
            "candidates": {r: b for b, r, _ in scored}}


def job_device(device: str = "auto") -> str:
    """The torch device of a pipeline job: "cuda" when ``device`` is auto and a GPU is visible (the job
    runs under ``python -m silentvae.gpus``, which leaves exactly one claimed GPU visible), else "cpu"."""
    import torch
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def prepare_run(run_config: dict[str, Any], inherit: list, selections_dir: str, out_dir: str,
                device: str = "auto", threads: int = 1):
    """Everything a training notebook does before ``train``: resolve selected values, pick the device, set
    the thread count, make the output folder. Returns (RunConfig, output Path)."""
    import tempfile

    import torch

    from .train import RunConfig
    torch.set_num_threads(int(threads))
    resolved = resolve_run_config(run_config, [tuple(i) for i in inherit], selections_dir)
    cfg = RunConfig.from_dict({**resolved, "device": job_device(device)})
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="silentvae-run-"))
    out.mkdir(parents=True, exist_ok=True)
    return cfg, out


def train_runs(runs: list[dict[str, Any]], selections_dir: str = "", device: str = "auto", threads: int = 1,
               stack_size: int | str = "auto", done_json: str = "", jobs_per_gpu: int = 1,
               compile: bool | str = False, log=print) -> dict[str, tuple[Any, Path, list[dict[str, Any]]]]:
    """Train the runs of one pipeline job: one run with :func:`silentvae.train.train`; several (a grid of one
    method, ``engine: stacked``) together with :func:`silentvae.stacked.train_stacked`, ``stack_size`` runs
    per stack ("auto": as many as fit in the GPU's free memory shared by ``jobs_per_gpu`` jobs; all of them on
    a CPU). ``compile`` (true or a ``torch.compile`` mode) trains every chunk, a single run too, with the stacked
    engine's compiled step.

    ``runs``: [{"id", "config", "inherit", "out_dir"}]. Returns {run id: (RunConfig, output folder, history)}.
    With ``done_json`` it finally writes {"runs": {run id: result.json}, "stack_size": K} there (the
    Snakefile's output for a stacked job). If a run's loss became non-finite, the other stacks still
    finish before :class:`~silentvae.train.NonFiniteLossError` is raised.
    """
    import torch

    from .io import atomic_write_json
    from .stacked import auto_stack_size, train_stacked
    from .train import NonFiniteLossError, load_splits, train
    prepared = [prepare_run(r["config"], r.get("inherit", []), selections_dir, r.get("out_dir", ""), device, threads)
                for r in runs]
    ids = [r["id"] for r in runs]
    cfgs = [cfg for cfg, _ in prepared]
    splits = load_splits(cfgs[0])
    if stack_size == "auto":
        images = splits[0].images
        data_bytes = (len(splits[0]) + len(splits[1])) * images[0].numel() * torch.finfo(cfgs[0].torch_dtype).bits // 8
        k = auto_stack_size(cfgs, tuple(images.shape[1:]), reserved_bytes=data_bytes, log=log,
                            jobs_per_gpu=jobs_per_gpu)
    else:
        k = int(stack_size)
        if k < 1:
            raise ValueError(f"stack_size must be 'auto' or a positive integer, got {stack_size!r}")
    out: dict[str, tuple[Any, Path, list[dict[str, Any]]]] = {}
    errors = []
    for start in range(0, len(prepared), k):
        chunk = list(zip(ids, prepared))[start:start + k]
        try:
            if len(chunk) == 1 and not compile:
                rid, (cfg, run_out) = chunk[0]
                out[rid] = (cfg, run_out, train(cfg, run_out, splits=splits, log=log))
            else:
                if len(prepared) > k:
                    log(f"stack {start // k + 1} of {-(-len(prepared) // k)}: {len(chunk)} runs")
                histories = train_stacked([c for _, (c, _) in chunk], splits, out_dirs=[o for _, (_, o) in chunk],
                                          log=log, compile=compile)
                out.update({rid: (c, o, h) for (rid, (c, o)), h in zip(chunk, histories)})
        except NonFiniteLossError as e:
            errors.append(str(e))
    if errors:
        raise NonFiniteLossError("; ".join(errors))
    if done_json:
        atomic_write_json(done_json, {"runs": {rid: str(o / "result.json") for rid, (_, o, _) in out.items()},
                                      "stack_size": k})
    return out


def _job_setup(device: str, threads: int) -> str:
    import torch
    torch.set_num_threads(int(threads))
    return job_device(device)


def variance_job(settings: dict[str, Any], selection_path: str, runs_dir: str, out_json: str, *,
                 device: str = "auto", threads: int = 1) -> dict[int, dict[str, float]]:
    """Table 1 for one method: gradient-variance decomposition at each checkpoint epoch of the selected run.

    Batches are the first ``num_batches * batch_size`` training images (seeded order, no dequantisation).
    With an empty ``selection_path`` a tiny demo run is trained first (for the notebook's defaults).
    Returns {epoch: result} and writes it to ``out_json`` (if given) with the run it came from.
    """
    import tempfile

    import torch

    from .diagnostics import gradient_variance
    from .estimators import make_estimator
    from .io import atomic_write_json, load_checkpoint
    from .train import RunConfig, checkpoint_name, load_run, load_splits, train

    dev = _job_setup(device, threads)
    epochs = sorted(int(e) for e in settings["epochs"])
    if selection_path:
        with open(selection_path) as f:
            run_id = json.load(f)["best_run"]
        run_dir = Path(runs_dir) / run_id
    else:
        run_id = f"demo/{settings['method']}"
        run_dir = Path(tempfile.mkdtemp(prefix="silentvae-variance-"))
        demo = {"experiment": "fixed", **FIXED_METHODS[settings["method"]], "dataset": settings["dataset"],
                "epochs": max(epochs), "checkpoint_epochs": epochs, "latent_dim": 8, "channels": 4, "lr": 1e-3,
                "train_limit": 256, "val_limit": 64, "device": dev}
        train(RunConfig.from_dict(demo), run_dir, log=lambda *_: None)
    results: dict[int, dict[str, float]] = {}
    for epoch in epochs:
        path = run_dir / checkpoint_name(epoch)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the run {run_id} must save checkpoint_epochs {epochs}")
        cfg, models, _ = load_run(path, device=dev)
        estimator = make_estimator(cfg.estimator, temperature=cfg.temperature,
                                   reinforce_momentum=cfg.reinforce_momentum)
        if hasattr(estimator, "load_state_dict"):
            estimator.load_state_dict(load_checkpoint(path, dev)["estimator"], device=dev)
        train_split, _ = load_splits(cfg)
        n = settings["num_batches"] * settings["batch_size"]
        order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(cfg.seed))[:n]
        images = train_split.images[order].to(device=dev, dtype=cfg.torch_dtype)
        batches = list(images.split(settings["batch_size"]))
        results[epoch] = gradient_variance(models["encoder"], models["decoder"], estimator, batches,
                                           num_samples=settings["num_samples"], seed=cfg.seed)
    if out_json:
        atomic_write_json(out_json, {"method": settings["method"], "dataset": settings["dataset"], "run": run_id,
                                     "results": {str(e): r for e, r in results.items()}})
    return results


def taylor_job(settings: dict[str, Any], out_json: str, work_dir: str, *, device: str = "auto",
               threads: int = 1) -> dict[str, float]:
    """Section 4.1's check: train a Bernoulli-latent encoder with a learnable-precision linear decoder by Silent
    Gradients for ``train_epochs`` ("None + SG"), then compare encoder gradients on one validation batch
    against the enumerated exact gradient (:func:`silentvae.diagnostics.taylor_bias_check`), over the
    ``free_latents`` most uncertain latents when ``latent_dim`` is too large to enumerate."""
    import tempfile

    import torch

    from .data import dequantize
    from .diagnostics import data_average_loss, taylor_bias_check
    from .io import atomic_write_json, load_checkpoint
    from .train import RunConfig, build_models, load_splits, train

    dev = _job_setup(device, threads)
    run = {"experiment": "learnable", "dataset": settings["dataset"], "latent": "bernoulli", "estimator": "none",
           "silent": True, "latent_dim": settings["latent_dim"], "channels": settings.get("channels", 32),
           "lr": settings.get("lr", 1e-4), "batch_size": settings.get("batch_size", 32),
           "epochs": max(1, settings.get("train_epochs", 5)), "train_limit": settings.get("train_limit"),
           "val_limit": max(settings.get("batch_size", 32), 64), "device": dev}
    cfg = RunConfig.from_dict(run)
    train_split, val_split = load_splits(cfg)
    if settings.get("train_epochs", 5) > 0:
        out = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="silentvae-taylor-"))
        train(cfg, out, splits=(train_split, val_split), log=lambda *_: None)
        state = load_checkpoint(out / "last.pt", dev)
        models = build_models(cfg, tuple(train_split.images.shape[1:]))
        models.load_state_dict(state["models"])
    else:
        models = build_models(cfg, tuple(train_split.images.shape[1:]))
    gen = torch.Generator(device=dev).manual_seed(0)
    x = dequantize(val_split.images[: cfg.batch_size].to(dev), gen)
    # REINFORCE as it trains: its running-average baseline settles at the loss averaged over training batches
    train_x = dequantize(train_split.images[:1024].to(dev), gen)
    baseline = data_average_loss(models["encoder"], models["linear"], train_x, gen)
    result = taylor_bias_check(models["encoder"], models["linear"], x, num_samples=settings["num_samples"],
                               temperature=settings.get("temperature", 0.5),
                               chunk=min(2000, settings["num_samples"]), seed=0, reinforce_baseline=baseline,
                               free_latents=settings.get("free_latents"))
    result = {**result, "dataset": settings["dataset"], "train_epochs": settings.get("train_epochs", 5)}
    if out_json:
        atomic_write_json(out_json, result)
    return result


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def gather_results(results_dir: str | Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Collect every finished output of the plan of ``cfg`` under ``results_dir`` for the report.

    Returns a dict with ``fixed_dataset``, ``fixed_selections`` {method: selection}, ``fixed_results``
    {run id: result}, ``variance`` {method: {epoch: result}}, ``learnable`` {dataset: {method: [results over
    seeds, the selected grid run first]}}, ``learnable_runs`` (the same with run ids), ``learnable_selections``
    {dataset: {method: selection}}, ``taylor`` (result or None) and ``not_run`` {dataset: reason}. Outputs
    that do not exist are left out.
    """
    root = Path(results_dir)
    plan = make_plan(cfg)
    out: dict[str, Any] = {"fixed_dataset": cfg["fixed_variance"]["dataset"], "fixed_selections": {},
                           "fixed_results": {}, "variance": {}, "learnable": {}, "learnable_runs": {},
                           "learnable_selections": {}, "taylor": None, "not_run": dict(plan.not_run)}
    for sel in plan.selections:
        selection = _read_json(root / "selected" / f"{sel}.json")
        kind, ds, method = sel.split("/")
        if kind == "fixed":
            for rid in plan.selections[sel]:
                result = _read_json(root / "runs" / rid / "result.json")
                if result is not None:
                    out["fixed_results"][rid] = result
            if selection is not None:
                out["fixed_selections"][method] = selection
        elif selection is not None:
            out["learnable_selections"].setdefault(ds, {})[method] = selection
            found = [(rid, _read_json(root / "runs" / rid / "result.json"))
                     for rid in [selection["best_run"]] + plan.final_runs.get(sel, [])]
            found = [(rid, r) for rid, r in found if r is not None]
            out["learnable"].setdefault(ds, {})[method] = [r for _, r in found]
            out["learnable_runs"].setdefault(ds, {})[method] = [rid for rid, _ in found]
    for job, settings in plan.variance.items():
        result = _read_json(root / f"{job}.json")
        if result is not None:
            out["variance"][settings["method"]] = {int(e): r for e, r in result["results"].items()}
    for job in plan.taylor:
        out["taylor"] = _read_json(root / f"{job}.json")
    return out


def write_report(results_dir: str | Path, cfg: dict[str, Any], *, out_dir: str | Path | None = None,
                 num_images: int = 8, device: str = "cpu") -> dict[str, Any]:
    """Every claim, table and figure of the paper from the finished outputs under ``results_dir``.

    Writes ``tables/<name>.{csv,md,tex}`` (``claims`` first: :func:`silentvae.claims.claims_table`; the long
    comparisons ``table1`` ... ``taylor_bias``; ``provenance``: every run shown) and
    ``figures/<name>.{png,pdf}`` under ``out_dir`` (default ``results_dir``). Returns {"claims": DataFrame,
    "sections": [{"title", "caption", "table": compact DataFrame, "figures": [names]}], "tables": {name:
    DataFrame}, "figures": {name: Figure}, "notes": [one line per missing dataset], "provenance": DataFrame,
    "not_run": {dataset: reason}}.
    """
    from . import claims, plots, report
    from . import paper_values as pv
    from .train import RunConfig, load_splits

    root = Path(results_dir)
    g = gather_results(root, cfg)
    claims_df = claims.claims_table(g, cfg)
    verdict = list(claims_df["Verdict"])   # rows 0-5: zero var, dominates, continuous, discrete, convergence, Taylor
    tables: dict[str, Any] = {"claims": claims_df}
    figures: dict[str, Any] = {}
    sections: list[dict[str, Any]] = []
    fixed_ds = g["fixed_dataset"]
    selected_fixed = {m: g["fixed_results"][s["best_run"]] for m, s in g["fixed_selections"].items()
                      if s["best_run"] in g["fixed_results"]}
    shown_runs = [(g["fixed_selections"][m]["best_run"], r) for m, r in selected_fixed.items()]

    def val_images(result: dict[str, Any]):
        run_cfg = RunConfig.from_dict({**result["config"], "device": device})
        return load_splits(run_cfg)[1].images[:num_images]

    if g["variance"]:
        tables["table1"] = report.table1(g["variance"])
        figures["variance"] = plots.variance_figure(tables["table1"])
        sections.append({"title": "Table 1: gradient variance", "caption": report.CAPTIONS["table1"],
                         "table": report.summary_table1(g["variance"]), "figures": ["variance"]})
    tables["table2"] = report.table2(g["fixed_selections"], g["fixed_results"], not_run=g["not_run"],
                                     dataset=fixed_ds)
    if selected_fixed:
        target = cfg["fixed_variance"].get("target_bpd", pv.CONVERGENCE["target_bpd"])
        tables["convergence"] = report.convergence(selected_fixed, target)
        figures["fixed_curves"] = plots.curves_panels({pv.FIXED_LABELS[m]: r["history"]
                                                       for m, r in selected_fixed.items()}, target=target,
                                                      title=f"Learning curves of the Table 2 runs ({fixed_ds})")
        images = val_images(next(iter(selected_fixed.values())))
        rows = {"original": images}
        for m, sel in g["fixed_selections"].items():
            rows[pv.FIXED_LABELS[m]] = plots.reconstructions_from_checkpoint(
                root / "runs" / sel["best_run"] / "last.pt", images, device)[0]
        figures["figure2_fixed_reconstructions"] = plots.reconstruction_figure(rows, f"Figure 2 ({fixed_ds})")
        sections.append({"title": "Table 2: fixed variance", "caption": report.CAPTIONS["table2"],
                         "table": report.summary_table2(tables["table2"], {"continuous": verdict[2],
                                                                           "discrete": verdict[3]},
                                                        {m: s["best_run"] for m, s in g["fixed_selections"].items()}),
                         "figures": ["fixed_curves", "figure2_fixed_reconstructions"]})
        sections.append({"title": "Convergence (Sec. 3.2)", "caption": report.CAPTIONS["convergence"],
                         "table": report.summary_convergence(tables["convergence"], verdict[4]), "figures": []})
    datasets = list(cfg["learnable_variance"]["datasets"]) if cfg["learnable_variance"]["enabled"] else []
    for name, fn in (("table3", report.table3), ("table4", report.table4), ("table9", report.table9)):
        tables[name] = fn(g["learnable"], g["not_run"], datasets)
        summary = report.summary_learnable(name, g["learnable"], datasets, g["not_run"])
        if not summary.empty:
            sections.append({"title": {"table3": "Table 3: learnable variance, BPD", "table4": "Table 4: KLD",
                                       "table9": "Table 9: MSE"}[name],
                             "caption": report.CAPTIONS[name], "table": summary, "figures": []})
    paper_figure = {"mnist": "figure3", "mnist5k": "figure3", "imagenet32": "figure4", "cifar10": "figure5"}
    for ds in datasets:
        selections = g["learnable_selections"].get(ds, {})
        if not selections:
            continue
        shown_runs += [(rid, r) for m in selections for rid, r in zip(g["learnable_runs"][ds][m], g["learnable"][ds][m])]
        curves = f"learnable_curves_{ds}"
        figures[curves] = plots.curves_panels(
            {pv.LEARNABLE_LABELS.get(m, m): runs[0]["history"] for m, runs in g["learnable"][ds].items() if runs},
            keys=("val_bpd", "val_kld"), title=f"Learnable variance, {ds}: first seed of each method")
        images = val_images(g["learnable"][ds][next(iter(selections))][0])
        methods = {pv.LEARNABLE_LABELS.get(m, m): plots.reconstructions_from_checkpoint(
            root / "runs" / s["best_run"] / "last.pt", images, device) for m, s in selections.items()}
        name = f"{paper_figure.get(ds, 'figure')}_{ds}_reconstructions"
        figures[name] = plots.reconstruction_with_std_figure(images, methods, title=f"{ds}: means and learned std")
        sections.append({"title": f"Learnable variance on {ds}: curves and Figure {name[6]}-style reconstructions",
                         "caption": "", "table": None, "figures": [curves, name]})
    if g["taylor"] is not None:
        tables["taylor_bias"] = report.taylor_table(g["taylor"])
        figures["taylor_bias"] = plots.taylor_figure(g["taylor"])
        sections.append({"title": "Taylor bias (Sec. 4.1)", "caption": report.CAPTIONS["taylor_bias"],
                         "table": report.summary_taylor(tables["taylor_bias"], verdict[5]), "figures": ["taylor_bias"]})
    tables["provenance"] = report.provenance(shown_runs)
    dest = Path(out_dir) if out_dir is not None else root
    for name, df in tables.items():
        report.write_table(df, dest / "tables", name)
    for name, fig in figures.items():
        plots.save_figure(fig, dest / "figures" / name)
    notes = [f"{reason}: every claim and table cell of {pv.DATASET_LABELS.get(ds, ds)} is \"not run\"."
             for ds, reason in g["not_run"].items()]
    return {"claims": claims_df, "sections": sections, "tables": tables, "figures": figures, "notes": notes,
            "provenance": tables["provenance"], "not_run": g["not_run"]}


def main(argv: list[str] | None = None) -> int:
    """``python -m silentvae.pipeline select OUT.json '{"run id": "result.json", ...}'``
    (the Snakefile's ``select`` rule) and ``python -m silentvae.pipeline plan CONFIG.yaml`` (job counts)."""
    import argparse
    import sys

    from .io import atomic_write_json
    parser = argparse.ArgumentParser(prog="python -m silentvae.pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    p_sel = sub.add_parser("select", help="pick the best run of a grid on final validation BPD")
    p_sel.add_argument("out")
    p_sel.add_argument("candidates", help="JSON object: run id -> result.json path")
    p_plan = sub.add_parser("plan", help="print the job counts of a config")
    p_plan.add_argument("config")
    args = parser.parse_args(argv)
    if args.command == "select":
        selection = select_best(json.loads(args.candidates))
        atomic_write_json(args.out, selection)
        print(f"selected {selection['best_run']} (val bpd {selection['best_val_bpd']:.4f})")
    else:
        plan = make_plan(load_config(args.config))
        print(json.dumps({"training_runs": len(plan.runs), "selections": len(plan.selections),
                          "variance_jobs": len(plan.variance), "taylor_jobs": len(plan.taylor),
                          "not_run": plan.not_run}, indent=2))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
