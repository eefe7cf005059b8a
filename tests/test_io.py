"""Tests of silentvae.io: atomic writes leave either the old file or the complete new one."""

from __future__ import annotations

import json
import math

import pytest
import torch

from silentvae.io import atomic_path, atomic_torch_save, atomic_write_json, atomic_write_text


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
    back = torch.load(path)
    assert back["step"] == 7 and torch.equal(back["w"], obj["w"])
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
