"""CUDA paths (skipped without a GPU): training, resume and evaluation run on the device."""

import pytest
import torch

from silentvae.data import DataSplit
from silentvae.run import RunConfig
from silentvae.engine import train

from reference_trainer import reference_train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _splits(n=96):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g).float() / 256
    labels = torch.arange(n) % 10
    return DataSplit(images[:64], labels[:64], "synthetic/train"), DataSplit(images[64:], labels[64:], "synthetic/val")


@pytest.mark.parametrize("run", [
    {"experiment": "fixed", "latent": "gaussian", "estimator": "sg"},
    {"experiment": "fixed", "latent": "bernoulli", "estimator": "reinforce"},
    {"experiment": "learnable", "latent": "gaussian", "estimator": "reparam", "silent": True, "anneal_rate": 0.5},
])
def test_train_and_resume_on_cuda(tmp_path, run):
    cfg = {**run, "device": "cuda", "epochs": 2, "latent_dim": 4, "channels": 2, "batch_size": 32}
    whole = train(cfg, tmp_path / "whole", splits=_splits(), log=lambda *_: None)
    train(cfg, tmp_path / "split", splits=_splits(), log=lambda *_: None, stop_after=1)
    resumed = train(cfg, tmp_path / "split", splits=_splits(), log=lambda *_: None)
    for a, b in zip(whole, resumed):
        # cuDNN convolutions are not bitwise deterministic, hence a tolerance.
        assert a["val_bpd"] == pytest.approx(b["val_bpd"], rel=1e-3)


@pytest.mark.parametrize("run", [
    {"experiment": "fixed", "latent": "bernoulli", "estimator": "reinforce"},
    {"experiment": "learnable", "latent": "gaussian", "estimator": "reparam", "silent": True},
])
def test_stacked_equals_separate_on_cuda(tmp_path, run):
    """A stack on the GPU (grid of lr x anneal x cut-off), and each run alone (a stack of one), give the
    reference trainer's validation BPD."""
    from silentvae.engine import train_stacked
    grid = [{"seed": 0, "lr": 1e-3}, {"seed": 1, "lr": 5e-4}]
    if run["experiment"] == "learnable":
        grid = [{**g, "anneal_rate": a, "cutoff_epoch": c} for g, a, c in zip(grid, (0.5, 0.0), (None, 2))]
    cfgs = [{**run, **g, "device": "cuda", "epochs": 2, "latent_dim": 4, "channels": 2, "batch_size": 32}
            for g in grid]
    stacked = train_stacked(cfgs, _splits(), log=lambda *_: None)
    for cfg, hist in zip(cfgs, stacked):
        separate = reference_train(RunConfig.from_dict(cfg), tmp_path / f"sep{cfg['seed']}", _splits())
        single = train(cfg, tmp_path / f"one{cfg['seed']}", splits=_splits(), log=lambda *_: None)
        for h in (hist, single):
            assert [r["val_bpd"] for r in h] == pytest.approx([r["val_bpd"] for r in separate], rel=1e-3)


def test_auto_stack_size_fits_free_memory():
    from silentvae.engine import auto_stack_size, measure_peak_bytes
    cfgs = [RunConfig(device="cuda", latent_dim=200, channels=32, seed=s) for s in range(64)]
    k = auto_stack_size(cfgs, (1, 28, 28), log=lambda *_: None)
    assert 1 <= k <= 64
    free, _ = torch.cuda.mem_get_info()
    assert measure_peak_bytes(cfgs[:k]) < free  # the picked stack really fits
