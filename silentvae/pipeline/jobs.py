"""The pipeline's job runners: what each papermill notebook calls (training, Table 1's variance study, Sec.
4.1's Taylor check). Each sets the job's threads and device, then calls the library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..training.methods import FIXED_METHODS, LEARNABLE_METHODS
from .paths import last_checkpoint_in, result_in, selection_in

__all__ = ["job_device", "resolve_run_config", "prepare_run", "train_runs", "variance_job", "taylor_job"]


def job_device(device: str = "auto") -> str:
    """The torch device of a pipeline job: "cuda" when ``device`` is auto and a GPU is visible (the job
    runs under ``python -m silentvae.pipeline.gpus``, which leaves exactly one claimed GPU visible), else "cpu"."""
    import torch
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_run_config(config: dict[str, Any], inherit: list[tuple[str, list[str]]],
                       selections_dir: str | Path) -> dict[str, Any]:
    """Base config + the named keys of each selected best config (read from ``<selections_dir>/<id>.json``)."""
    from ..training.io import read_json
    out = dict(config)
    for selection, keys in inherit:
        best = read_json(selection_in(str(selections_dir), selection))["best_config"]
        out.update({k: best[k] for k in keys})
    return out


def prepare_run(run_config: dict[str, Any], inherit: list, selections_dir: str, out_dir: str,
                device: str = "auto", threads: int = 1):
    """Everything a training notebook does before ``train``: resolve selected values, pick the device, set
    the thread count, make the output folder. Returns (RunConfig, output Path)."""
    import tempfile

    import torch

    from ..training.run import RunConfig
    torch.set_num_threads(int(threads))
    resolved = resolve_run_config(run_config, [tuple(i) for i in inherit], selections_dir)
    cfg = RunConfig.from_dict({**resolved, "device": job_device(device)})
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="silentvae-run-"))
    out.mkdir(parents=True, exist_ok=True)
    return cfg, out


def train_runs(runs: list[dict[str, Any]], selections_dir: str = "", device: str = "auto", threads: int = 1,
               stack_size: int | str = "auto", done_json: str = "", jobs_per_gpu: int = 1,
               compile: bool | str = False, log=print) -> dict[str, tuple[Any, Path, list[dict[str, Any]]]]:
    """Train the runs of one pipeline job (one run, or a grid of one method with ``stack_grid: true``) with
    :func:`silentvae.training.engine.train_stacked`, ``stack_size`` runs per stack ("auto": as many as fit in the GPU's
    free memory shared by ``jobs_per_gpu`` jobs; all of them on a CPU; a single run is a stack of one, as in
    :func:`silentvae.training.engine.train`). ``compile`` (true or a ``torch.compile`` mode) compiles the engine's step.

    ``runs``: [{"id", "config", "inherit", "out_dir"}]. Returns {run id: (RunConfig, output folder, history)}.
    With ``done_json`` it finally writes {"runs": {run id: result.json}, "stack_size": K} there (the
    Snakefile's output for every training job). If a run's loss became non-finite, the other stacks still
    finish before :class:`~silentvae.training.run.NonFiniteLossError` is raised.
    """
    import torch

    from ..training.io import atomic_write_json
    from ..training.engine import auto_stack_size, train_stacked
    from ..training.run import NonFiniteLossError, load_splits
    prepared = [prepare_run(r["config"], r.get("inherit", []), selections_dir, r.get("out_dir", ""), device, threads)
                for r in runs]
    run_ids = [r["id"] for r in runs]
    configs = [cfg for cfg, _ in prepared]
    splits = load_splits(configs[0])
    if stack_size == "auto":
        images = splits[0].images
        image_bytes = images[0].numel() * torch.finfo(configs[0].torch_dtype).bits // 8
        data_bytes = (len(splits[0]) + len(splits[1])) * image_bytes
        per_stack = auto_stack_size(configs, tuple(images.shape[1:]), reserved_bytes=data_bytes, log=log,
                                    jobs_per_gpu=jobs_per_gpu)
    else:
        per_stack = int(stack_size)
        if per_stack < 1:
            raise ValueError(f"stack_size must be 'auto' or a positive integer, got {stack_size!r}")
    out: dict[str, tuple[Any, Path, list[dict[str, Any]]]] = {}
    errors = []
    for start in range(0, len(prepared), per_stack):
        chunk = list(zip(run_ids, prepared))[start:start + per_stack]
        if len(prepared) > per_stack:
            log(f"stack {start // per_stack + 1} of {-(-len(prepared) // per_stack)}: {len(chunk)} runs")
        try:
            histories = train_stacked([c for _, (c, _) in chunk], splits, out_dirs=[o for _, (_, o) in chunk],
                                      log=log, compile=compile)
            out.update({run_id: (c, o, h) for (run_id, (c, o)), h in zip(chunk, histories)})
        except NonFiniteLossError as e:
            errors.append(str(e))
    if errors:
        raise NonFiniteLossError("; ".join(errors))
    if done_json:
        atomic_write_json(done_json, {"runs": {run_id: result_in(o) for run_id, (_, o, _) in out.items()},
                                      "stack_size": per_stack})
    return out


def _job_setup(device: str, threads: int) -> str:
    import torch
    torch.set_num_threads(int(threads))
    return job_device(device)


def variance_job(settings: dict[str, Any], selection_path: str, runs_dir: str, out_json: str, *,
                 device: str = "auto", threads: int = 1) -> dict[int, dict[str, Any]]:
    """Table 1 for one method: gradient-variance decomposition at each checkpoint epoch of the selected setting's
    seeds, pooled over them (:func:`silentvae.training.diagnostics.pool_seeds`: the seeds' mean Est % with an
    interval over seeds and batches).

    The seeds measured: the selected run, then ``settings["seed_runs"]`` (run ids of the same setting at other
    seeds, e.g. ``<selection>/final_s1``; the caller makes sure they finished). Per seed, batches are the first
    ``num_batches * batch_size`` training images in that run's seeded order (no dequantisation). Each epoch's
    result is labelled by the optimizer steps the runs had taken: ``steps`` = epoch x ``steps_per_epoch``,
    ceil(train images / batch size). With an empty ``selection_path`` a tiny demo run is trained first (for the
    notebook's defaults). Returns {epoch: pooled result} and writes it to ``out_json`` (if given) with the runs.
    """
    import math
    import tempfile

    import torch

    from ..training.diagnostics import gradient_variance, pool_seeds
    from ..estimators import make_estimator
    from ..training.io import atomic_write_json, load_checkpoint, read_json
    from ..training.engine import train
    from ..training.run import RunConfig, checkpoint_name, load_run, load_splits

    dev = _job_setup(device, threads)
    epochs = sorted(int(e) for e in settings["epochs"])
    if selection_path:
        run_ids = [read_json(selection_path)["best_run"], *settings.get("seed_runs", [])]
        run_dirs = [Path(runs_dir) / r for r in run_ids]
    else:
        run_ids = [f"demo/{settings['method']}"]
        run_dirs = [Path(tempfile.mkdtemp(prefix="silentvae-variance-"))]
        demo = {"experiment": "fixed", **FIXED_METHODS[settings["method"]].run_fields(), "dataset": settings["dataset"],
                "epochs": max(epochs), "checkpoint_epochs": epochs, "latent_dim": 8, "channels": 4, "lr": 1e-3,
                "train_limit": 256, "val_limit": 64, "device": dev}
        train(RunConfig.from_dict(demo), run_dirs[0], log=lambda *_: None)
    results: dict[int, dict[str, Any]] = {}
    for epoch in epochs:
        per_seed, seeds = [], []
        for run_id, run_dir in zip(run_ids, run_dirs):
            path = run_dir / checkpoint_name(epoch)
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: the run {run_id} must save checkpoint_epochs {epochs}; "
                                        f"delete its folder {run_dir} and rerun, so that its training job trains it "
                                        f"again with them")
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
            per_seed.append({**gradient_variance(models["encoder"], models["decoder"], estimator, batches,
                                                 num_samples=settings["num_samples"], seed=cfg.seed),
                             "seed": cfg.seed, "run": run_id})
            seeds.append(cfg.seed)
        steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
        results[epoch] = {**pool_seeds(per_seed), "seeds": seeds, "runs": list(run_ids), "epoch": epoch,
                          "steps": epoch * steps_per_epoch, "steps_per_epoch": steps_per_epoch,
                          "train_size": len(train_split), "train_batch_size": cfg.batch_size}
    if out_json:
        atomic_write_json(out_json, {"method": settings["method"], "dataset": settings["dataset"], "run": run_ids[0],
                                     "runs": list(run_ids), "results": {str(e): r for e, r in results.items()}})
    return results


def taylor_job(settings: dict[str, Any], out_json: str, work_dir: str, *, device: str = "auto",
               threads: int = 1) -> dict[str, float]:
    """Section 4.1's check: train a Bernoulli-latent encoder with a learnable-precision linear decoder by Silent
    Gradients for ``train_epochs`` ("None + SG"), then compare encoder gradients on one validation batch
    against the enumerated exact gradient (:func:`silentvae.training.diagnostics.taylor_bias_check`), over the
    ``free_latents`` most uncertain latents when ``latent_dim`` is too large to enumerate, on ``draws`` (default 5)
    disjoint validation batches, each an independent draw (``draws`` in the result; the top level is the first's).
    REINFORCE's baseline is the paper's running average (one scalar: the loss averaged over training batches)."""
    import tempfile

    import torch

    from ..training.data import dequantize
    from ..training.diagnostics import data_average_loss, taylor_bias_check
    from ..training.engine import train
    from ..training.io import atomic_write_json
    from ..training.run import RunConfig, build_models, load_run, load_splits

    dev = _job_setup(device, threads)
    none_sg = LEARNABLE_METHODS["none_sg_bernoulli"].run_fields()  # Bernoulli latents, the silent gradient alone
    run = {"experiment": "learnable", "dataset": settings["dataset"], **none_sg, "latent_dim": settings["latent_dim"],
           "channels": settings.get("channels", 32), "lr": settings.get("lr", 1e-4),
           "batch_size": settings.get("batch_size", 32),
           "epochs": max(1, settings.get("train_epochs", 5)), "train_limit": settings.get("train_limit"),
           "val_limit": max(settings.get("batch_size", 32) * settings.get("draws", 5), 64), "device": dev}
    cfg = RunConfig.from_dict(run)
    train_split, val_split = load_splits(cfg)
    if settings.get("train_epochs", 5) > 0:
        out = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="silentvae-taylor-"))
        train(cfg, out, splits=(train_split, val_split), log=lambda *_: None)
        _, models, _ = load_run(last_checkpoint_in(out), device=dev)   # eval mode (MNIST encoders have no BatchNorm)
    else:
        models = build_models(cfg, tuple(train_split.images.shape[1:]))
    gen = torch.Generator(device=dev).manual_seed(0)
    # REINFORCE as the paper trains it (Appendix B.3): a running average of the reconstruction loss, which settles at
    # the loss averaged over training batches: one scalar baseline for every image
    train_x = dequantize(train_split.images[:1024].to(dev), gen)
    baseline = data_average_loss(models["encoder"], models["linear"], train_x, gen)
    # independent draws: disjoint validation batches, each checked with its own samples (the claim's interval)
    draws = []
    for i in range(settings.get("draws", 5)):
        x = dequantize(val_split.images[i * cfg.batch_size:(i + 1) * cfg.batch_size].to(dev), gen)
        draws.append(taylor_bias_check(models["encoder"], models["linear"], x, num_samples=settings["num_samples"],
                                       temperature=settings.get("temperature", 0.5),
                                       chunk=min(2000, settings["num_samples"]), seed=i, reinforce_baseline=baseline,
                                       free_latents=settings.get("free_latents")))
    result = {**draws[0], "draws": draws, "num_draws": len(draws), "dataset": settings["dataset"],
              "train_epochs": settings.get("train_epochs", 5), "init": cfg.init}
    if out_json:
        atomic_write_json(out_json, result)
    return result

