"""CUDA paths (marker ``gpu``, skipped without a GPU): training, resume and stacking on the device train what the
reference trainer trains.

Each GPU test compares what training changed, not only a validation number: the parameters and the AdamW state
(both moments, step counts) after 8 steps of the engine on the GPU against ``tests/reference_trainer.py`` (the
eager loop the CPU tests check the engine against) on the same GPU (the same device generator, hence the same
random numbers: a CPU and a CUDA generator draw different numbers from one seed), within float32-on-GPU
tolerances (cuDNN's atomics and TF32 convolutions), stated as a fraction of what training changed:
:func:`helpers.assert_same_training` allows 1% of each tensor's change, so a step that does nothing (lr = 0)
or a wrong step is off by far more than the tolerance, and it asserts that every tensor did change; ``test_comparison_fails_when_training_differs`` shows that on the CPU.
"""

import pytest
import torch

from silentvae.training.data import DataSplit
from silentvae.training.engine import train
from silentvae.training.run import HEAD_INIT_IMAGES, Run, RunConfig

from helpers import assert_same_training, training_state
from reference_trainer import reference_train

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# Relative tolerances (helpers.assert_same_training) of two trainers on one GPU after 8 steps of the tiny model.
# Two trainers on one GPU disagree by float32 round-off (cuDNN's summation order, atomics; TF32 convolutions):
# far below 1% of what 8 steps changed. On the CPU the engine and the reference agree to ~1e-6 of it.
RTOL = 1e-2
LR = 1e-2  # 8 steps move the parameters by ~0.3% of their norm (min_change 1e-3), every tensor


def _splits(n=160):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g).float() / 256
    labels = torch.arange(n) % 10
    return (DataSplit(images[:128], labels[:128], "synthetic/train"),
            DataSplit(images[128:], labels[128:], "synthetic/val"))


def _cfg(run: dict, device: str, **extra) -> dict:
    return {"lr": LR, **run, "device": device, "epochs": 2, "latent_dim": 4, "channels": 2, "batch_size": 32,
            **extra}  # 128 images / 32 = 4 steps per epoch


def _initial(cfg: dict) -> dict:
    """The run's state before training (as the reference trainer builds it)."""
    c = RunConfig.from_dict(cfg)
    images = _splits()[0].images.to(device=c.device, dtype=c.torch_dtype)
    return training_state(Run(c, tuple(images.shape[1:]), images[:HEAD_INIT_IMAGES]).state_dict())


def _last(out) -> dict:
    return training_state(torch.load(out / "last.pt", weights_only=True, map_location="cpu"))


def compare_with_reference(cfg: dict, tmp_path, candidate_out, label: str) -> dict[str, float]:
    """Train ``cfg`` with the reference trainer and compare ``candidate_out/last.pt`` with it."""
    ref_out = tmp_path / f"reference-{label}"
    if not (ref_out / "last.pt").exists():
        reference_train(RunConfig.from_dict(cfg), ref_out, _splits())
    return assert_same_training(_initial(cfg), _last(ref_out), _last(candidate_out), rtol=RTOL,
                                label=label)


@gpu
@needs_cuda
@pytest.mark.parametrize("run", [
    {"experiment": "fixed", "latent": "gaussian", "estimator": "sg"},
    {"experiment": "fixed", "latent": "bernoulli", "estimator": "reinforce"},
    {"experiment": "learnable", "latent": "gaussian", "estimator": "reparam", "silent": True, "anneal_rate": 0.5},
])
def test_train_and_resume_on_cuda(tmp_path, run):
    cfg = _cfg(run, "cuda")
    train(cfg, tmp_path / "whole", splits=_splits(), log=lambda *_: None)
    train(cfg, tmp_path / "split", splits=_splits(), log=lambda *_: None, stop_after=1)
    train(cfg, tmp_path / "split", splits=_splits(), log=lambda *_: None)
    compare_with_reference(cfg, tmp_path, tmp_path / "whole", "whole")
    compare_with_reference(cfg, tmp_path, tmp_path / "split", "resumed")


