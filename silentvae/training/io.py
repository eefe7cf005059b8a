"""Atomic file output: a file at its final path is always complete.

Trainers and pipeline steps can be killed at any moment (Ctrl-C, SIGKILL, out of memory, a cancelled
Snakemake job). Writing straight to the target could leave a truncated checkpoint or JSON file that looks
finished to the next step. Here every write goes to a hidden temporary file in the *same directory*
(so the final rename stays on one filesystem and is atomic), is fsync'ed, and is then ``os.replace``d onto
the target. A crash leaves either the old file or the new one, plus at worst a hidden
``.<name>.<pid>.<random>.tmp`` leftover after a hard kill, never a half-written target.

Checkpoints are read back only by :func:`load_checkpoint`: ``torch.load(weights_only=True)`` (tensors and plain
Python data; a pickle that would build other objects, and so could run code, is refused), with a damaged file
turned into a :class:`CheckpointError` that names it and says how to recover.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import secrets
import zipfile
from pathlib import Path
from typing import Any, Iterator

from .run_files import LAST_CHECKPOINT, RESULT_FILE

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "CheckpointError",
           "load_checkpoint", "JSONFileError", "read_json"]

#: Keys every training checkpoint has (:meth:`silentvae.training.run.Run.state_dict` adds optimizer, estimator and
#: generator states; the report's fixtures keep only these).
CHECKPOINT_KEYS = ("config", "models", "history")


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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:
        raise _naming(err, path) from err
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(err, OSError) and os.fspath(path) not in str(err):
            raise _naming(err, path) from err
        raise
    _fsync_dir(path.parent)


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` (disk full, permission denied, ...) as an OSError of the same kind that names ``path``."""
    what = err.strerror or str(err)
    hint = " (free some space on that disk, then rerun)" if err.errno == errno.ENOSPC else ""
    return type(err)(err.errno, f"cannot write {path}: {what}{hint}")


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


class CheckpointError(ValueError):
    """A checkpoint file is damaged, is not a training checkpoint, or holds objects it may not load safely."""


def _recovery(path: Path) -> str:
    """What to do about a damaged checkpoint, by its role (``last.pt``: the resume point; else an epoch copy)."""
    if path.name == LAST_CHECKPOINT and (path.parent / RESULT_FILE).exists():  # finished: its job reruns once that is gone
        return (f"The run in {path.parent} has finished: delete both {LAST_CHECKPOINT} and {RESULT_FILE} there and rerun: its "
                f"training job then trains it again from the start; to resume instead, copy its newest intact "
                f"epoch_XXXX.pt over {LAST_CHECKPOINT} before deleting {RESULT_FILE}.")
    if path.name == LAST_CHECKPOINT:
        return (f"Delete it and rerun: the run in {path.parent} then trains again from the start; to resume "
                f"instead, copy its newest intact epoch_XXXX.pt over {LAST_CHECKPOINT} (same content, saved after that epoch).")
    return (f"An epoch_XXXX.pt is written only when its epoch trains, so delete the run folder {path.parent} and "
            f"rerun to train the run again.")


def load_checkpoint(path: str | os.PathLike, device: Any = "cpu") -> dict[str, Any]:
    """Load a training checkpoint written by :func:`atomic_torch_save` onto ``device``, safely.

    ``torch.load(path, map_location=device, weights_only=True)``: only tensors and plain Python data (dict,
    list, tuple, str, int, float, bool, None) are rebuilt, so a crafted file cannot run code. The file is
    first checked as a complete zip archive (``torch.save``'s format) with intact CRC-32 checksums, so a
    truncated or corrupted file is told apart from an unsafe one and from a device problem.

    Raises FileNotFoundError if ``path`` does not exist, and :class:`CheckpointError` naming ``path``, what is
    wrong and what to do if it is truncated/corrupt, holds other objects, or lacks :data:`CHECKPOINT_KEYS`.
    """
    import torch

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"{path} is truncated or corrupt (not a complete torch.save archive: {err}). "
                              f"{_recovery(path)}") from err
    if bad_member is not None:
        raise CheckpointError(f"{path} is corrupt (checksum mismatch in {bad_member}). {_recovery(path)}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path} holds objects other than tensors and plain data, so it was not loaded "
                              f"(loading it fully could run code). silentvae never writes such checkpoints: "
                              f"replace it with one of this project's files or delete it. ({err})") from err
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a silentvae training checkpoint (no {missing}). {_recovery(path)}")
    return state


class JSONFileError(ValueError):
    """A JSON file of the results (``result.json``, ``metrics.json``, a selection, a diagnostic) is truncated or
    not JSON; the message names it, the line and column, and what to do."""


def read_json(path: str | os.PathLike, fix: str = "") -> Any:
    """The content of a JSON file; :class:`JSONFileError` naming ``path`` (line and column) and ``fix`` (what to
    do; default: delete it and rerun, so that the step that writes it runs again) if it is not valid JSON.
    FileNotFoundError if it does not exist."""
    path = Path(path)
    text = path.read_bytes()
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f"line {err.lineno}, column {err.colno}" if isinstance(err, json.JSONDecodeError) else "encoding"
        problem = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
        raise JSONFileError(f"{path} is truncated or not valid JSON ({where}: {problem}). "
                            f"{fix or 'Delete it and rerun: the step that writes it runs again.'}") from None
