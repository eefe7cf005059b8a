"""One GPU per job: claim a free physical device with a lock file, so concurrent jobs never share one.

Snakemake (``--resources gpu=8``) only *counts* GPUs; it does not say which one a job should use. Each job
therefore runs under a claim (see "Command-line use" below)::

    python -m silentvae.pipeline.gpus -- papermill in.ipynb out.ipynb     # the command sees one GPU as "cuda", or none

How it works
------------
* One lock file per device, ``<lock_dir>/gpu<k>.lock``, taken with ``fcntl.flock(LOCK_EX | LOCK_NB)``.
  The kernel drops a flock when the last descriptor of the open file goes away, i.e. when the holder
  releases it *or dies for any reason, SIGKILL included*: a crashed job never leaves a stale claim. The
  file's content (pid, host, time) is only a debugging aid; the flock is the truth. Lock files are never
  deleted (unlinking a flock file races with a process that opened it but has not locked it yet).
* The command runs with ``CUDA_VISIBLE_DEVICES`` set to the claimed device, so inside the job the device is
  simply ``"cuda"`` (CUDA reads the variable once, when the command initialises it).
* No GPU: the command runs at once, unchanged, nothing is locked, so the same pipeline runs on a laptop.
* A claim waits at most ``timeout`` seconds (default ``$SILENTVAE_GPU_TIMEOUT``, else
  :data:`DEFAULT_TIMEOUT_S`; ``inf`` waits forever), then raises TimeoutError naming the lock files' holders.
  Inside Snakemake, ``--resources gpu=`` keeps the jobs of one pipeline from waiting; a wait means some other
  process holds the devices.

Counting devices without initialising CUDA
------------------------------------------
``torch.cuda.device_count()`` asks NVML first, but when NVML fails it falls back to
``cudaGetDeviceCount()``, which initialises the CUDA driver and freezes the device mask of the whole
process: a later ``CUDA_VISIBLE_DEVICES`` change would be silently ignored and every job would run on
GPU 0. It also counts only the devices visible *now*. The device pool (:func:`_device_pool`) therefore never
calls into CUDA and never imports torch: it reads ``nvidia-smi -L`` in a subprocess (falling back to
``/proc/driver/nvidia/gpus``).

Several jobs per GPU
--------------------
Small models leave a GPU mostly idle between kernel launches, so a few jobs can share one. With
``jobs_per_gpu=N`` (``--jobs-per-gpu N``) each device has N slots, ``gpu<k>.slot<j>.lock`` for j > 0; a claim
takes the first free slot, filling slot 0 of every device before slot 1 of any, so jobs spread over
devices first. Snakemake's ``--resources gpu=`` then counts slots: GPUs x N.

Command-line use (Snakemake ``shell:`` rules)::

    python -m silentvae.pipeline.gpus [--timeout S] [--lock-dir D] [--num-devices N] [--jobs-per-gpu N] -- papermill in.ipynb out.ipynb

claims a device, then runs the command as its child with ``CUDA_VISIBLE_DEVICES`` set, and exits with the
command's status once the command exits; the lock is held by this waiting parent, so it lives exactly as long
as the command. The lock descriptor is never inherited (close-on-exec, and ``close_fds``): a background process
the command leaves behind (``cmd &``) cannot keep the device claimed after the job ended. SIGTERM and SIGHUP
are passed on to the command, and if the parent is killed, the kernel kills the command too
(``PR_SET_PDEATHSIG``), so the command never runs on a device it no longer holds.

Caveats: locks coordinate processes on one host that use the same lock directory (the default is per
user, under ``tempfile.gettempdir()``, which honours ``TMPDIR``; inside a SLURM job, per job: SLURM hands each
job its own GPUs, see :func:`default_lock_dir`). A claim nested inside a job sees only the
device already held (it is now all of ``CUDA_VISIBLE_DEVICES``) and waits for it up to its timeout; inside one
process, claiming every slot already held raises RuntimeError instead of waiting for itself.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "default_lock_dir", "default_timeout"]

ENV_NUM_GPUS = "SILENTVAE_NUM_GPUS"
ENV_LOCK_DIR = "SILENTVAE_GPU_LOCK_DIR"
ENV_TIMEOUT = "SILENTVAE_GPU_TIMEOUT"
#: Seconds a claim waits for a free device unless told otherwise: long enough to ride out another job
#: finishing, short enough that a claim blocked by a forgotten process is reported within the hour.
DEFAULT_TIMEOUT_S = 1800.0
_CVD = "CUDA_VISIBLE_DEVICES"
_HELD: set[Path] = set()  # lock files this process holds, to turn a nested self-deadlock into an error


def default_lock_dir() -> Path:
    """``$SILENTVAE_GPU_LOCK_DIR`` if set, else ``<tempdir>/silentvae-gpu-locks-<uid>`` (one per user); inside a
    SLURM job (``$SLURM_JOB_ID`` set) its subfolder ``slurm-job-<id>``.

    Why per job under SLURM: SLURM already gave the job its GPUs for itself alone, and where it confines devices
    (cgroup ``ConstrainDevices``) every job numbers its GPUs from 0. Host-wide lock files would then make two jobs
    on one node that hold different physical GPUs both lock ``gpu0.lock``, and the second would wait for the first.
    """
    env = os.environ.get(ENV_LOCK_DIR)
    if env:
        return Path(env)
    base = Path(tempfile.gettempdir()) / f"silentvae-gpu-locks-{os.getuid()}"
    job = os.environ.get("SLURM_JOB_ID", "").strip()
    return base / f"slurm-job-{re.sub(r'[^A-Za-z0-9_.-]', '_', job)}" if job else base


def default_timeout() -> float:
    """Seconds a claim waits: ``$SILENTVAE_GPU_TIMEOUT`` if set (``inf`` waits forever), else
    :data:`DEFAULT_TIMEOUT_S`."""
    env = os.environ.get(ENV_TIMEOUT, "").strip()
    if not env:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(env)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"{ENV_TIMEOUT} must be a number of seconds >= 0 or 'inf', got {env!r}")
    return value


def _parse_nvidia_smi_list(text: str) -> int:
    """Number of physical GPUs in ``nvidia-smi -L`` output: lines ``GPU <i>: ...`` (MIG lines are indented)."""
    return sum(1 for line in text.splitlines() if re.match(r"GPU \d+:", line))


def _physical_gpu_count() -> int:
    """Physical NVIDIA GPUs on this host, without touching CUDA in this process: ``nvidia-smi -L``,
    else the entries of ``/proc/driver/nvidia/gpus``, else 0 (no NVIDIA driver, so no CUDA device)."""
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            res = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30)
            if res.returncode == 0:
                return _parse_nvidia_smi_list(res.stdout)
        except (OSError, subprocess.SubprocessError):
            pass
    proc = Path("/proc/driver/nvidia/gpus")
    return len(list(proc.iterdir())) if proc.is_dir() else 0


def _parse_visible_devices(value: str) -> list[str]:
    """Entries of a ``CUDA_VISIBLE_DEVICES`` value, as CUDA reads it: comma separated, cut at the first
    negative index (``""`` and ``"-1"`` hide every device). UUID / MIG entries are kept as strings. An entry that
    is none of these (CUDA would silently hide it and every device after it) is a ValueError naming it."""
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item or re.fullmatch(r"-\d+", item):
            break
        if not re.fullmatch(r"\d+|(?:GPU|MIG)-[0-9A-Za-z/-]+", item):
            raise ValueError(f"{_CVD}={value!r}: {item!r} is not a device index (0, 1, ...), a GPU-<UUID> or a "
                             f"MIG-<UUID> (CUDA would hide it and every device after it, so the job would run on "
                             f"the CPU unannounced); set it to the GPUs to use, e.g. {_CVD}=0,1, or unset it")
        out.append(item)
    return out


def _device_pool(num_devices: int | None = None) -> list[str]:
    """The device names a claim may choose from, as values for ``CUDA_VISIBLE_DEVICES``.

    In order: ``num_devices`` if given, else ``$SILENTVAE_NUM_GPUS`` (both give ``"0" .. "n-1"``; these
    simulate devices in tests or cap the count); else the entries of an already set
    ``CUDA_VISIBLE_DEVICES`` (an outer scheduler such as SLURM or a container gave this process those
    devices, so a claim must stay inside them); else ``0 .. n-1`` for the physical GPUs of the host.
    """
    if num_devices is None:
        env = os.environ.get(ENV_NUM_GPUS, "").strip()
        if env:
            try:
                num_devices = int(env)
            except ValueError:
                raise ValueError(f"{ENV_NUM_GPUS} must be a non-negative integer, got {env!r}") from None
    if num_devices is not None:
        if num_devices < 0:
            raise ValueError(f"number of devices must be >= 0, got {num_devices}")
        return [str(k) for k in range(num_devices)]
    if _CVD in os.environ:
        return _parse_visible_devices(os.environ[_CVD])
    return [str(k) for k in range(_physical_gpu_count())]


def _lock_path(lock_dir: Path, device: str, slot: int = 0) -> Path:
    name = f"gpu{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}"
    return lock_dir / (f"{name}.lock" if slot == 0 else f"{name}.slot{slot}.lock")


def _try_lock(path: Path) -> int | None:
    """Open ``path`` and take its flock without waiting; return the descriptor (close-on-exec: no child
    process inherits it), or None if it is held. The holder's pid, host and start time are written into the
    file for whoever debugs a busy device."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"pid={os.getpid()} host={socket.gethostname()} since={time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
             .encode())
    return fd


