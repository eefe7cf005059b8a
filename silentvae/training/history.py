r"""A run's history (one dict per epoch, as ``metrics.json`` / ``result.json`` hold it) read as one number.

* **Final value** of a run: the mean of its last :data:`FINAL_EPOCHS` epochs' validation metric,
  :math:`\bar v = \frac1k \sum_{e=E-k+1}^{E} v_e` (fewer when the run has fewer epochs), not one noisy epoch.
  The pipeline selects a grid's best run on it (:func:`silentvae.pipeline.plan.select_best`), the report's
  tables and verdicts compare it (:mod:`silentvae.report`): one home for the number.
* **Epochs to a target** of a run: the first epoch whose validation BPD is at or below the target, or, when no
  epoch got there, its last epoch marked as not reached (right-censored: the run says only "more than that").

Torch-free: the pipeline's ``select`` job imports it without starting torch.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = ["FINAL_EPOCHS", "RUN_VALUES", "DEFAULT_RUN_VALUE", "final_value", "best_epoch", "run_value", "read_epochs",
           "epochs_to_target", "plateau_gain", "plateaued"]

FINAL_EPOCHS = 3
#: how a run is read as one number per metric: its last FINAL_EPOCHS epochs' mean, or its best validation epoch's value
RUN_VALUES = ("last_epochs", "best_epoch")
#: the paper's reading (its tables report final values); config/schema.yaml's default of ``run_value``
DEFAULT_RUN_VALUE = "last_epochs"


def final_value(result: dict[str, Any], key: str = "val_bpd", epochs: int = FINAL_EPOCHS) -> float:
    """Mean of ``key`` over the last ``epochs`` history entries of a result dict."""
    history = result.get("history") or []
    if not history:
        raise ValueError("result has an empty history: it has no final value")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    return statistics.fmean(float(h[key]) for h in history[-epochs:])


def best_epoch(result: dict[str, Any], key: str = "val_bpd") -> int:
    """The epoch with the lowest ``key`` (the first of equal ones)."""
    history = result.get("history") or []
    if not history:
        raise ValueError("result has an empty history: it has no best epoch")
    return int(min(history, key=lambda h: float(h[key]))["epoch"])


def _checked(rule: str) -> str:
    """``rule`` if it is one of :data:`RUN_VALUES`, else a ValueError naming them."""
    if rule not in RUN_VALUES:
        raise ValueError(f"run value rule must be one of {RUN_VALUES}, got {rule!r}")
    return rule


def run_value(result: dict[str, Any], key: str = "val_bpd", rule: str = DEFAULT_RUN_VALUE) -> float:
    """A run's ``key`` as one number under ``rule`` (:data:`RUN_VALUES`): :func:`final_value`, or ``key`` at
    :func:`best_epoch` of the validation BPD."""
    if _checked(rule) == "last_epochs":
        return final_value(result, key)
    epoch = best_epoch(result)
    return float(next(h[key] for h in result["history"] if int(h["epoch"]) == epoch))


def read_epochs(result: dict[str, Any], rule: str = DEFAULT_RUN_VALUE) -> str:
    """The epochs :func:`run_value` reads under ``rule``: "98-100" (the last :data:`FINAL_EPOCHS`; one number for a
    one-epoch run) or "45" (the best validation epoch)."""
    if _checked(rule) == "best_epoch":
        return str(best_epoch(result))
    history = result.get("history") or []
    if not history:
        raise ValueError("result has an empty history: it has no final value")
    first, last = int(history[-FINAL_EPOCHS:][0]["epoch"]), int(history[-1]["epoch"])
    return str(last) if first == last else f"{first}-{last}"


def epochs_to_target(result: dict[str, Any], target: float, key: str = "val_bpd") -> tuple[int, bool]:
    """(first epoch with ``key`` <= ``target``, True), or (the last epoch run, False) when no epoch reached it: a
    right-censored time, the input of a censored-data test (never counted as if it had reached the target)."""
    history = result.get("history") or []
    if not history:
        raise ValueError("result has an empty history: it has no epochs to target")
    for h in history:
        if float(h[key]) <= target:
            return int(h["epoch"]), True
    return int(history[-1]["epoch"]), False


def plateau_gain(result: dict[str, Any], fraction: float = 0.2, key: str = "val_bpd") -> float:
    """Relative improvement of the best ``key`` over the last ``fraction`` of the run's epochs:
    1 - min(all epochs) / min(epochs before the last ceil(fraction * E)); 0 when the best came earlier."""
    values = [float(h[key]) for h in result.get("history") or []]
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    tail = math.ceil(fraction * len(values))
    if len(values) - tail < 1:
        raise ValueError(f"a plateau needs epochs before the last {fraction:.0%}: the run has {len(values)}")
    before = min(values[:-tail])
    return 1.0 - min(values) / before


def plateaued(result: dict[str, Any], tolerance: float = 0.005, fraction: float = 0.2, key: str = "val_bpd") -> bool:
    """True when the best ``key`` improved by less than ``tolerance`` (relative) over the last ``fraction`` of
    the epochs (:func:`plateau_gain`)."""
    return plateau_gain(result, fraction, key) < tolerance
