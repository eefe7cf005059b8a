"""The SLURM profile against a real SLURM: tools/slurm_local.sh starts a single-node cluster on loopback (munge,
MariaDB, slurmdbd, slurmctld, slurmd; 2 CPUs, 2 GPUs as GRES with placeholder devices, so jobs run on the CPU),
then config/tiny.yaml runs through ``snakemake --profile profiles/slurm`` with only the partition, runtime and
memory overridden. The accounting (``sacct``) must show every training and diagnostic job, each training job with
one GPU; one training job is killed while it runs (SIGKILL to its processes, as a crash or an OOM kill) and must
be retried (the profile's ``retries: 1``); the run's result.json files and tables must equal those of the same config run locally.

Needs Debian's ``slurm-wlm slurmdbd munge mariadb-server`` (``tools/slurm_local.sh install``, as root; .ci/run does
it) and root (the daemons and jobs run as root). Skipped, with the reason, where ``sbatch`` is missing."""

import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from silentvae.pipeline import gpus
from silentvae.pipeline import paths
from silentvae.pipeline.plan import load_config, make_plan

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "slurm_local.sh"
PARTITION = "debug"  # tools/slurm_local.sh's partition
OVERRIDES = ["--default-resources", f"slurm_partition={PARTITION}", "runtime=30", "mem_mb=1000",
             "--set-resources", "report:mem_mb=1000", "select:mem_mb=500"]  # the node has 4000 MB
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "PREEMPTED"}

needs_slurm = pytest.mark.skipif(
    shutil.which("sbatch") is None,
    reason="sbatch not found: the SLURM integration test needs Debian's slurm-wlm, slurmdbd, munge and "
           "mariadb-server (as root: tools/slurm_local.sh install)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="tools/slurm_local.sh runs the SLURM daemons as root")


def test_lock_dir_is_per_slurm_job(tmp_path, monkeypatch):
    """Two SLURM jobs on one node that each see their own GPU as device 0 (cgroup ConstrainDevices renumbers)
    must not wait for each other's lock: inside a job the default lock dir is the job's own."""
    monkeypatch.delenv(gpus.ENV_LOCK_DIR, raising=False)
    monkeypatch.delenv(gpus.ENV_NUM_GPUS, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "101")
    first = gpus.default_lock_dir()
    assert first.name == "slurm-job-101" and first.parent.parent == tmp_path
    pool = gpus._device_pool()
    assert pool == ["0"]                           # the claim stays inside the GPU SLURM gave the job
    fd1, dev1, path1 = gpus._acquire(pool, first, timeout=0, poll=0.01)
    try:
        monkeypatch.setenv("SLURM_JOB_ID", "102")  # a second job on the node, also handed "its" GPU 0
        second = gpus.default_lock_dir()
        assert second != first and second.name == "slurm-job-102"
        fd2, dev2, path2 = gpus._acquire(pool, second, timeout=0, poll=0.01)  # a shared lock would raise TimeoutError
        assert dev1 == dev2 == "0" and path1 != path2
        gpus._release(fd2, path2)
    finally:
        gpus._release(fd1, path1)
    monkeypatch.delenv("SLURM_JOB_ID")
    assert gpus.default_lock_dir().name.startswith("silentvae-gpu-locks-")  # outside SLURM: host-wide, as before


def _free_port_block(n: int = 4) -> int:
    """A base port with n free consecutive loopback ports (slurmctld, slurmd, slurmdbd, MariaDB)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        try:
            socks = []
            for k in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of loopback ports")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running single-node cluster; every daemon stopped at teardown, whatever the test did."""
    cluster_dir = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SILENTVAE_SLURM_PORT": str(_free_port_block())}
    start = subprocess.run(["bash", str(SCRIPT), "start", str(cluster_dir)], env=env, capture_output=True,
                           text=True, timeout=300)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        env["SLURM_CONF"] = str(cluster_dir / "etc" / "slurm.conf")
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(cluster_dir)], env=env, timeout=120)


def _write_config(tmp: Path, name: str) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    cfg = {**cfg, "results": str(tmp / name / "results"), "data_root": str(tmp / "data")}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _sacct(env) -> list[dict]:
    fields = ["JobID", "Comment", "State", "ReqTRES", "AllocTRES", "Elapsed", "Start"]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "2000-01-01", "-o", ",".join(fields)], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def _kill_one_training_job(env, killed: list, stop: threading.Event) -> None:
    """Wait for a training job (a stacked grid: the longest kind) to run for a few seconds, then SIGKILL its
    step's processes, as a crash or a node's OOM killer would: SLURM records the job FAILED.

    Not ``scancel``: sacct reports a cancelled job as ``CANCELLED by <uid>``, which snakemake-executor-plugin-slurm
    2.8.0 does not match against its failure states, so Snakemake would wait for that job forever (README)."""
    while not stop.is_set():
        out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%M"], env=env, capture_output=True,
                             text=True, timeout=30).stdout
        for line in out.splitlines():
            job_id, comment, elapsed = line.split("|")
            if comment.startswith("rule_train_learnable") and elapsed >= "0:05":
                pids = subprocess.run(["scontrol", "listpids", job_id], env=env, capture_output=True, text=True,
                                      timeout=30).stdout.splitlines()[1:]
                step = [int(row.split()[0]) for row in pids if row.split()[2] == "0"]  # step 0: the job's command
                if not step:
                    continue
                for pid in step:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                killed.append((job_id, comment))
                return
        time.sleep(1)


