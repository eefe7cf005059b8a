"""The compiled stacked step (``torch.compile``, the path ``compile: reduce-overhead`` takes on a GPU) trains
the same runs as the eager step. On the CPU, inductor compiles it to C++ (about a minute the first time)."""

import pytest
import torch

from silentvae.training.data import DataSplit
from silentvae.training.engine import train_stacked

pytestmark = pytest.mark.slow


def _splits(n=96):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g).float() / 256
    labels = torch.arange(n) % 10
    return DataSplit(images[:64], labels[:64], "synthetic/train"), DataSplit(images[64:], labels[64:], "synthetic/val")


def test_compiled_stacked_step_equals_eager(tmp_path):
    # REINFORCE: latent noise and the running baseline enter the compiled step as tensors.
    cfgs = [{"experiment": "fixed", "latent": "bernoulli", "estimator": "reinforce", "epochs": 2, "latent_dim": 4,
             "channels": 2, "batch_size": 32, "seed": seed, "lr": lr} for seed, lr in ((0, 1e-3), (1, 5e-4))]
    eager = train_stacked(cfgs, _splits(), out_dirs=[tmp_path / f"eager{k}" for k in range(2)], log=lambda *_: None)
    compiled = train_stacked(cfgs, _splits(), out_dirs=[tmp_path / f"compiled{k}" for k in range(2)],
                             log=lambda *_: None, compile=True)
    for k, (a, b) in enumerate(zip(eager, compiled)):
        for key in ("train_loss", "val_bpd", "val_kld"):
            assert [r[key] for r in b] == pytest.approx([r[key] for r in a], rel=1e-5), (k, key)
        wa = torch.load(tmp_path / f"eager{k}" / "last.pt", weights_only=True)["models"]
        wb = torch.load(tmp_path / f"compiled{k}" / "last.pt", weights_only=True)["models"]
        for name in wa:
            torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-6, msg=f"run {k} {name}")


def test_pipeline_compile_trains_a_single_run_with_the_compiled_stacked_step(tmp_path):
    """`compile` in the config: train_runs sends even a one-run job through the stacked engine's compiled step,
    and the run equals the uncompiled single-run trainer's (a stack of one without vmap)."""
    from silentvae.pipeline.jobs import train_runs
    from silentvae.training.engine import train

    cfg = {"experiment": "fixed", "latent": "gaussian", "estimator": "reparam", "epochs": 1, "latent_dim": 4,
           "channels": 2, "batch_size": 32, "train_limit": 64, "val_limit": 32, "dataset": "mnist5k"}
    (out, history), = [(o, h) for _, o, h in train_runs([{"id": "r", "config": cfg, "out_dir": str(tmp_path / "c")}],
                                                        device="cpu", compile=True, log=lambda *_: None).values()]
    eager = train({**cfg, "device": "cpu"}, tmp_path / "e", log=lambda *_: None)
    assert history[0]["val_bpd"] == pytest.approx(eager[0]["val_bpd"], rel=1e-5)
    assert (out / "result.json").exists()
