"""Tests of silentvae.gpus: device claims with flock lock files, on simulated devices.

Concurrency and crash tests use real worker *processes* (plain ``python -c`` subprocesses that import only
silentvae.gpus, so they start fast), because locks must work across processes and survive SIGKILL.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from silentvae import gpus
from silentvae.gpus import claim_device, visible_gpu_count

ROOT = Path(__file__).resolve().parents[1]
CVD = "CUDA_VISIBLE_DEVICES"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """Isolate every test: no inherited device variables, a private lock dir, and CUDA reported as not
    initialised (another test in this pytest process may have initialised it on a GPU machine)."""
    for var in (CVD, gpus.ENV_NUM_GPUS, gpus.ENV_LOCK_DIR):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(gpus, "_cuda_initialized", lambda: False)


def _worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (CVD, gpus.ENV_NUM_GPUS, gpus.ENV_LOCK_DIR)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _spawn(code: str, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=_worker_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


# --- concurrency -----------------------------------------------------------------------------------------

_JOB = """
import json, os, random, sys, time
from pathlib import Path
from silentvae.gpus import claim_device
work, i = Path(sys.argv[1]), sys.argv[2]
(work / f"ready{i}").touch()
while not (work / "go").exists():                 # start barrier: all workers contend at once
    time.sleep(0.01)
with claim_device(work / "locks", timeout=30, poll=0.02) as device:
    t0 = time.monotonic()
    dev = os.environ["CUDA_VISIBLE_DEVICES"]
    time.sleep(random.uniform(0.1, 0.3))
    t1 = time.monotonic()
