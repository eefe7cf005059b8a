"""The committed notebooks' outputs hold on another machine, not only on the one that executed them.

``pytest --nbval`` re-executes the notebooks as committed (``threads = 1``, this CPU's vector code). Here each
notebook that computes something is executed by papermill with 2 torch threads and the oldest x86 code paths
(ATen's default CPU capability instead of AVX2/AVX-512, oneDNN limited to SSE4.1, MKL to SSE4.2): another
summation order, as on another CPU. Every output nbval compares must still equal the committed one after the
masks of ``notebooks/sanitize.cfg``, compared the way nbval compares them (streams joined per cell and name;
every MIME type but images).
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OTHER_CPU = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
             "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
SKIPPED_MIME = ("image/png", "image/jpeg")  # nbval compares images only with nbdime


def _sanitize(text: str) -> str:
    """``text`` with the regex replacements of notebooks/sanitize.cfg applied in order, as nbval does."""
    cfg = configparser.ConfigParser()
    cfg.read(NOTEBOOKS / "sanitize.cfg")
    for section in cfg.sections():
        text = re.sub(cfg[section]["regex"], cfg[section]["replace"], text)
    return text


def _compared_outputs(path: Path) -> list[dict[str, list[str]]]:
    """Per code cell (papermill's injected parameters cell left out): the sanitized outputs nbval compares."""
    cells = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code" or "injected-parameters" in cell.metadata.get("tags", []):
            continue
        outs: dict[str, list[str]] = defaultdict(list)
        streams: dict[str, str] = defaultdict(str)
        for out in cell.outputs:
            if out.output_type == "stream":
                streams[out.name] += out.text
            for mime, value in out.get("data", {}).items():
                if mime not in SKIPPED_MIME:
                    outs[mime].append(_sanitize(value if isinstance(value, str) else "".join(value)))
        outs.update({f"stream/{name}": [_sanitize(text)] for name, text in streams.items()})
        cells.append(dict(outs))
    return cells


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fixed_variance", "learnable_variance", "variance_decomposition", "taylor_bias",
                                  "tutorial"])
def test_notebook_outputs_hold_with_two_threads_and_other_cpu_code(name, tmp_path):
    committed = NOTEBOOKS / f"{name}.ipynb"
    executed = tmp_path / f"{name}.ipynb"
    env = {**os.environ, **OTHER_CPU,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    run = subprocess.run([sys.executable, "-m", "papermill", "--cwd", str(NOTEBOOKS), "--no-progress-bar",
                          "-p", "threads", "2", str(committed), str(executed)],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    expected, got = _compared_outputs(committed), _compared_outputs(executed)
    assert len(got) == len(expected)
    for i, (want, have) in enumerate(zip(expected, got)):
        assert have == want, f"{name}.ipynb code cell {i}"
