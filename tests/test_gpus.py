"""Tests of silentvae.pipeline.gpus: device claims with flock lock files, on simulated devices.

Concurrency and crash tests use real worker *processes* (``python -m silentvae.pipeline.gpus -- CMD`` as the pipeline runs
it, or plain ``python -c`` subprocesses that import only silentvae.pipeline.gpus, so they start fast), because locks must
work across processes and survive SIGKILL.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from silentvae.pipeline import gpus

ROOT = Path(__file__).resolve().parents[1]
CVD = "CUDA_VISIBLE_DEVICES"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """Isolate every test: no inherited device variables, a private lock dir."""
    for var in (CVD, gpus.ENV_NUM_GPUS, gpus.ENV_LOCK_DIR):
        monkeypatch.delenv(var, raising=False)


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


def _cli(lock_dir: Path, *cmd: str, devices: int = 1) -> list[str]:
    return [sys.executable, "-m", "silentvae.pipeline.gpus", "--lock-dir", str(lock_dir), "--num-devices", str(devices),
            "--", *cmd]


# --- concurrency -----------------------------------------------------------------------------------------

_JOB = """
import json, os, sys, time
from pathlib import Path
from silentvae.pipeline import gpus
work, i = Path(sys.argv[1]), sys.argv[2]
(work / f"ready{i}").touch()
while not (work / "go").exists():                 # start barrier: all workers contend at once
    time.sleep(0.01)
child = ("import json, os, random, sys, time; t0 = time.monotonic(); dev = os.environ['CUDA_VISIBLE_DEVICES']; "
         "time.sleep(random.uniform(0.1, 0.3)); "
         "open(sys.argv[1], 'w').write(json.dumps({'dev': dev, 't0': t0, 't1': time.monotonic()}))")
sys.exit(gpus.main(["--lock-dir", str(work / "locks"), "--timeout", "30", "--poll", "0.02", "--",
                    sys.executable, "-c", child, str(work / f"job{i}.json")]))
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

