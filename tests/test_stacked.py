"""The training engine (silentvae.training.engine): K runs in one vmapped step, and a single run
(silentvae.training.engine.train, a stack of one), equal the reference trainer (tests/reference_trainer.py: the plain
eager loop, one run at a time).

Tiny models on CPU and synthetic 28x28 data (100 training images at batch 32: three full batches and a
partial one; 32x32 RGB for the BatchNorm models). "Equal" means: the same per-epoch history, the same final
parameters, AdamW state and REINFORCE baseline to float round-off, and bit-identical generator states (every
random number was drawn in the same order).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from silentvae.training.data import DataSplit
from silentvae.training.io import load_checkpoint
from silentvae.training.engine import (adamw_update_, auto_stack_size, check_stackable, measure_peak_bytes, pick_stack_size,
                              train, train_stacked)
from silentvae.training.run import NonFiniteLossError, RunConfig, load_splits

from reference_trainer import reference_train

TINY = dict(dataset="mnist5k", channels=4, latent_dim=8, batch_size=32, epochs=2)
GRID = [(0, 1e-3), (1, 1e-3), (0, 5e-3)]  # (seed, lr): two seeds, two learning rates
TOL = dict(float32=dict(rtol=1e-4, atol=1e-5), float64=dict(rtol=1e-10, atol=1e-12))
HISTORY_KEYS = ("train_loss", "val_bpd", "val_elbo", "val_mse", "val_kld")


def quiet(_msg):
    pass


def blob_splits(n_train: int, n_val: int, channels: int = 1, size: int = 28) -> tuple[DataSplit, DataSplit]:
    """Images of integer levels / 256 (like the loaders): a random blob plus noise."""
    g = torch.Generator().manual_seed(0)

    def make(n):
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        cx, cy = torch.rand(n, 1, 1, 1, generator=g) - 0.5, torch.rand(n, 1, 1, 1, generator=g) - 0.5
        img = (torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.2)
               + 0.1 * torch.rand(n, channels, size, size, generator=g))
        return (img.clamp(0, 1) * 255).round() / 256

    return (DataSplit(make(n_train), torch.zeros(n_train, dtype=torch.long), "synthetic/train"),
            DataSplit(make(n_val), torch.zeros(n_val, dtype=torch.long), "synthetic/val"))


@pytest.fixture(scope="module")
def splits():
    return blob_splits(100, 24)


def load(path):
    return load_checkpoint(path)


def assert_close_norm(actual, expected, rtol):
    """||actual - expected|| <= rtol ||expected||: small gradient entries are sums with cancellation, so
    their relative round-off under a different summation order (grouped convolution) is not small."""
    assert torch.linalg.vector_norm(actual - expected) <= rtol * torch.linalg.vector_norm(expected)


BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def assert_same_run(sep_dir, st_dir, sep_hist, st_hist, dtype, skip=(), tol=None):
    """``skip``: model state keys left out (a bias right before BatchNorm has a zero gradient up to round-off,
    which Adam normalises into lr-sized steps of arbitrary sign: its value is not determined by the run).
    ``tol``: {"rtol", "atol"}, default :data:`TOL` of ``dtype``."""
    tol = tol or TOL[dtype]
    assert [r["epoch"] for r in st_hist] == [r["epoch"] for r in sep_hist]
    for a, b in zip(sep_hist, st_hist):
        assert a.keys() == b.keys()
        for key in HISTORY_KEYS:
            assert b[key] == pytest.approx(a[key], rel=tol["rtol"], abs=tol["atol"]), key
        assert (a["w_lin"], a["encoder_frozen"]) == (b["w_lin"], b["encoder_frozen"])
        assert (a["train_linear_loss"] is None) == (b["train_linear_loss"] is None)
        if a["train_linear_loss"] is not None:
            assert b["train_linear_loss"] == pytest.approx(a["train_linear_loss"], rel=tol["rtol"], abs=tol["atol"])
    a, b = load(sep_dir / "last.pt"), load(st_dir / "last.pt")
    assert a["config"] == b["config"]
    assert torch.equal(a["generator"], b["generator"])  # identical random-number consumption
    assert a["models"].keys() == b["models"].keys()
    for k in a["models"]:
        if k not in skip:
            torch.testing.assert_close(b["models"][k], a["models"][k], **tol, msg=k)
    param_names = [k for k in a["models"] if not k.endswith(BUFFER_SUFFIXES)]  # the optimizer's order
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert float(sa[i]["step"]) == float(sb[i]["step"])
        if param_names[i] in skip:
            continue
        for key in ("exp_avg", "exp_avg_sq"):  # gradient averages: compared relative to their norm
            assert_close_norm(sb[i][key], sa[i][key], tol["rtol"])
    ea, eb = a["estimator"], b["estimator"]
    assert ea.keys() == eb.keys()
    for k in ea:
        assert (ea[k] is None) == (eb[k] is None)
        if ea[k] is not None:
            torch.testing.assert_close(eb[k], ea[k], **tol)


@pytest.mark.parametrize("estimator,latent,dtype", [
    ("sg", "gaussian", "float32"),
    ("reparam", "gaussian", "float32"),
    ("reinforce", "bernoulli", "float32"),
    ("gumbel", "bernoulli", "float64"),
])
def test_stacked_equals_separate_runs(tmp_path, splits, estimator, latent, dtype):
    torch.set_num_threads(1)
    configs = [RunConfig(**TINY, estimator=estimator, latent=latent, dtype=dtype, seed=s, lr=lr) for s, lr in GRID]
    separate = [reference_train(c, tmp_path / f"sep{i}", splits) for i, c in enumerate(configs)]
    stacked = train_stacked(configs, splits, out_dirs=[tmp_path / f"st{i}" for i in range(3)], log=quiet)
    single = [train(c, tmp_path / f"one{i}", splits=splits, log=quiet) for i, c in enumerate(configs)]
    assert len(stacked) == 3
    for i in range(3):
        assert_same_run(tmp_path / f"sep{i}", tmp_path / f"st{i}", separate[i], stacked[i], dtype)
        assert_same_run(tmp_path / f"sep{i}", tmp_path / f"one{i}", separate[i], single[i], dtype)  # a stack of one
        assert (tmp_path / f"st{i}" / "result.json").exists() and (tmp_path / f"one{i}" / "result.json").exists()
    if estimator == "sg":  # without out_dirs: the same histories (timings aside)
        plain = train_stacked(configs, splits, log=quiet)
        drop = ("train_time", "wall_time")
        assert [[{k: v for k, v in r.items() if k not in drop} for r in h] for h in plain] == \
            [[{k: v for k, v in r.items() if k not in drop} for r in h] for h in stacked]
    # the runs really differ (the comparison is not vacuous)
    assert len({h[-1]["train_loss"] for h in stacked}) == 3


def test_stacked_output_resumes_with_train(tmp_path, splits):
    """A stack stopped after epoch 1 is continued by silentvae.training.engine.train (and vice versa) as if never stacked; a run
    the reference trainer (torch.optim.AdamW, the checkpoint format of the eager trainer before the engine)
    stopped after epoch 1 is continued by silentvae.training.engine.train the same way."""
    torch.set_num_threads(1)
    configs = [RunConfig(**TINY, estimator="reinforce", latent="bernoulli", reinforce_momentum=0.5, seed=s, lr=lr)
               for s, lr in GRID[:2]]
    full = [reference_train(c, tmp_path / f"full{i}", splits) for i, c in enumerate(configs)]
    for i, c in enumerate(configs):
        reference_train(RunConfig(**{**c.to_dict(), "epochs": 1}), tmp_path / f"old{i}", splits)
        resumed_old = train(c, tmp_path / f"old{i}", splits=splits, log=quiet)
        assert_same_run(tmp_path / f"full{i}", tmp_path / f"old{i}", full[i], resumed_old, "float32")
    outs = [tmp_path / f"mix{i}" for i in range(2)]
    train_stacked(configs, splits, epochs=1, out_dirs=outs, log=quiet)
    assert all(len(load(o / "last.pt")["history"]) == 1 and not (o / "result.json").exists() for o in outs)
    resumed = [train(c, o, splits=splits, log=quiet) for c, o in zip(configs, outs)]
    for i in range(2):
        assert_same_run(tmp_path / f"full{i}", outs[i], full[i], resumed[i], "float32")
    # stacked resume from files written by train (3 epochs in all)
    logs = []
    more = train_stacked([RunConfig(**{**c.to_dict(), "epochs": 3}) for c in configs], splits, out_dirs=outs,
                         log=logs.append)
    assert any("resuming 2 stacked runs after epoch 2" in m for m in logs)
    assert [len(h) for h in more] == [3, 3] and more[0][:2] == resumed[0]
    for i, c in enumerate(configs):
        reference = reference_train(RunConfig(**{**c.to_dict(), "epochs": 3}), tmp_path / f"full{i}", splits)
        assert_same_run(tmp_path / f"full{i}", outs[i], reference, more[i], "float32")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_functional_adamw_equals_torch(dtype):
    g = torch.Generator().manual_seed(0)
    lrs, betas, wd = [1e-4, 5e-4, 3e-3], (0.9, 0.95), 0.01
    p0 = torch.randn(3, 5, 7, generator=g, dtype=dtype)
    grads = [torch.randn(3, 5, 7, generator=g, dtype=dtype) for _ in range(6)]
    ref, state = [], []
    for k, lr in enumerate(lrs):
        p = torch.nn.Parameter(p0[k].clone())
        opt = torch.optim.AdamW([p], lr=lr, betas=betas, weight_decay=wd)  # as silentvae.training.run.build_optimizer
        for gr in grads:
            p.grad = gr[k].clone()
            opt.step()
        ref.append(p.detach())
        state.append(opt.state[p])
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for step, gr in enumerate(grads, start=1):
        adamw_update_(p, gr, m, v, step=step, lr=lrs, betas=betas, weight_decay=wd)
    # bit-identical on CPU: the same ops with the same scalars
    assert torch.equal(p, torch.stack(ref))
    assert torch.equal(m, torch.stack([s["exp_avg"] for s in state]))
    assert torch.equal(v, torch.stack([s["exp_avg_sq"] for s in state]))
    for k, lr in enumerate(lrs):  # one learning rate shared by the runs (a float): the same bits
        p, m, v = p0[k:k + 1].clone(), torch.zeros_like(p0[:1]), torch.zeros_like(p0[:1])
        for step, gr in enumerate(grads, start=1):
            adamw_update_(p, gr[k:k + 1], m, v, step=step, lr=lr, betas=betas, weight_decay=wd)
        assert torch.equal(p[0], ref[k]) and torch.equal(v[0], state[k]["exp_avg_sq"])


def test_config_validation():
    base = RunConfig(**TINY)
    check_stackable([base, RunConfig(**TINY, seed=3, lr=5e-4)])  # grid values may differ
    sg = dict(TINY, experiment="learnable", estimator="reparam", silent=True)
    check_stackable([RunConfig(**sg, anneal_rate=0.1), RunConfig(**sg, anneal_rate=0.2, cutoff_epoch=2)])
    with pytest.raises(ValueError, match="'batch_size' differs"):
        check_stackable([base, RunConfig(**{**TINY, "batch_size": 16})])
    with pytest.raises(ValueError, match="'estimator' differs"):
        check_stackable([base, RunConfig(**TINY, estimator="reparam")])
    with pytest.raises(ValueError, match="'silent' differs"):
        check_stackable([RunConfig(**TINY, experiment="learnable", estimator="reparam"),
                         RunConfig(**TINY, experiment="learnable", estimator="reparam", silent=True)])
    with pytest.raises(ValueError, match="at least one"):
        check_stackable([])


# learnable variance (Algorithm 1): (seed, lr, anneal_rate, cutoff_epoch, lr_linear_alpha) over 3 epochs, so that
# within one stack the linear decoder stops being used (anneal 0.5: w_lin 0.5, then 0), an encoder freezes at
# epoch 2 while others train on, and the linear decoder's alpha part has its own learning rate
LEARNABLE_GRID = [(0, 1e-3, 0.5, None, None), (1, 1e-3, 0.0, 2, None), (0, 5e-3, 0.25, 3, 2e-3)]


def learnable_configs(estimator, latent, silent, dtype="float32", **extra):
    out = []
    for seed, lr, anneal, cutoff, lr_alpha in LEARNABLE_GRID:
        grid = dict(anneal_rate=anneal, cutoff_epoch=cutoff, lr_linear_alpha=lr_alpha) if silent else {}
        if estimator == "none":  # "None + SG": w_lin = 1, the grid is lr x cut-off
            grid = dict(cutoff_epoch=cutoff)
        out.append(RunConfig(**{**TINY, "epochs": 3, **extra}, experiment="learnable", estimator=estimator,
                             latent=latent, silent=silent, dtype=dtype, seed=seed, lr=lr, **grid))
    return out


@pytest.mark.parametrize("estimator,latent,silent,dtype", [
    # float64: at lr 5e-3 the tiny learnable decoder amplifies float32 round-off (summation order) to ~1% by
    # epoch 3, while float64 agrees to 1e-12: the equivalence is a property of the arithmetic, not of the noise
    ("reparam", "gaussian", True, "float64"),
    ("reparam", "gaussian", False, "float64"),
    ("gumbel", "bernoulli", True, "float64"),
    ("reinforce", "bernoulli", True, "float32"),
    ("none", "bernoulli", True, "float32"),
    ("none", "gaussian", True, "float64"),
])
def test_stacked_learnable_equals_separate_runs(tmp_path, splits, estimator, latent, silent, dtype):
    torch.set_num_threads(1)
    configs = learnable_configs(estimator, latent, silent, dtype)
    separate = [reference_train(c, tmp_path / f"sep{i}", splits) for i, c in enumerate(configs)]
    stacked = train_stacked(configs, splits, out_dirs=[tmp_path / f"st{i}" for i in range(3)], log=quiet)
    single = [train(c, tmp_path / f"one{i}", splits=splits, log=quiet) for i, c in enumerate(configs)]
    for i in range(3):
        assert_same_run(tmp_path / f"sep{i}", tmp_path / f"st{i}", separate[i], stacked[i], dtype)
        assert_same_run(tmp_path / f"sep{i}", tmp_path / f"one{i}", separate[i], single[i], dtype)  # a stack of one
    assert len({h[-1]["train_loss"] for h in stacked}) == 3
    if silent and estimator != "none":  # the schedule really varied inside the stack
        assert [r["w_lin"] for r in stacked[0]] == [0.5, 0.0, 0.0]
        assert [r["encoder_frozen"] for r in stacked[1]] == [False, True, True]
        assert stacked[0][1]["train_linear_loss"] is None and stacked[2][1]["train_linear_loss"] is not None


def test_cosine_schedule_is_the_reference_trainers_and_changes_the_run(tmp_path, splits):
    """lr_schedule="cosine": every group's rate times (1 + cos(pi (e - 1) / E)) / 2 in epoch e, in the stacked
    engine as in torch's AdamW with the groups' lr set per epoch; it trains a different run than "constant"."""
    torch.set_num_threads(1)
    configs = learnable_configs("reparam", "gaussian", True, "float64", lr_schedule="cosine")
    assert [configs[0].lr_factor(e) for e in (1, 2, 3)] == pytest.approx([1.0, 0.75, 0.25])
    assert configs[0].group_lrs(2)["linear_alpha"] == pytest.approx(0.75 * (configs[0].lr_linear_alpha or configs[0].lr))
    separate = [reference_train(c, tmp_path / f"sep{i}", splits) for i, c in enumerate(configs)]
    stacked = train_stacked(configs, splits, out_dirs=[tmp_path / f"st{i}" for i in range(3)], log=quiet)
    for i in range(3):
        assert_same_run(tmp_path / f"sep{i}", tmp_path / f"st{i}", separate[i], stacked[i], "float64")
    constant = train_stacked([dataclasses.replace(c, lr_schedule="constant") for c in configs], splits, log=quiet)
    assert constant[0][0]["train_loss"] == stacked[0][0]["train_loss"]      # epoch 1: factor 1
    assert constant[0][-1]["train_loss"] != pytest.approx(stacked[0][-1]["train_loss"], rel=1e-9)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        dataclasses.replace(configs[0], lr_schedule="linear")
    longer = dataclasses.replace(configs[0], epochs=4)   # the schedule decays over the epochs: no extending
    with pytest.raises(ValueError, match="lr_schedule='cosine' over epochs=3"):
        train(longer, tmp_path / "st0", splits=splits, log=quiet)


def test_stacked_batchnorm_models_with_mixed_freezing(tmp_path):
    """CIFAR-10 models (BatchNorm): stacked running statistics, and a step split in two while one run's
    encoder is frozen (eval mode) and the others' are not; each run alone (a stack of one) too."""
    torch.set_num_threads(1)
    splits = blob_splits(40, 16, channels=3, size=32)
    configs = learnable_configs("reparam", "gaussian", True, dataset="cifar10", channels=2, latent_dim=4,
                                batch_size=16)
    separate = [reference_train(c, tmp_path / f"sep{i}", splits) for i, c in enumerate(configs)]
    stacked = train_stacked(configs, splits, out_dirs=[tmp_path / f"st{i}" for i in range(3)], log=quiet)
    single = [train(c, tmp_path / f"one{i}", splits=splits, log=quiet) for i, c in enumerate(configs)]
    state = load(tmp_path / "st1" / "last.pt")["models"]
    # conv biases feeding a BatchNorm, and the running means those biases shift
    before_bn = {f"{net}.{i}.bias" for net, layers in (("encoder.features", (0, 3, 6, 9)), ("decoder.net", (2, 5, 8)))
                 for i in layers}
    skip = before_bn | {k.replace(f".{k.split('.')[-2]}.bias", f".{int(k.split('.')[-2]) + 2}.running_mean")
                        for k in before_bn}
    assert skip <= state.keys()
    for i in range(3):
        # Those undetermined biases feed every later layer: downstream weights agree to ~1e-3 relative after
        # 3 epochs (measured: 6e-4 on decoder.net.2.weight, 3e-3 on Adam averages), not to float32 round-off.
        assert_same_run(tmp_path / f"sep{i}", tmp_path / f"st{i}", separate[i], stacked[i], "float32", skip,
                        tol=dict(rtol=1e-2, atol=1e-3))
        assert_same_run(tmp_path / f"sep{i}", tmp_path / f"one{i}", separate[i], single[i], "float32", skip,
                        tol=dict(rtol=1e-2, atol=1e-3))
    assert any(k.endswith("running_mean") for k in state)
    assert int(state["encoder.features.2.num_batches_tracked"]) == 3  # 3 batches in epoch 1, then frozen
    assert int(state["decoder.net.4.num_batches_tracked"]) == 9


