"""The results folder's layout: every path under a config's ``results`` is spelled here, and only here (the
Snakefile, the job runners and the report's collectors call these functions).

::

    <results>/runs/<run id>/           one training run (silentvae.training.engine writes result.json, last.pt, ...)
    <results>/selected/<selection>.json the grid point chosen on validation BPD
    <results>/training/<job>.json      a training job's finished runs and stack size
    <results>/variance/<...>.json, <results>/taylor/<dataset>.json   diagnostics (job id = path)
    <results>/notebooks/<job>.ipynb, <results>/logs/<job>.log         each job's executed notebook and log
    <results>/tables/, <results>/figures/, <results>/report.{ipynb,html}

Ids (run ids such as ``fixed/mnist/reparam/lr0.0005``, selection and job ids) come from
:mod:`silentvae.pipeline.plan`; a Snakemake wildcard such as ``"{run}"`` may stand for one. Paths are strings.
"""

from __future__ import annotations

from pathlib import Path

from ..training.run_files import LAST_CHECKPOINT, PLANNED_FILE, RESULT_FILE

__all__ = ["OWNER_FILE", "runs_dir", "run_dir", "result_in", "planned_in", "last_checkpoint_in", "result_json", "last_checkpoint",
           "selections_dir", "selection_json", "selection_in", "diagnostic_json", "diagnostic_work_dir", "training_json", "training_notebook",
           "training_log", "job_notebook", "job_log", "report_notebook", "report_html", "tables_dir",
           "figures_dir", "check_results_dir"]

OWNER_FILE = ".silentvae-workdir"  # in a results folder: the Snakemake working directory that writes it


def runs_dir(results: str) -> str:
    return f"{results}/runs"


def run_dir(results: str, run_id: str) -> str:
    return f"{runs_dir(results)}/{run_id}"


def result_in(run_folder: str | Path) -> str:
    """The file in a run's folder that says it has finished (written by the trainer at its last epoch)."""
    return f"{run_folder}/{RESULT_FILE}"


def planned_in(run_folder: str | Path) -> str:
    """The planned config of a finished run whose stored config differs (written when the Snakefile is read; an
    input of the run's job, so that, newer than its result.json, it makes the job run again)."""
    return f"{run_folder}/{PLANNED_FILE}"


def last_checkpoint_in(run_folder: str | Path) -> str:
    """A run's newest checkpoint (its resume point; the finished model once ``result.json`` exists)."""
    return f"{run_folder}/{LAST_CHECKPOINT}"


def result_json(results: str, run_id: str) -> str:
    return result_in(run_dir(results, run_id))


def last_checkpoint(results: str, run_id: str) -> str:
    return last_checkpoint_in(run_dir(results, run_id))


def selections_dir(results: str) -> str:
    return f"{results}/selected"


def selection_in(selections: str, selection: str) -> str:
    """A selection's file in a selections folder (a training job is given the folder)."""
    return f"{selections}/{selection}.json"


def selection_json(results: str, selection: str) -> str:
    return selection_in(selections_dir(results), selection)


def diagnostic_json(results: str, job: str) -> str:
    """A variance or Taylor job's result (``variance/<dataset>/<method>``, ``taylor/<dataset>``)."""
    return f"{results}/{job}.json"


def diagnostic_work_dir(results: str, job: str) -> str:
    """Where a diagnostic job keeps what it trains (the Taylor check's model)."""
    return f"{results}/{job}"


def training_json(results: str, job: str) -> str:
    return f"{results}/training/{job}.json"


def job_notebook(results: str, job: str) -> str:
    return f"{results}/notebooks/{job}.ipynb"


def job_log(results: str, job: str) -> str:
    return f"{results}/logs/{job}.log"


def training_notebook(results: str, job: str) -> str:
    return job_notebook(results, f"training/{job}")


def training_log(results: str, job: str) -> str:
    return job_log(results, f"training/{job}")


def report_notebook(results: str) -> str:
    return f"{results}/report.ipynb"


def report_html(results: str) -> str:
    return f"{results}/report.html"


def tables_dir(out: str | Path) -> str:
    return f"{out}/tables"


def figures_dir(out: str | Path) -> str:
    return f"{out}/figures"


def check_results_dir(results: str, workdir: str | Path, claim: bool = False) -> Path:
    """The resolved results folder, refused when it is empty, the filesystem root, or the results folder of
    another Snakemake working directory (recorded in ``<results>/.silentvae-workdir``; Snakemake's lock and
    run records live in the working directory, so two of them would overwrite each other's outputs unseen).
    ``claim=True`` records ``workdir`` there (the Snakefile does so when jobs start)."""
    if not str(results).strip():
        raise ValueError("config 'results' is empty: every output path would start at the filesystem root; "
                         "set results to an output folder, e.g. results")
    workdir = Path(workdir).resolve()
    root = (workdir / results).resolve()
    if root == Path(root.anchor):
        raise ValueError(f"config 'results' ({results!r}) is the filesystem root {root}; set it to an output "
                         f"folder, e.g. results")
    marker = root / OWNER_FILE
    if claim:
        _claim(marker, f"{workdir}\n")
    owner = marker.read_text().strip() if marker.exists() else None
    if owner is not None and owner != str(workdir):
        raise ValueError(f"results folder {root} belongs to the Snakemake working directory {owner} (see {marker}), "
                         f"not to this one ({workdir}): two working directories would overwrite each other's "
                         f"outputs. Use another results folder, or delete {marker} if {owner} no longer uses it.")
    return root


def _claim(marker: Path, content: str) -> None:
    """Create ``marker`` holding ``content`` unless it exists, atomically: the content goes to a temporary file
    that is then hard-linked to ``marker`` (``link`` fails if ``marker`` exists), so of two processes claiming at
    once exactly one wins, and no reader ever sees the marker empty."""
    import os
    import secrets
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(content)
    try:
        os.link(tmp, marker)
    except FileExistsError:
        pass  # claimed before: the caller compares the owner
    finally:
        tmp.unlink()