def _hold_in_child(lock_dir: Path) -> subprocess.Popen:
    """A claim (``python -m silentvae.pipeline.gpus``) holding the one simulated device until killed; its command dies
    with it."""
    p = subprocess.Popen(_cli(lock_dir, sys.executable, "-c", "import time; print('held', flush=True); "
                              "time.sleep(60)"), env=_worker_env(), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_sigkill_while_holding_leaves_no_stale_lock(tmp_path):
    p = _hold_in_child(tmp_path)
    try:
        assert f"pid={p.pid}" in (tmp_path / "gpu0.lock").read_text()      # holder info for debugging
        with pytest.raises(TimeoutError):
            gpus._acquire(["0"], tmp_path, timeout=0, poll=0.01)
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    t = time.monotonic()
    fd, dev, path = gpus._acquire(["0"], tmp_path, timeout=2, poll=0.01)
    gpus._release(fd, path)
    assert dev == "0" and time.monotonic() - t < 1.0


# --- device pool, zero devices, timeout ------------------------------------------------------------------

def test_claims_in_one_process_take_free_devices_and_release_clears_the_holder(tmp_path):
    fd0, dev0, path0 = gpus._acquire(["0", "1"], tmp_path, timeout=0, poll=0.01)
    assert dev0 == "0" and f"pid={os.getpid()}" in (tmp_path / "gpu0.lock").read_text()
    fd1, dev1, path1 = gpus._acquire(["0", "1"], tmp_path, timeout=0, poll=0.01)  # the next claim: the other one
    assert dev1 == "1"
    with pytest.raises(RuntimeError, match="already holds every device"):       # a third would wait for itself
        gpus._acquire(["0", "1"], tmp_path, timeout=5, poll=0.01)
    gpus._release(fd0, path0)
    gpus._release(fd1, path1)
    assert (tmp_path / "gpu0.lock").read_text() == ""                            # holder info cleared on release
    assert _lock_is_free(tmp_path / "gpu0.lock") and _lock_is_free(tmp_path / "gpu1.lock")


def test_preset_cuda_visible_devices_is_the_pool(tmp_path, monkeypatch):
    """An outer scheduler's allocation (CUDA_VISIBLE_DEVICES=3,5) is respected: claims stay inside it."""
    monkeypatch.setenv(CVD, "3,5")
    assert gpus._device_pool() == ["3", "5"]
    fd = os.open(tmp_path / "gpu3.lock", os.O_RDWR | os.O_CREAT)                 # someone else holds "3"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        out = subprocess.run([sys.executable, "-m", "silentvae.pipeline.gpus", "--lock-dir", str(tmp_path), "--timeout", "0",
                              "--", sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                             env=_worker_env(**{CVD: "3,5"}), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["5"]
    finally:
        os.close(fd)
    for hidden in ("", "-1", "-1,0"):
        monkeypatch.setenv(CVD, hidden)
        assert gpus._device_pool() == []


@pytest.mark.parametrize("value, entry", [("garbage", "garbage"), ("0,gpu1", "gpu1"), ("0, 1x", "1x"),
                                          ("cuda:0", "cuda:0")])
def test_malformed_cuda_visible_devices_is_a_named_error(tmp_path, monkeypatch, value, entry):
    monkeypatch.delenv(gpus.ENV_NUM_GPUS, raising=False)
    monkeypatch.setenv(CVD, value)
    with pytest.raises(ValueError, match=re.escape(f"{CVD}={value!r}: {entry!r} is not a device index")):
        gpus._device_pool()
    out = subprocess.run([sys.executable, "-m", "silentvae.pipeline.gpus", "--lock-dir", str(tmp_path), "--",
                          sys.executable, "-c", "print('ran')"], env=_worker_env(**{CVD: value}),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "" and f"{entry!r} is not a device index" in out.stderr
    assert out.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []  # one line, no lock claimed
    for valid, pool in [("1,0", ["1", "0"]), ("GPU-5d3e1f2a-aaaa", ["GPU-5d3e1f2a-aaaa"]),
                        ("MIG-GPU-5d3e/1/0,2", ["MIG-GPU-5d3e/1/0", "2"]), ("0,-1,garbage", ["0"])]:
        monkeypatch.setenv(CVD, valid)
        assert gpus._device_pool() == pool


def test_zero_devices_runs_the_command_on_cpu_without_locks(tmp_path, monkeypatch):
    locks = tmp_path / "locks"
    out = subprocess.run(_cli(locks, sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))",
                              devices=0), env=_worker_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["None"], out.stderr
    monkeypatch.setenv(gpus.ENV_NUM_GPUS, "0")
    assert gpus._device_pool() == []
    assert not locks.exists()


@pytest.mark.parametrize("devices", [0, 1])
def test_a_job_started_with_sigint_ignored_can_still_be_interrupted(tmp_path, devices):
    """A Snakemake started in the background of a script (``nohup snakemake ... &``) runs with SIGINT ignored, which
    its jobs would inherit: Ctrl-C and ``kill -INT -- -PGID`` would not end them. The wrapper restores the default."""
    import signal
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    out = subprocess.run(_cli(tmp_path, sys.executable, "-c", probe, devices=devices), env=_worker_env(),
                         capture_output=True, text=True, timeout=60,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert out.returncode == 0 and out.stdout.split() == ["True"], out.stderr
    ignored = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert ignored.stdout.split() == ["False"]          # what the job would have inherited without the wrapper


def test_timeout_names_lock_dir(tmp_path):
    holder = _hold_in_child(tmp_path)
    try:
        t = time.monotonic()
        with pytest.raises(TimeoutError, match=str(tmp_path)) as info:
            gpus._acquire(["0"], tmp_path, timeout=0.3, poll=0.05)
        assert 0.25 <= time.monotonic() - t < 2
        assert f"pid={holder.pid}" in str(info.value)                  # names the holder too
    finally:
        holder.kill()
        holder.communicate()


def test_default_lock_dir(tmp_path, monkeypatch):
    assert gpus.default_lock_dir().name == f"silentvae-gpu-locks-{os.getuid()}"
    shared = tmp_path / "shared"
    child = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')\n")
    out = subprocess.run([sys.executable, "-m", "silentvae.pipeline.gpus", "--", sys.executable, "-c", child,
                          str(shared / "gpu0.lock")], capture_output=True, text=True, timeout=60,
                         env=_worker_env(**{gpus.ENV_LOCK_DIR: str(shared), gpus.ENV_NUM_GPUS: "1"}))
    assert out.returncode == 0 and out.stdout.split() == ["held"], out.stderr


def test_device_pool_sources(monkeypatch):
    monkeypatch.setenv(gpus.ENV_NUM_GPUS, "3")
    assert gpus._device_pool() == ["0", "1", "2"]
    monkeypatch.setenv(gpus.ENV_NUM_GPUS, "three")
    with pytest.raises(ValueError, match=gpus.ENV_NUM_GPUS):
        gpus._device_pool()
    monkeypatch.delenv(gpus.ENV_NUM_GPUS)
    monkeypatch.setattr(gpus, "_physical_gpu_count", lambda: 4)
    assert len(gpus._device_pool()) == 4
    smi = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)\n"
           "  MIG 3g.40gb     Device  0: (UUID: MIG-bbbb)\n"
           "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)\n")
    assert gpus._parse_nvidia_smi_list(smi) == 2
    assert gpus._parse_nvidia_smi_list("") == 0


