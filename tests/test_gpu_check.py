"""benchmarks/gpu_check.sh, the one prepared call for a GPU machine (issue 23): its dry run (the same steps on
the CPU at tiny sizes) writes every output it promises, so the script cannot break unseen; without CUDA the real
run refuses at once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _run(*args, timeout):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_without_cuda_it_refuses_at_once():
    res = _run(timeout=60)
    assert res.returncode == 2
    assert "no CUDA device" in res.stderr and "--dry-run" in res.stderr


@pytest.mark.slow
def test_dry_run_writes_every_output(tmp_path):
    out = tmp_path / "check"
    res = _run("--dry-run", "--out", str(out), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    times = [line.split("\t") for line in (out / "wall_times.tsv").read_text().splitlines()[1:]]
    assert [t[0] for t in times] == ["pytest", "bench stack 1", "bench stack 4", "bench stack 20", "bench compile",
                                     "pipeline jobs_per_gpu 1", "pipeline jobs_per_gpu 4"]
    assert all(t[1] == "0" and float(t[2]) > 0 for t in times)
    assert "test_comparison_fails_when_training_differs" in (out / "pytest.txt").read_text()
    for k in (1, 4, 20):
        bench = (out / f"bench-cpu-dry-run-stack{k}.txt").read_text()
        assert f"stack K={k}" in bench and "\nsg_gaussian " in bench and "Projected device-hours" in bench
    assert "--compile reduce-overhead" in (out / "bench-cpu-dry-run-compile.txt").read_text()
    for jpg in (1, 4):
        results = out / f"pipeline-jpg{jpg}"
        assert len(list(results.rglob("result.json"))) == 4  # 2 methods x 2 learning rates
        assert len((out / f"utilisation-jpg{jpg}.csv").read_text().splitlines()) >= 2
    sizes = [line.split("\t") for line in (out / "stack_sizes.tsv").read_text().splitlines()[1:]]
    assert sorted(int(s[0]) for s in sizes) == [1, 1, 4, 4]  # one stacked job per method and pipeline
    assert all(s[2] == s[3] == "2" for s in sizes)  # on the CPU auto stacks all of a job's runs
    summary = (out / "summary.txt").read_text()
    assert "jobs_per_gpu 4: load average" in summary
