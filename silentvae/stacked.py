r"""Train K fixed-variance runs at once: one process, one vmapped step (``torch.func``).

Why: the paper's protocol is thousands of small-model runs (Table 2 alone is 5 methods x 4 learning rates
x 500 epochs of 844 steps). One such model keeps a GPU busy for microseconds per kernel, so an eager loop
is bound by kernel launches and host syncs, not by arithmetic. Stacking K runs that differ only in
``seed`` and ``lr`` turns K small launches into one K-times larger launch.

What: :class:`StackedRuns` holds the K runs' parameters stacked along a leading axis (one flat
``(K, P)`` buffer, one view per parameter), steps them with ``vmap(grad(functional_call(...)))`` and a
vectorised AdamW (:func:`adamw_update_`), and keeps a :class:`silentvae.train.Run` per run whose
models / optimizer / estimator / generator / history it fills in at every epoch end, so that
:func:`train_stacked` writes exactly the files :func:`silentvae.train.train` writes (``last.pt``,
``epoch_XXXX.pt``, ``metrics.json``, ``result.json``): the pipeline, :func:`~silentvae.train.load_run`
and resume (by either trainer) cannot tell the two apart.

Equivalence with K separate ``silentvae.train`` runs (checked in ``tests/test_stacked.py``):

* initialisation: each run's models come from :func:`~silentvae.train.build_models` (seeded by its seed);
* random numbers: each run draws from its own ``Run.generator`` (seeded by its seed, on the device) in
  exactly the order ``Run.train_epoch`` does: ``randperm`` once per epoch, then per step the
  dequantisation noise (``torch.rand`` of the batch's shape, as in :func:`~silentvae.data.dequantize`)
  and then the estimator's latent noise (``torch.randn`` of (B, d) for ``reparam``, ``torch.rand`` of
  (B, d) for ``gumbel`` / ``reinforce``, none for ``sg``). The draws happen outside ``vmap`` and enter
  the step as tensors;
* the optimizer: :func:`adamw_update_` performs torch.optim.AdamW's single-tensor arithmetic op by op;
* REINFORCE's running baseline is a (K,) tensor with the estimator's update rule.

Results agree with separate runs to float round-off, not bit for bit: under ``vmap`` a convolution
with K weight sets runs as one grouped convolution and a linear layer as one batched matmul, whose
summation order differs from the per-run kernels.

Inside an epoch nothing waits for the device: losses and the first non-finite step are accumulated on
the device and read once per epoch. A run whose loss becomes non-finite is dropped from the outputs
(its files keep the last good epoch, as with :func:`~silentvae.train.train`) while the others go on;
:func:`train_stacked` raises :class:`~silentvae.train.NonFiniteLossError` naming it at the end.

Scope: ``experiment="fixed"`` (encoder + :class:`~silentvae.models.LinearDecoder`) with estimators
``sg`` / ``reparam`` / ``gumbel`` / ``reinforce`` on models without buffers (MNIST-like datasets).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, stack_module_state, vmap

from .data import DataSplit
from .io import atomic_torch_save
from .train import (NonFiniteLossError, Run, RunConfig, check_same_config, checkpoint_name, evaluate,
                    load_splits, write_metrics)

__all__ = ["StackedRuns", "train_stacked", "check_stackable", "adamw_update_", "pick_stack_size",
           "measure_peak_bytes", "STACKABLE_KEYS"]

#: The only RunConfig fields that may differ between the runs of one stack.
STACKABLE_KEYS = ("seed", "lr")


def check_stackable(configs: list[RunConfig]) -> None:
    """Raise ValueError unless ``configs`` can share one stack: fixed experiment, equal but for seed/lr."""
    if not configs:
        raise ValueError("need at least one run config to stack")
    first = configs[0].to_dict()
    for i, cfg in enumerate(configs[1:], start=1):
        d = cfg.to_dict()
        for key in first:
            if key not in STACKABLE_KEYS and d[key] != first[key]:
                raise ValueError(f"stacked runs may differ only in {STACKABLE_KEYS}, but key {key!r} differs: "
                                 f"config 0 has {first[key]!r}, config {i} has {d[key]!r}")
    cfg = configs[0]
    if cfg.experiment != "fixed":
        raise ValueError(f"stacked training supports experiment='fixed' only, got experiment={cfg.experiment!r}")
    if cfg.cutoff_epoch is not None:
        raise ValueError("stacked training does not support cutoff_epoch (encoder freezing)")


def adamw_update_(param: Tensor, grad_: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *, step: int,
                  lr: Tensor | list[float], betas: tuple[float, float], weight_decay: float,
                  eps: float = 1e-8) -> None:
    """One AdamW step, in place, for K stacked runs with per-run learning rates ``lr`` (K floats or (K,) tensor).

    ``param``, ``grad_``, ``exp_avg``, ``exp_avg_sq`` are (K, ...); ``step`` is the 1-based step count
    (shared: the runs step together). The arithmetic is torch.optim.AdamW's single-tensor path
    (``amsgrad=False``, ``maximize=False``), op by op:

        p *= 1 - lr wd;   m = lerp(m, g, 1 - b1);   v = b2 v + (1 - b2) g^2
        p += (-lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    The per-run scalars torch computes in double and rounds to the parameter dtype are computed here
    the same way (``lr`` is taken in float64, then cast), so on CPU the update matches torch.optim.AdamW
    to the last bit for equal inputs (pass ``lr`` as floats or a float64 tensor: a float32 ``lr`` is
    already rounded).
    """
    if not isinstance(lr, Tensor):
        lr = torch.tensor(list(lr), dtype=torch.float64)
    beta1, beta2 = betas
    shape = (-1,) + (1,) * (param.dim() - 1)
    lr64 = lr.to(device=param.device, dtype=torch.float64).view(shape)
    if weight_decay != 0:
        param.mul_((1 - lr64 * weight_decay).to(param.dtype))
    exp_avg.lerp_(grad_, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad_, grad_, value=1 - beta2)
    bias_correction1 = 1 - beta1 ** float(step)
    bias_correction2_sqrt = (1 - beta2 ** float(step)) ** 0.5
    neg_step_size = (-(lr64 / bias_correction1)).to(param.dtype)
    denom = exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(eps)
    # torch: param.addcdiv_(exp_avg, denom, value=-step_size), i.e. param + (value * exp_avg) / denom
    param.addcdiv_(exp_avg * neg_step_size, denom)


class _FixedObjective(nn.Module):
    """One run's training objective of ``Run.train_epoch`` (fixed experiment), with its noise as input.

    ``forward(x, noise, baseline)`` returns ``(nl.mean() + kl.mean(), (objective, reported, f_mean))``
    where ``reported = mean(nl + kl)`` is the value ``Run.train_epoch`` logs and ``f_mean`` the batch mean
    of -log p(x|z) (REINFORCE's baseline update; 0 otherwise). The sampling lines restate
    :meth:`GaussianPosterior.rsample`, :meth:`BernoulliPosterior.relaxed_sample` /
    :meth:`~BernoulliPosterior.sample` and :meth:`Reinforce.loss` with the uniform / normal draws
    given instead of drawn (the equality tests against ``silentvae.train`` guard the restatement).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, cfg: RunConfig):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.estimator, self.temperature = cfg.estimator, float(cfg.temperature)

    def forward(self, x: Tensor, noise: Tensor | None, baseline: Tensor | None):
        post = self.encoder(x)
        kl = post.kl()
        f_mean = torch.zeros((), dtype=x.dtype, device=x.device)
        if self.estimator == "sg":
            nl = -self.decoder.expected_loglik(x, post)
        elif self.estimator == "reparam":
            nl = -self.decoder.loglik(x, post.mean + post.var.sqrt() * noise)
        elif self.estimator == "gumbel":
            u = noise.clamp(torch.finfo(noise.dtype).tiny, 1.0 - torch.finfo(noise.dtype).eps)
            logistic = torch.log(u) - torch.log1p(-u)
            nl = -self.decoder.loglik(x, torch.sigmoid((post.logits + logistic) / self.temperature))
        else:  # reinforce
            z = (noise < post.probs.detach()).to(post.logits.dtype)
            f = -self.decoder.loglik(x, z)
            log_q = post.log_prob(z)
            f_det = f.detach()
            if baseline is None:  # first step: leave-one-out baseline, as Reinforce.loss
                n = f_det.shape[0]
                baseline = (f_det.sum() - f_det) / (n - 1) if n > 1 else torch.zeros_like(f_det)
            nl = f + (f_det - baseline) * (log_q - log_q.detach())
            f_mean = f_det.mean()
        objective = nl.mean() + kl.mean()
        reported = (nl.detach() + kl.detach()).mean()
        return objective, (objective.detach(), reported, f_mean)


class StackedRuns:
    """K fixed-variance runs (equal configs but ``seed`` / ``lr``) trained together by one vmapped step.

    ``runs[k]`` is the :class:`~silentvae.train.Run` of ``configs[k]``: its models give the initial
    parameters, its generator all random numbers, and :meth:`sync_runs` writes the stacked state back
    into it (models, AdamW state, REINFORCE baseline). Call :meth:`load_from_runs` after changing the
    runs (e.g. ``run.load_state_dict`` for a resume).

    ``compile=True`` wraps the vmapped gradient in ``torch.compile``; a string is passed as its ``mode``
    (``"reduce-overhead"``: CUDA graphs). Optional and off by default: eager is what the tests check
    (compiled on CPU it agrees to round-off after a ~1 min first compile; not yet timed on a GPU). The
    AdamW update stays eager (its per-step scalars would recompile it every step).
    """

    def __init__(self, configs: list[RunConfig], in_shape: tuple[int, ...], *, compile: bool | str = False):
        configs = [RunConfig.from_dict(c) if isinstance(c, dict) else c for c in configs]
        check_stackable(configs)
        self.configs, self.cfg, self.K = configs, configs[0], len(configs)
        self.device, self.dtype = torch.device(self.cfg.device), self.cfg.torch_dtype
        self.runs = [Run(cfg, tuple(in_shape)) for cfg in configs]
        if any(True for _ in self.runs[0].models.buffers()):
            raise ValueError("stacked training needs models without buffers (no BatchNorm): use an MNIST-like "
                             f"dataset, got dataset={self.cfg.dataset!r}")
        skeleton = copy.deepcopy(self.runs[0].models).to("meta")  # structure only, for functional_call
        self.objective = _FixedObjective(skeleton["encoder"], skeleton["decoder"], self.cfg)
        self.names = [n for n, _ in self.runs[0].models.named_parameters()]
        self.lr = torch.tensor([c.lr for c in configs], dtype=torch.float64, device=self.device)
        self.failed: dict[int, str] = {}
        self.compile = compile
        self._steps: dict[tuple, Callable] = {}  # in_dims -> vmap(grad(objective)), compiled if asked
        self.load_from_runs()

    # --- state -------------------------------------------------------------------------------------
    def load_from_runs(self) -> None:
        """(Re)build the stacked parameters, AdamW state, baseline and epoch count from ``self.runs``."""
        stacked, _ = stack_module_state([run.models for run in self.runs])
        shapes = {n: stacked[n].shape[1:] for n in self.names}
        self.flat = torch.cat([stacked[n].detach().reshape(self.K, -1) for n in self.names], dim=1)
        self.params = self._views(self.flat, shapes)
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.flat), torch.zeros_like(self.flat)
        self.m_views, self.v_views = self._views(self.exp_avg, shapes), self._views(self.exp_avg_sq, shapes)
        self.step = 0
        epochs = {run.epoch for run in self.runs}
        if len(epochs) != 1:
            raise ValueError(f"stacked runs must be at the same epoch, got {sorted(epochs)}")
        self.epoch = epochs.pop()
        steps = set()
        for k, run in enumerate(self.runs):
            named = dict(run.models.named_parameters())
            for n in self.names:
                st = run.optimizer.state.get(named[n])
                steps.add(int(st["step"]) if st else 0)
                if st:
                    self.m_views[n][k].copy_(st["exp_avg"])
                    self.v_views[n][k].copy_(st["exp_avg_sq"])
        if len(steps) != 1:
            raise ValueError(f"stacked runs must have taken the same number of optimizer steps, got {sorted(steps)}")
        self.step = steps.pop()
        self.baseline = None
        if self.cfg.estimator == "reinforce" and self.runs[0].estimator.baseline is not None:
            self.baseline = torch.stack([run.estimator.baseline.to(self.device) for run in self.runs])

    def _views(self, flat: Tensor, shapes: dict[str, torch.Size]) -> dict[str, Tensor]:
        out, offset = {}, 0
        for n in self.names:
            size = math.prod(shapes[n])
            out[n] = flat[:, offset:offset + size].view(self.K, *shapes[n])
            offset += size
        return out

    @torch.no_grad()
    def sync_runs(self, optimizer_state: bool = True) -> None:
        """Copy the stacked state into each healthy ``runs[k]``: parameters, REINFORCE baseline and (unless
        ``optimizer_state=False``, which saves two parameter copies per run) AdamW state in torch's format."""
        for k, run in enumerate(self.runs):
            if k in self.failed:
                continue
            named = dict(run.models.named_parameters())
            for n in self.names:
                p = named[n]
                p.copy_(self.params[n][k])
                if optimizer_state and self.step > 0:
                    run.optimizer.state[p] = {"step": torch.tensor(float(self.step)),
                                              "exp_avg": self.m_views[n][k].clone(),
                                              "exp_avg_sq": self.v_views[n][k].clone()}
            if self.baseline is not None:
                run.estimator.baseline = self.baseline[k].clone()

    # --- the step ----------------------------------------------------------------------------------
    def _loss(self, params: dict[str, Tensor], x: Tensor, noise: Tensor | None, baseline: Tensor | None):
        return functional_call(self.objective, params, (x, noise, baseline))

    def _vmapped_grad(self, in_dims: tuple) -> Callable:
        """``vmap(grad(objective))`` over the runs; ``in_dims`` marks the absent noise / baseline (None)."""
        if in_dims not in self._steps:
            fn = vmap(grad(self._loss, has_aux=True), in_dims=in_dims)
            if self.compile:
                fn = torch.compile(fn, mode=self.compile if isinstance(self.compile, str) else None)
            self._steps[in_dims] = fn
        return self._steps[in_dims]

    def _draw(self, images: Tensor, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        """Dequantised batches (K, b, C, H, W) and latent noise (K, b, d), each run from its own generator.

        Per run and in this order, as ``Run.train_epoch``: ``dequantize``'s ``torch.rand``, then the
        estimator's ``torch.randn`` / ``torch.rand``. Same shapes, dtype and device, hence the same numbers.
        """
        x = images[idx]
        u = torch.empty_like(x)
        est = self.cfg.estimator
        noise = None if est == "sg" else x.new_empty((self.K, x.shape[1], self.cfg.latent_dim))
        for k, run in enumerate(self.runs):
            torch.rand(x.shape[1:], generator=run.generator, out=u[k])
            if noise is not None:
                (torch.randn if est == "reparam" else torch.rand)(noise.shape[1:], generator=run.generator,
                                                                   out=noise[k])
        # silentvae.data.dequantize: minimum(x + u / 256, nextafter(x + 1/256, x))
        x = torch.minimum(x + u / 256, torch.nextafter(x + 1.0 / 256, x))
        return x, noise

    def train_epoch(self, images: Tensor) -> list[dict[str, Any]]:
        """One epoch of every run over ``images`` (N, C, H, W) on the device; one host sync at the end.

        Returns one row per run like ``Run.train_epoch`` (``train_loss`` etc.); a run whose loss became
        non-finite this epoch gets ``None`` and an entry in ``self.failed``.
        """
        cfg, K = self.cfg, self.K
        n, dev = images.shape[0], images.device
        perms = torch.stack([torch.randperm(n, generator=run.generator, device=dev) for run in self.runs])
        totals = torch.zeros(K, device=dev, dtype=torch.float64)
        first_bad = torch.full((K,), -1, device=dev, dtype=torch.long)
        count = 0
        for step, start in enumerate(range(0, n, cfg.batch_size)):
            idx = perms[:, start:start + cfg.batch_size]
            x, noise = self._draw(images, idx)
            baseline = self.baseline
            in_dims = (0, 0, None if noise is None else 0, None if baseline is None else 0)
            grads, (obj, reported, f_mean) = self._vmapped_grad(in_dims)(self.params, x, noise, baseline)
            self.step += 1
            flat_grad = torch.cat([grads[n].reshape(K, -1) for n in self.names], dim=1)
            adamw_update_(self.flat, flat_grad, self.exp_avg, self.exp_avg_sq, step=self.step, lr=self.lr,
                          betas=cfg.betas, weight_decay=cfg.weight_decay)
            if cfg.estimator == "reinforce":  # Reinforce.loss: first batch mean, then a running average
                m = cfg.reinforce_momentum
                self.baseline = f_mean.clone() if baseline is None else m * baseline + (1.0 - m) * f_mean
            first_bad = torch.where((~torch.isfinite(obj)) & (first_bad < 0), step, first_bad)
            b = idx.shape[1]
            totals += reported.double() * b
            count += b
        self.epoch += 1
        loss, bad = totals.tolist(), first_bad.tolist()  # the epoch's one host sync
        rows = []
        for k in range(K):
            if bad[k] >= 0 and k not in self.failed:
                c = self.configs[k]
                self.failed[k] = (f"non-finite training loss at epoch {self.epoch}, step {bad[k]} (0-based) of "
                                  f"stacked run {k} ({c.estimator}/seed{c.seed}/lr{c.lr:g}); the last good "
                                  f"checkpoint (epoch {self.epoch - 1}) is kept")
            rows.append(None if k in self.failed else
                        {"train_loss": loss[k] / count, "train_linear_loss": None,
                         "w_lin": cfg.silent_weight(self.epoch), "encoder_frozen": False})
        return rows


def train_stacked(configs: list[RunConfig | dict], splits: tuple[DataSplit, DataSplit] | None = None,
                  epochs: int | None = None, *, out_dirs: list[str | Path] | None = None,
                  log: Callable[[str], None] = print, compile: bool | str = False) -> list[list[dict[str, Any]]]:
    """Train K fixed-variance runs together up to epoch ``epochs`` (default ``cfg.epochs``); their histories.

    Equivalent to ``[train(cfg, out, splits=splits) for cfg, out in zip(configs, out_dirs)]`` to float
    round-off: same history rows (``train_time`` is the stack's epoch time, shared by its runs) and,
    with ``out_dirs``, the same files, including resume from existing ``last.pt`` files (all at one
    epoch). Validation (``evaluate``) runs per run on its own models after each epoch.

    Raises ValueError if the configs differ in more than seed / lr, and NonFiniteLossError at the end
    (after finishing and writing the other runs) if some run's loss became non-finite.
    """
    configs = [RunConfig.from_dict(c) if isinstance(c, dict) else c for c in configs]
    check_stackable(configs)
    cfg = configs[0]
    if out_dirs is not None and len(out_dirs) != len(configs):
        raise ValueError(f"got {len(out_dirs)} out_dirs for {len(configs)} configs")
    train_split, val_split = splits if splits is not None else load_splits(cfg)
    train_images = train_split.images.to(device=cfg.device, dtype=cfg.torch_dtype)
    val_images = val_split.images.to(device=cfg.device, dtype=cfg.torch_dtype)
    stack = StackedRuns(configs, tuple(train_images.shape[1:]), compile=compile)
    outs = [Path(o) for o in out_dirs] if out_dirs is not None else None
    if outs is not None:
        for run, out in zip(stack.runs, outs):
            out.mkdir(parents=True, exist_ok=True)
            if (out / "last.pt").exists():
                state = torch.load(out / "last.pt", map_location=cfg.device, weights_only=False)
                check_same_config(state["config"], run.cfg, out / "last.pt")
                run.load_state_dict(state)
        if any(run.epoch for run in stack.runs):
            stack.load_from_runs()
            log(f"resuming {len(outs)} stacked runs after epoch {stack.epoch}")
    target = cfg.epochs if epochs is None else int(epochs)
    while stack.epoch < target and len(stack.failed) < stack.K:
        t0 = time.perf_counter()
        rows = stack.train_epoch(train_images)
        if stack.device.type == "cuda":
            torch.cuda.synchronize(stack.device)
        train_time = time.perf_counter() - t0
        stack.sync_runs(optimizer_state=outs is not None)  # AdamW state is only needed for last.pt
        for k, (run, row) in enumerate(zip(stack.runs, rows)):
            if row is None:
                continue
            row = {"epoch": stack.epoch, **row, "train_time": train_time}
            row.update(evaluate(run.models, run.cfg, val_images))
            row["wall_time"] = time.perf_counter() - t0
            run.history.append(row)
            if outs is not None:
                state = run.state_dict()
                atomic_torch_save(state, outs[k] / "last.pt")
                if row["epoch"] in run.cfg.checkpoint_epochs:
                    atomic_torch_save(state, outs[k] / checkpoint_name(row["epoch"]))
                write_metrics(outs[k], run.cfg, run.history)
        done = [r for r in rows if r is not None]
        losses = " ".join(f"{r['train_loss']:.3f}" for r in done)
        log(f"stack of {stack.K} epoch {stack.epoch:4d}/{target}  losses {losses}  "
            f"failed {len(stack.failed)}  {time.perf_counter() - t0:.1f}s")
    if outs is not None:
        for k, (run, out) in enumerate(zip(stack.runs, outs)):
            finished = run.epoch >= run.cfg.epochs and not (out / "result.json").exists()
            if k not in stack.failed and (not (out / "metrics.json").exists() or finished):
                write_metrics(out, run.cfg, run.history)
    if stack.failed:
        raise NonFiniteLossError("; ".join(stack.failed.values()))
    return [run.history for run in stack.runs]


# --- sizing stacks to the device -----------------------------------------------------------------

def pick_stack_size(bytes_per_run: int, free_bytes: int, safety: float = 0.8) -> int:
    """How many runs fit in ``safety * free_bytes``: ``floor(safety * free_bytes / bytes_per_run)`` (0: none)."""
    if bytes_per_run <= 0:
        raise ValueError(f"bytes_per_run must be positive, got {bytes_per_run}")
    if not 0 < safety <= 1:
        raise ValueError(f"safety must be in (0, 1], got {safety}")
    return int(safety * free_bytes // bytes_per_run)


def measure_peak_bytes(configs: list[RunConfig], in_shape: tuple[int, ...] = (1, 28, 28),
                       steps: int = 2) -> int | None:
    """Peak CUDA memory (bytes, ``torch.cuda.max_memory_allocated``) of a stack training ``steps`` steps.

    Counts the stack (parameters, AdamW state, gradients, activations, its ``Run`` copies) and a random
    data set of ``steps`` batches; ``None`` on a non-CUDA device. Per-run cost: measure K = 1 and K = 2
    and take the difference; feed it to :func:`pick_stack_size`.
    """
    cfg = configs[0]
    device = torch.device(cfg.device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    stack = StackedRuns(configs, in_shape)
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (steps * cfg.batch_size, *in_shape), generator=gen, device=device)
    stack.train_epoch(images.to(cfg.torch_dtype) / 256)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del stack, images
    torch.cuda.empty_cache()
    return int(peak)