assert "CUDA_VISIBLE_DEVICES" not in os.environ
(work / f"job{i}.json").write_text(json.dumps({"device": device, "dev": dev, "t0": t0, "t1": t1}))
"""


def test_concurrent_jobs_never_share_a_device(tmp_path):
    n_jobs, n_dev = 12, 3
    procs = [_spawn(_JOB, str(tmp_path), str(i), SILENTVAE_NUM_GPUS=str(n_dev)) for i in range(n_jobs)]
    deadline = time.monotonic() + 15
    while len(list(tmp_path.glob("ready*"))) < n_jobs and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
    runs = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(n_jobs)]  # every job ran

    assert {r["device"] for r in runs} == {"cuda"}
    assert {r["dev"] for r in runs} == {"0", "1", "2"}                  # all devices used
    for dev in ("0", "1", "2"):                                         # no overlap on one device
        spans = sorted((r["t0"], r["t1"]) for r in runs if r["dev"] == dev)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), (dev, spans)
    events = sorted([(r["t0"], 1) for r in runs] + [(r["t1"], -1) for r in runs])
    running = peak = 0
    for _, step in events:                                              # ends sort before starts at ties
        running += step
        peak = max(peak, running)
    assert peak <= n_dev


# --- crash safety ----------------------------------------------------------------------------------------

def test_exception_inside_releases_device(tmp_path):
    locks = tmp_path / "locks"
    with pytest.raises(RuntimeError, match="boom"):
        with claim_device(locks, num_devices=1):
            raise RuntimeError("boom")
    assert os.environ.get(CVD) is None
    with claim_device(locks, num_devices=1, timeout=0):
        assert os.environ[CVD] == "0"


def test_exception_in_other_process_releases_device_while_it_lives(tmp_path):
    """The release comes from the context exit, not from the process ending."""
    p = _spawn("""
        import sys, time
        from silentvae.gpus import claim_device
        try:
            with claim_device(sys.argv[1], num_devices=1):
                raise ValueError("crash inside")
        except ValueError:
            print("released", flush=True)
        time.sleep(30)
        """, str(tmp_path))
    try:
        assert p.stdout.readline().strip() == "released"
        with claim_device(tmp_path, num_devices=1, timeout=1) as device:
            assert device == "cuda" and os.environ[CVD] == "0"
    finally:
        p.kill()
        p.communicate()


def test_sigkill_while_holding_leaves_no_stale_lock(tmp_path):
    p = _spawn("""
        import os, sys, time
        from silentvae.gpus import claim_device
        with claim_device(sys.argv[1], num_devices=1):
            print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
            time.sleep(60)
        """, str(tmp_path))
    try:
        assert p.stdout.readline().strip() == "0"
        assert f"pid={p.pid}" in (tmp_path / "gpu0.lock").read_text()      # holder info for debugging
        with pytest.raises(TimeoutError):
            with claim_device(tmp_path, num_devices=1, timeout=0):
                pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    t = time.monotonic()
    with claim_device(tmp_path, num_devices=1, timeout=2, poll=0.01):
        assert os.environ[CVD] == "0"
    assert time.monotonic() - t < 1.0


# --- environment, zero devices, timeout ------------------------------------------------------------------

def test_cuda_visible_devices_set_inside_and_restored(tmp_path, monkeypatch):
    with claim_device(tmp_path, num_devices=2) as device:
        assert device == "cuda" and os.environ[CVD] == "0"
        assert f"pid={os.getpid()}" in (tmp_path / "gpu0.lock").read_text()
        with claim_device(tmp_path, num_devices=2) as inner:         # second claim gets the other device
            assert inner == "cuda" and os.environ[CVD] == "1"
        assert os.environ[CVD] == "0"
    assert CVD not in os.environ                                       # was unset before: unset again
    assert (tmp_path / "gpu0.lock").read_text() == ""                 # holder info cleared on release

    monkeypatch.setenv(CVD, "7,8")
    with claim_device(tmp_path, num_devices=2):
        assert os.environ[CVD] == "0"
    assert os.environ[CVD] == "7,8"


def test_preset_cuda_visible_devices_is_the_pool(tmp_path, monkeypatch):
    """An outer scheduler's allocation (CUDA_VISIBLE_DEVICES=3,5) is respected: claims stay inside it."""
    monkeypatch.setenv(CVD, "3,5")
    assert visible_gpu_count() == 2
    with claim_device(tmp_path):
        assert os.environ[CVD] == "3"
        assert not _lock_is_free(tmp_path / "gpu3.lock")
        # Nested: the pool is now just "3", held by this very process -> error instead of waiting forever.
        with pytest.raises(RuntimeError, match="nested"):
            with claim_device(tmp_path):
                pass
    assert os.environ[CVD] == "3,5"
    fd = os.open(tmp_path / "gpu3.lock", os.O_RDWR)                   # someone else holds "3"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with claim_device(tmp_path, timeout=0):
            assert os.environ[CVD] == "5"
    finally:
        os.close(fd)
    for hidden in ("", "-1", "-1,0"):
        monkeypatch.setenv(CVD, hidden)
        assert visible_gpu_count() == 0


def test_zero_devices_yields_cpu_without_locks(tmp_path, monkeypatch):
    locks = tmp_path / "locks"
    with claim_device(locks, num_devices=0) as device:
        assert device == "cpu" and CVD not in os.environ
    monkeypatch.setenv(gpus.ENV_NUM_GPUS, "0")
    assert visible_gpu_count() == 0
    with claim_device(locks) as device:
        assert device == "cpu"
    assert not locks.exists()


def _hold_in_child(lock_dir: Path, n: int = 1) -> subprocess.Popen:
    """A separate process that holds ``n`` simulated devices until killed."""
    p = _spawn("""
        import contextlib, sys, time
        from silentvae.gpus import claim_device
        with contextlib.ExitStack() as stack:
            for _ in range(int(sys.argv[2])):
                stack.enter_context(claim_device(sys.argv[1], num_devices=int(sys.argv[2])))
            print("held", flush=True)
            time.sleep(60)
        """, str(lock_dir), str(n))
    assert p.stdout.readline().strip() == "held"
    return p


def test_timeout_names_lock_dir(tmp_path):
    holder = _hold_in_child(tmp_path)
    try:
        t = time.monotonic()
        with pytest.raises(TimeoutError, match=str(tmp_path)) as info:
            with claim_device(tmp_path, num_devices=1, timeout=0.3, poll=0.05):
                pass
        assert 0.25 <= time.monotonic() - t < 2
        assert f"pid={holder.pid}" in str(info.value)                  # names the holder too
    finally:
        holder.kill()
        holder.communicate()


