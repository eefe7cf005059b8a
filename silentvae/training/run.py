r"""Runs of the paper's experiments, fixed by (config, seed), resumable after a kill: what one run is
(:class:`RunConfig`, its models, optimizer, random numbers and history), its validation (:func:`evaluate`) and
its files (``last.pt``, ``metrics.json``; :func:`load_run`). The training engine :mod:`silentvae.training.engine` (the
objective, AdamW step and epoch loop; its :func:`~silentvae.training.engine.train` trains one run as a stack of one)
builds on this module, which imports nothing of it. ``tests/reference_trainer.py`` keeps the same training as
a plain eager loop, which the tests compare the engine against.

* ``experiment="fixed"`` (Section 3.2): encoder + :class:`LinearDecoder` (sigma2 fixed), trained by one
  estimator: ``sg`` (Silent Gradients), ``reparam`` (Gaussian), ``gumbel`` / ``reinforce`` (Bernoulli).
* ``experiment="learnable"`` (Section 4.2, Algorithm 1): encoder + nonlinear conv decoder trained by a
  noisy estimator (``reparam`` / ``gumbel`` / ``reinforce``); with ``silent=True`` a
  :class:`LinearPrecisionDecoder` is trained beside it and the encoder's reconstruction gradient is

      grad_phi = w_lin * grad_phi(silent) + (1 - w_lin) * grad_phi(noisy),  w_lin = max(0, 1 - epoch * lambda)

  (the mixture is Eq. 8, the w_lin schedule Algorithm 1, line 11; epochs count from 1), plus the KL gradient;
  from ``cutoff_epoch`` on the encoder is frozen.
  ``estimator="none"`` with ``silent=True`` is "None + SG": the encoder learns only from the silent
  gradient (w_lin = 1) and the nonlinear decoder trains on its samples.

Each decoder trains on its own full loss. This departs from Algorithm 1, line 13, which weights the two losses
(L_recon = w_lin L_lin + w_nl L_nl) before one gradient step: taken literally that would also scale each decoder's
own gradient by its weight, and give "None + SG"'s nonlinear decoder (w_nl = 0) no gradient at all. The README's
"Choices the paper leaves open" lists this with the others. The linear decoder's mu and alpha parts have their own
learning rates (``lr_linear_mu``, ``lr_linear_alpha``) as AdamW parameter groups, which is the same
update as separate optimizers.

Outputs in ``out_dir`` (all written atomically): ``metrics.json`` (config + per-epoch history, every
epoch), ``result.json`` (the same, written only when the run has finished),
``last.pt`` (resume point, every epoch) and ``epoch_XXXX.pt`` for ``checkpoint_epochs``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import algorithm1
from ..analytic import expected_sq_error_fixed
from .data import DATASETS, IMAGE_SHAPES, TRAIN_IMAGES, DataSplit, dequantize, load_dataset
from ..estimators import make_estimator
from .io import atomic_torch_save, atomic_write_json, load_checkpoint
from .run_files import LAST_CHECKPOINT, METRICS_FILE, RESULT_FILE, checkpoint_name
from .methods import DEFAULT_INIT, INITS, METHODS
from ..metrics import bits_per_dim, sum_squared_error
from ..models import (CifarConvDecoder, CifarEncoder, LinearDecoder, LinearPrecisionDecoder, MnistConvDecoder,
                     MnistEncoder)

__all__ = ["RunConfig", "NonFiniteLossError", "Run", "build_models", "build_optimizer", "load_splits", "evaluate",
           "load_run", "checkpoint_name", "check_same_config", "resume_run", "save_run", "write_metrics",
           "HEAD_INIT_IMAGES"]

EXPERIMENTS = ("fixed", "learnable")
#: RunConfig.lr_schedule: a constant learning rate (the paper's), or cosine annealing over the run's epochs
LR_SCHEDULES = ("constant", "cosine")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf; ``last.pt`` keeps the last finite epoch (none if the first one failed)."""


