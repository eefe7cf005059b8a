"""Regenerate notebooks/fixtures/report_results/: the small real pipeline output that report.ipynb's default
parameters point at (so `pytest --nbval` re-executes the report on committed inputs).

It runs the Snakefile with config/tiny.yaml into a temporary folder, then keeps only what the report reads:
selections, finished runs' result.json, variance and Taylor results, and the selected runs' checkpoints
stripped to config + model weights + history (no optimizer state). Run, then re-execute the report notebook:

    .venv/bin/python tools/make_report_fixture.py
    .venv/bin/python tools/build_notebooks.py --execute report
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from silentvae.pipeline import paths
from silentvae.training.io import load_checkpoint
from silentvae.pipeline.plan import make_plan, resolve_config

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "notebooks" / "fixtures" / "report_results"


def main() -> int:
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        run_cfg = {**cfg, "results": str(results), "data_root": str(Path(tmp) / "data")}
        (Path(tmp) / "tiny.yaml").write_text(yaml.safe_dump(run_cfg))
        subprocess.run([sys.executable, "-m", "snakemake", "--configfile", str(Path(tmp) / "tiny.yaml"), "--cores",
                        "2", "--nolock"], cwd=ROOT, check=True)
        if FIXTURE.exists():
            shutil.rmtree(FIXTURE)
        FIXTURE.mkdir(parents=True)
        plan = make_plan(resolve_config(run_cfg))
        wanted = ([paths.selection_json(str(results), s) for s in plan.selections]
                  + [paths.diagnostic_json(str(results), job) for job in [*plan.variance, *plan.taylor]]
                  + [paths.result_json(str(results), r) for r in plan.runs])
        for path in map(Path, wanted):
            dest = FIXTURE / path.relative_to(results)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        for selection in plan.selections:
            best = json.loads(Path(paths.selection_json(str(results), selection)).read_text())["best_run"]
            state = load_checkpoint(paths.last_checkpoint(str(results), best))
            slim = {k: state[k] for k in ("config", "models", "history")}
            torch.save(slim, paths.last_checkpoint(str(FIXTURE), best))
    fixture_cfg = {**cfg, "results": "fixtures/report_results", "data_root": "fixtures/no-data"}
    (FIXTURE / "config.yaml").write_text("# written by tools/make_report_fixture.py\n" + yaml.safe_dump(fixture_cfg))
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    print(f"wrote {FIXTURE} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
