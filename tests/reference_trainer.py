r"""The tests' reference trainer: one run of Algorithm 1 as a plain eager loop (autograd, torch.optim.AdamW).

The library trains every run with the engine of :mod:`silentvae.training.engine` (a single run is a stack of one);
this is the same training written the obvious way, which ``tests/test_stacked.py`` compares the engine
against. Per step, with w_lin = ``cfg.silent_weight(epoch)`` (Eq. 8):

    objective = mean(-log p(x|z)) [noisy estimator, encoder gradient x (1 - w_lin)]
                + mean(KL)         [not once the encoder is frozen]
                + mean(linear SG decoder's loss) [encoder gradient x w_lin; while w_lin > 0 and not frozen]

Random numbers come from ``run.generator`` in the engine's order: ``randperm`` per epoch, then per step
the dequantisation noise and the estimator's latent noise. REINFORCE keeps its baseline in the estimator
(:meth:`silentvae.estimators.Reinforce.loss`). The files are written with the library's
:func:`~silentvae.training.run.resume_run` / :func:`~silentvae.training.run.save_run`, so their format is the checkpoint
format a run resumes from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from silentvae.training.data import DataSplit, dequantize
from silentvae.estimators import SilentGradient
from silentvae.training.run import (HEAD_INIT_IMAGES, NonFiniteLossError, Run, RunConfig, evaluate, resume_run, save_run,
                           write_metrics)


def train_epoch(run: Run, images: Tensor) -> dict[str, Any]:
    """One pass over ``images`` (shuffled, dequantised) of ``run``; its history row's training part."""
    cfg, models = run.cfg, run.models
    epoch = run.epoch + 1
    w_lin = cfg.silent_weight(epoch)
    frozen = cfg.encoder_frozen(epoch)
    use_linear = cfg.linear_active(epoch)
    silent_gradient = SilentGradient()
    models.train()
    if frozen:
        models["encoder"].eval()
    for group in run.optimizer.param_groups:   # the schedule's learning rates of this epoch
        group["lr"] = cfg.group_lrs(epoch)[group["name"]]
    totals = torch.zeros(3, device=images.device, dtype=torch.float64)  # loss, linear loss, count
    first_bad = torch.tensor(-1, device=images.device)  # read once per epoch: no host sync per step
    perm = torch.randperm(images.shape[0], generator=run.generator, device=images.device)
    for step, idx in enumerate(perm.split(cfg.batch_size)):
        x = dequantize(images[idx], run.generator)
        with torch.set_grad_enabled(not frozen):
            posterior = models["encoder"](x)
        kl = posterior.kl()
        neg_loglik = run.estimator.loss(posterior.scale_grad(1.0 - w_lin), models["decoder"], x, run.generator)
        objective = neg_loglik.mean() + (kl.mean() if not frozen else 0.0)
        linear = torch.zeros((), device=x.device, dtype=x.dtype)
        if use_linear:
            linear = silent_gradient.loss(posterior.scale_grad(w_lin), models["linear"], x).mean()
            objective = objective + linear
        run.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        run.optimizer.step()
        reported = (neg_loglik.detach() + kl.detach()).mean()
        first_bad = torch.where(~torch.isfinite(objective.detach()) & (first_bad < 0), step, first_bad)
        totals += torch.stack([reported.double() * len(idx), linear.detach().double() * len(idx),
                               torch.tensor(float(len(idx)), device=x.device, dtype=torch.float64)])
    if int(first_bad) >= 0:
        raise NonFiniteLossError(f"non-finite training loss at epoch {epoch}, step {int(first_bad)} (0-based)")
    loss, linear_loss, count = totals.tolist()
    return {"train_loss": loss / count, "train_linear_loss": linear_loss / count if use_linear else None,
            "w_lin": w_lin, "encoder_frozen": frozen}


def reference_train(cfg: RunConfig, out: str | Path, splits: tuple[DataSplit, DataSplit]) -> list[dict[str, Any]]:
    """Train (or resume) ``cfg`` in ``out`` up to ``cfg.epochs`` with :func:`train_epoch`; its history (same rows
    and files as :func:`silentvae.training.engine.train`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_images, val_images = (s.images.to(device=cfg.device, dtype=cfg.torch_dtype) for s in splits)
    run = Run(cfg, tuple(train_images.shape[1:]), train_images[:HEAD_INIT_IMAGES])
    resume_run(run, out)
    while run.epoch < cfg.epochs:
        row = {"epoch": run.epoch + 1, **train_epoch(run, train_images), "train_time": 0.0}
        run.history.append({**row, **evaluate(run.models, cfg, val_images), "wall_time": 0.0})
        save_run(run, out)
    write_metrics(out, cfg, run.history)
    return run.history
