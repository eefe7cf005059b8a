"""Atomic file output: a file at its final path is always complete.

Trainers and pipeline steps can be killed at any moment (Ctrl-C, SIGKILL, out of memory, a cancelled
Snakemake job). Writing straight to the target could leave a truncated checkpoint or JSON file that looks
finished to the next step. Here every write goes to a hidden temporary file in the *same directory*
(so the final rename stays on one filesystem and is atomic), is fsync'ed, and is then ``os.replace``d onto
the target. A crash leaves either the old file or the new one, plus at worst a hidden
``.<name>.<pid>.<random>.tmp`` leftover after a hard kill, never a half-written target.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "atomic_torch_save"]


def _fsync_dir(directory: Path) -> None:
    """Best-effort fsync of a directory, so the rename itself survives a power loss."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; write to it inside the ``with`` block.

    On success the temporary file is fsync'ed and ``os.replace``d onto ``path``. On any exception
    (KeyboardInterrupt included) it is removed and an existing ``path`` is left untouched. Parent
    directories are created. The temporary file already exists (empty, created with the usual umask
    permissions) when the block starts, so writers that open by name simply overwrite it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(obj: Any) -> Any:
    """JSON for values json cannot encode itself: numpy / torch scalars and arrays (``.tolist()``),
    paths (``str``). Non-finite floats they contain are still rejected by ``allow_nan=False``."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as ``json.dumps(obj, indent=2, sort_keys=True) + "\\n"``.

    NaN and +-inf are refused (``allow_nan=False``): they are not valid JSON, and in results they mean a
    diverged run that should fail loudly. Raises ValueError naming ``path``; nothing is written then.
    """
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_json_default)
    except ValueError as err:
        raise ValueError(f"cannot write {os.fspath(path)}: value is not finite (NaN/inf is not valid JSON): "
                         f"{err}") from err
    except TypeError as err:
        raise TypeError(f"cannot write {os.fspath(path)}: {err}") from err
    atomic_write_text(path, text + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Atomically ``torch.save(obj, path)`` (torch is imported only here, so this module stays light)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