def test_nonfinite_run_is_dropped_and_others_finish(tmp_path, splits):
    torch.set_num_threads(1)
    configs = [RunConfig(**TINY, seed=0, lr=1e-3), RunConfig(**TINY, seed=0, lr=1e30)]
    outs = [tmp_path / "good", tmp_path / "bad"]
    with pytest.raises(NonFiniteLossError, match=r"stacked run 1 .*lr1e\+30") as info:
        train_stacked(configs, splits, out_dirs=outs, log=quiet)
    assert "at epoch 1," in str(info.value) and "nothing was saved" in str(info.value)  # not an "epoch 0" file
    assert not (outs[1] / "last.pt").exists()
    good = load(outs[0] / "last.pt")["history"]
    assert len(good) == 2 and all(math.isfinite(r["train_loss"]) for r in good)
    assert not (outs[1] / "result.json").exists()


def test_stack_sizing():
    assert pick_stack_size(100, 1000) == 8
    assert pick_stack_size(100, 1000, safety=1.0) == 10
    assert pick_stack_size(2000, 1000) == 0
    with pytest.raises(ValueError):
        pick_stack_size(0, 1000)
    assert measure_peak_bytes([RunConfig(**TINY)]) is None  # CPU: nothing to measure


def test_train_runs_splits_a_grid_into_stacks_of_stack_size(tmp_path):
    """The pipeline's train_runs: 3 runs with stack_size=2 train as a stack of 2 and a single run, with the same
    results as separate runs, and list the finished runs in done_json."""
    torch.set_num_threads(1)
    from silentvae.pipeline.jobs import train_runs
    base = {**TINY, "dataset": "mnist5k", "train_limit": 96, "val_limit": 32}
    runs = [{"id": f"grid/lr{lr:g}_s{seed}", "config": {**base, "seed": seed, "lr": lr}, "inherit": [],
             "out_dir": str(tmp_path / f"st{i}")} for i, (seed, lr) in enumerate(GRID)]
    logs = []
    trained = train_runs(runs, device="cpu", stack_size=2, done_json=str(tmp_path / "done.json"), log=logs.append)
    assert "stack 1 of 2: 2 runs" in logs
    done = json.loads((tmp_path / "done.json").read_text())
    assert done["stack_size"] == 2 and list(done["runs"]) == [r["id"] for r in runs]
    assert all(Path(p).exists() for p in done["runs"].values())
    splits = load_splits(RunConfig(**base))
    for i, r in enumerate(runs):
        cfg, _, history = trained[r["id"]]
        separate = reference_train(cfg, tmp_path / f"sep{i}", splits)
        assert_same_run(tmp_path / f"sep{i}", tmp_path / f"st{i}", separate, history, "float32")
    assert auto_stack_size([RunConfig(**base)] * 3, (1, 28, 28)) == 3  # CPU: one stack of all runs


