r"""Table formatting of the report: every reproduced number beside the paper's value and the difference
(assembly, i.e. gathering results and writing the report files, is :mod:`silentvae.report.writing`).

Each ``table*`` function is pure: result dicts in, a flat :class:`pandas.DataFrame` out (one row per
table row, a RangeIndex, no MultiIndex). Numeric cells are floats / ints; a cell that has no number holds
a string that says why:

* ``not run: <dataset> not found at <path>`` (exactly the reason given in ``not_run``): the dataset is
  missing, so none of our numbers exist for it (the paper's values are still shown beside it);
* ``not run: method not in config``: the config did not ask for that method;
* ``not run: no finished result``: the method was asked for but no finished result was passed in;
* ``n/a``: the standard deviation of a single seed;
* ``—``: the paper has no such entry (e.g. "Without SG" of the "None" rows, Fashion-MNIST, or
  convergence epochs for discrete methods).

Differences are always ``ours - paper``. Our ``mnist5k`` (5,000-image MNIST subset) numbers are compared
with the paper's full-MNIST column; the ``Note`` column and the captions say so.

Input formats (see :mod:`silentvae.training.run`, :mod:`silentvae.pipeline.plan`, :mod:`silentvae.training.diagnostics`):

* a method's runs over seeds: :class:`silentvae.report.evidence.MethodEvidence` (built once by
  :func:`silentvae.report.evidence.build_evidence`): every final value and epochs-to-target comes from there, the
  same numbers the claims judge; over seeds, tables show mean ± sd (sample sd, ddof=1) and the seeds found
  ("3 of 5 seeds (missing 3, 4)").
* selection dict: ``{"best_run", "best_val_bpd", "best_config", "candidates"}``.
* variance result: ``{"batch_var", "batch_var_raw", "est_var", "est_pct", "est_pct_ci", "steps", ...}``
  (:func:`silentvae.pipeline.jobs.variance_job`); Taylor result ``{"sg", "gumbel",
  "reinforce", "exact_norm", "num_samples", ...}``.

:func:`write_table` writes ``<name>.csv`` (full precision), ``<name>.md`` and ``<name>.tex`` (numbers
formatted by :func:`format_value`), each atomically.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from . import claims
from . import paper_values as pv
from ..pipeline import paths
from ..training.io import atomic_write_text
from ..training.methods import FIXED_METHODS, LEARNABLE_METHODS, label as method_label
from .evidence import METRICS, MethodEvidence, RunEvidence, load_json
from .paper_values import TAYLOR_LABELS, TAYLOR_PAPER_KEY
from .stats import FINAL_EPOCHS, median_epochs_to_target

__all__ = ["NOT_CONFIGURED", "NO_RESULT", "NO_DATASET", "NO_PAPER", "NA", "CAPTIONS", "load_json", "table1", "table1_epoch_map", "table2", "convergence", "table3", "table4", "table9",
           "taylor_table", "format_value", "format_table", "write_table", "dataset_note", "latex_escape",
           "summary_table1", "summary_table2", "summary_learnable", "summary_convergence", "summary_taylor",
           "provenance", "html_table", "VERDICT_COLORS", "verdict_by_id", "claims_summary", "claims_details",
           "TABLE2_CLAIMS", "FINAL_LABELS"]

NOT_CONFIGURED = "not run: method not in config"
NO_RESULT = "not run: no finished result"
NO_DATASET = "not run: dataset not in config"
NO_PAPER = "—"
NA = "n/a"

CAPTIONS: dict[str, str] = {
    "table1": ("Table 1: variance of the encoder gradient of the reconstruction estimate, decomposed into mini-batch "
               "variance (Batch Var) and estimator variance (Est Var) over N batches x S latent draws; Batch Var raw "
               "is the variance of the S-draw batch means, Batch Var = raw - Est Var / S (unbiased, negative when "
               "the estimator noise exceeds it: Est % > 100 flags that). Est % = 100 Est Var / (Batch Var + Est "
               "Var), the mean over the seeds measured (Seeds), with a 95% interval over seeds and batches (two-stage "
               "bootstrap; over batches alone for one seed). Points are labelled by optimizer steps (epoch x "
               "ceil(train images / batch)) and compared with the paper's point at the same steps (MNIST: 844 steps "
               "per epoch, epochs 1 / 50 / 250 = 844 / 42,200 / 211,000 steps, assuming a 54,000-image training "
               "split the paper does not state); other points have no paper value. diff = ours - paper."),
    "table2": ("Table 2: fixed variance (sigma^2 = 0.01), linear decoder: final validation BPD and MSE (each seed's "
               f"mean over its last {FINAL_EPOCHS} epochs), mean ± sd over the seeds of the best learning rate per "
               "method (selected at the first seed). Our MNIST (5k subset) runs are compared with the paper's "
               "full-MNIST values (epoch 500). diff = our mean - paper."),
    "convergence": ("Convergence (Sec. 3.2): each seed's first epoch with validation BPD <= the target (> E: not "
                    "reached by its last epoch E) and the seeds' Kaplan-Meier median (paper: 6.73 BPD; SG 45 epochs, "
                    "reparameterization 90)."),
    "table3": (f"Table 3: learnable variance, final validation BPD (each seed's mean over its last {FINAL_EPOCHS} "
               "epochs), mean ± std over seeds (sample std, ddof=1; n/a for one seed). Our MNIST (5k subset) numbers are compared with the paper's MNIST column. "
               "diff = our mean - paper mean."),
    "table4": ("Table 4: learnable variance, validation KL divergence (mean over seeds). Our MNIST (5k subset) "
               "numbers are compared with the paper's MNIST column. diff = ours - paper."),
    "table9": ("Table 9: learnable variance, validation MSE (per-image sum of squared errors), mean over our "
               "seeds (the paper reports a single run; no verdict). Our MNIST (5k subset) numbers are compared with "
               "the paper's MNIST column. diff = ours - paper."),
    "learnable_seeds": ("Learnable variance: every method over its seeds (the compared runs of Tables 3, 4 and 9), "
                        "validation BPD, KLD and MSE as mean ± sd over seeds (sample sd), each seed read at the epochs "
                        "given (the mean of its last epochs by default; its best validation epoch under "
                        "learnable_variance.run_value best_epoch)."),
    "taylor_bias": ("Taylor-bias check (Sec. 4.1): L2 distance of each estimator's encoder gradient from the exact "
               "gradient obtained by enumerating the Bernoulli latent states (learnable variance): exact over all of "
               "them, or, for a model with more latents than enumeration allows, exact over the k most uncertain "
               "latents, the other d - k held at a draw from q (one row group per k), on the check's first draw (the "
               "claim's ratios and intervals are over all draws). REINFORCE with the paper's running-average "
               "baseline (Appendix B.3; it decides) and with a per-image leave-one-out one (a sensitivity); its "
               "Monte Carlo error ~ 1/sqrt(S) is also given at the paper's 100,000 samples."),
}
CAPTIONS["taylor"] = CAPTIONS["taylor_bias"]
CAPTIONS["claims"] = ("The paper's claims, each quoting the paper's sentence it tests: this run's evidence in one line, the "
                      "paper's, and a verdict (silentvae.report.claims): holds, contradicted, not shown at this scale, "
                      "or not run; why, and the runs, in the details table. " + claims.RULE)
CAPTIONS["provenance"] = (f"Every run whose numbers the report shows: its folder under {paths.runs_dir('results')}/, "
                          "config, seed and final values as every table reads them (by default the mean of its last "
                          f"{FINAL_EPOCHS} epochs; under learnable_variance.run_value best_epoch its epoch of lowest "
                          "validation BPD): the epochs read are the column 'Read at epochs'.")


# ------------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------------

def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _diff(ours: Any, paper: Any) -> Any:
    """ours - paper when both are numbers; else our cell's reason (or NO_PAPER when the paper has none)."""
    if not _is_num(ours):
        return ours
    if not _is_num(paper):
        return NO_PAPER
    return float(ours) - float(paper)