def kept_after_failure(epoch: int) -> str:
    """What a run whose loss became non-finite in 1-based ``epoch`` still has on disk (for error messages)."""
    if epoch <= 1:
        return "nothing was saved (it failed in its first epoch; a rerun starts from scratch)"
    return f"its {LAST_CHECKPOINT} keeps epoch {epoch - 1}, the last finite one"


@dataclass
class RunConfig:
    """Everything that fixes one training run (with ``seed``). Defaults follow Appendix B."""

    experiment: str = "fixed"
    dataset: str = "mnist5k"
    latent: str = "gaussian"
    estimator: str = "sg"
    silent: bool = False
    latent_dim: int = 200
    channels: int = 32
    sigma2: float = 0.01
    lr: float = 1e-4
    lr_schedule: str = "constant"
    lr_linear_mu: float | None = None
    lr_linear_alpha: float | None = None
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.01
    batch_size: int = 64
    epochs: int = 500
    anneal_rate: float = 0.0
    cutoff_epoch: int | None = None
    temperature: float = 0.5
    reinforce_momentum: float = 0.99
    eval_samples: int = 1
    eval_batch_size: int = 500
    checkpoint_epochs: list[int] = field(default_factory=list)
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    data_root: str | None = None
    download: bool = False
    train_limit: int | None = None
    val_limit: int | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    init: str = DEFAULT_INIT

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, _typed(f.name, getattr(self, f.name), _field_types()[f.name]))
        self.checkpoint_epochs = sorted(self.checkpoint_epochs)
        if self.experiment not in EXPERIMENTS:
            raise ValueError(f"experiment must be one of {EXPERIMENTS}, got {self.experiment!r}")
        allowed = tuple(dict.fromkeys(m.estimator for m in METHODS[self.experiment].values()))
        if self.estimator not in allowed:
            raise ValueError(f"estimator for experiment={self.experiment!r} must be one of {allowed}, "
                             f"got {self.estimator!r}")
        if self.estimator == "reparam" and self.latent != "gaussian":
            raise ValueError("estimator='reparam' needs latent='gaussian'")
        if self.estimator == "gumbel" and self.latent != "bernoulli":
            raise ValueError("estimator='gumbel' needs latent='bernoulli'")
        if self.experiment == "fixed" and self.silent:
            raise ValueError("silent=True is for experiment='learnable' (the fixed experiment uses estimator='sg')")
        if self.estimator == "none" and not self.silent:
            raise ValueError("estimator='none' trains the encoder from nothing; set silent=True ('None + SG')")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for name in ("latent_dim", "channels", "batch_size", "epochs", "eval_samples", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.estimator == "reinforce" and self.latent != "bernoulli":
            raise ValueError("estimator='reinforce' needs latent='bernoulli' (no method of the paper uses REINFORCE "
                             "with Gaussian latents; for those use estimator='reparam')")
        for name in ("lr", "sigma2", "temperature", "lr_linear_mu", "lr_linear_alpha"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        for name in ("train_limit", "val_limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None (the whole split), got {getattr(self, name)!r}")
        if not self.anneal_rate >= 0:
            raise ValueError(f"anneal_rate must be >= 0, got {self.anneal_rate}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1) (a training and a validation split), "
                             f"got {self.val_fraction!r}")
        if self.cutoff_epoch is not None and self.cutoff_epoch < 1:
            raise ValueError(f"cutoff_epoch must be >= 1 (the encoder is frozen from that epoch on; None never "
                             f"freezes it), got {self.cutoff_epoch}")
        method = f"{self.experiment} {self.estimator}{' + SG' if self.silent else ''}"
        if not self.silent and (self.cutoff_epoch is not None or self.anneal_rate != 0):
            field_, value = ("cutoff_epoch", self.cutoff_epoch) if self.cutoff_epoch is not None else \
                ("anneal_rate", self.anneal_rate)
            raise ValueError(f"{field_}={value!r} on {method}, a run without SG: Algorithm 1's annealing rate and "
                             f"cut-off apply only with silent=True; remove {field_}")
        if self.estimator == "none" and self.anneal_rate != 0:
            raise ValueError(f"anneal_rate={self.anneal_rate!r} on {method} ('None + SG'): its encoder learns from "
                             f"the silent gradient alone (w_lin = 1), nothing is annealed; remove anneal_rate")
        outside = [e for e in self.checkpoint_epochs if not 1 <= e <= self.epochs]
        if outside:
            raise ValueError(f"checkpoint_epochs {outside} are outside 1..epochs={self.epochs}: such a checkpoint "
                             f"is never saved; keep checkpoint_epochs within 1..{self.epochs}")
        train_size = self.train_size()
        if self.batch_size > train_size:
            raise ValueError(f"batch_size={self.batch_size} is larger than the training split ({train_size} images "
                             f"of {self.dataset}{f', train_limit={self.train_limit}' if self.train_limit else ''}); "
                             f"lower batch_size or raise train_limit")

    def train_size(self) -> int:
        """The training split's size, from the official training set's (:data:`TRAIN_IMAGES`), ``val_fraction``
        and ``train_limit``; exact to the per-class rounding of the split (``load_splits`` gives the exact one)."""
        size = round(TRAIN_IMAGES[self.dataset] * (1 - self.val_fraction))
        return min(size, self.train_limit) if self.train_limit is not None else size

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown run config key(s) {unknown}; allowed: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def silent_weight(self, epoch: int) -> float:
        """w_lin of Algorithm 1 at 1-based ``epoch`` (1 for "None + SG", 0 without SG)."""
        if not self.silent:
            return 0.0
        if self.estimator == "none":
            return 1.0
        return algorithm1.silent_weight(epoch, self.anneal_rate)

    def lr_factor(self, epoch: int) -> float:
        """The learning rates' multiplier in 1-based ``epoch`` (every parameter group, every step of the epoch):
        1 for ``lr_schedule="constant"``; ``"cosine"``: (1 + cos(pi (epoch - 1) / epochs)) / 2, from 1 in epoch 1
        down to (1 + cos(pi (E - 1) / E)) / 2 > 0 in the last epoch E (cosine annealing, stepped per epoch)."""
        if self.lr_schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs))

    def group_lrs(self, epoch: int) -> dict[str, float]:
        """Each AdamW parameter group's learning rate in 1-based ``epoch`` (:func:`build_optimizer`'s groups)."""
        factor = self.lr_factor(epoch)
        return {"model": self.lr * factor, "linear_mu": (self.lr_linear_mu or self.lr) * factor,
                "linear_alpha": (self.lr_linear_alpha or self.lr) * factor}

    def encoder_frozen(self, epoch: int) -> bool:
        """Whether the encoder is frozen in 1-based ``epoch`` (from ``cutoff_epoch`` on)."""
        return algorithm1.encoder_frozen(epoch, self.cutoff_epoch)

    def linear_active(self, epoch: int) -> bool:
        """Whether the linear SG decoder trains (and feeds the encoder) in ``epoch``: w_lin > 0, not frozen."""
        return self.silent and self.silent_weight(epoch) > 0 and not self.encoder_frozen(epoch)


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(RunConfig)