def _normalise(value, old: str, new: str):
    """JSON value with paths under ``old`` rewritten to ``new`` and wall times dropped."""
    if isinstance(value, dict):
        return {k: _normalise(v, old, new) for k, v in value.items() if not k.endswith("time")}
    if isinstance(value, list):
        return [_normalise(v, old, new) for v in value]
    if isinstance(value, str):
        return value.replace(old, new)
    return value


def _assert_close(a, b, where: str) -> None:
    """Equal structure, equal strings, numbers equal to float32 round-off (rel 1e-5)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{k}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.mark.slow
@needs_slurm
@needs_root
def test_tiny_config_through_slurm_profile(tmp_path, slurm_cluster):
    env = {**slurm_cluster, "PYTHONPATH": str(ROOT), "SILENTVAE_NUM_GPUS": ""}
    env.pop("SILENTVAE_NUM_GPUS")
    local_cfg, slurm_cfg = _write_config(tmp_path, "local"), _write_config(tmp_path, "slurm")
    snakemake = [sys.executable, "-m", "snakemake", "--nolock"]
    t0 = time.monotonic()
    # the local reference run on 1 core beside the cluster's 2 jobs (SILENTVAE_NUM_GPUS=0: no GPU claimed)
    local = subprocess.Popen([*snakemake, "--configfile", str(local_cfg), "--cores", "1"], cwd=ROOT,
                             env={**env, "SILENTVAE_NUM_GPUS": "0"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    cancelled, stop = [], threading.Event()
    canceller = threading.Thread(target=_kill_one_training_job, args=(env, cancelled, stop), daemon=True)
    canceller.start()
    try:
        res = subprocess.run([*snakemake, "--profile", "profiles/slurm", "--configfile", str(slurm_cfg), *OVERRIDES,
                              "--slurm-logdir", str(tmp_path / "slurm_logs")], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=1800)
    finally:
        stop.set()
        local_out = local.communicate(timeout=1200)[0]
    wall = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-6000:]
    assert local.returncode == 0, local_out[-5000:]
    jobs = _sacct(env)
    print(f"\nSLURM run + local run: {wall:.0f} s wall; sacct:")
    for job in jobs:
        print(" ", job["JobID"], job["State"], job["Elapsed"], job["Comment"], job["ReqTRES"])

    # every training and diagnostic job went through sbatch and finished there; training jobs asked for one GPU
    plan = make_plan({**load_config(slurm_cfg), "data_root": str(tmp_path / "data")})
    training = {"rule_train_" + "".join(c if c.isalnum() else "_" for c in job) for job in plan.training_jobs}
    diagnostic = {f"rule_{kind}_wildcards_{job.replace('/', '_')}" for kind, jobs_ in (("variance", plan.variance),
                                                                       ("taylor", plan.taylor)) for job in jobs_}
    completed = {j["Comment"] for j in jobs if j["State"] == "COMPLETED"}
    assert training and diagnostic and (training | diagnostic) <= completed, (training | diagnostic) - completed
    assert "rule_report" in completed
    for job in jobs:
        if job["Comment"] in training:
            assert "gres/gpu=1" in job["ReqTRES"] and "gres/gpu=1" in job["AllocTRES"], job
    assert all(j["State"].split()[0] in TERMINAL for j in jobs), jobs  # "CANCELLED by 0"

    # the killed job was retried (a later job of the same rule completed) and nothing is lost
    assert cancelled, "no training job was seen running to kill"
    (cancelled_id, rule), = cancelled
    states = {j["JobID"]: j["State"] for j in jobs}
    assert states[cancelled_id] == "FAILED"
    assert any(j["Comment"] == rule and j["State"] == "COMPLETED" and int(j["JobID"]) > int(cancelled_id)
               for j in jobs), (rule, jobs)

    # same numbers as the local run: every result.json, diagnostic and table
    local_res, slurm_res = tmp_path / "local" / "results", tmp_path / "slurm" / "results"
    patterns = ("runs/**/result.json", "selected/**/*.json", "variance/**/*.json", "taylor/**/*.json")
    names = sorted(p.relative_to(local_res) for pattern in patterns for p in local_res.glob(pattern))
    assert names and names == sorted(p.relative_to(slurm_res) for pattern in patterns for p in slurm_res.glob(pattern))
    assert {Path(paths.result_json(str(local_res), r)).relative_to(local_res) for r in plan.runs} <= set(names)
    for name in names:
        a = _normalise(json.loads((local_res / name).read_text()), str(local_res), "RESULTS")
        b = _normalise(json.loads((slurm_res / name).read_text()), str(slurm_res), "RESULTS")
        _assert_close(a, b, str(name))
    tables = sorted(p.name for p in (local_res / "tables").glob("*.csv"))
    assert tables and tables == sorted(p.name for p in (slurm_res / "tables").glob("*.csv"))
    def read_table(results: Path, name: str) -> pd.DataFrame:   # without wall times, as _normalise does
        df = pd.read_csv(results / "tables" / name).replace(str(results), "RESULTS", regex=True)
        return df.drop(columns=[c for c in df.columns if "time" in c.lower()])

    for name in tables:
        a, b = read_table(local_res, name), read_table(slurm_res, name)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-6, obj=name)