def test_default_lock_dir(tmp_path, monkeypatch):
    assert gpus.default_lock_dir().name == f"silentvae-gpu-locks-{os.getuid()}"
    monkeypatch.setenv(gpus.ENV_LOCK_DIR, str(tmp_path / "shared"))
    monkeypatch.setenv(gpus.ENV_NUM_GPUS, "1")
    with claim_device():
        assert not _lock_is_free(tmp_path / "shared" / "gpu0.lock")


def test_refuses_when_cuda_already_initialised(tmp_path, monkeypatch):
    monkeypatch.setattr(gpus, "_cuda_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="before CUDA is initialised"):
        with claim_device(tmp_path, num_devices=1):
            pass
    with claim_device(tmp_path, num_devices=0) as device:                # CPU needs no mask
        assert device == "cpu"


def test_visible_gpu_count_sources(monkeypatch):
    monkeypatch.setenv(gpus.ENV_NUM_GPUS, "3")
    assert visible_gpu_count() == 3
    monkeypatch.setenv(gpus.ENV_NUM_GPUS, "three")
    with pytest.raises(ValueError, match=gpus.ENV_NUM_GPUS):
        visible_gpu_count()
    monkeypatch.delenv(gpus.ENV_NUM_GPUS)
    monkeypatch.setattr(gpus, "_physical_gpu_count", lambda: 4)
    assert visible_gpu_count() == 4
    smi = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)\n"
           "  MIG 3g.40gb     Device  0: (UUID: MIG-bbbb)\n"
           "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)\n")
    assert gpus._parse_nvidia_smi_list(smi) == 2
    assert gpus._parse_nvidia_smi_list("") == 0


def test_real_count_does_not_initialise_cuda():
    """visible_gpu_count() must not import torch (importing it is harmless, but calling into CUDA is not)."""
    out = subprocess.run([sys.executable, "-c", "import sys; from silentvae.gpus import visible_gpu_count; "
                          "n = visible_gpu_count(); print(n, 'torch' in sys.modules)"],
                         env=_worker_env(), capture_output=True, text=True, timeout=60, check=True)
    n, torch_imported = out.stdout.split()
    assert int(n) >= 0 and torch_imported == "False"


def test_cli_execs_command_holding_the_device(tmp_path):
    child = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "dev = os.environ['CUDA_VISIBLE_DEVICES']\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print(dev, 'free')\n"
             "except BlockingIOError:\n    print(dev, 'held')\n")
    out = subprocess.run([sys.executable, "-m", "silentvae.gpus", "--lock-dir", str(tmp_path), "--num-devices", "1",
                          "--", sys.executable, "-c", child, str(tmp_path / "gpu0.lock")],
                         env=_worker_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "held"]                          # the exec'd command holds the lock
    assert _lock_is_free(tmp_path / "gpu0.lock")                        # and it went away with it


def test_jobs_per_gpu_spreads_then_shares(tmp_path):
    """Two slots per device: claims fill slot 0 of each device, then slot 1; a fifth claim finds none."""
    with contextlib.ExitStack() as stack:
        got = [stack.enter_context(claim_device(tmp_path, num_devices=2, jobs_per_gpu=2)) and os.environ[CVD]
               for _ in range(4)]
        assert got == ["0", "1", "0", "1"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu0.lock", "gpu0.slot1.lock", "gpu1.lock",
                                                              "gpu1.slot1.lock"]
        with pytest.raises(RuntimeError, match="already holds every device"):
            with claim_device(tmp_path, num_devices=2, jobs_per_gpu=2):
                pass
    with pytest.raises(ValueError, match="jobs_per_gpu"):
        with claim_device(tmp_path, num_devices=1, jobs_per_gpu=0):
            pass


