"""CUDA paths (skipped without a GPU): training, resume and evaluation run on the device."""

import pytest
import torch

from silentvae.data import DataSplit
from silentvae.train import train

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