@gpu
@needs_cuda
@pytest.mark.parametrize("run", [
    {"experiment": "fixed", "latent": "bernoulli", "estimator": "reinforce"},
    {"experiment": "learnable", "latent": "gaussian", "estimator": "reparam", "silent": True},
])
def test_stacked_equals_separate_on_cuda(tmp_path, run):
    """A stack on the GPU (grid of lr x anneal x cut-off), and each run alone (a stack of one), train what the
    reference trainer trains."""
    from silentvae.training.engine import train_stacked
    grid = [{"seed": 0, "lr": LR}, {"seed": 1, "lr": LR / 2}]
    if run["experiment"] == "learnable":
        grid = [{**g, "anneal_rate": a, "cutoff_epoch": c} for g, a, c in zip(grid, (0.5, 0.0), (None, 2))]
    cfgs = [_cfg(run, "cuda", **g) for g in grid]
    train_stacked(cfgs, _splits(), out_dirs=[tmp_path / f"stack{c['seed']}" for c in cfgs], log=lambda *_: None)
    for cfg in cfgs:
        train(cfg, tmp_path / f"one{cfg['seed']}", splits=_splits(), log=lambda *_: None)
        compare_with_reference(cfg, tmp_path, tmp_path / f"stack{cfg['seed']}", f"stacked{cfg['seed']}")
        compare_with_reference(cfg, tmp_path, tmp_path / f"one{cfg['seed']}", f"alone{cfg['seed']}")


@gpu
@needs_cuda
def test_auto_stack_size_fits_free_memory():
    from silentvae.training.engine import auto_stack_size, measure_peak_bytes
    cfgs = [RunConfig(device="cuda", latent_dim=200, channels=32, seed=s) for s in range(64)]
    k = auto_stack_size(cfgs, (1, 28, 28), log=lambda *_: None)
    assert 1 <= k <= 64
    free, _ = torch.cuda.mem_get_info()
    assert measure_peak_bytes(cfgs[:k]) < free  # the picked stack really fits


@pytest.mark.parametrize("run", [
    {"experiment": "fixed", "latent": "gaussian", "estimator": "sg"},
    {"experiment": "fixed", "latent": "bernoulli", "estimator": "reinforce"},
])
def test_comparison_fails_when_training_differs(tmp_path, run):
    """The GPU tests' comparison, on the CPU: the engine passes against the reference trainer; nothing trained
    (lr = 1e-30: every update is below float32 resolution; RunConfig refuses lr = 0) fails, and so does a wrong training (one epoch short, i.e. 4 of 8 steps missing; or a 5% larger lr)."""
    cfg = _cfg(run, "cpu")
    train(cfg, tmp_path / "engine", splits=_splits(), log=lambda *_: None)
    found = compare_with_reference(cfg, tmp_path, tmp_path / "engine", "engine")
    assert max(found["param_error"], found["exp_avg_error"], found["exp_avg_sq_error"]) < RTOL / 100

    still = _cfg(run, "cpu", lr=1e-30)
    train(still, tmp_path / "still", splits=_splits(), log=lambda *_: None)
    with pytest.raises(AssertionError, match="moved the parameters by .*too little to tell"):
        compare_with_reference(still, tmp_path, tmp_path / "still", "lr0")

    train(cfg, tmp_path / "short", splits=_splits(), log=lambda *_: None, stop_after=1)
    with pytest.raises(AssertionError, match="step counts differ"):
        compare_with_reference(cfg, tmp_path, tmp_path / "short", "engine")

    other = _cfg(run, "cpu", lr=LR * 1.05)  # the same steps with a 5% larger learning rate
    train(other, tmp_path / "other", splits=_splits(), log=lambda *_: None)
    with pytest.raises(AssertionError, match="parameters differ by"):
        compare_with_reference(cfg, tmp_path, tmp_path / "other", "engine")