def test_cli_jobs_per_gpu_takes_the_second_slot(tmp_path):
    holder = _hold_in_child(tmp_path)  # holds gpu0.lock (slot 0) in another process
    try:
        out = subprocess.run([sys.executable, "-m", "silentvae.gpus", "--lock-dir", str(tmp_path), "--num-devices",
                              "1", "--jobs-per-gpu", "2", "--timeout", "5", "--", sys.executable, "-c",
                              "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                             env=_worker_env(), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["0"] and (tmp_path / "gpu0.slot1.lock").exists()
    finally:
        holder.kill()
        holder.wait()


# --- CLI: bounded waits, the lock lives exactly as long as the command ----------------------------------

def _cli(lock_dir: Path, *cmd: str) -> list[str]:
    return [sys.executable, "-m", "silentvae.gpus", "--lock-dir", str(lock_dir), "--num-devices", "1", "--", *cmd]


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie, dead but not yet reaped by its new parent, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_claim_waits_for_the_default_timeout_not_forever(tmp_path, monkeypatch):
    assert gpus.default_timeout() == gpus.DEFAULT_TIMEOUT_S < float("inf")
    monkeypatch.setenv(gpus.ENV_TIMEOUT, "soon")
    with pytest.raises(ValueError, match=gpus.ENV_TIMEOUT):
        gpus.default_timeout()
    monkeypatch.delenv(gpus.ENV_TIMEOUT)
    holder = _hold_in_child(tmp_path)
    try:  # no --timeout given: $SILENTVAE_GPU_TIMEOUT bounds the wait (before: it waited forever)
        out = subprocess.run(_cli(tmp_path, sys.executable, "-c", "print('ran')"), capture_output=True, text=True,
                             env=_worker_env(**{gpus.ENV_TIMEOUT: "0.5"}), timeout=30)
    finally:
        holder.kill()
        holder.communicate()
    assert out.returncode == 75 and "ran" not in out.stdout
    assert out.stderr.count("waiting up to 0.5 s") == 1                # says once that it waits, and for whom
    assert "no free GPU among 1 device(s) after waiting 0.5 s" in out.stderr
    assert f"pid={holder.pid}" in out.stderr and "--timeout" in out.stderr and gpus.ENV_TIMEOUT in out.stderr


def test_background_child_of_a_job_does_not_keep_the_lock(tmp_path):
    pidfile = tmp_path / "bg.pid"
    out = subprocess.run(_cli(tmp_path, "sh", "-c", f"sleep 60 >/dev/null 2>&1 & echo $! > '{pidfile}'"),
                         env=_worker_env(), capture_output=True, text=True, timeout=60)
    bg = int(pidfile.read_text())
    try:
        assert out.returncode == 0, out.stderr
        assert _alive(bg)                                               # the job left a sleeping child behind
        assert _lock_is_free(tmp_path / "gpu0.lock")                    # but the device is free again
    finally:
        os.kill(bg, signal.SIGKILL)


def test_cli_passes_on_exit_status_and_sigterm(tmp_path):
    out = subprocess.run(_cli(tmp_path, sys.executable, "-c", "raise SystemExit(3)"), env=_worker_env(), timeout=60)
    assert out.returncode == 3
    job = subprocess.Popen(_cli(tmp_path, sys.executable, "-c", "import time; print('up', flush=True); "
                                "time.sleep(60)"), env=_worker_env(), stdout=subprocess.PIPE, text=True)
    assert job.stdout.readline().strip() == "up"
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=30) == 128 + signal.SIGTERM                # the command got SIGTERM and died of it
    job.stdout.close()
    assert _lock_is_free(tmp_path / "gpu0.lock")


def test_command_dies_with_a_killed_claim_holder(tmp_path):
    pidfile = tmp_path / "cmd.pid"
    job = subprocess.Popen(_cli(tmp_path, sys.executable, "-c", "import os, sys, time; "
                                "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)", str(pidfile)),
                           env=_worker_env())
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    cmd = int(pidfile.read_text())
    try:
        job.kill()                                                      # SIGKILL the process holding the lock
        job.wait(timeout=30)
        while _alive(cmd) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(cmd)                                          # the command does not run on unclaimed
        assert _lock_is_free(tmp_path / "gpu0.lock")
    finally:
        if _alive(cmd):
            os.kill(cmd, signal.SIGKILL)