def _ordered(keys: Iterable[str], canonical: Iterable[str]) -> list[str]:
    keys = list(keys)
    canon = [k for k in canonical if k in keys]
    return canon + [k for k in keys if k not in canon]


def dataset_note(dataset: str) -> str:
    """Which paper column our dataset is compared with."""
    ours = pv.DATASET_LABELS.get(dataset, dataset)
    paper = pv.paper_dataset(dataset)
    if paper is None:
        return f"{ours}: no paper value"
    return f"{ours} compared with the paper's {pv.DATASET_LABELS[paper]}"


# ------------------------------------------------------------------------------------------------------
# Table 1: gradient variance
# ------------------------------------------------------------------------------------------------------

def table1_epoch_map(steps: dict[int, int]) -> dict[int, int | None]:
    """Which paper epoch (1 / 50 / 250) each of our measured points is compared with, by optimizer steps.

    ``steps``: {our epoch: optimizer steps the run had taken}. A point pairs with the paper's point at the same
    step count (:func:`silentvae.report.claims.step_pairs`: paper MNIST 844 steps per epoch assumed, within 10%); any other
    point has no paper counterpart (None), whatever its epoch number.
    """
    pairs = claims.step_pairs({int(e): int(s) for e, s in steps.items()})
    return {int(e): pairs.get(int(e)) for e in sorted(steps, key=int)}


