"""The files of one run's folder, named once (torch-free: the pipeline's paths and the Snakefile read them).

    last.pt          the resume point, rewritten after every epoch (the finished model once result.json exists)
    epoch_XXXX.pt    a kept copy after each of ``checkpoint_epochs`` (:func:`checkpoint_name`)
    metrics.json     config + history, rewritten after every epoch
    result.json      the same, written once, when the run has finished: its existence says it has
    planned.json     written by the pipeline beside a finished run whose stored config is no longer the planned one
                     (:func:`silentvae.pipeline.plan.flag_changed_runs`): an input of its job, so the job reruns

Written by :mod:`silentvae.training.run` and :mod:`silentvae.training.engine`; :mod:`silentvae.pipeline.paths`
builds the results layout on these names.
"""

from __future__ import annotations

__all__ = ["LAST_CHECKPOINT", "METRICS_FILE", "RESULT_FILE", "PLANNED_FILE", "checkpoint_name"]

LAST_CHECKPOINT = "last.pt"
METRICS_FILE = "metrics.json"
RESULT_FILE = "result.json"
PLANNED_FILE = "planned.json"


def checkpoint_name(epoch: int) -> str:
    """File name of the checkpoint saved after ``epoch`` (1-based)."""
    return f"epoch_{epoch:04d}.pt"
