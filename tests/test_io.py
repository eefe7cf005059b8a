"""Tests of silentvae.training.io: atomic writes leave either the old file or the complete new one."""

from __future__ import annotations

import errno
import json
import math
import os
import re
from fractions import Fraction

import pytest
import torch

from silentvae.training.io import (CheckpointError, JSONFileError, atomic_path, atomic_torch_save, atomic_write_json,
                                   atomic_write_text, load_checkpoint, read_json)


def test_atomic_write_json_valid_and_sorted(tmp_path):
    path = tmp_path / "sub" / "dir" / "metrics.json"                  # parents are created
    atomic_write_json(path, {"b": 1, "a": [1.5, None, "x"], "t": torch.tensor(2.0)})
    text = path.read_text()
    assert text.endswith("\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [1.5, None, "x"], "b": 1, "t": 2.0}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


def test_exception_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp != path
            tmp.write_text("half-writ")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_success_replaces(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new ü\n")
    assert path.read_text(encoding="utf-8") == "new ü\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, torch.tensor([1.0, float("nan")])])
def test_nan_raises_naming_path(tmp_path, bad):
    path = tmp_path / "res.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(ValueError, match="res.json"):
        atomic_write_json(path, {"loss": bad})
    assert json.loads(path.read_text()) == {"ok": 1}                   # old file untouched
    assert [p.name for p in tmp_path.iterdir()] == ["res.json"]


def test_atomic_torch_save_round_trip(tmp_path):
    obj = {"w": torch.randn(3, 4), "step": 7}
    path = tmp_path / "ckpt" / "model.pt"
    atomic_torch_save(obj, path)
    back = torch.load(path, weights_only=True)
    assert back["step"] == 7 and torch.equal(back["w"], obj["w"])
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]


def _checkpoint(path):
    state = {"config": {"lr": 1e-3, "betas": [0.9, 0.95], "cutoff_epoch": None}, "models": {"w": torch.randn(3)},
             "optimizer": {"state": {0: {"step": torch.tensor(2.0)}}, "param_groups": [{"name": "model", "lr": 1e-3}]},
             "estimator": {"baseline": torch.tensor(0.5)}, "generator": torch.Generator().get_state(),
             "history": [{"epoch": 1, "train_loss": 1.5, "train_linear_loss": None, "encoder_frozen": False}]}
    atomic_torch_save(state, path)
    return state


def test_load_checkpoint_round_trip_of_training_state(tmp_path):
    state = _checkpoint(tmp_path / "last.pt")
    back = load_checkpoint(tmp_path / "last.pt", "cpu")
    assert back["config"] == state["config"] and back["history"] == state["history"]
    assert torch.equal(back["generator"], state["generator"]) and back["optimizer"]["param_groups"][0]["name"] == "model"
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("name, advice", [("last.pt", "Delete it and rerun"),
                                          ("epoch_0003.pt", "delete the run folder")])
def test_load_checkpoint_damaged_file_is_named(tmp_path, name, advice):
    path = tmp_path / "run" / name
    _checkpoint(path)
    data = bytearray(path.read_bytes())
    i = data.index(b"train_loss")  # inside the pickled history: only the CRC-32 check can see this change
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and advice in str(info.value)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{path} is truncated or corrupt"):
        load_checkpoint(path)


def test_load_checkpoint_refuses_other_files(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match=r"not a silentvae training checkpoint \(no \['config', 'models', "
                                              r"'history'\]\)"):
        load_checkpoint(path)
    torch.save({"config": {}, "models": {}, "history": [Fraction(1, 3)]}, path)  # a class instance: not plain data
    with pytest.raises(CheckpointError, match="holds objects other than tensors and plain data"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b'{"config": {"lr": 0.001}, "history": [{"val_bpd": 1.2', b"", b"\xff\xfe{"])
def test_truncated_or_corrupt_json_names_the_file_line_and_fix(tmp_path, content):
    path = tmp_path / "run" / "result.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(JSONFileError, match=re.escape(f"{path} is truncated or not valid JSON (")) as info:
        read_json(path)
    assert "Delete it and rerun" in str(info.value)
    path.write_text('{"a": [1, 2]}')
    assert read_json(path) == {"a": [1, 2]}


def test_truncated_json_error_gives_line_and_column(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{\n  "history": [\n    {"val_bpd": 1.2,')
    with pytest.raises(JSONFileError, match=r"metrics.json is truncated or not valid JSON \(line 3, column 21"):
        read_json(path)


@pytest.mark.parametrize("write", [lambda p: atomic_write_json(p, {"a": 1}), lambda p: atomic_write_text(p, "x"),
                                   lambda p: atomic_torch_save({"a": 1}, p)])
def test_disk_full_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, write):
    path = tmp_path / "out" / "result.json"
    path.parent.mkdir()
    path.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)  # the write's data reach the disk at fsync: where a full disk shows
    with pytest.raises(OSError, match=re.escape(f"cannot write {path}: No space left on device (free some space")) \
            as info:
        write(path)
    assert info.value.errno == errno.ENOSPC
    assert path.read_text() == "old" and sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_unwritable_folder_names_the_file(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.raises(OSError, match=re.escape(f"cannot write {blocker / 'sub' / 'x.json'}")):
        atomic_write_json(blocker / "sub" / "x.json", {})