T1_KEYS = (("batch_var", "Batch Var"), ("est_var", "Est Var"), ("est_pct", "Est %"))
T1_NEGATIVE = "Batch Var < 0: below the estimator-noise floor (Est % > 100)"


def table1(variance_results: dict[str, dict[int, dict[str, Any]]], *,
           methods: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows method x measured point: Epoch, Steps, the paper point at those steps, Batch Var (raw, and corrected:
    an unbiased estimate, negative when noise), Est Var, Est % with its confidence interval (ours, paper, diff).

    Args:
        variance_results: method -> epoch -> :func:`silentvae.training.diagnostics.gradient_variance` result labelled with
            ``steps`` (:func:`silentvae.pipeline.jobs.variance_job`); a result without steps pairs with no paper point.
        methods: the methods to list (default: those in ``variance_results``); a listed method with no
            results gets one row of "not run: method not in config".
    Paper values and differences appear only where our point pairs with the paper's by steps
    (:func:`table1_epoch_map`); ``Paper epoch`` says which, or "—".
    """
    methods = _ordered(variance_results if methods is None else methods, FIXED_METHODS)
    rows = []
    for m in methods:
        label = method_label("fixed", m)
        per = variance_results.get(m)
        if not per:
            row = {"Method": label, "Epoch": NOT_CONFIGURED, "Steps": NOT_CONFIGURED, "Paper epoch": NO_PAPER,
                   "Paper steps": NO_PAPER, "Batch Var raw": NOT_CONFIGURED}
            for _, col in T1_KEYS:
                row.update({col: NOT_CONFIGURED, f"{col} (paper)": NO_PAPER, f"{col} diff": NOT_CONFIGURED})
            row.update({"Est % CI low": NOT_CONFIGURED, "Est % CI high": NOT_CONFIGURED, "Seeds": NOT_CONFIGURED,
                        "Note": ""})
            rows.append(row)
            continue
        steps = {int(e): int(r["steps"]) for e, r in per.items() if "steps" in r}
        emap = table1_epoch_map(steps)
        for epoch in sorted(per, key=int):
            res = per[epoch]
            pe = emap.get(int(epoch))
            paper = pv.TABLE1.get(m, {}).get(pe) if pe is not None else None
            ci = res.get("est_pct_ci") or (NA, NA)
            row = {"Method": label, "Epoch": int(epoch), "Steps": steps.get(int(epoch), NA),
                   "Paper epoch": pe if pe is not None else NO_PAPER,
                   "Paper steps": claims.paper_steps(pe) if pe is not None else NO_PAPER,
                   "Batch Var raw": float(res.get("batch_var_raw", res["batch_var"]))}
            for key, col in T1_KEYS:
                ours = float(res[key])
                ref = paper[key] if paper else NO_PAPER
                row.update({col: ours, f"{col} (paper)": ref, f"{col} diff": _diff(ours, ref)})
            row.update({"Est % CI low": ci[0], "Est % CI high": ci[1],
                        "Seeds": ", ".join(str(x) for x in claims.point_seeds(res)),
                        "Note": "; ".join(n for n in (T1_NEGATIVE if float(res["batch_var"]) < 0 else "",
                                                      claims.STEP_ASSUMPTION if pe is not None else "") if n)})
            rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------
# Table 2 and convergence: fixed variance
# ------------------------------------------------------------------------------------------------------

def _lr_str(lr: Any) -> str:
    return f"{float(lr):g}" if _is_num(lr) else str(lr)


def _sd(sd: float | None) -> Any:
    return NA if sd is None else sd


def table2(fixed: dict[str, MethodEvidence], selections: dict[str, dict[str, Any]], *,
           methods: Iterable[str] | None = None, not_run: dict[str, str] | None = None,
           dataset: str | None = None) -> pd.DataFrame:
    """Final validation BPD / MSE (the evidence's final values) of the selected learning rate per method: the mean
    over its seeds (column ``BPD``), their sample sd (``BPD sd``, "n/a" for one seed) and the seeds found
    (``Seeds``: "5 of 5 seeds", or which of the planned seeds are missing).

    Args:
        fixed: method -> its evidence over seeds (:class:`silentvae.report.evidence.MethodEvidence`).
        selections: method -> selection dict (``best_run``, ``best_config`` ...).
        methods: the methods to list (default: those in ``selections``, in the paper's order).
        not_run / dataset: when ``dataset`` (default: the selections' dataset) is in ``not_run``, every
            reproduced cell holds that reason.
    """
    not_run = not_run or {}
    if dataset is None:
        dataset = next((s["best_config"].get("dataset") for s in selections.values()), None)
    methods = _ordered(selections if methods is None else methods, FIXED_METHODS)
    skipped = not_run.get(dataset) if dataset is not None else None
    rows = []
    for m in methods:
        paper = pv.TABLE2.get(m, {})
        row: dict[str, Any] = {"Method": method_label("fixed", m),
                               "Dataset": pv.DATASET_LABELS.get(dataset, dataset) if dataset else NO_PAPER}
        sel, ev = selections.get(m), fixed.get(m)
        if skipped:
            reason = skipped
        elif ev is not None and ev.runs:   # seeds of a one-point grid may finish before its selection
            reason = None
        elif sel is None:
            reason = NOT_CONFIGURED
        else:
            reason = NO_RESULT
        if reason is None:
            lr = sel["best_config"].get("lr") if sel else ev.runs[0].config.get("lr")
            row.update({"lr": _lr_str(lr), "Epochs": max(r.epochs for r in ev.runs),
                        "Seeds": ev.seeds_found})
            ours = {key: ev.mean(f"val_{key}") for key in ("bpd", "mse")}
            sds = {key: _sd(ev.sd(f"val_{key}")) for key in ("bpd", "mse")}
        else:
            row.update({"lr": reason, "Epochs": reason, "Seeds": reason})
            ours = sds = {"bpd": reason, "mse": reason}
        for key, col in (("bpd", "BPD"), ("mse", "MSE")):
            ref = paper.get(key, NO_PAPER)
            row.update({col: ours[key], f"{col} sd": sds[key], f"{col} (paper)": ref,
                        f"{col} diff": _diff(ours[key], ref)})
        row["Note"] = (dataset_note(dataset) + " (paper: epoch 500)") if dataset else ""
        rows.append(row)
    return pd.DataFrame(rows)


def convergence(fixed: dict[str, MethodEvidence], target: float = pv.CONVERGENCE["target_bpd"], *,
                methods: Iterable[str] | None = None) -> pd.DataFrame:
    """Epochs to ``target`` per method (the selected learning rate's seeds): each seed's
    (:func:`silentvae.training.history.epochs_to_target`, as the evidence holds it; "> E" when not reached by its
    last epoch E) and their Kaplan-Meier median (:func:`silentvae.report.stats.median_epochs_to_target`), the
    numbers the convergence claim tests."""
    methods = _ordered(fixed if methods is None else methods, FIXED_METHODS)
    rows = []
    for m in methods:
        paper = pv.CONVERGENCE.get(m, NO_PAPER) if target == pv.CONVERGENCE["target_bpd"] else NO_PAPER
        row: dict[str, Any] = {"Method": method_label("fixed", m), "Target BPD": float(target)}
        ev = fixed.get(m)
        if ev is None or not ev.runs:
            row.update({"Seeds": NOT_CONFIGURED, "Median epoch": NOT_CONFIGURED, "Per seed": NOT_CONFIGURED,
                        "Paper epoch": paper, "Epochs run": NOT_CONFIGURED})
        else:
            times = ev.to_target()
            row.update({"Seeds": ev.seeds_found, "Median epoch": median_epochs_to_target(times),
                        "Per seed": ", ".join(str(e) if ok else f"> {e}" for e, ok in times), "Paper epoch": paper,
                        "Epochs run": max(r.epochs for r in ev.runs)})
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------
# Tables 3, 4, 9: learnable variance
# ------------------------------------------------------------------------------------------------------

def _mean_std_str(mean: float, std: float | None) -> str:
    return f"{mean:.3f} ± {NA if std is None else f'{std:.3f}'}"


def _cell(kind: str, dataset: str, method: str | None, learnable: dict[str, dict[str, MethodEvidence]],
          not_run: dict[str, str], ddof: int) -> tuple[Any, Any, Any, str]:
    """(our cell, paper cell, diff, seeds found) for one table cell."""
    if method is None:
        return NO_PAPER, NO_PAPER, NO_PAPER, ""
    paper_column = pv.paper_dataset(dataset)
    if kind == "table3":
        p = pv.TABLE3.get(paper_column, {}).get(method) if paper_column else None
        paper, paper_num = (f"{p[0]:.2f} ± {p[1]:.2f}", p[0]) if p else (NO_PAPER, NO_PAPER)
    else:
        table = pv.TABLE4 if kind == "table4" else pv.TABLE9
        paper_num = table.get(paper_column, {}).get(method, NO_PAPER) if paper_column else NO_PAPER
        paper = paper_num
    if dataset in not_run:
        return not_run[dataset], paper, not_run[dataset], ""
    if dataset not in learnable:
        return NO_DATASET, paper, NO_DATASET, ""
    if method not in learnable[dataset]:
        return NOT_CONFIGURED, paper, NOT_CONFIGURED, ""
    ev = learnable[dataset][method]
    if not ev.runs:
        return NO_RESULT, paper, NO_RESULT, ev.seeds_found
    key = {"table3": "val_bpd", "table4": "val_kld", "table9": "val_mse"}[kind]
    vals = ev.values(key)
    mean = statistics.fmean(vals)
    if kind == "table3":
        std = None if len(vals) < 2 else (statistics.stdev(vals) if ddof == 1 else statistics.pstdev(vals))
        return _mean_std_str(mean, std), paper, _diff(mean, paper_num), ev.seeds_found
    return mean, paper, _diff(mean, paper_num), ev.seeds_found


def learnable_seeds(learnable: dict[str, dict[str, MethodEvidence]], datasets: Iterable[str]) -> pd.DataFrame:
    """Every learnable-variance method over its seeds, one row each (the methods of Tables 3, 4 and 9 in one table):
    validation BPD, KLD and MSE as "mean ± sd" over the seeds (sample sd; n/a for one seed), the epochs each seed
    was read at (wall times: provenance). Datasets and methods without a finished run are left out."""
    rows = []
    for ds in datasets:
        for m, method in LEARNABLE_METHODS.items():
            ev = learnable.get(ds, {}).get(m)
            if ev is None or not ev.runs:
                continue
            rows.append({"Dataset": pv.DATASET_LABELS.get(ds, ds), "Method": method.label,
                         "Latents": method.latent, "Seeds": ev.seeds_found,
                         **{f"Val {FINAL_LABELS[key]}": _mean_std_str(ev.mean(key), ev.sd(key))
                            for key in ("val_bpd", "val_kld", "val_mse")},
                         "Read at epochs": ", ".join(r.read_epochs for r in ev.runs)})
    return pd.DataFrame(rows)


def _learnable_table(kind: str, learnable: dict[str, dict[str, MethodEvidence]], not_run: dict[str, str] | None,
                     datasets: Iterable[str] | None, ddof: int = 1) -> pd.DataFrame:
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof!r}")
    not_run = not_run or {}
    if datasets is None:
        datasets = list(learnable) + [d for d in not_run if d not in learnable]
    rows = []
    for ds in datasets:
        note = dataset_note(ds)
        for label, without, with_sg in pv.LEARNABLE_ROWS:
            if kind == "table9" and without is None:
                label = label.replace("None", "Silent Gradients (SG)")
            row: dict[str, Any] = {"Dataset": pv.DATASET_LABELS.get(ds, ds), "Method": label}
            found = []
            for col, method in (("Without SG", without), ("With SG", with_sg)):
                ours, paper, diff, seeds = _cell(kind, ds, method, learnable, not_run, ddof)
                row.update({col: ours, f"{col} (paper)": paper, f"{col} diff": diff})
                if seeds:
                    found.append(f"{col}: {seeds}")
            row["Note"] = "; ".join([note] + found)
            rows.append(row)
    return pd.DataFrame(rows)


def table3(learnable: dict[str, dict[str, MethodEvidence]], not_run: dict[str, str] | None = None,
           datasets: Iterable[str] | None = None, *, ddof: int = 1) -> pd.DataFrame:
    """Validation BPD "mean ± std" over seeds (one string cell; std "n/a" for one seed), paper and diff
    of the means, laid out as the paper's Table 3 ("Without SG" / "With SG" per row, rows per dataset).

    Args:
        learnable: dataset -> method -> its evidence over seeds.
        not_run: dataset -> reason; such a dataset's reproduced cells hold exactly that reason.
        datasets: the datasets to show, in order (default: those of ``learnable`` then ``not_run``).
        ddof: 1 (sample std, default) or 0.
    """
    return _learnable_table("table3", learnable, not_run, datasets, ddof)


def table4(learnable: dict[str, dict[str, MethodEvidence]], not_run: dict[str, str] | None = None,
           datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """Validation KL divergence, mean over seeds, beside the paper's Table 4 (same layout as table3)."""
    return _learnable_table("table4", learnable, not_run, datasets)


def table9(learnable: dict[str, dict[str, MethodEvidence]], not_run: dict[str, str] | None = None,
           datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """Validation MSE, mean over the seeds (the same seeds every other table shows), beside the paper's Table 9
    (a single run there; same layout as table3)."""
    return _learnable_table("table9", learnable, not_run, datasets)


# ------------------------------------------------------------------------------------------------------
# Taylor bias
# ------------------------------------------------------------------------------------------------------

def taylor_table(taylor: dict[str, Any]) -> pd.DataFrame:
    """L2 deviation from the exact gradient per estimator and per number k of enumerated latents, beside the
    paper's (Sec. 4.1).

    Absolute L2 distances depend on the model and data scale, so the ratios to SG's deviation (ours and the
    paper's) are given too, plus the deviation relative to the exact gradient's norm. "At 100,000 samples"
    scales REINFORCE's deviations by sqrt(S / 100,000) (unbiased: Monte Carlo error ~ 1/sqrt(S)) and keeps
    Gumbel-Softmax's (mostly bias, which more samples do not remove); "At S/16, S/4" shows the measured trend.
    "Ratio to SG" compares the "At 100,000 samples" value with SG's, as the paper's ratio does.
    Results written before the check had a per-image baseline or several k give the rows they have.
    """
    PAPER_TAYLOR_SAMPLES, reinforce_at_paper_samples = claims.PAPER_TAYLOR_SAMPLES, claims.reinforce_at_paper_samples
    rows = []
    samples = taylor.get("num_samples", NO_PAPER)
    d = taylor.get("latent_dim", NO_PAPER)
    first = (taylor.get("draws") or [taylor])[0]
    for result in first.get("by_free_latents") or [first]:
        sg = float(result["sg"])
        norm = result.get("exact_norm")
        curve = result.get("curve", {})
        for key, label in TAYLOR_LABELS.items():
            if key not in result:
                continue
            ours = float(result[key])
            paper = pv.TAYLOR_BIAS[TAYLOR_PAPER_KEY[key]]
            sampled = key.startswith("reinforce") and _is_num(samples)
            trend = curve.get(key)
            at_paper = reinforce_at_paper_samples(ours, int(samples)) if sampled else ours
            rows.append({"Free latents k": result.get("free_latents", d), "Latents d": d, "Estimator": label,
                         "Samples": samples if key != "sg" else "exact moments",
                         "L2 deviation": ours,
                         f"At {PAPER_TAYLOR_SAMPLES:,} samples": at_paper,
                         "At S/16, S/4": ", ".join(f"{v:.4g}" for v in trend[:-1]) if trend else NO_PAPER,
                         "L2 deviation (paper)": paper, "L2 deviation diff": ours - paper,
                         "Relative to exact norm": ours / float(norm) if _is_num(norm) and norm > 0 else NO_PAPER,
                         "Ratio to SG": at_paper / sg if sg > 0 else NO_PAPER,
                         "Ratio to SG (paper)": paper / pv.TAYLOR_BIAS["sg"]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------------

def format_value(x: Any) -> str:
    """The text of a cell in .md / .tex: ints as is; floats with 4 decimals (2 from 100 on), scientific
    from 1e4 on or below 1e-3; strings unchanged."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return NO_PAPER
        if x == 0:
            return "0"
        a = abs(x)
        if a >= 1e4 or a < 1e-3:
            return f"{x:.3e}"
        if a >= 100:
            return f"{x:.2f}"
        return f"{x:.4f}"
    if hasattr(x, "item"):                      # numpy scalar
        return format_value(x.item())
    return str(x)


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as its :func:`format_value` string."""
    return df.map(format_value).astype(str)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (captions; cells are escaped by pandas)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def write_table(df: pd.DataFrame, out_dir: str | Path, name: str, caption: str | None = None) -> dict[str, Path]:
    """Write ``<out_dir>/<name>.csv`` (full precision), ``.md`` (caption line + pipe table) and ``.tex``
    (``table`` environment with caption and label ``tab:<name>``), each atomically. Returns the paths."""
    out = Path(out_dir)
    caption = caption if caption is not None else CAPTIONS.get(name, "")
    text = format_table(df)
    paths = {ext: out / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    atomic_write_text(paths["csv"], df.to_csv(index=False))
    md = text.to_markdown(index=False, disable_numparse=True)
    atomic_write_text(paths["md"], (f"**{caption}**\n\n" if caption else "") + md + "\n")
    tex = text.to_latex(index=False, escape=True, caption=latex_escape(caption) or None, label=f"tab:{name}",
                        column_format="l" * len(df.columns))
    tex = tex.replace("±", r"$\pm$").replace("—", "--")
    atomic_write_text(paths["tex"], tex)
    return paths


# ------------------------------------------------------------------------------------------------------
# Compact tables (one per paper table: ours, paper, verdict) and provenance
# ------------------------------------------------------------------------------------------------------

_OUTCOME_VERDICT = {claims.SUPPORTS: claims.HOLDS, claims.AGAINST: claims.CONTRADICTED, claims.UNSHOWN: claims.NOT_SHOWN}


def summary_table1(variance: dict[str, dict[int, dict[str, Any]]]) -> pd.DataFrame:
    """Table 1, compact: per method and measured point (epoch and optimizer steps, and the paper point at those
    steps) our Est % with its 95% interval and the seeds measured, Batch Var (raw and corrected) and Est Var beside
    the paper's, and the verdict of the claim that row bears on (SG: exactly zero, at every point; the others:
    estimator variance dominates, decided by the interval, only at points paired with the paper's by steps: other
    rows say so)."""
    rows = []
    for m in _ordered(variance, FIXED_METHODS):
        full = table1({m: variance[m]})
        sg = FIXED_METHODS[m].estimator == "sg"
        for (_, r), (epoch, measured) in zip(full.iterrows(), sorted(variance[m].items(), key=lambda i: int(i[0]))):
            paired = _is_num(r["Paper epoch"])
            steps = f"{int(r['Steps']):,}" if _is_num(r["Steps"]) else str(r["Steps"])
            paper_point = f"epoch {int(r['Paper epoch'])} ({int(r['Paper steps']):,})" if paired else NO_PAPER
            ci = (f"[{float(r['Est % CI low']):.1f}, {float(r['Est % CI high']):.1f}]"
                  if _is_num(r["Est % CI low"]) else NA)
            verdict = claims.variance_row_verdict(m, measured) if sg or paired else "— (no paper point at these steps)"
            rows.append({"Method": r["Method"], "Epoch": int(epoch), "Steps": steps, "Seeds": r["Seeds"],
                         "Paper point (steps)": paper_point, "Est %": r["Est %"], "Est % 95% CI": ci,
                         "Est % (paper)": r["Est % (paper)"], "Batch Var raw": r["Batch Var raw"],
                         "Batch Var": r["Batch Var"], "Batch Var (paper)": r["Batch Var (paper)"],
                         "Est Var": r["Est Var"], "Est Var (paper)": r["Est Var (paper)"], "Verdict": verdict,
                         "Note": r["Note"]})
    return pd.DataFrame(rows)


def verdict_by_id(claims_df: pd.DataFrame) -> dict[str, str]:
    """{claim id: verdict} of a :func:`silentvae.report.claims.claims_table` (the report looks claims up by id)."""
    return dict(zip(claims_df["Id"], claims_df["Verdict"]))


def claims_summary(claims_df: pd.DataFrame) -> pd.DataFrame:
    """The claims table's first screen: id, the paper's sentence, ours in one line, the paper's number, verdict."""
    return claims_df[list(claims.SUMMARY_COLUMNS)].copy()


def claims_details(claims_df: pd.DataFrame) -> pd.DataFrame:
    """The claims table's reasoning and run folders, by id (below the first screen)."""
    return claims_df[list(claims.DETAIL_COLUMNS)].copy()


#: the claims each Table 2 method is compared in
TABLE2_CLAIMS = {m: ((claims.claim_id("discrete_sg"),) if spec.latent == "bernoulli"
                     else (claims.claim_id("continuous_mse"), claims.claim_id("continuous_bpd")))
                 for m, spec in FIXED_METHODS.items()}


def _pm(mean: Any, sd: Any) -> Any:
    if not _is_num(mean):
        return mean
    return f"{mean:.3f} ± {sd:.3f}" if _is_num(sd) else f"{mean:.3f} ± {NA}"


def summary_table2(full: pd.DataFrame, verdicts: dict[str, str], fixed: dict[str, MethodEvidence],
                   methods: Iterable[str]) -> pd.DataFrame:
    """Table 2, compact: our BPD / MSE (mean ± sd over seeds, seeds found) beside the paper's, with the verdicts
    of the claims each method is compared in (``verdicts``: {claim id: verdict}, :data:`TABLE2_CLAIMS`) and the
    runs each row comes from. ``full``: :func:`table2` of ``methods`` (its rows in that order)."""
    methods = list(methods)
    out = full[["Method", "lr", "Epochs", "Seeds"]].copy()
    for col in ("BPD", "MSE"):
        out[col] = [_pm(m, sd) for m, sd in zip(full[col], full[f"{col} sd"])]
        out[f"{col} (paper)"] = full[f"{col} (paper)"]
    out["Verdict"] = ["; ".join(f"{i}: {verdicts[i]}" for i in TABLE2_CLAIMS[m] if i in verdicts) for m in methods]
    out["Runs"] = [", ".join(fixed[m].run_ids) if m in fixed else NO_PAPER for m in methods]
    return out


def summary_learnable(kind: str, learnable: dict[str, dict[str, MethodEvidence]], datasets: Iterable[str],
                      not_run: dict[str, str]) -> pd.DataFrame:
    """Tables 3 / 4 / 9, compact: the datasets that ran only (a missing dataset is one note elsewhere), our
    "Without SG" / "With SG" beside the paper's, and for Tables 3 and 4 the verdict of each "X vs X + SG" pair (no
    verdict cell on a row without a pair; Table 9 has no claim: numbers only)."""
    shown = [d for d in datasets if d not in not_run and d in learnable]
    full = _learnable_table(kind, learnable, not_run, shown)
    if full.empty:
        return full
    cols = ["Dataset", "Method", "Without SG", "Without SG (paper)", "With SG", "With SG (paper)", "Note"]
    out = full[cols].copy()
    key = {"table3": "val_bpd", "table4": "val_kld"}.get(kind)
    if key is None:
        return out
    outcomes = {d: claims.pair_outcomes(learnable[d], d, key) for d in shown}
    verdict = []
    for d in shown:   # the rows of _learnable_table: per dataset, one per pv.LEARNABLE_ROWS
        for _, without, _ in pv.LEARNABLE_ROWS:
            o = outcomes[d].get(without) if without else None
            verdict.append(_OUTCOME_VERDICT[o[0]] if o else "")
    out["Verdict (X vs X + SG)"] = verdict
    return out


def summary_convergence(full: pd.DataFrame, verdict: str) -> pd.DataFrame:
    """Convergence, compact: each method's median epoch to the target and per-seed epochs beside the paper's, with
    the claim's verdict on the methods the claim compares (:data:`silentvae.report.claims.CONVERGENCE_METHODS`),
    none on the others."""
    out = full[["Method", "Seeds", "Target BPD", "Median epoch", "Per seed", "Paper epoch", "Epochs run"]].copy()
    compared = {method_label("fixed", m) for m in claims.CONVERGENCE_METHODS}
    out["Verdict"] = [verdict if m in compared else "" for m in out["Method"]]
    return out


def summary_taylor(full: pd.DataFrame, verdict: str) -> pd.DataFrame:
    """Taylor bias, compact: per k, L2 deviations (also at the paper's sample count) and ratios to SG beside the
    paper's, with the claim's verdict."""
    at_paper = next(c for c in full.columns if c.startswith("At ") and c.endswith(" samples"))
    out = full[["Free latents k", "Estimator", "Samples", "L2 deviation", at_paper, "L2 deviation (paper)",
                "Ratio to SG", "Ratio to SG (paper)"]].copy()
    out["Verdict"] = verdict
    return out


FINAL_LABELS = {"val_bpd": "BPD", "val_mse": "MSE", "val_kld": "KLD"}


def provenance(runs: Iterable[RunEvidence]) -> pd.DataFrame:
    """One row per run whose numbers the report shows: run id (its folder under results/runs/), its method, the config
    values that fix it (with its initialisation, a choice the paper leaves open: README "Choices the paper leaves
    open"), its final validation values (the evidence's: the numbers every table shows) and its wall time."""
    keys = ("experiment", "dataset", "estimator", "silent", "lr", "anneal_rate", "cutoff_epoch", "seed")
    rows = []
    for run in runs:
        cfg = run.config
        rows.append({"Run": run.run_id, "Method": run.method,
                     **{k: cfg.get(k) if cfg.get(k) is not None else NO_PAPER for k in keys},
                     "Init (not in the paper)": run.init, "Epochs": run.epochs, "Read at epochs": run.read_epochs,
                     **{f"final {FINAL_LABELS[k]}": run.finals.get(k, NA) for k in METRICS},
                     "Wall time (s)": round(run.wall_time, 1)})
    return pd.DataFrame(rows)


VERDICT_COLORS = {claims.HOLDS: "#c8e6c9", claims.CONTRADICTED: "#ffcdd2", claims.NOT_SHOWN: "#fff3c4",
                  claims.NOT_RUN: "#e0e0e0"}


def html_table(df: pd.DataFrame) -> str:
    """A DataFrame as an HTML table for the report: numbers by :func:`format_value`, verdict cells coloured."""
    text = format_table(df)

    def color(v: str) -> str:
        return f"background-color: {VERDICT_COLORS[v]}" if v in VERDICT_COLORS else ""

    import hashlib
    verdict_cols = [c for c in text.columns if c.startswith("Verdict")]
    styler = text.style.hide(axis="index").set_uuid(hashlib.sha1(text.to_csv().encode()).hexdigest()[:10])
    if verdict_cols:
        styler = styler.map(color, subset=verdict_cols)
    return styler.set_table_styles([{"selector": "td, th", "props": "text-align: left; vertical-align: top; "
                                                                     "padding: 2px 6px; font-size: 12px; "
                                                                     "max-width: 36em; overflow-wrap: break-word"}]
                                ).to_html()
