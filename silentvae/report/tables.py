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

* result dict: ``{"config": RunConfig dict, "history": [{"epoch", "val_bpd", "val_mse", "val_kld", ...}],
  "finished": bool}``; its final value of a metric is :func:`silentvae.training.history.final_value` (the mean of the
  last 3 epochs), as in the claims; over seeds, tables show mean ± sd (sample sd, ddof=1).
* selection dict: ``{"best_run", "best_val_bpd", "best_config", "candidates"}``.
* variance result: ``{"batch_var", "batch_var_raw", "est_var", "est_pct", "est_pct_ci", "steps", ...}``
  (:func:`silentvae.pipeline.jobs.variance_job`); Taylor result ``{"sg", "gumbel",
  "reinforce", "exact_norm", "num_samples", ...}``.

:func:`write_table` writes ``<name>.csv`` (full precision), ``<name>.md`` and ``<name>.tex`` (numbers
formatted by :func:`format_value`), each atomically.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from . import claims
from . import paper_values as pv
from ..pipeline import paths
from ..training.io import atomic_write_text
from ..training.methods import DEFAULT_INIT, FIXED_METHODS, label as method_label
from .paper_values import TAYLOR_LABELS, TAYLOR_PAPER_KEY
from .stats import FINAL_EPOCHS, final_value, mean_curve

__all__ = ["NOT_CONFIGURED", "NO_RESULT", "NO_DATASET", "NO_PAPER", "NA", "CAPTIONS", "load_json",
           "final_metrics", "table1", "table1_epoch_map", "table2", "convergence", "table3", "table4", "table9",
           "taylor_table", "format_value", "format_table", "write_table", "dataset_note", "latex_escape",
           "summary_table1", "summary_table2", "summary_learnable", "summary_convergence", "summary_taylor",
           "provenance", "html_table", "VERDICT_COLORS", "verdict_by_id"]

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
               "Var) with a 95% bootstrap interval (BCa) over the batches. Points are labelled by optimizer steps "
               "(epoch x ceil(train images / batch)) and compared with the paper's point at the same steps (MNIST: "
               "844 steps per epoch, epochs 1 / 50 / 250 = 844 / 42,200 / 211,000 steps); other points have no "
               "paper value. diff = ours - paper."),
    "table2": ("Table 2: fixed variance (sigma^2 = 0.01), linear decoder: final validation BPD and MSE (each seed's "
               f"mean over its last {FINAL_EPOCHS} epochs), mean ± sd over the seeds of the best learning rate per "
               "method (selected at the first seed). Our MNIST (5k subset) runs are compared with the paper's "
               "full-MNIST values (epoch 500). diff = our mean - paper."),
    "convergence": ("Convergence (Sec. 3.2): first epoch at which the seeds' mean validation BPD <= the target "
                    "(paper: 6.73 BPD; SG 45 epochs, reparameterization 90)."),
    "table3": (f"Table 3: learnable variance, final validation BPD (each seed's mean over its last {FINAL_EPOCHS} "
               "epochs), mean ± std over seeds (sample std, ddof=1; n/a for one seed). Our MNIST (5k subset) numbers are compared with the paper's MNIST column. "
               "diff = our mean - paper mean."),
    "table4": ("Table 4: learnable variance, validation KL divergence (mean over seeds). Our MNIST (5k subset) "
               "numbers are compared with the paper's MNIST column. diff = ours - paper."),
    "table9": ("Table 9: learnable variance, validation MSE (per-image sum of squared errors) of a single run "
               "(the first seed). Our MNIST (5k subset) numbers are compared with the paper's MNIST column. "
               "diff = ours - paper."),
    "taylor_bias": ("Taylor-bias check (Sec. 4.1): L2 distance of each estimator's encoder gradient from the exact "
               "gradient obtained by enumerating the Bernoulli latent states (learnable variance): exact over all of "
               "them, or, for a model with more latents than enumeration allows, exact over the k most uncertain "
               "latents, the other d - k held at a draw from q (one row group per k). REINFORCE with a scalar "
               "baseline (as in training) and with a per-image leave-one-out one (both unbiased; the paper does not "
               "say which it used); its Monte Carlo error ~ 1/sqrt(S) is also given at the paper's 100,000 samples."),
}
CAPTIONS["taylor"] = CAPTIONS["taylor_bias"]
CAPTIONS["claims"] = ("The paper's claims: this run's evidence, the paper's, and a verdict (silentvae.report.claims): holds, "
                      "contradicted, not shown at this scale (with what it would take), or not run. " + claims.RULE)