def test_stacked_resume_catches_up_a_run_left_behind(tmp_path, splits):
    """A kill between two runs' saves of one epoch leaves the stack's runs at different epochs: the run behind
    is trained alone up to the others, then the stack goes on, with the same results as separate runs."""
    torch.set_num_threads(1)
    configs = [RunConfig(**{**TINY, "epochs": 3}, checkpoint_epochs=[1], seed=s, lr=lr) for s, lr in GRID[:2]]
    outs = [tmp_path / f"st{i}" for i in range(2)]
    train_stacked(configs, splits, epochs=2, out_dirs=outs, log=quiet)
    (outs[1] / "epoch_0001.pt").replace(outs[1] / "last.pt")  # run 1 lost its epoch-2 save
    logs = []
    stacked = train_stacked(configs, splits, out_dirs=outs, log=logs.append)
    assert any("stacked run 1 is at epoch 1, the others at 2" in m for m in logs)
    for i, c in enumerate(configs):
        separate = reference_train(c, tmp_path / f"sep{i}", splits)
        assert_same_run(tmp_path / f"sep{i}", outs[i], separate, stacked[i], "float32")


def test_learnable_stack_resumes_after_freezing(tmp_path, splits):
    """Stopped after epoch 2 (one encoder frozen since epoch 2, one linear decoder unused since epoch 2: their
    AdamW step counts lag the decoder's) and resumed: the same runs as never stopped."""
    torch.set_num_threads(1)
    configs = learnable_configs("reparam", "gaussian", True, "float64")  # float64: see the parametrisation above
    outs = [tmp_path / f"st{i}" for i in range(3)]
    train_stacked(configs, splits, epochs=2, out_dirs=outs, log=quiet)
    steps = {float(s["step"]) for s in load(outs[1] / "last.pt")["optimizer"]["state"].values()}
    assert steps == {4.0, 8.0}  # 4 steps per epoch: encoder (frozen at 2) and linear decoder 4, conv decoder 8
    stacked = train_stacked(configs, splits, out_dirs=outs, log=quiet)
    for i, c in enumerate(configs):
        separate = reference_train(c, tmp_path / f"sep{i}", splits)
        assert_same_run(tmp_path / f"sep{i}", outs[i], separate, stacked[i], "float64")