def _release(fd: int, path: Path) -> None:
    """Clear the holder info (while still holding the lock) and close, which drops the flock."""
    _HELD.discard(path)
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _holders(lock_dir: Path, pool: list[str]) -> str:
    """``gpu0: pid=.. host=..; ...`` from the lock files, for error messages."""
    parts = []
    for dev in pool:
        try:
            info = _lock_path(lock_dir, dev).read_text().strip()
        except OSError:
            info = ""
        parts.append(f"gpu{dev}: {info or '?'}")
    return "; ".join(parts)


def _acquire(pool: list[str], lock_dir: Path, timeout: float | None, poll: float,
             jobs_per_gpu: int = 1) -> tuple[int, str, Path]:
    """Wait for a free slot of a device of ``pool``; return (lock descriptor, device, lock path). Tries slot 0
    of each device in order, then slot 1, ..., so low indices fill first and jobs spread over devices.
    Raises TimeoutError after ``timeout`` seconds (None: :func:`default_timeout`; ``math.inf``: wait forever),
    and RuntimeError at once if this very process holds every slot of the pool (nested claim). Says once on
    stderr that it waits, and for whom."""
    timeout = default_timeout() if timeout is None else float(timeout)
    if not timeout >= 0:
        raise ValueError(f"timeout must be >= 0 seconds (inf: forever), got {timeout}")
    if poll <= 0:
        raise ValueError(f"poll must be > 0 seconds, got {poll}")
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be >= 1, got {jobs_per_gpu}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    slots = [(dev, _lock_path(lock_dir, dev, j).resolve()) for j in range(jobs_per_gpu) for dev in pool]
    if all(p in _HELD for _, p in slots):
        raise RuntimeError(f"this process already holds every device of the pool {pool} (lock dir {lock_dir}); "
                           "a nested claim would wait forever")
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        for dev, path in slots:
            fd = _try_lock(path)
            if fd is not None:
                _HELD.add(path)
                return fd, dev, path
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"no free GPU among {len(pool)} device(s) after waiting {timeout:g} s; lock dir {lock_dir} "
                f"({_holders(lock_dir, pool)}). Other processes hold them: wait for or stop those pids, start fewer "
                f"jobs at once (snakemake --resources gpu=...), or wait longer with --timeout S or "
                f"${ENV_TIMEOUT} (inf: forever).")
        if not waited:
            waited = True
            print(f"silentvae.pipeline.gpus: every GPU slot in {lock_dir} is busy ({_holders(lock_dir, pool)}); waiting up to "
                  f"{timeout:g} s (--timeout / ${ENV_TIMEOUT})", file=sys.stderr, flush=True)
        time.sleep(max(0.0, min(poll, deadline - time.monotonic())))


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when its parent (the lock holder) dies."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(128 + signal.SIGKILL)