def _typed(name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the annotation ``hint`` of RunConfig field ``name``: an int is accepted (and
    converted) for a float, a list for a tuple; a bool is no number, a string no number. ValueError otherwise."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if optional:
        if value is None:
            return None
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if origin is list and isinstance(value, (list, tuple)):
        return [_typed(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is tuple and isinstance(value, (list, tuple)) and len(value) == len(args):
        return tuple(_typed(f"{name}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, args)))
    if hint is float and number:
        if not math.isfinite(value):
            raise ValueError(f"run config key {name!r} must be a finite number, got {value!r}")
        return float(value)
    if hint is int and number and isinstance(value, numbers.Integral):
        return int(value)
    if hint in (bool, str) and isinstance(value, hint):
        return value
    want = (hint.__name__ if origin is None else str(hint)) + (" or None" if optional else "")
    raise ValueError(f"run config key {name!r} must be {want}, got {value!r} ({type(value).__name__})")


#: How many training images (the split's first, no noise) set the encoder head's data-dependent init.
HEAD_INIT_IMAGES = 512


def build_models(cfg: RunConfig, in_shape: tuple[int, ...], init_images: Tensor | None = None) -> nn.ModuleDict:
    """encoder, decoder (the model that is evaluated) and, with silent=True, the linear SG decoder.

    ``cfg.init`` (:data:`INITS`) picks the linear decoders' initial weight (0, or nn.Linear's default for
    "pytorch") and whether ``init_images`` (training runs pass the first :data:`HEAD_INIT_IMAGES` training
    images) set the encoder head's data-dependent init (:meth:`silentvae.models.MnistEncoder.standardize_head_`,
    "zero_decoder_head" only); None keeps the default init (enough wherever the weights are loaded next).
    """
    torch.manual_seed(cfg.seed)
    mnist_like = IMAGE_SHAPES[cfg.dataset][1:] == (28, 28)   # Tables 5-6 models; else Tables 7-8
    enc_cls, dec_cls = (MnistEncoder, MnistConvDecoder) if mnist_like else (CifarEncoder, CifarConvDecoder)
    zero = cfg.init != "pytorch"
    models = nn.ModuleDict({"encoder": enc_cls(in_shape, cfg.channels, cfg.latent_dim, cfg.latent)})
    if cfg.experiment == "fixed":
        models["decoder"] = LinearDecoder(cfg.latent_dim, in_shape, cfg.sigma2, zero_init=zero)
    else:
        models["decoder"] = dec_cls(cfg.latent_dim, in_shape, cfg.channels)
        if cfg.silent:
            models["linear"] = LinearPrecisionDecoder(cfg.latent_dim, in_shape, zero_init=zero)
    models = models.to(device=cfg.device, dtype=cfg.torch_dtype)
    if init_images is not None and cfg.init == "zero_decoder_head":
        models["encoder"].standardize_head_(init_images.to(device=cfg.device, dtype=cfg.torch_dtype))
    return models


def build_optimizer(cfg: RunConfig, models: nn.ModuleDict) -> torch.optim.Optimizer:
    """AdamW with parameter groups "model" (encoder + decoder), "linear_mu", "linear_alpha" at their base learning
    rates; a schedule (:meth:`RunConfig.group_lrs`) sets each group's rate per epoch."""
    groups = [{"name": "model", "lr": cfg.lr,
               "params": list(models["encoder"].parameters()) + list(models["decoder"].parameters())}]
    if "linear" in models:
        lin = models["linear"]
        groups.append({"name": "linear_mu", "lr": cfg.lr_linear_mu or cfg.lr, "params": list(lin.mu.parameters())})
        groups.append({"name": "linear_alpha", "lr": cfg.lr_linear_alpha or cfg.lr,
                       "params": list(lin.alpha.parameters())})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def load_splits(cfg: RunConfig) -> tuple[DataSplit, DataSplit]:
    common = dict(root=cfg.data_root, val_fraction=cfg.val_fraction, download=cfg.download, seed=cfg.split_seed)
    return (load_dataset(cfg.dataset, split="train", limit=cfg.train_limit, **common),
            load_dataset(cfg.dataset, split="val", limit=cfg.val_limit, **common))


class Run:
    """One training run's state, as ``last.pt`` holds it: models, optimizer (torch's AdamW state format),
    estimator (REINFORCE's baseline), random-number generator, history. :mod:`silentvae.training.engine` trains it."""

    def __init__(self, cfg: RunConfig, in_shape: tuple[int, ...], init_images: Tensor | None = None):
        self.cfg = cfg
        self.models = build_models(cfg, in_shape, init_images)
        self.optimizer = build_optimizer(cfg, self.models)
        self.estimator = make_estimator(cfg.estimator, temperature=cfg.temperature,
                                        reinforce_momentum=cfg.reinforce_momentum)
        self.generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
        self.history: list[dict[str, Any]] = []

    @property
    def epoch(self) -> int:
        return len(self.history)

    def state_dict(self) -> dict[str, Any]:
        est = self.estimator.state_dict() if hasattr(self.estimator, "state_dict") else {}
        return {"config": self.cfg.to_dict(), "models": self.models.state_dict(),
                "optimizer": self.optimizer.state_dict(), "estimator": est,
                "generator": self.generator.get_state(), "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.models.load_state_dict(state["models"])
        self.optimizer.load_state_dict(state["optimizer"])
        if hasattr(self.estimator, "load_state_dict"):
            self.estimator.load_state_dict(state["estimator"], device=self.cfg.device)
        self.generator.set_state(state["generator"].cpu())  # RNG states are CPU ByteTensors, even for a CUDA generator
        self.history = list(state["history"])


@torch.no_grad()
def evaluate(models: nn.ModuleDict, cfg: RunConfig, images: Tensor, seed: int | None = None) -> dict[str, float]:
    """Validation metrics, per image: BPD (Appendix B.1 bound), ELBO, MSE, expected squared error, KLD.

    * ``val_mse`` -- what the paper's Tables 2 and 9 report: the squared error of the reconstruction at the
      posterior mean, ||x - mean(E_q[z])||^2 (= ||x - W E[z] - b||^2 for the linear decoder; for the conv
      decoders their mean image at z = E[z], which for Bernoulli latents is the vector of probabilities). The
      paper's own numbers rule out the expected error there: with BPD 6.900 and sigma^2 = 0.01, an *expected*
      squared error of 6.103 (discrete SG, Table 2) would need a KL of 181.9 nats > 200 ln 2.
    * ``val_expected_sq_error`` -- E_q ||x - mean(z)||^2: exact for the fixed-variance linear decoder
      (= val_mse + sum_i ||w_i||^2 Var(z_i)), else averaged over ``cfg.eval_samples`` latent draws.

    Pixels are dequantised with noise fixed by ``seed`` (the same every call). For a linear decoder with
    fixed variance the ELBO is exact (closed form); otherwise it averages ``cfg.eval_samples`` latent draws
    (hard samples for Bernoulli latents).
    """
    was_training = models.training
    models.eval()
    gen = torch.Generator(device=images.device).manual_seed(cfg.seed + 1_000_003 if seed is None else seed)
    enc, dec = models["encoder"], models["decoder"]
    sums = torch.zeros(4, device=images.device, dtype=torch.float64)
    for chunk in images.split(cfg.eval_batch_size):
        x = dequantize(chunk, gen)
        post = enc(x)
        kl = post.kl()
        if isinstance(dec, LinearDecoder):
            loglik = dec.expected_loglik(x, post)
            sq_error = expected_sq_error_fixed(x, post.moments(), dec.linear.weight, dec.linear.bias).sum(-1)
        else:
            loglik = torch.zeros_like(kl)
            sq_error = torch.zeros_like(kl)
            for _ in range(cfg.eval_samples):
                z = post.sample(gen)
                loglik += dec.loglik(x, z) / cfg.eval_samples
                sq_error += sum_squared_error(x, dec.mean(z)) / cfg.eval_samples
        at_mean = sum_squared_error(x, dec.mean(post.mean))
        sums += torch.stack([(loglik - kl).sum().double(), at_mean.sum().double(), sq_error.sum().double(),
                             kl.sum().double()])
    models.train(was_training)
    elbo, mse, sq_error, kl = (sums / images.shape[0]).tolist()
    return {"val_bpd": bits_per_dim(elbo, images[0].numel()), "val_elbo": elbo, "val_mse": mse,
            "val_expected_sq_error": sq_error, "val_kld": kl}


def resume_run(run: Run, out: Path) -> bool:
    """Load ``out/last.pt`` into ``run`` if it exists (refusing a different config, :func:`check_same_config`)."""
    last = out / LAST_CHECKPOINT
    if not last.exists():
        return False
    state = load_checkpoint(last, run.cfg.device)
    check_same_config(state["config"], run.cfg, last, len(state["history"]))
    run.load_state_dict(state)
    return True


def save_run(run: Run, out: Path) -> None:
    """After an epoch: ``last.pt``, ``epoch_XXXX.pt`` if that epoch is in ``checkpoint_epochs``, ``metrics.json``."""
    state = run.state_dict()
    atomic_torch_save(state, out / LAST_CHECKPOINT)
    if run.epoch in run.cfg.checkpoint_epochs:
        atomic_torch_save(state, out / checkpoint_name(run.epoch))
    write_metrics(out, run.cfg, run.history)


def write_metrics(out: Path, cfg: RunConfig, history: list[dict[str, Any]]) -> None:
    """``metrics.json`` after every epoch; ``result.json`` (same content) only once the run is finished."""
    finished = len(history) >= cfg.epochs
    payload = {"config": cfg.to_dict(), "history": history, "finished": finished}
    atomic_write_json(out / METRICS_FILE, payload)
    if finished:
        atomic_write_json(out / RESULT_FILE, payload)


#: RunConfig keys that say where a run executes and what it saves on the way, not what it trains
NOT_THE_RUN = ("device", "data_root", "download", "checkpoint_epochs")


def config_changes(saved: dict[str, Any], cfg: RunConfig, ignore: tuple[str, ...] = NOT_THE_RUN) -> list[str]:
    """``"key: saved -> new"`` for each key, but ``ignore``, where ``cfg`` differs from a stored config (a
    checkpoint's or a result.json's; keys added to RunConfig since it was saved read at their defaults)."""
    stored = {**RunConfig().to_dict(), **saved}
    return [f"{k}: {stored[k]!r} -> {v!r}" for k, v in sorted(cfg.to_dict().items())
            if k not in ignore and stored[k] != v]


def check_same_config(saved: dict[str, Any], cfg: RunConfig, path: Path, done_epochs: int = 0) -> None:
    """Refuse to resume ``path`` (``done_epochs`` trained) with a config that changes the run. Device, data
    location and checkpoint epochs may differ; ``epochs`` may grow (the run continues), never drop below the
    epochs already trained (the history would keep the longer run)."""
    diff = config_changes(saved, cfg, NOT_THE_RUN + ("epochs",))
    if diff:
        changes = ", ".join(diff)
        raise ValueError(f"{path} was written by a different config ({changes}); delete {path.parent} to train "
                         f"it again with the new config, or use a new results folder")
    saved_epochs = saved.get("epochs", cfg.epochs)
    if cfg.lr_schedule != "constant" and done_epochs and saved_epochs != cfg.epochs:
        raise ValueError(f"{path} was trained with lr_schedule={cfg.lr_schedule!r} over epochs={saved_epochs}; "
                         f"the schedule decays over the epochs, so epochs={cfg.epochs} would change the epochs "
                         f"already trained: set epochs back to {saved_epochs}, or delete {path.parent} to train it "
                         f"again")
    if done_epochs > cfg.epochs:
        raise ValueError(f"{path} has trained {done_epochs} epochs, more than the config's epochs={cfg.epochs}; "
                         f"delete {path.parent} to train it again with {cfg.epochs} epochs, or set epochs back "
                         f"to {saved.get('epochs')}")


def load_run(path: str | Path, device: str = "cpu") -> tuple[RunConfig, nn.ModuleDict, list[dict[str, Any]]]:
    """Load a checkpoint (``last.pt`` or ``epoch_XXXX.pt``): its config, models (eval mode) and history."""
    state = load_checkpoint(path, device)
    cfg = RunConfig.from_dict({**state["config"], "device": device})
    shape = _in_shape_from_state(state["models"], cfg)
    models = build_models(cfg, shape)
    models.load_state_dict(state["models"])
    models.eval()
    return cfg, models, state["history"]


def _in_shape_from_state(models_state: dict[str, Tensor], cfg: RunConfig) -> tuple[int, int, int]:
    """The image shape the saved encoder was built for: the dataset's (its first convolution's input channels
    are checked against it)."""
    shape = IMAGE_SHAPES[cfg.dataset]
    channels = models_state["encoder.features.0.weight"].shape[1]
    if channels != shape[0]:
        raise ValueError(f"checkpoint's encoder takes {channels}-channel images, {cfg.dataset} has {shape[0]}")
    return shape
