#!/usr/bin/env python
"""CPU ms per step (process CPU time, 1 thread, paper sizes, 6 steps after a 2-step warm-up) of the eager
reference loop and the engine (K = 1) for Table 2 methods, alternating eager / engine twice, in a process with
glibc's default allocator ("default") or with the setting silentvae.training.engine.train_stacked makes for CPU jobs
("heap": silentvae.training.engine._reuse_freed_memory). Run it once per mode: the setting is per process.

    OMP_NUM_THREADS=1 python benchmarks/bench_allocator.py sg_gaussian,reparam,sg_bernoulli,gumbel,reinforce default
    OMP_NUM_THREADS=1 python benchmarks/bench_allocator.py sg_gaussian,reparam,sg_bernoulli,gumbel,reinforce heap
"""
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from silentvae.training.engine import StackedRuns, _reuse_freed_memory  # noqa: E402
from silentvae.training.methods import FIXED_METHODS  # noqa: E402
from silentvae.training.run import Run, RunConfig  # noqa: E402
from reference_trainer import train_epoch as eager_epoch  # noqa: E402

if sys.argv[2] == "heap":
    _reuse_freed_memory()
torch.set_num_threads(1)
images = torch.rand(64 * 8, 1, 28, 28)
for method in sys.argv[1].split(","):
    cfg = RunConfig(channels=32, latent_dim=200, batch_size=64, **FIXED_METHODS[method].run_fields(),
                    experiment="fixed", device="cpu", lr=1e-4)
    out = []
    for name in ("eager", "engine", "eager", "engine"):
        if name == "eager":
            run = Run(cfg, (1, 28, 28))
            fn = lambda x: eager_epoch(run, x)  # noqa: E731
        else:
            fn = StackedRuns([cfg], (1, 28, 28)).train_epoch
        fn(images[:128])
        c0 = time.process_time()
        fn(images[128:512])
        out.append((name, (time.process_time() - c0) / 6 * 1e3))
    print(sys.argv[2], method, " ".join(f"{n} {t:.0f}" for n, t in out), flush=True)