def _run_holding_lock(cmd: list[str]) -> int:
    """Run ``cmd`` as a child that inherits no lock descriptor and wait for it; its exit status (128 + N if
    signal N killed it, as a shell reports it). SIGTERM and SIGHUP are passed on; SIGINT (Ctrl-C) reaches the
    child from the terminal itself, so this parent ignores it and waits for the child to finish."""
    signal.signal(signal.SIGINT, lambda *_: None)  # a Python handler, unlike SIG_IGN, is not inherited
    child = subprocess.Popen(cmd, close_fds=True, preexec_fn=_die_with_parent)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    status = child.wait()
    return 128 - status if status < 0 else status


def main(argv: list[str] | None = None) -> int:
    """``python -m silentvae.pipeline.gpus [options] -- CMD ...``: claim a device, then run CMD with
    ``CUDA_VISIBLE_DEVICES`` set and exit with its status (no device: CMD is exec'd unchanged, on CPU). The
    device stays claimed until CMD exits; background processes CMD leaves behind do not hold it."""
    parser = argparse.ArgumentParser(prog="python -m silentvae.pipeline.gpus", description=main.__doc__)
    parser.add_argument("--lock-dir", default=None, help=f"default: ${ENV_LOCK_DIR} or {default_lock_dir()}")
    parser.add_argument("--num-devices", type=int, default=None,
                        help="default: $SILENTVAE_NUM_GPUS, else a preset CUDA_VISIBLE_DEVICES, else the host's GPUs")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds to wait for a free device (inf: forever; default: ${ENV_TIMEOUT} or "
                             f"{DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--jobs-per-gpu", type=int, default=1, help="jobs that may share one device (default 1)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given (usage: python -m silentvae.pipeline.gpus [options] -- CMD ...)")
    try:
        pool = _device_pool(args.num_devices)
    except ValueError as err:
        print(f"silentvae.pipeline.gpus: {err}", file=sys.stderr)
        return 2
    # Ctrl-C / `kill -INT -- -PGID` must end the job (README): a shell that started Snakemake in the background of a
    # script leaves SIGINT ignored (POSIX), and an ignored signal would be inherited by the command through exec.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if not pool:
        os.execvp(cmd[0], cmd)
    lock_dir = Path(args.lock_dir) if args.lock_dir else default_lock_dir()
    try:
        _, dev, _ = _acquire(pool, lock_dir, args.timeout, args.poll, args.jobs_per_gpu)  # held until we exit
    except TimeoutError as err:
        print(f"silentvae.pipeline.gpus: {err}", file=sys.stderr)
        return 75  # EX_TEMPFAIL
    os.environ[_CVD] = dev
    return _run_holding_lock(cmd)


if __name__ == "__main__":
    sys.exit(main())
