r"""The evidence of a results folder, built once (:func:`build_evidence`): what the claims judge and what the tables,
figures and provenance render. No other report module reads a result dict for a number.

* :class:`RunEvidence`: one finished run: its id (folder under ``runs/``), seed, epochs, final value of each
  metric (:func:`silentvae.training.history.run_value` under its experiment's ``run_value`` rule: by default the
  final value, the mean of the last 3 epochs) and epochs to the convergence target
  (:func:`silentvae.training.history.epochs_to_target`).
* :class:`MethodEvidence`: one method on one dataset of one experiment: the selected setting's runs over seeds,
  the seeds the plan asked for (:func:`silentvae.pipeline.plan.make_plan`) and which of them are missing.
* :class:`Evidence`: every method of both experiments, Table 1's measured points, the Taylor check and the
  datasets that did not run.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..pipeline import paths
from ..training.history import DEFAULT_RUN_VALUE, epochs_to_target, read_epochs, run_value
from ..training.io import read_json
from ..training.methods import DEFAULT_INIT, FIXED_METHODS, LEARNABLE_METHODS

__all__ = ["METRICS", "RunEvidence", "MethodEvidence", "Evidence", "build_evidence", "method_evidence",
           "seeds_text", "load_json"]

#: the validation metrics every run's final value is taken of
METRICS = ("val_bpd", "val_mse", "val_kld")


def seeds_text(seeds: Iterable[int]) -> str:
    """'3, 4' (the seeds, sorted)."""
    return ", ".join(str(s) for s in sorted(seeds))


@dataclass(frozen=True)
class RunEvidence:
    """One finished run, read once."""

    run_id: str
    seed: int
    epochs: int
    finals: Mapping[str, float]
    to_target: tuple[int, bool] | None
    config: Mapping[str, Any]
    history: tuple[Mapping[str, Any], ...]
    read_epochs: str = ""   # the epochs its finals are read at (:func:`silentvae.training.history.read_epochs`)

    @classmethod
    def from_result(cls, run_id: str, result: dict[str, Any], target: float | None = None,
                    rule: str = DEFAULT_RUN_VALUE) -> "RunEvidence":
        history = tuple(result.get("history") or ())
        if not history:
            raise ValueError(f"run {run_id} has an empty history: it has no final value")
        cfg = dict(result.get("config", {}))
        return cls(run_id=run_id, seed=int(cfg.get("seed", 0)), epochs=int(history[-1]["epoch"]),
                   finals={k: run_value(result, k, rule) for k in METRICS if k in history[-1]},
                   to_target=epochs_to_target(result, target) if target is not None else None,
                   config=cfg, history=history, read_epochs=read_epochs(result, rule))

    @property
    def method(self) -> str:
        """The method id of a pipeline run (``<experiment>/<dataset>/<method>/<setting>``); else the id itself."""
        parts = self.run_id.split("/")
        return parts[2] if len(parts) >= 4 else self.run_id

    @property
    def wall_time(self) -> float:
        """Seconds of training and validation over its epochs (each history row's ``wall_time``; a run trained in a
        stack counts the stack's time)."""
        return float(sum(h.get("wall_time") or 0.0 for h in self.history))

    @property
    def init(self) -> str:
        return self.config.get("init") or DEFAULT_INIT

    @property
    def annealing_done(self) -> bool:
        """Algorithm 1 finished in this run: a "+ SG" run's last epoch no longer trains the encoder from the linear
        decoder (w_lin = 0 or the encoder frozen). Runs without SG are always done."""
        if not self.config.get("silent"):
            return True
        last = self.history[-1]
        return bool(last.get("encoder_frozen")) or float(last.get("w_lin", 1.0)) == 0.0

    def result(self) -> dict[str, Any]:
        """The run as a result dict (for the figures' curves)."""
        return {"config": dict(self.config), "history": list(self.history)}


@dataclass(frozen=True)
class MethodEvidence:
    """One method's selected setting over seeds: its finished runs and the seeds the plan asked for."""

    experiment: str
    dataset: str
    method: str
    runs: tuple[RunEvidence, ...]
    planned_seeds: tuple[int, ...]

    @property
    def label(self) -> str:
        table = FIXED_METHODS if self.experiment == "fixed" else LEARNABLE_METHODS
        return table[self.method].label

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    @property
    def missing_seeds(self) -> tuple[int, ...]:
        return tuple(s for s in self.planned_seeds if s not in self.seeds)

    @property
    def complete(self) -> bool:
        return not self.missing_seeds

    @property
    def seeds_found(self) -> str:
        """'5 of 5 seeds' or '3 of 5 seeds (missing 3, 4)': what every cell and verdict built on it states."""
        planned = len(self.planned_seeds) or len(self.runs)
        text = f"{len(self.runs)} of {planned} seed{'s' if planned != 1 else ''}"
        return text + (f" (missing {seeds_text(self.missing_seeds)})" if self.missing_seeds else "")

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    @property
    def lr(self) -> float | None:
        return float(self.runs[0].config["lr"]) if self.runs and "lr" in self.runs[0].config else None

    def values(self, key: str) -> list[float]:
        """The value of ``key`` of each seed's run (:func:`silentvae.training.history.run_value`)."""
        return [r.finals[key] for r in self.runs]

    def mean(self, key: str) -> float:
        return statistics.fmean(self.values(key))

    def sd(self, key: str) -> float | None:
        """Sample sd over seeds (ddof 1); None for one seed."""
        vals = self.values(key)
        return statistics.stdev(vals) if len(vals) > 1 else None

    def to_target(self) -> list[tuple[int, bool]]:
        """(epoch, reached) per seed (:func:`silentvae.training.history.epochs_to_target`)."""
        if any(r.to_target is None for r in self.runs):
            raise ValueError(f"{self.method}: evidence built without a convergence target")
        return [r.to_target for r in self.runs]  # type: ignore[misc]


def method_evidence(experiment: str, dataset: str, method: str, results: Sequence[dict[str, Any]], *,
                    run_ids: Sequence[str] | None = None, planned_seeds: Sequence[int] | None = None,
                    target: float | None = None, rule: str = DEFAULT_RUN_VALUE) -> MethodEvidence:
    """A :class:`MethodEvidence` from result dicts (default run ids ``<method>/s<seed>``; planned seeds default to
    the seeds found; ``rule``: how a run is read, :data:`silentvae.training.history.RUN_VALUES`)."""
    ids = list(run_ids) if run_ids is not None else [f"{method}/s{r.get('config', {}).get('seed', i)}"
                                                     for i, r in enumerate(results)]
    runs = tuple(RunEvidence.from_result(i, r, target, rule) for i, r in zip(ids, results))
    planned = tuple(planned_seeds) if planned_seeds is not None else tuple(r.seed for r in runs)
    return MethodEvidence(experiment, dataset, method, runs, planned)


@dataclass(frozen=True)
class Evidence:
    """Everything the report judges and shows, built once from a results folder (:func:`build_evidence`).

    ``fixed``: {method: MethodEvidence} (Table 2's dataset); ``learnable``: {dataset: {method: MethodEvidence}};
    ``fixed_selections`` / ``learnable_selections``: the selections read; ``variance``: {method: {epoch: Table 1
    point}} with ``variance_runs`` {method: the run measured}; ``taylor``: the Taylor check's result or None;
    ``not_run``: {dataset: reason}; ``target_bpd`` / ``target_reason``: the convergence target and why."""

    fixed_dataset: str
    target_bpd: float
    target_reason: str
    fixed: dict[str, MethodEvidence] = field(default_factory=dict)
    fixed_selections: dict[str, dict[str, Any]] = field(default_factory=dict)
    learnable: dict[str, dict[str, MethodEvidence]] = field(default_factory=dict)
    learnable_selections: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    variance: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    variance_runs: dict[str, str] = field(default_factory=dict)
    taylor: dict[str, Any] | None = None
    not_run: dict[str, str] = field(default_factory=dict)

    def shown_runs(self, datasets: Iterable[str] | None = None) -> list[RunEvidence]:
        """Every run whose numbers the report shows (provenance)."""
        shown = [r for m in self.fixed.values() for r in m.runs]
        for ds in (self.learnable if datasets is None else datasets):
            shown += [r for m in self.learnable.get(ds, {}).values() for r in m.runs]
        return shown


def load_json(path: str | Path) -> Any:
    """A results JSON file (:func:`silentvae.training.io.read_json`: a damaged one is named, with what to do)."""
    return read_json(path)


def _load(path: str) -> Any:
    return load_json(path) if Path(path).exists() else None


def _target(cfg: dict[str, Any]) -> tuple[float, str]:
    from . import paper_values as pv
    fixed = cfg["fixed_variance"]
    target = float(fixed.get("target_bpd", pv.CONVERGENCE["target_bpd"]))
    if target == pv.CONVERGENCE["target_bpd"]:
        return target, "the paper's (Sec. 3.2)"
    reason = fixed.get("target_reason")
    return target, (f"the config's: {reason}" if reason else
                    f"the config's, no reason recorded (the paper's is {pv.CONVERGENCE['target_bpd']})")


def build_evidence(results_dir: str | Path, cfg: dict[str, Any]) -> Evidence:
    """Read every finished output of the plan of ``cfg`` (:func:`silentvae.pipeline.plan.make_plan`) under
    ``results_dir`` once: per experiment, dataset and method the selected setting's runs over the planned seeds
    (:meth:`silentvae.pipeline.plan.Plan.compared_runs`: the selected grid run first unless it only selected, then
    ``final_s<seed>``), Table 1's points, the Taylor check. Every planned
    method is there; outputs that do not exist are left out and their seeds listed as missing."""
    from ..pipeline.plan import make_plan, run_value_rule
    results = str(results_dir)
    plan = make_plan(cfg)
    target, reason = _target(cfg)
    ev = Evidence(fixed_dataset=cfg["fixed_variance"]["dataset"], target_bpd=target, target_reason=reason,
                  not_run=dict(plan.not_run))
    for selection_id in plan.selections:
        experiment, dataset, method = selection_id.split("/")
        selection = _load(paths.selection_json(results, selection_id))
        planned = cfg[f"{experiment}_variance"]["seeds"]
        # no selection yet: the grid's seed is missing, the other seeds count as they finish
        ids = plan.compared_runs(selection_id, selection)
        found = [(i, r) for i, r in ((i, _load(paths.result_json(results, i))) for i in ids) if r is not None]
        evidence = method_evidence(experiment, dataset, method, [r for _, r in found], run_ids=[i for i, _ in found],
                                   planned_seeds=planned, target=target if experiment == "fixed" else None,
                                   rule=run_value_rule(cfg, experiment))
        if experiment == "fixed":
            ev.fixed[method] = evidence
            if selection is not None:
                ev.fixed_selections[method] = selection
        else:
            ev.learnable.setdefault(dataset, {})[method] = evidence
            if selection is not None:
                ev.learnable_selections.setdefault(dataset, {})[method] = selection
    for job, settings in plan.variance.items():
        result = _load(paths.diagnostic_json(results, job))
        if result is not None:
            ev.variance[settings["method"]] = {int(e): r for e, r in result["results"].items()}
            ev.variance_runs[settings["method"]] = result.get("run", "")
    taylor = None
    for job in plan.taylor:
        taylor = _load(paths.diagnostic_json(results, job))
    return dataclasses.replace(ev, taylor=taylor)