def test_real_count_does_not_initialise_cuda():
    """Counting the host's devices must not import torch (importing it is harmless, but calling into CUDA is not)."""
    out = subprocess.run([sys.executable, "-c", "import sys; from silentvae.pipeline import gpus; "
                          "n = len(gpus._device_pool()); print(n, 'torch' in sys.modules)"],
                         env=_worker_env(), capture_output=True, text=True, timeout=60, check=True)
    n, torch_imported = out.stdout.split()
    assert int(n) >= 0 and torch_imported == "False"


def test_cli_execs_command_holding_the_device(tmp_path):
    child = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "dev = os.environ['CUDA_VISIBLE_DEVICES']\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print(dev, 'free')\n"
             "except BlockingIOError:\n    print(dev, 'held')\n")
    out = subprocess.run([sys.executable, "-m", "silentvae.pipeline.gpus", "--lock-dir", str(tmp_path), "--num-devices", "1",
                          "--", sys.executable, "-c", child, str(tmp_path / "gpu0.lock")],
                         env=_worker_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "held"]                          # the exec'd command holds the lock
    assert _lock_is_free(tmp_path / "gpu0.lock")                        # and it went away with it


def test_jobs_per_gpu_spreads_then_shares(tmp_path):
    """Two slots per device: claims fill slot 0 of each device, then slot 1; a fifth claim finds none."""
    held = [gpus._acquire(["0", "1"], tmp_path, timeout=0, poll=0.01, jobs_per_gpu=2) for _ in range(4)]
    try:
        assert [dev for _, dev, _ in held] == ["0", "1", "0", "1"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu0.lock", "gpu0.slot1.lock", "gpu1.lock",
                                                              "gpu1.slot1.lock"]
        with pytest.raises(RuntimeError, match="already holds every device"):
            gpus._acquire(["0", "1"], tmp_path, timeout=0, poll=0.01, jobs_per_gpu=2)
    finally:
        for fd, _, path in held:
            gpus._release(fd, path)
    with pytest.raises(ValueError, match="jobs_per_gpu"):
        gpus._acquire(["0"], tmp_path, timeout=0, poll=0.01, jobs_per_gpu=0)


def test_cli_jobs_per_gpu_takes_the_second_slot(tmp_path):
    holder = _hold_in_child(tmp_path)  # holds gpu0.lock (slot 0) in another process
    try:
        out = subprocess.run([sys.executable, "-m", "silentvae.pipeline.gpus", "--lock-dir", str(tmp_path), "--num-devices",
                              "1", "--jobs-per-gpu", "2", "--timeout", "5", "--", sys.executable, "-c",
                              "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                             env=_worker_env(), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["0"] and (tmp_path / "gpu0.slot1.lock").exists()
    finally:
        holder.kill()
        holder.wait()


# --- CLI: bounded waits, the lock lives exactly as long as the command ----------------------------------

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