CAPTIONS["provenance"] = (f"Every run whose numbers the report shows: its folder under {paths.runs_dir('results')}/, "
                          "config and seed.")


# ------------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------------

def load_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def final_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The last history entry of a result dict (the final epoch's validation metrics)."""
    history = result.get("history") or []
    if not history:
        raise ValueError("result has an empty history")
    return history[-1]


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
    step count (:func:`silentvae.report.claims.step_pairs`: paper MNIST 844 steps per epoch, within 10%); any other
    point has no paper counterpart (None), whatever its epoch number.
    """
    from .claims import step_pairs
    pairs = step_pairs({int(e): int(s) for e, s in steps.items()})
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
    from .claims import paper_steps
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
            row.update({"Est % CI low": NOT_CONFIGURED, "Est % CI high": NOT_CONFIGURED, "Note": ""})
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
                   "Paper steps": paper_steps(pe) if pe is not None else NO_PAPER,
                   "Batch Var raw": float(res.get("batch_var_raw", res["batch_var"]))}
            for key, col in T1_KEYS:
                ours = float(res[key])
                ref = paper[key] if paper else NO_PAPER
                row.update({col: ours, f"{col} (paper)": ref, f"{col} diff": _diff(ours, ref)})
            row.update({"Est % CI low": ci[0], "Est % CI high": ci[1],
                        "Note": T1_NEGATIVE if float(res["batch_var"]) < 0 else ""})
            rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------
# Table 2 and convergence: fixed variance
# ------------------------------------------------------------------------------------------------------

def _lr_str(lr: Any) -> str:
    return f"{float(lr):g}" if _is_num(lr) else str(lr)


def _sd(vals: list[float]) -> Any:
    return statistics.stdev(vals) if len(vals) > 1 else NA


def table2(selections: dict[str, dict[str, Any]], results: dict[str, dict[str, Any]], *,
           methods: Iterable[str] | None = None, not_run: dict[str, str] | None = None,
           dataset: str | None = None, seeds: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Final validation BPD / MSE (:func:`silentvae.training.history.final_value`) of the selected learning rate per
    method: the mean over its seeds (column ``BPD``), their sample sd (``BPD sd``, "n/a" for one seed) and
    count (``Seeds``).

    Args:
        selections: method -> selection dict (``best_run``, ``best_config`` ...).
        results: run id -> result dict (must hold each selection's ``best_run``).
        methods: the methods to list (default: those in ``selections``, in the paper's order).
        not_run / dataset: when ``dataset`` (default: the selections' dataset) is in ``not_run``, every
            reproduced cell holds that reason.
        seeds: method -> the run ids of the selected setting's seeds (default: the selection's best run
            alone); those without a result are left out.
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
        sel = selections.get(m)
        if skipped:
            reason = skipped
        elif sel is None:
            reason = NOT_CONFIGURED
        elif sel["best_run"] not in results:
            reason = NO_RESULT
        else:
            reason = None
        if reason is None:
            runs = [results[r] for r in (seeds or {}).get(m, [sel["best_run"]]) if r in results]
            row.update({"lr": _lr_str(sel["best_config"].get("lr")),
                        "Epochs": max(int(final_metrics(r)["epoch"]) for r in runs), "Seeds": len(runs)})
            vals = {key: [final_value(r, f"val_{key}") for r in runs] for key in ("bpd", "mse")}
            ours = {key: statistics.fmean(v) for key, v in vals.items()}
            sds = {key: _sd(v) for key, v in vals.items()}
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


def convergence(results: dict[str, list[dict[str, Any]] | dict[str, Any]],
                target: float = pv.CONVERGENCE["target_bpd"], *, methods: Iterable[str] | None = None) -> pd.DataFrame:
    """First epoch whose seeds' mean validation BPD (:func:`silentvae.report.stats.mean_curve`) <= ``target`` per
    method (the selected learning rate's seeds).

    ``results``: method -> its seeds' result dicts (or one result dict). Not reached: "not reached (best X.XXX)".
    """
    methods = _ordered(results if methods is None else methods, FIXED_METHODS)
    rows = []
    for m in methods:
        paper = pv.CONVERGENCE.get(m, NO_PAPER) if target == pv.CONVERGENCE["target_bpd"] else NO_PAPER
        row: dict[str, Any] = {"Method": method_label("fixed", m), "Target BPD": float(target)}
        res = results.get(m)
        if isinstance(res, dict):
            res = [res]
        if not res:
            row.update({"Epoch reached": NOT_CONFIGURED, "Paper epoch": paper, "diff": NOT_CONFIGURED,
                        "Epochs run": NOT_CONFIGURED, "Best BPD": NOT_CONFIGURED, "Seeds": NOT_CONFIGURED})
        else:
            curve = mean_curve(res)
            hit = next((e for e, v in curve if v <= target), None)
            best = min(v for _, v in curve)
            reached: Any = hit if hit is not None else f"not reached (best {best:.3f})"
            row.update({"Epoch reached": reached, "Paper epoch": paper, "diff": _diff(reached, paper),
                        "Epochs run": curve[-1][0], "Best BPD": best, "Seeds": len(res)})
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------
# Tables 3, 4, 9: learnable variance
# ------------------------------------------------------------------------------------------------------

def _mean_std_str(mean: float, std: float | None) -> str:
    return f"{mean:.3f} ± {NA if std is None else f'{std:.3f}'}"


def _cell(kind: str, dataset: str, method: str | None, learnable: dict[str, dict[str, list[dict]]],
          not_run: dict[str, str], ddof: int) -> tuple[Any, Any, Any, int]:
    """(our cell, paper cell, diff, number of runs) for one table cell."""
    if method is None:
        return NO_PAPER, NO_PAPER, NO_PAPER, 0
    paper_column = pv.paper_dataset(dataset)
    if kind == "table3":
        p = pv.TABLE3.get(paper_column, {}).get(method) if paper_column else None
        paper, paper_num = (f"{p[0]:.2f} ± {p[1]:.2f}", p[0]) if p else (NO_PAPER, NO_PAPER)
    else:
        table = pv.TABLE4 if kind == "table4" else pv.TABLE9
        paper_num = table.get(paper_column, {}).get(method, NO_PAPER) if paper_column else NO_PAPER
        paper = paper_num
    if dataset in not_run:
        return not_run[dataset], paper, not_run[dataset], 0
    if dataset not in learnable:
        return NO_DATASET, paper, NO_DATASET, 0
    if method not in learnable[dataset]:
        return NOT_CONFIGURED, paper, NOT_CONFIGURED, 0
    runs = learnable[dataset][method]
    if not runs:
        return NO_RESULT, paper, NO_RESULT, 0
    if kind == "table3":
        vals = [final_value(r, "val_bpd") for r in runs]
        mean = statistics.fmean(vals)
        std = None if len(vals) < 2 else (statistics.stdev(vals) if ddof == 1 else statistics.pstdev(vals))
        return _mean_std_str(mean, std), paper, _diff(mean, paper_num), len(vals)
    if kind == "table4":
        mean = statistics.fmean(final_value(r, "val_kld") for r in runs)
        return mean, paper, _diff(mean, paper_num), len(runs)
    ours = final_value(runs[0], "val_mse")
    return ours, paper, _diff(ours, paper_num), 1


def _learnable_table(kind: str, learnable: dict[str, dict[str, list[dict]]], not_run: dict[str, str] | None,
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
            counts = []
            for col, method in (("Without SG", without), ("With SG", with_sg)):
                ours, paper, diff, n = _cell(kind, ds, method, learnable, not_run, ddof)
                row.update({col: ours, f"{col} (paper)": paper, f"{col} diff": diff})
                if method is not None:
                    counts.append(str(n))
            row["Note"] = f"{note}; runs: {'/'.join(counts)}"
            rows.append(row)
    return pd.DataFrame(rows)


def table3(learnable: dict[str, dict[str, list[dict]]], not_run: dict[str, str] | None = None,
           datasets: Iterable[str] | None = None, *, ddof: int = 1) -> pd.DataFrame:
    """Validation BPD "mean ± std" over seeds (one string cell; std "n/a" for one seed), paper and diff
    of the means, laid out as the paper's Table 3 ("Without SG" / "With SG" per row, rows per dataset).

    Args:
        learnable: dataset -> method -> result dicts of that method's seeds (first = the first seed).
        not_run: dataset -> reason; such a dataset's reproduced cells hold exactly that reason.
        datasets: the datasets to show, in order (default: those of ``learnable`` then ``not_run``).
        ddof: 1 (sample std, default) or 0.
    """
    return _learnable_table("table3", learnable, not_run, datasets, ddof)


def table4(learnable: dict[str, dict[str, list[dict]]], not_run: dict[str, str] | None = None,
           datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """Validation KL divergence, mean over seeds, beside the paper's Table 4 (same layout as table3)."""
    return _learnable_table("table4", learnable, not_run, datasets)


def table9(learnable: dict[str, dict[str, list[dict]]], not_run: dict[str, str] | None = None,
           datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """Validation MSE of the first seed's run, beside the paper's Table 9 (same layout as table3)."""
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
    from .claims import PAPER_TAYLOR_SAMPLES, reinforce_at_paper_samples
    rows = []
    samples = taylor.get("num_samples", NO_PAPER)
    d = taylor.get("latent_dim", NO_PAPER)
    for result in taylor.get("by_free_latents") or [taylor]:
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

_OUTCOME_VERDICT = {"supports": "holds", "against": "contradicted", "unshown": "not shown at this scale"}


def summary_table1(variance: dict[str, dict[int, dict[str, Any]]]) -> pd.DataFrame:
    """Table 1, compact: per method and measured point (epoch and optimizer steps, and the paper point at those
    steps) our Est % with its 95% interval, Batch Var (raw and corrected) and Est Var beside the paper's, and the
    verdict of the claim that row bears on (SG: exactly zero, at every point; the others: estimator variance
    dominates, decided by the interval, only at points paired with the paper's by steps: other rows say so)."""
    from . import claims
    full = table1(variance)
    rows = []
    for _, r in full[pd.to_numeric(full["Epoch"], errors="coerce").notna()].iterrows():
        m = next(k for k, v in FIXED_METHODS.items() if v.label == r["Method"])
        measured = next(res for e, res in variance[m].items() if int(e) == int(r["Epoch"]))
        paired = _is_num(r["Paper epoch"])
        steps = f"{int(r['Steps']):,}" if _is_num(r["Steps"]) else str(r["Steps"])
        paper_point = f"epoch {int(r['Paper epoch'])} ({int(r['Paper steps']):,})" if paired else NO_PAPER
        ci = (f"[{float(r['Est % CI low']):.1f}, {float(r['Est % CI high']):.1f}]"
              if _is_num(r["Est % CI low"]) else NA)
        sg = FIXED_METHODS[m].estimator == "sg"
        verdict = claims.variance_row_verdict(m, measured) if sg or paired else "— (no paper point at these steps)"
        rows.append({"Method": r["Method"], "Epoch": int(r["Epoch"]), "Steps": steps,
                     "Paper point (steps)": paper_point, "Est %": r["Est %"], "Est % 95% CI": ci, "Est % (paper)": r["Est % (paper)"],
                     "Batch Var raw": r["Batch Var raw"], "Batch Var": r["Batch Var"],
                     "Batch Var (paper)": r["Batch Var (paper)"], "Est Var": r["Est Var"],
                     "Est Var (paper)": r["Est Var (paper)"], "Verdict": verdict, "Note": r["Note"]})
    return pd.DataFrame(rows)


def verdict_by_id(claims_df: pd.DataFrame) -> dict[str, str]:
    """{claim id: verdict} of a :func:`silentvae.report.claims.claims_table` (the report looks claims up by id)."""
    return dict(zip(claims_df["Id"], claims_df["Verdict"]))


#: the claim each Table 2 method is compared in
TABLE2_CLAIM = {m: claims.claim_id("discrete_order" if spec.latent == "bernoulli" else "continuous_sg")
                for m, spec in FIXED_METHODS.items()}
#: the methods the convergence claim compares
CONVERGENCE_METHODS = ("sg_gaussian", "reparam")


def _pm(mean: Any, sd: Any) -> Any:
    if not _is_num(mean):
        return mean
    return f"{mean:.3f} ± {sd:.3f}" if _is_num(sd) else f"{mean:.3f} ± {NA}"


def summary_table2(full: pd.DataFrame, verdicts: dict[str, str], runs: dict[str, list[str]] | None = None
                   ) -> pd.DataFrame:
    """Table 2, compact: our BPD / MSE (mean ± sd over seeds, n) beside the paper's, with the verdict of the
    claim each method is compared in (``verdicts``: {claim id: verdict}, :data:`TABLE2_CLAIM`) and the runs
    each row comes from (``runs``: {method: run ids})."""
    out = full[["Method", "lr", "Epochs", "Seeds"]].copy()
    for col in ("BPD", "MSE"):
        out[col] = [_pm(m, sd) for m, sd in zip(full[col], full[f"{col} sd"])]
        out[f"{col} (paper)"] = full[f"{col} (paper)"]
    by_label = {method_label("fixed", m): m for m in FIXED_METHODS}
    out["Verdict"] = [verdicts.get(TABLE2_CLAIM[by_label[m]], "") if m in by_label else "" for m in out["Method"]]
    out["Runs"] = [", ".join((runs or {}).get(by_label.get(m, ""), [])) or NO_PAPER for m in out["Method"]]
    return out


def summary_learnable(kind: str, learnable: dict[str, dict[str, list[dict]]], datasets: Iterable[str],
                      not_run: dict[str, str]) -> pd.DataFrame:
    """Tables 3 / 4 / 9, compact: the datasets that ran only (a missing dataset is one note elsewhere), our
    "Without SG" / "With SG" beside the paper's, and the verdict of each "X vs X + SG" pair (no verdict cell
    on a row without a pair)."""
    key = {"table3": "val_bpd", "table4": "val_kld", "table9": "val_mse"}[kind]
    shown = [d for d in datasets if d not in not_run and d in learnable]
    full = _learnable_table(kind, learnable, not_run, shown)
    if full.empty:
        return full
    outcomes = {d: claims.pair_outcomes(learnable[d], d, key) for d in shown}
    labels = {pv.DATASET_LABELS.get(d, d): d for d in shown}
    verdict = []
    for _, r in full.iterrows():
        est = next((w for label, w, _ in pv.LEARNABLE_ROWS if label == r["Method"] and w), None)
        o = outcomes[labels[r["Dataset"]]].get(est) if est else None
        verdict.append(_OUTCOME_VERDICT[o[0]] if o else "")
    cols = ["Dataset", "Method", "Without SG", "Without SG (paper)", "With SG", "With SG (paper)"]
    out = full[cols].copy()
    out["Verdict (X vs X + SG)"] = verdict
    return out


def summary_convergence(full: pd.DataFrame, verdict: str) -> pd.DataFrame:
    """Convergence, compact: epoch reached by each method's mean curve beside the paper's, with the claim's
    verdict on the methods the claim compares (:data:`CONVERGENCE_METHODS`) and no verdict cell on the others."""
    out = full[["Method", "Seeds", "Target BPD", "Epoch reached", "Paper epoch", "Epochs run"]].copy()
    compared = {method_label("fixed", m) for m in CONVERGENCE_METHODS}
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


def provenance(entries: Iterable[tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    """One row per run whose numbers the report shows: run id (its folder under results/runs/), the config
    values that fix it (with its initialisation, a choice the paper leaves open: README "Choices the paper leaves
    open"), and its final validation numbers."""
    keys = ("experiment", "dataset", "latent", "estimator", "silent", "lr", "anneal_rate", "cutoff_epoch", "seed",
            "latent_dim", "channels", "batch_size")
    rows = []
    for run_id, result in entries:
        cfg = result.get("config", {})
        final = final_metrics(result)
        rows.append({"Run": run_id, **{k: cfg.get(k, NO_PAPER) if cfg.get(k) is not None else NO_PAPER for k in keys},
                     "Initialisation (not in the paper)": cfg.get("init") or DEFAULT_INIT,
                     "Epochs": int(final["epoch"]), "val BPD": float(final["val_bpd"]),
                     "val MSE": float(final["val_mse"]), "val KLD": float(final["val_kld"])})
    return pd.DataFrame(rows)


VERDICT_COLORS = {"holds": "#c8e6c9", "contradicted": "#ffcdd2", "not shown at this scale": "#fff3c4",
                  "not run": "#e0e0e0"}


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
                                                                     "padding: 2px 6px; font-size: 12px"}]).to_html()
