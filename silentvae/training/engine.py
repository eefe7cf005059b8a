r"""The training engine: K runs at once in one process, one vmapped step (``torch.func``); a single run
(:func:`train`) is a stack of one. What a run is (config, models, files) lives in :mod:`silentvae.training.run`.

Why: the paper's protocol is thousands of small-model runs (Table 2 alone is 5 methods x 4 learning rates
x 500 epochs of 844 steps; Table 3 is 8 methods x up to 20 grid points x 3 seeds). One such model keeps a
GPU busy for microseconds per kernel, so an eager loop is bound by kernel launches and host syncs, not by
arithmetic. Stacking K runs that differ only in their grid values (:data:`STACKABLE_KEYS`: seed, learning
rates, annealing rate, cut-off epoch) turns K small launches into one K-times larger launch.

What, each in one place:

* the objective (Eq. 8 and Algorithm 1), :class:`_Objective`: encoder + noisy estimator on the decoder, KL,
  and with ``silent=True`` the linear SG decoder, the encoder's reconstruction gradient mixed as
  w_lin * grad(silent) + (1 - w_lin) * grad(noisy); a run whose encoder is frozen (from ``cutoff_epoch``),
  or whose linear decoder is unused (w_lin = 0), gets no KL / linear term;
* the AdamW step, :func:`adamw_update_`: torch.optim.AdamW's single-tensor arithmetic op by op, with each
  parameter group's learning rate (:meth:`~silentvae.training.run.RunConfig.group_lrs`: the schedule's rate of the
  epoch) and step count per run; frozen parameters are not touched (torch.optim.AdamW
  skips parameters without a gradient: no update, no weight decay, no step count);
* the epoch, :meth:`StackedRuns.train_epoch`: parameters stacked along a leading axis (one flat ``(K, P)``
  buffer, one view per parameter; buffers such as BatchNorm statistics as (K, ...) tensors), stepped with
  ``vmap(grad(functional_call(...)))`` (for K = 1 the objective's gradient by plain autograd, without
  ``vmap``, which would only cost time); while some runs' encoders are frozen (BatchNorm in eval mode) and others not, in two vmapped calls;
* the loop, :func:`train_stacked`: resume from ``last.pt``, validation, ``last.pt``, ``epoch_XXXX.pt``,
  ``metrics.json``, ``result.json``.

Each run keeps a :class:`silentvae.training.run.Run` (models, torch AdamW state, REINFORCE baseline, generator,
history) which the engine fills in at every epoch end: the files are those of a single run, and a
checkpoint resumes in a stack of any size.

Random numbers: each run draws from its own ``Run.generator`` (seeded by its seed, on the device), in
this order: ``randperm`` once per epoch, then per step the dequantisation noise (``torch.rand`` of the
batch's shape, as in :func:`~silentvae.training.data.dequantize`) and then the estimator's latent noise
(:data:`silentvae.posteriors.NOISE` of the latent kind, shape (B, d); none for ``sg``). The draws happen
outside ``vmap`` and enter the step as tensors, which the estimators take as ``noise=``. REINFORCE's running
baseline is a (K,) tensor with the estimator's update rule.

``tests/reference_trainer.py`` is the same training written as a plain eager loop, one run at a time;
``tests/test_stacked.py`` checks that the engine agrees with it to float round-off (not bit for bit: under
``vmap`` a convolution with K weight sets runs as one grouped convolution and a linear layer as one batched
matmul, whose summation order differs from the per-run kernels).

Inside an epoch nothing waits for the device: losses and the first non-finite step are accumulated on
the device and read once per epoch; everything that changes between runs within an epoch (w_lin,
freezing, step counts) is known on the host at the epoch's start and uploaded once. A run whose loss
becomes non-finite is dropped from the outputs (its files keep the last good epoch) while the others go
on; :func:`train_stacked` raises :class:`~silentvae.training.run.NonFiniteLossError` naming it at the end.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, stack_module_state, vmap

from ..algorithm1 import split_gradient
from .data import DataSplit, dequantize
from ..estimators import Reinforce, SilentGradient, make_estimator
from .io import load_checkpoint
from .run_files import LAST_CHECKPOINT, METRICS_FILE, RESULT_FILE
from ..posteriors import NOISE
from .run import (HEAD_INIT_IMAGES, NonFiniteLossError, Run, RunConfig, evaluate, kept_after_failure, load_splits,
                  resume_run, save_run, write_metrics)

__all__ = ["train", "StackedRuns", "train_stacked", "check_stackable", "adamw_update_", "bias_corrections",
           "pick_stack_size", "measure_peak_bytes", "auto_stack_size", "STACKABLE_KEYS"]

#: The only RunConfig fields that may differ between the runs of one stack.
STACKABLE_KEYS = ("seed", "lr", "lr_linear_mu", "lr_linear_alpha", "anneal_rate", "cutoff_epoch")


def check_stackable(configs: list[RunConfig]) -> None:
    """Raise ValueError unless ``configs`` can share one stack: equal but for :data:`STACKABLE_KEYS`."""
    if not configs:
        raise ValueError("need at least one run config to stack")
    first = configs[0].to_dict()
    for i, cfg in enumerate(configs[1:], start=1):
        d = cfg.to_dict()
        for key in first:
            if key not in STACKABLE_KEYS and d[key] != first[key]:
                raise ValueError(f"stacked runs may differ only in {STACKABLE_KEYS}, but key {key!r} differs: "
                                 f"config 0 has {first[key]!r}, config {i} has {d[key]!r}")


def bias_corrections(steps: list[list[int]], betas: tuple[float, float], device=None) -> tuple[Tensor, Tensor]:
    """AdamW's bias corrections (1 - b1^t, sqrt(1 - b2^t)) for step counts ``steps[s][k]`` (step s, run k),
    computed in Python doubles exactly as torch.optim.AdamW does; two float64 tensors of shape (S, K)."""
    beta1, beta2 = betas
    bc1 = [[1 - beta1 ** float(t) for t in row] for row in steps]
    bc2 = [[(1 - beta2 ** float(t)) ** 0.5 for t in row] for row in steps]
    return (torch.tensor(bc1, dtype=torch.float64, device=device),
            torch.tensor(bc2, dtype=torch.float64, device=device))


def adamw_update_(param: Tensor, grad_: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *,
                  step: int | tuple[Tensor, Tensor], lr: float | Tensor | list[float], betas: tuple[float, float],
                  weight_decay: float, eps: float = 1e-8, scratch: Tensor | None = None) -> None:
    """One AdamW step, in place, for K stacked runs with learning rates ``lr``: one float shared by the runs, or
    per run (K floats or a (K,) tensor).

    ``param``, ``grad_``, ``exp_avg``, ``exp_avg_sq`` are (K, ...). ``step`` is the 1-based step count
    shared by the runs, or per-run bias corrections ``(1 - b1^t_k, sqrt(1 - b2^t_k))`` as two (K,)
    float64 tensors (:func:`bias_corrections`). The arithmetic is torch.optim.AdamW's single-tensor path
    (``amsgrad=False``, ``maximize=False``), op by op:

        p *= 1 - lr wd;   m = lerp(m, g, 1 - b1);   v = b2 v + (1 - b2) g^2
        p += (-lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    The per-run scalars torch computes in double and rounds to the parameter dtype are computed here
    the same way (``lr`` is taken in float64, then cast), so on CPU the update with a shared ``step``
    matches torch.optim.AdamW to the last bit for equal inputs (pass ``lr`` as floats or a float64 tensor:
    a float32 ``lr`` is already rounded); with per-run corrections it matches to round-off. With a shared
    float ``lr`` and ``step`` the scalars are Python floats, as in torch, and no temporary is needed.
    ``scratch`` (shaped like ``param``): where the denominator is computed, instead of a fresh tensor; the same
    numbers, but a large parameter (the 10M-entry encoder head at the paper's sizes) does not allocate and
    fault in a new buffer every step (on a CPU that cost ~20% of a step).
    """
    if isinstance(lr, (list, tuple)):
        lr = torch.tensor(list(lr), dtype=torch.float64)
    beta1, beta2 = betas
    shape = (-1,) + (1,) * (param.dim() - 1)
    if isinstance(lr, Tensor):
        lr = lr.to(device=param.device, dtype=torch.float64).view(shape)
    if isinstance(step, tuple):
        bias_correction1: float | Tensor = step[0].view(shape)
        bias_correction2_sqrt: float | Tensor = step[1].view(shape).to(param.dtype)
    else:
        bias_correction1 = 1 - beta1 ** float(step)
        bias_correction2_sqrt = (1 - beta2 ** float(step)) ** 0.5
    if weight_decay != 0:
        param.mul_(_rounded(1 - lr * weight_decay, param.dtype))
    exp_avg.lerp_(grad_, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad_, grad_, value=1 - beta2)
    neg_step_size = -(lr / bias_correction1)
    denom = (exp_avg_sq.sqrt() if scratch is None else torch.sqrt(exp_avg_sq, out=scratch))
    denom.div_(bias_correction2_sqrt).add_(eps)
    # torch: param.addcdiv_(exp_avg, denom, value=-step_size), i.e. param + (value * exp_avg) / denom
    if isinstance(neg_step_size, Tensor):
        param.addcdiv_(exp_avg * neg_step_size.to(param.dtype), denom)
    else:
        param.addcdiv_(exp_avg, denom, value=neg_step_size)


def _rounded(x: float | Tensor, dtype: torch.dtype) -> float | Tensor:
    """A per-run float64 scalar tensor rounded to ``dtype``, as torch rounds a Python float scalar in a kernel."""
    return x.to(dtype) if isinstance(x, Tensor) else x


class _Objective(nn.Module):
    """One run's training objective (Eq. 8), with its random draws and per-run weights as input.

    ``forward(x, noise, baseline, w_lin, use_kl, use_lin)`` returns ``(objective, (objective, reported,
    linear, f_mean))``: ``objective = mean(neg_loglik) + [use_kl] mean(kl) + [use_lin] linear`` is what is
    differentiated, where the noisy estimator's ``neg_loglik`` reaches the encoder with weight 1 - w_lin and the
    linear SG decoder's loss ``linear`` with weight w_lin; ``reported = mean(neg_loglik + kl)`` is the logged
    training loss and ``f_mean`` the batch mean of -log p(x|z) (REINFORCE's baseline update; 0 otherwise).
    ``w_lin`` is None for runs without a linear decoder; ``use_kl`` / ``use_lin`` None mean True.
    ``compute_linear = False`` skips the linear decoder (no run uses it this epoch).
    """

    def __init__(self, models: nn.ModuleDict, cfg: RunConfig):
        super().__init__()
        self.encoder, self.decoder = models["encoder"], models["decoder"]
        self.linear = models["linear"] if "linear" in models else None  # names as in the ModuleDict
        self.estimator = make_estimator(cfg.estimator, temperature=cfg.temperature,
                                        reinforce_momentum=cfg.reinforce_momentum)
        self.silent_gradient = SilentGradient()
        self.compute_linear = self.linear is not None

    def forward(self, x: Tensor, noise: Tensor | None, baseline: Tensor | None, w_lin: Tensor | None,
                use_kl: Tensor | None, use_lin: Tensor | None):
        post = self.encoder(x)
        kl = post.kl()
        silent, noisy = (post, post) if w_lin is None else split_gradient(post, w_lin)  # Eq. 8's gradient mix
        f_mean = torch.zeros((), dtype=x.dtype, device=x.device)
        if isinstance(self.estimator, Reinforce):
            neg_loglik, f_mean = Reinforce.surrogate(noisy, self.decoder, x, baseline, noise=noise)
        else:
            neg_loglik = self.estimator.loss(noisy, self.decoder, x, noise=noise)
        kl_term = kl.mean() if use_kl is None else torch.where(use_kl, kl.mean(), 0.0)
        objective = neg_loglik.mean() + kl_term
        linear = torch.zeros((), dtype=x.dtype, device=x.device)
        if self.compute_linear:
            linear = self.silent_gradient.loss(silent, self.linear, x).mean()
            objective = objective + (linear if use_lin is None else torch.where(use_lin, linear, 0.0))
        reported = (neg_loglik.detach() + kl.detach()).mean()
        return objective, (objective.detach(), reported, linear.detach(), f_mean)


#: Optimizer segments: (name, parameter-name prefix, RunConfig field of its learning rate).
_SEGMENTS = (("encoder", "encoder.", "model"), ("decoder", "decoder.", "model"),
             ("linear_mu", "linear.mu.", "linear_mu"), ("linear_alpha", "linear.alpha.", "linear_alpha"))


@dataclass
class _Segment:
    """Consecutive parameters with one learning rate and one AdamW step count per run."""

    name: str
    cols: slice           # columns of the flat (K, P) buffer
    names: list[str]      # parameter names
    group: str            # its AdamW parameter group (RunConfig.group_lrs: the learning rate per run and epoch)
    steps: list[int]      # per run: optimizer steps taken so far

    def active(self, cfg: RunConfig, epoch: int) -> bool:
        """Whether this segment gets gradients in ``epoch``: the encoder until its cut-off, the linear SG
        decoder while w_lin > 0 (:meth:`RunConfig.linear_active`)."""
        if self.name == "encoder":
            return not cfg.encoder_frozen(epoch)
        if self.name == "decoder":
            return True
        return cfg.linear_active(epoch)


class StackedRuns:
    """K runs (equal configs but :data:`STACKABLE_KEYS`) trained together by one vmapped step.

    ``runs[k]`` is the :class:`~silentvae.training.run.Run` of ``configs[k]``: its models give the initial
    parameters, its generator all random numbers, and :meth:`sync_runs` writes the stacked state back
    into it (models, AdamW state, REINFORCE baseline). Call :meth:`load_from_runs` after changing the
    runs (e.g. ``run.load_state_dict`` for a resume).

    ``compile=True`` wraps the vmapped gradient in ``torch.compile``; a string is passed as its ``mode``
    (``"reduce-overhead"``: CUDA graphs). Optional and off by default: eager is what the tests check
    (compiled on CPU it agrees to round-off after a ~1 min first compile; not yet timed on a GPU). The
    AdamW update stays eager.
    """

    def __init__(self, configs: list[RunConfig], in_shape: tuple[int, ...], *, compile: bool | str = False,
                 init_images: Tensor | None = None):
        configs = [RunConfig.from_dict(c) if isinstance(c, dict) else c for c in configs]
        check_stackable(configs)
        self.configs, self.cfg, self.K = configs, configs[0], len(configs)
        self.device, self.dtype = torch.device(self.cfg.device), self.cfg.torch_dtype
        self.runs = [Run(cfg, tuple(in_shape), init_images) for cfg in configs]
        skeleton = copy.deepcopy(self.runs[0].models).to("meta")  # structure only, for functional_call
        self.objective = _Objective(skeleton, self.cfg)
        self.names = [n for n, _ in self.runs[0].models.named_parameters()]
        self.buffer_names = [n for n, _ in self.runs[0].models.named_buffers()]
        self.failed: dict[int, str] = {}
        self.compile = compile
        self._steps: dict[tuple, Callable] = {}  # in_dims -> vmap(grad(objective)), compiled if asked
        self.load_from_runs()

    # --- state -------------------------------------------------------------------------------------
    def load_from_runs(self) -> None:
        """(Re)build the stacked parameters, buffers, AdamW state, baseline and epoch from ``self.runs``."""
        stacked, buffers = stack_module_state([run.models for run in self.runs])
        shapes = {n: stacked[n].shape[1:] for n in self.names}
        self.columns, offset = {}, 0  # each parameter's columns of the flat buffer
        for n in self.names:
            self.columns[n] = slice(offset, offset + math.prod(shapes[n]))
            offset += math.prod(shapes[n])
        self.flat = torch.cat([stacked[n].detach().reshape(self.K, -1) for n in self.names], dim=1)
        self.params = self._views(self.flat, shapes)
        self.buffers = {n: buffers[n].detach().clone() for n in self.buffer_names}
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.flat), torch.zeros_like(self.flat)
        self.m_views, self.v_views = self._views(self.exp_avg, shapes), self._views(self.exp_avg_sq, shapes)
        self.scratch = torch.empty_like(self.flat)  # AdamW's denominators (adamw_update_'s scratch)
        self.scratch_views = self._views(self.scratch, shapes)
        epochs = {run.epoch for k, run in enumerate(self.runs) if k not in self.failed}
        if len(epochs) != 1:
            raise ValueError(f"stacked runs must be at the same epoch, got {sorted(epochs)}")
        self.epoch = epochs.pop()
        self.segments = self._make_segments(shapes)
        named_by_run = [dict(run.models.named_parameters()) for run in self.runs]
        for seg in self.segments:
            for k, (run, named) in enumerate(zip(self.runs, named_by_run)):
                steps = set()
                for n in seg.names:
                    st = run.optimizer.state.get(named[n])
                    steps.add(int(st["step"]) if st else 0)
                    if st:
                        self.m_views[n][k].copy_(st["exp_avg"])
                        self.v_views[n][k].copy_(st["exp_avg_sq"])
                if len(steps) != 1:
                    raise ValueError(f"the {seg.name} parameters of stacked run {k} have taken different numbers "
                                     f"of optimizer steps: {sorted(steps)}")
                seg.steps[k] = steps.pop()
        self.baseline = None
        if self.cfg.estimator == "reinforce" and self.runs[0].estimator.baseline is not None:
            self.baseline = torch.stack([run.estimator.baseline.to(self.device) for run in self.runs])

    def _make_segments(self, shapes: dict[str, torch.Size]) -> list[_Segment]:
        segments, offset = [], 0
        for name, prefix, group in _SEGMENTS:
            names = [n for n in self.names if n.startswith(prefix)]
            if not names:
                continue
            size = sum(math.prod(shapes[n]) for n in names)
            segments.append(_Segment(name, slice(offset, offset + size), names, group, [0] * self.K))
            offset += size
        if offset != self.flat.shape[1] or [n for s in segments for n in s.names] != self.names:
            raise ValueError(f"unexpected parameter layout {self.names[:3]}...: stacking needs the encoder / decoder "
                             f"/ linear ModuleDict of silentvae.training.run.build_models")
        return segments

    def _views(self, flat: Tensor, shapes: dict[str, torch.Size]) -> dict[str, Tensor]:
        return {n: flat[:, cols].view(self.K, *shapes[n]) for n, cols in self.columns.items()}

    @torch.no_grad()
    def sync_runs(self, optimizer_state: bool = True) -> None:
        """Copy the stacked state into each healthy ``runs[k]``: parameters, buffers, REINFORCE baseline and
        (unless ``optimizer_state=False``, which saves two parameter copies per run) AdamW state in torch's
        format (a parameter that never had a gradient has no state, as in torch)."""
        for k, run in enumerate(self.runs):
            if k in self.failed:
                continue
            named = dict(run.models.named_parameters())
            for seg in self.segments:
                for n in seg.names:
                    p = named[n]
                    p.copy_(self.params[n][k])
                    if optimizer_state and seg.steps[k] > 0:
                        run.optimizer.state[p] = {"step": torch.tensor(float(seg.steps[k])),
                                                  "exp_avg": self.m_views[n][k].clone(),
                                                  "exp_avg_sq": self.v_views[n][k].clone()}
            for n in self.buffer_names:
                run.models.get_buffer(n).copy_(self.buffers[n][k])
            if self.baseline is not None:
                run.estimator.baseline = self.baseline[k].clone()

    # --- the step ----------------------------------------------------------------------------------
    def _loss(self, params: dict[str, Tensor], buffers: dict[str, Tensor], *args):
        return functional_call(self.objective, (params, buffers), args)

    def _vmapped_grad(self, in_dims: tuple) -> Callable:
        """``vmap(grad(objective))`` over the runs; ``in_dims`` marks the absent (None) inputs. For a stack of
        one: the objective's gradient by plain autograd on the run's slices (:func:`_without_vmap`)."""
        key = in_dims + (self.objective.compute_linear, self.objective.encoder.training)
        if key not in self._steps:
            if self.K == 1:
                fn = _without_vmap(_autograd_grad(self._loss))
            else:
                fn = vmap(grad(self._loss, has_aux=True), in_dims=in_dims)
            if self.compile:
                fn = torch.compile(fn, mode=self.compile if isinstance(self.compile, str) else None)
            self._steps[key] = fn
        return self._steps[key]

    def _draw(self, images: Tensor, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        """Dequantised batches (K, b, C, H, W) and latent noise (K, b, d), each run from its own generator.

        Per run and in this order: ``dequantize``'s ``torch.rand``, then the
        estimator's draw (:data:`NOISE` of the latent kind). Same shapes, dtype and device, hence the same numbers.
        """
        x = images[idx]
        u = torch.empty_like(x)
        draw = None if self.cfg.estimator == "sg" else NOISE[self.cfg.latent]
        noise = None if draw is None else x.new_empty((self.K, x.shape[1], self.cfg.latent_dim))
        for k, run in enumerate(self.runs):
            torch.rand(x.shape[1:], generator=run.generator, out=u[k])
            if draw is not None:
                draw(noise.shape[1:], generator=run.generator, out=noise[k])
        return dequantize(x, noise=u), noise

    def _grads(self, args: tuple, partitions: list[tuple[Tensor | None, bool]]) -> tuple[Tensor | dict, tuple]:
        """Flat gradients (K, P) and the objective's aux outputs (each (K,)) for all runs; for a stack of one the
        gradients by parameter name, each (1, ...) (copying them into one flat tensor would cost as much time as
        the AdamW step).

        ``args`` = (x, noise, baseline, w_lin, use_kl, use_lin), each batched over runs or None;
        ``partitions`` = [(rows or None for all, encoder in training mode)]: one vmapped call per partition.
        """
        in_dims = (0, 0) + tuple(0 if isinstance(a, Tensor) else None for a in args)
        if len(partitions) == 1:
            self.objective.encoder.train(partitions[0][1])
            grads, aux = self._vmapped_grad(in_dims)(self.params, self.buffers, *args)
            if self.K == 1:
                return grads, aux
            return torch.cat([grads[n].reshape(self.K, -1) for n in self.names], dim=1), aux
        flat_grad = torch.empty_like(self.flat)
        aux_all = None
        for rows, training in partitions:
            self.objective.encoder.train(training)
            params = {n: p[rows] for n, p in self.params.items()}
            buffers = {n: b[rows] for n, b in self.buffers.items()}
            sub = tuple(a[rows] if isinstance(a, Tensor) else a for a in args)
            grads, aux = self._vmapped_grad(in_dims)(params, buffers, *sub)
            flat_grad[rows] = torch.cat([grads[n].reshape(len(rows), -1) for n in self.names], dim=1)
            for n, b in buffers.items():  # BatchNorm statistics updated in place on the gathered copies
                self.buffers[n][rows] = b
            if aux_all is None:
                aux_all = tuple(torch.empty((self.K,) + a.shape[1:], dtype=a.dtype, device=a.device) for a in aux)
            for dst, a in zip(aux_all, aux):
                dst[rows] = a
        return flat_grad, aux_all

    def _update_plan(self, epoch: int, num_steps: int) -> list[tuple]:
        """Per epoch: AdamW calls as (cols, rows or None, lr (shared float or (k,) tensor), shared base step or
        per-step corrections). Neighbouring segments with the same runs, learning rates and step counts share a call."""
        groups: list[list] = []
        for seg in self.segments:
            rows = [k for k, c in enumerate(self.configs) if seg.active(c, epoch) and k not in self.failed]
            if not rows:
                continue
            key = (rows, [self.configs[k].group_lrs(epoch)[seg.group] for k in rows], [seg.steps[k] for k in rows])
            if groups and groups[-1][0] == key and groups[-1][1].stop == seg.cols.start:
                groups[-1][1] = slice(groups[-1][1].start, seg.cols.stop)
            else:
                groups.append([key, seg.cols])
        plan = []
        for (rows, lrs, steps), cols in groups:
            idx = None if len(rows) == self.K else torch.tensor(rows, device=self.device)
            lr = lrs[0] if len(set(lrs)) == 1 else torch.tensor(lrs, dtype=torch.float64, device=self.device)
            if len(set(steps)) == 1:
                step: int | tuple[Tensor, Tensor] = steps[0]
            else:
                step = bias_corrections([[t + s + 1 for t in steps] for s in range(num_steps)], self.cfg.betas,
                                        self.device)
            plan.append((cols, idx, lr, step))
        return plan

    def _adamw(self, plan: list[tuple], grads: Tensor | dict[str, Tensor], s: int) -> None:
        """Step ``s`` of the epoch's ``plan`` with ``grads`` of :meth:`_grads`."""
        cfg = self.cfg
        for cols, idx, lr, step in plan:
            step_s = step + s + 1 if isinstance(step, int) else (step[0][s], step[1][s])
            opts = dict(step=step_s, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
            if isinstance(grads, dict):  # a stack of one: parameter by parameter, as torch.optim.AdamW
                for n, (p, m, v) in self._in_columns(cols):
                    adamw_update_(p, grads[n], m, v, **opts, scratch=self.scratch_views[n])
                continue
            flat_grad = grads
            if idx is None:
                adamw_update_(self.flat[:, cols], flat_grad[:, cols], self.exp_avg[:, cols],
                              self.exp_avg_sq[:, cols], **opts, scratch=self.scratch[:, cols])
            else:  # some runs sit this group out (frozen encoder, unused linear decoder): gather, update, scatter
                p, m, v = self.flat[idx, cols], self.exp_avg[idx, cols], self.exp_avg_sq[idx, cols]
                adamw_update_(p, flat_grad[idx, cols], m, v, **opts)
                self.flat[idx, cols], self.exp_avg[idx, cols], self.exp_avg_sq[idx, cols] = p, m, v

    def _in_columns(self, cols: slice) -> list[tuple[str, tuple[Tensor, Tensor, Tensor]]]:
        """(name, (parameter, exp_avg, exp_avg_sq)) of the parameters inside columns ``cols`` of the flat buffer."""
        return [(n, (self.params[n], self.m_views[n], self.v_views[n])) for n, c in self.columns.items()
                if cols.start <= c.start and c.stop <= cols.stop]

    def train_epoch(self, images: Tensor) -> list[dict[str, Any] | None]:
        """One epoch of every run over ``images`` (N, C, H, W) on the device; one host sync at the end.

        Returns one history row per run (``train_loss``, ``train_linear_loss``, ``w_lin``, ``encoder_frozen``); a run
        whose loss became non-finite this epoch gets ``None`` and an entry in ``self.failed``.
        """
        cfg, K, configs = self.cfg, self.K, self.configs
        epoch = self.epoch + 1
        n, dev = images.shape[0], images.device
        num_steps = math.ceil(n / cfg.batch_size)
        w_lin = [c.silent_weight(epoch) for c in configs]
        frozen = [c.encoder_frozen(epoch) for c in configs]
        use_lin = [c.linear_active(epoch) for c in configs]

        def flags(values: list[bool]) -> Tensor | None:  # None: true for every run
            return None if all(values) else torch.tensor(values, device=dev)

        has_linear = self.objective.linear is not None
        w_lin_t: Tensor | float | None = None  # a stack of one passes its float, as an eager loop would
        if has_linear:
            w_lin_t = w_lin[0] if K == 1 else torch.tensor(w_lin, dtype=self.dtype, device=dev)
        use_kl_t = flags([not f for f in frozen])
        use_lin_t = flags(use_lin) if has_linear else None
        self.objective.compute_linear = any(use_lin)
        if self.buffer_names and any(frozen) and not all(frozen):  # BatchNorm: eval mode for frozen encoders
            partitions = [(torch.tensor([k for k in range(K) if not frozen[k]], device=dev), True),
                          (torch.tensor([k for k in range(K) if frozen[k]], device=dev), False)]
        else:
            partitions = [(None, not all(frozen))]
        plan = self._update_plan(epoch, num_steps)

        perms = torch.stack([torch.randperm(n, generator=run.generator, device=dev) for run in self.runs])
        totals = torch.zeros(2, K, device=dev, dtype=torch.float64)  # reported loss, linear loss
        first_bad = torch.full((K,), -1, device=dev, dtype=torch.long)
        count = 0
        for step, start in enumerate(range(0, n, cfg.batch_size)):
            idx = perms[:, start:start + cfg.batch_size]
            x, noise = self._draw(images, idx)
            baseline = self.baseline
            grads, (obj, reported, linear, f_mean) = self._grads(
                (x, noise, baseline, w_lin_t, use_kl_t, use_lin_t), partitions)
            self._adamw(plan, grads, step)
            if isinstance(self.objective.estimator, Reinforce):
                self.baseline = self.objective.estimator.next_baseline(baseline, f_mean)
            first_bad = torch.where((~torch.isfinite(obj)) & (first_bad < 0), step, first_bad)
            b = idx.shape[1]
            totals += torch.stack([reported, linear]).double() * b
            count += b
        self.epoch = epoch
        for seg in self.segments:
            for k, c in enumerate(configs):
                if seg.active(c, epoch):
                    seg.steps[k] += num_steps
        (loss, lin_loss), bad = totals.tolist(), first_bad.tolist()  # the epoch's one host sync
        rows = []
        for k in range(K):
            if bad[k] >= 0 and k not in self.failed:
                run = f"stacked run {k} ({_describe(configs[k])})" if K > 1 else f"run {_describe(configs[k])}"
                self.failed[k] = (f"non-finite training loss at epoch {epoch}, step {bad[k]} (0-based) of {run}; "
                                  f"{kept_after_failure(epoch)}. Lower the learning rate or check the data.")
            rows.append(None if k in self.failed else
                        {"train_loss": loss[k] / count, "train_linear_loss": lin_loss[k] / count if use_lin[k] else None,
                         "w_lin": w_lin[k], "encoder_frozen": frozen[k]})
        return rows


def _autograd_grad(loss: Callable) -> Callable:
    """``torch.func.grad(loss, has_aux=True)`` computed by plain autograd, without the per-operation cost of a
    functorch transform (which shows on small models): gradients with respect to ``params`` (zeros where
    unused) and the aux outputs, detached."""

    def call(params: dict[str, Tensor], buffers: dict[str, Tensor], *args):
        leaves = {n: p.detach().requires_grad_() for n, p in params.items()}  # the same storage
        with torch.enable_grad():
            objective, aux = loss(leaves, buffers, *args)
        grads = torch.autograd.grad(objective, list(leaves.values()), allow_unused=True, materialize_grads=True)
        return dict(zip(leaves, grads)), tuple(a.detach() for a in aux)

    return call


def _without_vmap(step: Callable) -> Callable:
    """``step`` (the gradient of the objective) for a stack of one: called on run 0's slices of the stacked
    inputs, its outputs given back their leading run axis. Same result as ``vmap(step)`` over one run, at an
    eager loop's speed."""

    def first(a):
        return a[0] if isinstance(a, Tensor) else a

    def call(params: dict[str, Tensor], buffers: dict[str, Tensor], *args):
        grads, aux = step({n: p[0] for n, p in params.items()}, {n: b[0] for n, b in buffers.items()},
                          *(first(a) for a in args))
        return {n: g.unsqueeze(0) for n, g in grads.items()}, tuple(a.unsqueeze(0) for a in aux)

    return call


def _describe(c: RunConfig) -> str:
    text = f"{c.experiment}/{c.estimator}{'+sg' if c.silent else ''}/seed{c.seed}/lr{c.lr:g}"
    if c.silent:
        text += f"/anneal{c.anneal_rate:g}/cutoff{c.cutoff_epoch}"
    return text


def train_stacked(configs: list[RunConfig | dict], splits: tuple[DataSplit, DataSplit] | None = None,
                  epochs: int | None = None, *, out_dirs: list[str | Path] | None = None,
                  log: Callable[[str], None] = print, compile: bool | str = False,
                  stop_after: int | None = None) -> list[list[dict[str, Any]]]:
    """Train K runs (fixed or learnable) together up to epoch ``epochs`` (default ``cfg.epochs``); their histories.

    The trainer of every run: :func:`train` is ``train_stacked([cfg], out_dirs=[out])``. With
    ``out_dirs``, each run resumes from its ``last.pt`` (all at one epoch; a run left behind is caught up
    first) and writes after each epoch ``last.pt``, ``epoch_XXXX.pt`` (``checkpoint_epochs``) and ``metrics.json``,
    and ``result.json`` once finished. History rows: the epoch's training losses, ``w_lin``, ``encoder_frozen``,
    ``train_time`` (the stack's epoch time, shared by its runs), the validation metrics of :func:`evaluate` on
    the run's own models, and ``wall_time``. ``stop_after`` ends the call after that many epochs of this call.

    Raises ValueError if the configs differ in more than :data:`STACKABLE_KEYS`, and NonFiniteLossError at the end
    (after finishing and writing the other runs) if some run's loss became non-finite.
    """
    configs = [RunConfig.from_dict(c) if isinstance(c, dict) else c for c in configs]
    check_stackable(configs)
    cfg = configs[0]
    if torch.device(cfg.device).type == "cpu":
        _reuse_freed_memory()
    if out_dirs is not None and len(out_dirs) != len(configs):
        raise ValueError(f"got {len(out_dirs)} out_dirs for {len(configs)} configs")
    train_split, val_split = splits if splits is not None else load_splits(cfg)
    if cfg.batch_size > len(train_split):
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the training split ({len(train_split)} images "
                         f"of {train_split.name}); lower batch_size or raise train_limit")
    train_images = train_split.images.to(device=cfg.device, dtype=cfg.torch_dtype)
    val_images = val_split.images.to(device=cfg.device, dtype=cfg.torch_dtype)
    stack = StackedRuns(configs, tuple(train_images.shape[1:]), compile=compile,
                        init_images=train_images[:HEAD_INIT_IMAGES])
    outs = [Path(o) for o in out_dirs] if out_dirs is not None else None
    if outs is not None:
        for run, out in zip(stack.runs, outs):
            out.mkdir(parents=True, exist_ok=True)
            resume_run(run, out)
        _catch_up(stack, outs, (train_split, val_split), log)
        if any(run.epoch for run in stack.runs):
            stack.load_from_runs()
            log(f"resuming {outs[0]} after epoch {stack.epoch}" if stack.K == 1 else
                f"resuming {len(outs)} stacked runs after epoch {stack.epoch}")
    target = cfg.epochs if epochs is None else int(epochs)
    done_now = 0
    while stack.epoch < target and len(stack.failed) < stack.K and (stop_after is None or done_now < stop_after):
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
                save_run(run, outs[k])
        done_now += 1
        log(_epoch_line(stack, rows, target, time.perf_counter() - t0))
    if outs is not None:
        for k, (run, out) in enumerate(zip(stack.runs, outs)):
            finished = run.epoch >= run.cfg.epochs and not (out / RESULT_FILE).exists()
            if k not in stack.failed and (not (out / METRICS_FILE).exists() or finished):
                write_metrics(out, run.cfg, run.history)
    if stack.failed:
        raise NonFiniteLossError("; ".join(stack.failed.values()))
    return [run.history for run in stack.runs]


def train(cfg: RunConfig | dict, out_dir: str | Path, *, splits: tuple[DataSplit, DataSplit] | None = None,
          log: Callable[[str], None] = print, stop_after: int | None = None) -> list[dict[str, Any]]:
    """Train (or resume, or skip if finished) the run ``cfg`` in ``out_dir``; return its history.

    ``stop_after`` ends the call after that many epochs of this call (the run stays resumable). The run is a
    stack of one of :func:`train_stacked`; raises :class:`~silentvae.training.run.NonFiniteLossError` if its loss
    becomes non-finite.
    """
    (history,) = train_stacked([cfg], splits, out_dirs=[out_dir], log=log, stop_after=stop_after)
    return history


def _reuse_freed_memory() -> None:
    """On a CPU with glibc: serve every allocation from the heap and keep up to 1 GiB freed there (``mallopt``
    M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 1 GiB), for this process.

    glibc maps each block above 32 MB afresh with ``mmap`` and unmaps it when freed, so a tensor of that size
    allocated every step (the paper-size Gaussian encoder head's 25088 x 400 gradient, 40 MB) is page-faulted in
    anew every step: measured on a 2-core VM, ~35% of a Table 2 Gaussian step. The numbers computed are the same;
    elsewhere (no glibc) nothing changes."""
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 1 << 30)


def _epoch_line(stack: StackedRuns, rows: list[dict[str, Any] | None], target: int, seconds: float) -> str:
    """The log line of one epoch: a single run's metrics, or a stack's losses."""
    if stack.K == 1 and rows[0] is not None:
        row = stack.runs[0].history[-1]
        return (f"epoch {row['epoch']:4d}/{target}  loss {row['train_loss']:.3f}  val bpd {row['val_bpd']:.4f}  "
                f"mse {row['val_mse']:.3f}  kld {row['val_kld']:.2f}  w_lin {row['w_lin']:.3f}  {seconds:.1f}s")
    losses = " ".join(f"{r['train_loss']:.3f}" for r in rows if r is not None)
    return (f"stack of {stack.K} epoch {stack.epoch:4d}/{target}  losses {losses}  failed {len(stack.failed)}  "
            f"{seconds:.1f}s")


def _catch_up(stack: StackedRuns, outs: list[Path], splits: tuple[DataSplit, DataSplit], log) -> None:
    """Bring runs that are behind the others (a kill between two runs' saves of one epoch) to the same epoch
    with :func:`train`; a run that fails on the way is marked failed in the stack."""
    ahead = max(run.epoch for run in stack.runs)
    for k, (run, out) in enumerate(zip(stack.runs, outs)):
        if run.epoch < ahead:
            log(f"stacked run {k} is at epoch {run.epoch}, the others at {ahead}: catching it up alone")
            try:
                train(run.cfg, out, splits=splits, log=log, stop_after=ahead - run.epoch)
            except NonFiniteLossError as e:
                stack.failed[k] = str(e)
            if (out / LAST_CHECKPOINT).exists():
                run.load_state_dict(load_checkpoint(out / LAST_CHECKPOINT, run.cfg.device))


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
    data set of ``steps`` batches; ``None`` on a non-CUDA device. Per-run cost: measure K = 2 and K = 3
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


def auto_stack_size(configs: list[RunConfig], in_shape: tuple[int, ...], reserved_bytes: int = 0,
                    log: Callable[[str], None] = print, jobs_per_gpu: int = 1) -> int:
    """How many of ``configs`` to train per stack on their device: all of them on a CPU; on a GPU as many as fit
    in 80% of its free memory / ``jobs_per_gpu`` (jobs sharing the device) less ``reserved_bytes`` (the data
    set), from the measured peak memory of stacks of two and three runs (:func:`measure_peak_bytes`: per-run
    cost = the difference). At least 1."""
    n = len(configs)
    device = torch.device(configs[0].device)
    if device.type != "cuda" or n == 1:
        return n
    # Per-run cost between two vmapped stacks (a stack of one skips vmap and needs less memory, so K = 1 vs 2
    # would overstate it); with only two runs, K = 1 vs 2 (an overestimate: safe).
    small, large = (2, 3) if n >= 3 else (1, 2)
    peak_small = measure_peak_bytes(configs[:small], in_shape)
    peak_large = measure_peak_bytes(configs[:large], in_shape)
    per_run = max(peak_large - peak_small, 1)
    shared = max(peak_small - small * per_run, 0)
    free = torch.cuda.mem_get_info(device)[0] // max(1, int(jobs_per_gpu))
    k = max(1, min(n, pick_stack_size(per_run, max(free - reserved_bytes - shared, 0))))
    mib = 2 ** 20
    log(f"stack size {k} of {n} runs: {per_run / mib:.1f} MiB per run + {shared / mib:.1f} MiB shared, "
        f"{free / mib:.0f} MiB free for this job, {reserved_bytes / mib:.0f} MiB data")
    return k
