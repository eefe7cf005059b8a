r"""The paper's claims, each with a stable id, this run's evidence, the paper's, and a verdict decided by code.

Verdicts (:data:`VERDICTS`):

* ``holds``: our numbers show the claim;
* ``contradicted``: our numbers show the opposite;
* ``not shown at this scale``: neither (no significant difference, fewer than 2 seeds a side, a threshold not
  reached); the row gives the gap, its direction and what it would take;
* ``not run``: the inputs do not exist (dataset missing, experiment or method not in the config).

**The rule for every comparison between methods** (one rule, both directions; :mod:`silentvae.report.stats`): each
seed's final value is the mean validation metric of its last 3 epochs; the methods' final values are compared
by Welch's two-sided t-test at 5% (``scipy.stats.ttest_ind(equal_var=False, trim=0.2)``: from 5 seeds a side on,
the 20%-trimmed means, Yuen's test, so one seed far off its method's others does not decide). A significant difference in the
paper's direction holds, a significant difference in the opposite direction contradicts; no significant
difference, fewer than 2 seeds on a side, or a test that cannot be computed is "not shown", with the gap and
its direction. The verdict never depends on whether the data agree with the paper. A claim of several
comparisons (BPD and MSE; SG < Gumbel < REINFORCE; every "X vs X + SG" pair) holds when every comparison holds
and is contradicted when any is. Runs shorter than the paper's are judged by the same rule at their length,
and the row says so ("at 22 of 500 epochs"), whichever way the verdict goes. The convergence claim applies the same
test to each seed's first epoch at or below the target BPD (the seeds' mean curves are shown). Structural claims (Table 1: SG's estimator variance
is exactly 0) and the Taylor check keep their own rules, stated in their functions.

Each row has an ``Id`` (:data:`CLAIM_IDS`, e.g. ``t2_continuous_sg``, ``t3_bpd_mnist``): the report, the
tests and everything else look claims up by id, never by position. Each ``claim_*`` function takes plain
result dicts (formats: :mod:`silentvae.report.tables`) and returns a row dict with the keys of :data:`COLUMNS` (``Id``
filled by :func:`claims_table`, which assembles every row from :func:`silentvae.report.writing.gather_results`).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

import pandas as pd

from . import paper_values as pv
from ..training.methods import DEFAULT_INIT, FIXED_METHODS, LEARNABLE_METHODS, with_sg
from .stats import ALPHA, FINAL_EPOCHS, MIN_SEEDS, TRIM, Comparison, final_value, mean_curve, welch

__all__ = ["HOLDS", "CONTRADICTED", "NOT_SHOWN", "NOT_RUN", "VERDICTS", "COLUMNS", "RULE", "CLAIM_IDS",
           "PAPER_FIXED_EPOCHS", "EXACT_NORM_FLOOR", "PAPER_LEARNABLE_EPOCHS", "PAPER_TAYLOR_SAMPLES", "FAR_BELOW",
           "epochs_to_target", "init_note", "INIT_EFFECTS", "variance_row_verdict", "annealing_done", "aggregate",
           "outcome", "claim_zero_variance",
           "claim_variance_dominates", "claim_continuous_sg", "claim_discrete_order", "claim_convergence",
           "claim_taylor", "taylor_conditioning", "reinforce_at_paper_samples", "TAYLOR_BASELINES",
           "claim_learnable_pairs", "claim_sg_beats_reinforce", "pair_outcomes", "claims_table", "claim_id"]

HOLDS = "holds"
CONTRADICTED = "contradicted"
NOT_SHOWN = "not shown at this scale"
NOT_RUN = "not run"
VERDICTS = (HOLDS, CONTRADICTED, NOT_SHOWN, NOT_RUN)
COLUMNS = ("Id", "Claim", "Source", "Ours", "Paper", "Verdict", "Why / what it would take", "Runs")
#: the rule as the report states it (above the claims table)
RULE = (f"Rule: a comparison between methods is decided by Welch's two-sided t-test at {ALPHA:.0%} on the seeds' "
        f"final values (each seed's mean validation value over its last {FINAL_EPOCHS} epochs), on "
        f"{TRIM:.0%}-trimmed means from 5 seeds a side on (Yuen's test: one diverged seed does not decide): a significant "
        "difference in the paper's direction holds, in the opposite direction contradicts; otherwise, or with fewer "
        f"than {MIN_SEEDS} seeds a side, not shown (gap and direction given). Runs shorter than the paper's are "
        "judged the same way and say so (\"at 22 of 500 epochs\"). Convergence: the same test on each seed's "
        "first epoch at or below the target BPD. Table 1's "
        "zero variance is structural (exactly 0).")

PAPER_FIXED_EPOCHS = 500
#: paper run length per (our) dataset of the learnable experiment: (epochs, REINFORCE epochs), Appendix B.2
PAPER_LEARNABLE_EPOCHS = {"mnist": (200, 300), "imagenet32": (100, 100), "cifar10": (2000, 2000)}
PAPER_TAYLOR_SAMPLES = 100_000
FAR_BELOW = 2.0      # "far below": the other estimator's deviation is at least this many times SG's
EXACT_NORM_FLOOR = 1e-6   # Taylor check: an exact gradient below this norm (collapsed posterior) decides nothing
#: the sampling estimators, each with a learnable "+ SG" variant
ESTIMATORS = tuple(m.baseline for m in LEARNABLE_METHODS.values() if m.baseline is not None)

#: the stable id of each claim (learnable ones per paper dataset: ``t3_bpd_mnist``, ``t3_sg_vs_reinforce_imagenet32``)
CLAIM_IDS = {"zero_variance": "t1_zero_variance", "variance_dominates": "t1_variance_dominates",
             "continuous_sg": "t2_continuous_sg", "discrete_order": "t2_discrete_order",
             "convergence": "s32_convergence", "taylor": "s41_taylor", "val_bpd": "t3_bpd", "val_kld": "t4_kld",
             "val_mse": "t9_mse", "sg_vs_reinforce": "t3_sg_vs_reinforce"}

# outcomes of one comparison item
SUPPORTS, AGAINST, UNSHOWN = "supports", "against", "unshown"


def claim_id(name: str, paper_dataset: str | None = None) -> str:
    """The stable id of claim ``name`` (a :data:`CLAIM_IDS` key), per paper dataset for the learnable claims."""
    base = CLAIM_IDS[name]
    return f"{base}_{paper_dataset}" if paper_dataset else base


def _row(claim: str, source: str, ours: str, paper: str, verdict: str, why: str = "",
         runs: Iterable[str] = ()) -> dict[str, str]:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return dict(zip(COLUMNS, ("", claim, source, ours, paper, verdict, why, ", ".join(runs))))


def annealing_done(result: dict[str, Any]) -> bool:
    """Algorithm 1 finished in this run: a "+ SG" run's last epoch no longer trains the encoder from the
    linear decoder (w_lin = 0 or the encoder frozen). Runs without SG are always done."""
    cfg = result.get("config", {})
    if not cfg.get("silent"):
        return True
    last = result["history"][-1]
    return bool(last.get("encoder_frozen")) or float(last.get("w_lin", 1.0)) == 0.0


def aggregate(outcomes: list[str]) -> str:
    """A conjunction of comparisons: any item against -> contradicted; every item supporting -> holds; else
    not shown at this scale."""
    if not outcomes:
        return NOT_RUN
    if AGAINST in outcomes:
        return CONTRADICTED
    if all(o == SUPPORTS for o in outcomes):
        return HOLDS
    return NOT_SHOWN


def outcome(comparison: Comparison, wanted: int) -> str:
    """One comparison against the paper's direction ``wanted`` (-1: a below b): the same test decides both ways."""
    if wanted not in (-1, 1):
        raise ValueError(f"wanted must be -1 or +1, got {wanted!r}")
    d = comparison.direction
    return SUPPORTS if d == wanted else AGAINST if d == -wanted else UNSHOWN


def _finals(results: list[dict[str, Any]], key: str) -> list[float]:
    return [final_value(r, key) for r in results]


def _fmt_vals(vals: list[float], digits: int = 3) -> str:
    mean = statistics.fmean(vals)
    sd = f"{statistics.stdev(vals):.{digits}f}" if len(vals) > 1 else "n/a"
    return f"{mean:.{digits}f} ± {sd} (n={len(vals)})"


def _versus(label_a: str, a: list[float], label_b: str, b: list[float], c: Comparison, digits: int = 3) -> str:
    rel = {-1: "<", 1: ">", 0: "<" if c.gap < 0 else ">" if c.gap > 0 else "="}[c.direction]
    sig = "" if c.direction else " (not significant)" if c.testable else ""
    return f"{label_a} {_fmt_vals(a, digits)} {rel} {label_b} {_fmt_vals(b, digits)}{sig}: {c.describe(digits)}"


def _length_note(items: Iterable[tuple[dict[str, Any], int]]) -> str:
    """'at 22 of 500 epochs' when a run is shorter than the paper's; '+ SG still annealing' when Algorithm 1
    has not finished. ``items``: (result, paper epochs)."""
    items = list(items)
    notes = []
    ran = max(int(r["history"][-1]["epoch"]) for r, _ in items)
    paper = max(p for _, p in items)
    if any(int(r["history"][-1]["epoch"]) < p for r, p in items):
        notes.append(f"at {ran} of {paper} epochs")
    if not all(annealing_done(r) for r, _ in items):
        notes.append("+ SG still annealing at the last epoch")
    return "; ".join(notes)


def _why(parts: list[str], note: str) -> str:
    return "; ".join(parts + ([note] if note else []))


#: what the initialisation ablation (tools/init_ablation.py; README "What the initialisation does to each
#: estimator") found each claim's comparison depends on
INIT_EFFECTS = {
    "continuous_sg": "SG led reparameterization from all three inits in the ablation; the head init slowed both",
    "discrete_order": "from PyTorch's default init discrete SG and REINFORCE collapsed and Gumbel-Softmax led; "
                      "the head init favours REINFORCE",
    "convergence": "the head init slowed both Gaussian methods in the ablation",
    "sg_vs_reinforce": "the head init favours REINFORCE (fixed-variance ablation)",
}


def init_note(results: Iterable[dict[str, Any]], claim: str) -> str:
    """'initialisation zero_decoder_head (not in the paper; <what the ablation found>)': the runs'
    initialisation, a choice the paper leaves open that can move claim ``claim`` (an :data:`INIT_EFFECTS` key)."""
    inits = sorted({(r.get("config") or {}).get("init") or DEFAULT_INIT for r in results})
    return f"initialisation {' / '.join(inits)} (not in the paper; {INIT_EFFECTS[claim]})"


# ------------------------------------------------------------------------------------------------------
# Table 1
# ------------------------------------------------------------------------------------------------------

#: the paper's Table 1 runs: full MNIST's 54,000 training images (60,000 less a 6,000 validation split) in batches
#: of 64, ceil(54,000 / 64) = 844 optimizer steps per epoch; its epochs 1 / 50 / 250 = 844 / 42,200 / 211,000 steps
PAPER_TABLE1_TRAIN, PAPER_TABLE1_BATCH = 54_000, 64
PAPER_TABLE1_STEPS_PER_EPOCH = math.ceil(PAPER_TABLE1_TRAIN / PAPER_TABLE1_BATCH)
#: a measured point pairs with a paper point when their optimizer steps differ by at most this fraction
STEP_MATCH_REL_TOL = 0.1
#: "dominates": Est % above this, decided by whether the confidence interval excludes it
DOMINANCE_PCT = 50.0
__all__ += ["PAPER_TABLE1_STEPS_PER_EPOCH", "STEP_MATCH_REL_TOL", "DOMINANCE_PCT", "paper_steps", "step_pairs",
            "unreached_paper_points"]


def paper_steps(paper_epoch: int) -> int:
    """Optimizer steps of the paper's Table 1 run at ``paper_epoch`` (844 per epoch)."""
    return int(paper_epoch) * PAPER_TABLE1_STEPS_PER_EPOCH


def step_pairs(steps: dict[int, int]) -> dict[int, int]:
    """{our epoch: paper epoch} for the measured points at the paper's step counts.

    ``steps``: {our epoch: optimizer steps}. Each paper epoch (1 / 50 / 250) pairs with the measured point nearest
    in steps when that is within ``STEP_MATCH_REL_TOL`` of the paper's steps; every other point has no pair."""
    out: dict[int, int] = {}
    for pe in pv.TABLE1_EPOCHS:
        target = paper_steps(pe)
        near = [(abs(s - target), e) for e, s in steps.items() if abs(s - target) <= STEP_MATCH_REL_TOL * target]
        if near:
            out[min(near)[1]] = pe
    return out


def unreached_paper_points(steps: dict[int, int], steps_per_epoch: int) -> str:
    """The paper points no measured point pairs with, and the epoch of this run's data set that would reach each:
    e.g. "paper epoch 50 (42,200 steps) needs epoch 594 here (71 steps per epoch)"; "" when all are paired."""
    paired = set(step_pairs(steps).values())
    parts = [f"paper epoch {pe} ({paper_steps(pe):,} steps) needs epoch "
             f"{max(1, round(paper_steps(pe) / steps_per_epoch)):,}" for pe in pv.TABLE1_EPOCHS if pe not in paired]
    if not parts:
        return ""
    return "; ".join(parts) + f" here ({steps_per_epoch} steps per epoch; measured up to {max(steps.values()):,} steps)"


def _steps(per: dict[int, dict[str, Any]]) -> dict[int, int] | None:
    """{epoch: steps} of one method's measured points, None when a point lacks its step label (older results)."""
    if any("steps" not in r for r in per.values()):
        return None
    return {int(e): int(r["steps"]) for e, r in per.items()}


def variance_row_verdict(method: str, result: dict[str, Any]) -> str:
    """Table 1, one method at one measured point. SG methods: holds when est_var == 0 exactly, else contradicted
    (structural). Sampling estimators, "the estimator variance dominates" (Est % > 50) by Est %'s confidence
    interval from resampling the batches: holds when the interval lies above 50, contradicted when it lies below
    50, not shown when it contains 50 (or no interval was measured)."""
    if FIXED_METHODS[method].estimator == "sg":
        return HOLDS if float(result["est_var"]) == 0.0 else CONTRADICTED
    ci = result.get("est_pct_ci")
    if not ci:
        return NOT_SHOWN
    low, high = (float(c) for c in ci)
    if low > DOMINANCE_PCT:
        return HOLDS
    if high < DOMINANCE_PCT:
        return CONTRADICTED
    return NOT_SHOWN


def _point(e: int, r: dict[str, Any]) -> str:
    return f"ep {e}" + (f" = {int(r['steps']):,} steps" if "steps" in r else "")


def _pct_ci(r: dict[str, Any]) -> str:
    ci = r.get("est_pct_ci")
    return f"{float(r['est_pct']):.1f}" + (f" [{float(ci[0]):.1f}, {float(ci[1]):.1f}]" if ci else "")


def claim_zero_variance(variance: dict[str, dict[int, dict[str, Any]]], runs: dict[str, str] | None = None):
    """Table 1: the estimator variance of Silent Gradients (sg_gaussian, sg_bernoulli) is exactly zero at
    every measured point (structural: it does not depend on the step count). Holds when every measured est_var
    == 0, contradicted when any is not."""
    claim, source = "Silent Gradients' estimator variance is exactly zero", "Table 1"
    paper = "Est Var = 0 for both SG methods at epochs 1, 50, 250"
    present = {m: variance[m] for m in ("sg_gaussian", "sg_bernoulli") if variance.get(m)}
    run_ids = [runs[m] for m in present if runs and m in runs]
    if not present:
        return _row(claim, source, "no variance study of an SG method", paper, NOT_RUN,
                    "needs variance_decomposition and an SG method in fixed_variance.methods", run_ids)
    parts, nonzero = [], []
    for m, per in present.items():
        label = FIXED_METHODS[m].label
        parts.append(f"{label}: Est Var " + ", ".join(f"{float(r['est_var']):g} ({_point(int(e), r)})"
                                                     for e, r in sorted(per.items(), key=lambda i: int(i[0]))))
        nonzero += [f"{label} epoch {e}" for e, r in per.items() if variance_row_verdict(m, r) != HOLDS]
    verdict = CONTRADICTED if nonzero else HOLDS
    why = ("nonzero at " + ", ".join(nonzero)) if nonzero else "structural: no latent sampling in the gradient"
    return _row(claim, source, "; ".join(parts), paper, verdict, why, run_ids)


def claim_variance_dominates(variance: dict[str, dict[int, dict[str, Any]]], runs: dict[str, str] | None = None):
    """Table 1: for reparameterization, Gumbel-Softmax and REINFORCE the estimator variance is the larger part
    (Est % > 50) of the reconstruction gradient's variance, at the paper's points (epochs 1 / 50 / 250 of MNIST =
    844 / 42,200 / 211,000 optimizer steps).

    Only measured points at the paper's step counts (:func:`step_pairs`) decide, each by
    :func:`variance_row_verdict` (its 95% interval above 50: holds; below 50: contradicted; else not shown):
    contradicted when any paired point is, holds when every paired point of all three methods holds, else not
    shown. Points at other step counts are listed, not counted; paper points not reached say what would reach
    them. Not run when none of the three was measured."""
    claim, source = "Estimator variance dominates for reparameterization, Gumbel-Softmax, REINFORCE", "Table 1"
    paper = "Est % " + ", ".join(f"{FIXED_METHODS[m].label} {min(r['est_pct'] for r in pv.TABLE1[m].values()):.0f}-"
                                 f"{max(r['est_pct'] for r in pv.TABLE1[m].values()):.0f}" for m in ESTIMATORS)
    paper += " at " + " / ".join(f"{paper_steps(e):,}" for e in pv.TABLE1_EPOCHS) + " steps (epochs " + \
        " / ".join(str(e) for e in pv.TABLE1_EPOCHS) + ")"
    present = {m: variance[m] for m in ESTIMATORS if variance.get(m)}
    run_ids = [runs[m] for m in present if runs and m in runs]
    if not present:
        return _row(claim, source, "no variance study of a sampling estimator", paper, NOT_RUN,
                    "needs variance_decomposition and reparam/gumbel/reinforce in fixed_variance.methods", run_ids)
    parts, verdicts, why = [], [], []
    for m, per in present.items():
        label = FIXED_METHODS[m].label
        steps = _steps(per)
        pairs = step_pairs(steps) if steps is not None else {}
        items = []
        for e, r in sorted(per.items(), key=lambda i: int(i[0])):
            pe = pairs.get(int(e))
            paper_at = f"paper epoch {pe}: {pv.TABLE1[m][pe]['est_pct']:.1f}" if pe else "no paper point"
            items.append(f"{_pct_ci(r)} ({_point(int(e), r)}, {paper_at})")
            if pe:
                v = variance_row_verdict(m, r)
                verdicts.append(v)
                if v != HOLDS:
                    side = "interval below" if v == CONTRADICTED else "interval contains"
                    why.append(f"{label} at {int(r['steps']):,} steps: {side} {DOMINANCE_PCT:g}")
        parts.append(f"{label}: Est % [95% CI] " + ", ".join(items))
    missing = [FIXED_METHODS[m].label for m in ESTIMATORS if m not in present]
    if CONTRADICTED in verdicts:
        verdict = CONTRADICTED
    elif verdicts and all(v == HOLDS for v in verdicts) and not missing:
        verdict = HOLDS
    else:
        verdict = NOT_SHOWN
    rule = (f"decided at the paper's step counts only, by Est %'s 95% bootstrap interval over batches vs "
            f"{DOMINANCE_PCT:g}% (above: holds, below: contradicted, containing it: not shown)")
    if not verdicts:
        why.append("no measured point at the paper's step counts")
    any_per = next(iter(present.values()))
    steps = _steps(any_per)
    if steps is None:
        why.append("results carry no step labels: rerun the variance jobs")
    else:
        spe = int(next(iter(any_per.values()))["steps_per_epoch"])
        unreached = unreached_paper_points(steps, spe)
        if unreached:
            why.append(unreached)
    if missing:
        why.append("not measured: " + ", ".join(missing) + " (the claim is for all three)")
    return _row(claim, source, "; ".join(parts), paper, verdict, "; ".join(why + [rule]), run_ids)


# ------------------------------------------------------------------------------------------------------
# Table 2 and convergence (fixed variance: the selected learning rate's seeds per method)
# ------------------------------------------------------------------------------------------------------

def _run_ids(runs: dict[str, list[str]] | None, methods: Iterable[str]) -> list[str]:
    return [r for m in methods for r in (runs or {}).get(m, [])]


def _fixed_lr(fixed: dict[str, list[dict[str, Any]]], m: str) -> str:
    return f"lr {fixed[m][0]['config'].get('lr', float('nan')):g}"


def _missing_fixed(claim: str, source: str, paper: str, fixed: dict[str, list[dict[str, Any]]],
                   need: tuple[str, ...], run_ids: list[str]) -> dict[str, str] | None:
    missing = [FIXED_METHODS[m].label for m in need if not fixed.get(m)]
    if not missing:
        return None
    return _row(claim, source, "missing: " + ", ".join(missing), paper, NOT_RUN,
                f"needs {', '.join(need)} in fixed_variance.methods", run_ids)


def claim_continuous_sg(fixed: dict[str, list[dict[str, Any]]], runs: dict[str, list[str]] | None = None,
                        paper_epochs: int = PAPER_FIXED_EPOCHS):
    """Table 2: continuous SG matches or beats reparameterization in final validation BPD and in MSE.

    ``fixed``: method -> results over seeds. Per metric, Welch's test of SG's seeds against reparameterization's
    (module rule): SG significantly lower supports, significantly higher contradicts, else not shown (a t-test
    cannot show "matches"). Holds when both metrics support, contradicted when either contradicts."""
    claim, source = "Continuous SG matches or beats reparameterization in BPD and MSE", "Table 2"
    p = pv.TABLE2
    paper = (f"BPD {p['sg_gaussian']['bpd']} vs {p['reparam']['bpd']}, MSE {p['sg_gaussian']['mse']} vs "
             f"{p['reparam']['mse']} (epoch {paper_epochs})")
    need = ("sg_gaussian", "reparam")
    run_ids = _run_ids(runs, need)
    missing = _missing_fixed(claim, source, paper, fixed, need, run_ids)
    if missing:
        return missing
    outcomes, ours = [], []
    for key, label in (("val_bpd", "BPD"), ("val_mse", "MSE")):
        a, b = _finals(fixed["sg_gaussian"], key), _finals(fixed["reparam"], key)
        c = welch(a, b)
        outcomes.append(outcome(c, -1))
        ours.append(f"{label}: " + _versus("SG", a, "reparam", b, c))
    verdict = aggregate(outcomes)
    why = {HOLDS: "SG significantly lower in both", CONTRADICTED: "SG significantly higher in "
           + " and ".join(lbl for lbl, o in zip(("BPD", "MSE"), outcomes) if o == AGAINST),
           NOT_SHOWN: "no significant difference in " + " and ".join(
               lbl for lbl, o in zip(("BPD", "MSE"), outcomes) if o == UNSHOWN)
           + " (equal would read 'matches', which a t-test cannot show)"}[verdict]
    note = _length_note((r, paper_epochs) for m in need for r in fixed[m])
    init = init_note((r for m in need for r in fixed[m]), "continuous_sg")
    return _row(claim, source, "; ".join(ours) + f" ({_fixed_lr(fixed, 'sg_gaussian')}, "
                f"{_fixed_lr(fixed, 'reparam')})", paper, verdict, _why([why, init], note), run_ids)


def claim_discrete_order(fixed: dict[str, list[dict[str, Any]]], runs: dict[str, list[str]] | None = None,
                         paper_epochs: int = PAPER_FIXED_EPOCHS):
    """Table 2: in BPD, discrete SG < Gumbel-Softmax < REINFORCE: two Welch tests (module rule), holds when
    both steps are significant the paper's way, contradicted when either is significant the other way."""
    claim, source = "Discrete SG beats Gumbel-Softmax, which beats REINFORCE (BPD)", "Table 2"
    p = pv.TABLE2
    paper = f"BPD {p['sg_bernoulli']['bpd']} < {p['gumbel']['bpd']} < {p['reinforce']['bpd']} (epoch {paper_epochs})"
    need = ("sg_bernoulli", "gumbel", "reinforce")
    run_ids = _run_ids(runs, need)
    missing = _missing_fixed(claim, source, paper, fixed, need, run_ids)
    if missing:
        return missing
    outcomes, ours, why = [], [], []
    for a, b in (("sg_bernoulli", "gumbel"), ("gumbel", "reinforce")):
        va, vb = _finals(fixed[a], "val_bpd"), _finals(fixed[b], "val_bpd")
        c = welch(va, vb)
        outcomes.append(outcome(c, -1))
        la, lb = FIXED_METHODS[a].label, FIXED_METHODS[b].label
        ours.append(_versus(la, va, lb, vb, c))
        why.append(f"{la} vs {lb}: " + {SUPPORTS: "lower (significant)", AGAINST: "higher (significant)",
                                        UNSHOWN: "not shown apart"}[outcomes[-1]])
    note = _length_note((r, paper_epochs) for m in need for r in fixed[m])
    why.append(init_note((r for m in need for r in fixed[m]), "discrete_order"))
    return _row(claim, source, "; ".join(ours), paper, aggregate(outcomes), _why(why, note), run_ids)


def _first_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((e for e, v in curve if v <= target), None)


def epochs_to_target(result: dict[str, Any], target: float) -> tuple[int, bool]:
    """(first epoch whose validation BPD <= ``target``, True) for one run; (epochs run + 1, False) when it never
    got there: a lower bound on its epoch, so a censored run can only shrink the gap it takes part in."""
    curve = mean_curve([result])
    e = _first_reach(curve, target)
    return (e, True) if e is not None else (curve[-1][0] + 1, False)


def claim_convergence(fixed: dict[str, list[dict[str, Any]]], target: float, runs: dict[str, list[str]] | None = None):
    """Sec. 3.2: continuous SG reaches the target BPD in fewer epochs than reparameterization (paper: about half).

    The rule of every comparison (:func:`silentvae.report.stats.welch`) on each seed's first epoch at or below ``target``
    (:func:`epochs_to_target`; a seed that never reached it counts as epochs run + 1, a lower bound, stated in the
    row): SG significantly fewer epochs holds, significantly more contradicts, otherwise not shown. "About half"
    is a ratio a handful of seeds cannot test: the row gives the seeds' mean curves' epochs (:func:`silentvae.report.stats.mean_curve`)
    and their ratio beside the paper's.
    """
    claim = "SG reaches the target BPD in fewer epochs than reparameterization (paper: about half)"
    source = "Sec. 3.2"
    paper_ratio = pv.CONVERGENCE['sg_gaussian'] / pv.CONVERGENCE['reparam']
    paper = f"{pv.CONVERGENCE['target_bpd']} BPD (MNIST): SG epoch {pv.CONVERGENCE['sg_gaussian']:.0f}, " \
            f"reparameterization epoch {pv.CONVERGENCE['reparam']:.0f} (ratio {paper_ratio:.2f})"
    need = ("sg_gaussian", "reparam")
    run_ids = _run_ids(runs, need)
    missing = _missing_fixed(claim, source, paper, fixed, need, run_ids)
    if missing:
        return missing
    curves = {m: mean_curve(fixed[m]) for m in need}
    e_sg, e_rep = (_first_reach(curves[m], target) for m in need)
    n_sg, n_rep = (curves[m][-1][0] for m in need)
    show = lambda e, n: f"epoch {e}" if e is not None else f"not reached in {n} epochs"  # noqa: E731
    reached = {m: [epochs_to_target(r, target) for r in fixed[m]] for m in need}
    per_seed = {m: ", ".join(str(e) if ok else f">{e - 1}" for e, ok in reached[m]) for m in need}
    ratio = f"; ratio {e_sg / e_rep:.2f} (paper {paper_ratio:.2f})" if e_sg and e_rep else ""
    c = welch(*([float(e) for e, _ in reached[m]] for m in need))
    ours = (f"target {target:g} BPD; mean curve of {len(fixed['sg_gaussian'])} / {len(fixed['reparam'])} seeds: "
            f"SG {show(e_sg, n_sg)}, reparameterization {show(e_rep, n_rep)}{ratio}; epochs to target per seed: "
            f"SG {per_seed['sg_gaussian']}; reparameterization {per_seed['reparam']} ({c.describe(1)})")
    verdict = aggregate([outcome(c, -1)])
    why = []
    if not all(ok for m in need for _, ok in reached[m]):
        why.append("a seed that never reached the target counts as epochs run + 1 (a lower bound)")
    if verdict == NOT_SHOWN:
        if not any(ok for m in need for _, ok in reached[m]):
            best = min(v for m in need for _, v in curves[m])
            why.append(f"no seed reached it (best mean {best:.3f}); needs longer runs or a target this dataset "
                       "reaches")
        elif not c.testable:
            why.append(f"fewer than {MIN_SEEDS} seeds a method, or no spread: one seed never decides a comparison")
        else:
            why.append("the epochs' gap is inside the seed spread; more seeds or longer runs would decide")
    why.append(init_note((r for m in need for r in fixed[m]), "convergence"))
    return _row(claim, source, ours, paper, verdict, "; ".join(why), run_ids)


# ------------------------------------------------------------------------------------------------------
# Taylor bias (Sec. 4.1)
# ------------------------------------------------------------------------------------------------------

#: REINFORCE's baselines in the Taylor check (silentvae.training.diagnostics.REINFORCE_BASELINES): result key -> label
TAYLOR_BASELINES = {"reinforce": "scalar baseline", "reinforce_per_image": "per-image baseline"}


def taylor_conditioning(taylor: dict[str, Any]) -> str:
    """What the Taylor check's exact gradient is exact over: "exact over the k most uncertain latents, the other
    d - k held at a draw from q" (with the ks checked), or "exact over all d latents"."""
    d = taylor.get("latent_dim", "?")
    ks = [int(r["free_latents"]) for r in taylor.get("by_free_latents", [])] or [taylor.get("free_latents", d)]
    if ks[-1] in (None, d):
        return f"exact over all {d} latents"
    k = "/".join(str(k) for k in ks)
    return f"exact over the k = {k} most uncertain latents, the other d - k held at a draw from q (d = {d})"


def reinforce_at_paper_samples(deviation: float, samples: int) -> float:
    """A Monte Carlo deviation ~ 1/sqrt(S), at the paper's sample count: deviation * sqrt(S / 100,000) for
    S below it (more samples are not scaled up: conservative)."""
    return deviation * math.sqrt(min(1.0, samples / PAPER_TAYLOR_SAMPLES))


def claim_taylor(taylor: dict[str, Any] | None, job: str = ""):
    """Sec. 4.1: SG's L2 deviation from the exact gradient is far below (>= FAR_BELOW x) Gumbel-Softmax's and
    REINFORCE's. REINFORCE's deviation is Monte Carlo error ~ 1/sqrt(S): with S below the paper's 100,000
    samples it is compared at the paper's sample count, deviation * sqrt(S / 100,000) (conservative).

    The paper does not say which baseline its REINFORCE used. The check runs two (one scalar for every image,
    as in training; and a per-image leave-one-out one, both unbiased); the verdict uses the one whose
    REINFORCE / SG ratio is closer (in log) to the paper's 593.1 / 212.9, and the row names it and the other's.
    Holds when both ratios >= FAR_BELOW; contradicted when either is < 1; else not shown (also when the exact
    gradient's norm is below EXACT_NORM_FLOOR: then every deviation is round-off). The row says what the
    exact gradient is exact over (:func:`taylor_conditioning`) and alpha(z)'s variation under the full q."""
    claim, source = "SG's Taylor bias is far below Gumbel-Softmax's and REINFORCE's error", "Sec. 4.1"
    t = pv.TAYLOR_BIAS
    paper_ratio = t["reinforce"] / t["sg"]
    paper = f"L2 deviation SG {t['sg']}, Gumbel-Softmax {t['gumbel']:g} ({t['gumbel'] / t['sg']:.0f}x), " \
            f"REINFORCE {t['reinforce']} ({paper_ratio:.1f}x, {PAPER_TAYLOR_SAMPLES:,} samples; baseline not specified)"
    if taylor is None:
        return _row(claim, source, "no Taylor-bias check", paper, NOT_RUN, "needs taylor_bias enabled", [job] if job else [])
    sg, gumbel = float(taylor["sg"]), float(taylor["gumbel"])
    exact = float(taylor.get("exact_norm", math.inf))
    if exact < EXACT_NORM_FLOOR:
        return _row(claim, source, f"exact gradient norm {exact:.3g}; SG {sg:.3g}, Gumbel-Softmax {gumbel:.3g}, "
                    f"REINFORCE {float(taylor['reinforce']):.3g}", paper, NOT_SHOWN,
                    f"the exact encoder gradient is ~0 (norm < {EXACT_NORM_FLOOR:g}: a collapsed posterior), so the "
                    "deviations compare round-off; needs a trained encoder with a nonzero gradient",
                    [job] if job else [])
    samples = int(taylor.get("num_samples", PAPER_TAYLOR_SAMPLES))
    at_paper = {key: reinforce_at_paper_samples(float(taylor[key]), samples) for key in TAYLOR_BASELINES
                if key in taylor}
    ratio = lambda v: v / sg if sg > 0 else math.inf  # noqa: E731
    used = min(at_paper, key=lambda k: abs(math.log(max(ratio(at_paper[k]), 1e-300) / paper_ratio)))
    ratios = {"Gumbel-Softmax": ratio(gumbel), "REINFORCE": ratio(at_paper[used])}
    scaled = f" ~ {{:.4g}} at {PAPER_TAYLOR_SAMPLES:,}" if samples < PAPER_TAYLOR_SAMPLES else ""
    reinforce_text = "; ".join(
        f"REINFORCE, {TAYLOR_BASELINES[k]}: {float(taylor[k]):.4g}{scaled.format(v)} ({ratio(v):.1f}x)"
        for k, v in at_paper.items())
    ours = (f"SG {sg:.4g}, Gumbel-Softmax {gumbel:.4g} ({ratios['Gumbel-Softmax']:.1f}x); {reinforce_text}; "
            f"{samples:,} samples per image")
    if len(at_paper) > 1:
        ours += (f"; the {TAYLOR_BASELINES[used]} matches the paper's ratio ({paper_ratio:.1f}x) better, so the "
                 "verdict uses it (the paper does not say which baseline it used)")
    if any(r < 1 for r in ratios.values()):
        verdict = CONTRADICTED
        why = "SG deviation above " + ", ".join(k for k, r in ratios.items() if r < 1)
    elif all(r >= FAR_BELOW for r in ratios.values()):
        verdict, why = HOLDS, f"both ratios >= {FAR_BELOW:g}"
    else:
        verdict = NOT_SHOWN
        why = (f"ratio below {FAR_BELOW:g} for " + ", ".join(k for k, r in ratios.items() if r < FAR_BELOW)
               + "; more REINFORCE samples would decide")
    extra = f"{taylor.get('train_epochs', '?')} training epochs, {taylor_conditioning(taylor)}"
    if "alpha_cv_full" in taylor:
        extra += (f"; alpha(z) varies by {float(taylor['alpha_cv']):.3g} (Std/|mean|) under the conditioned q, "
                  f"{float(taylor['alpha_cv_full']):.3g} under the full q")
    extra += f"; initialisation {taylor.get('init', DEFAULT_INIT)} (the paper leaves it open)"
    return _row(claim, source, f"{ours}; {extra}", paper, verdict, why, [job] if job else [])


# ------------------------------------------------------------------------------------------------------
# Tables 3, 4, 9 (learnable variance, seeds)
# ------------------------------------------------------------------------------------------------------

def _paper_epochs(dataset: str, method: str) -> int:
    paper_column = pv.paper_dataset(dataset) or dataset
    longest = max(e for e, _ in PAPER_LEARNABLE_EPOCHS.values())
    epochs, reinforce_epochs = PAPER_LEARNABLE_EPOCHS.get(paper_column, (longest, longest))
    return reinforce_epochs if LEARNABLE_METHODS[method].estimator == "reinforce" else epochs


_PAPER_TABLE = {"val_bpd": pv.TABLE3, "val_kld": pv.TABLE4, "val_mse": pv.TABLE9}


def _paper_value(key: str, dataset: str, method: str) -> float | None:
    paper_column = pv.paper_dataset(dataset)
    v = _PAPER_TABLE[key].get(paper_column or "", {}).get(method)
    return None if v is None else float(v[0] if isinstance(v, tuple) else v)


def pair_outcomes(learnable: dict[str, list[dict[str, Any]]], dataset: str, key: str
                  ) -> dict[str, tuple[str, str]]:
    """Per estimator with both "X" and "X + SG" runs: (outcome, text). Welch's test of "X + SG"'s seeds against
    X's (module rule) in the paper's direction of the pair (Table 3: + SG lowers BPD everywhere; Tables 4 / 9:
    the sign of the paper's own with - without): significant that way supports, the other way is against,
    else unshown. The text gives both sides' mean ± sd and n, the statistic and p, and the run length."""
    out = {}
    for est in ESTIMATORS:
        base, sg = learnable.get(est), learnable.get(with_sg(est))
        if not base or not sg:
            continue
        p_base, p_sg = _paper_value(key, dataset, est), _paper_value(key, dataset, with_sg(est))
        wanted = -1 if key == "val_bpd" or p_base is None or p_sg is None else (-1 if p_sg < p_base else 1)
        a, b = _finals(sg, key), _finals(base, key)
        c = welch(a, b)
        label = LEARNABLE_METHODS[est].label
        text = _versus(f"{label} + SG", a, label, b, c)
        note = _length_note([(r, _paper_epochs(dataset, est)) for r in base]
                            + [(r, _paper_epochs(dataset, with_sg(est))) for r in sg])
        out[est] = (outcome(c, wanted), text + (f" [{note}]" if note else ""))
    return out


_LEARNABLE_CLAIMS = {
    "val_bpd": ('"+ SG" lowers BPD for every estimator', "Table 3"),
    "val_kld": ('"+ SG" changes KLD as in the paper (higher, except Gumbel-Softmax on CIFAR-10)', "Table 4"),
    "val_mse": ('"+ SG" changes MSE as in the paper (MNIST: higher for reparam and Gumbel, lower for REINFORCE; '
                'ImageNet, CIFAR-10: lower)', "Table 9"),
}


def _paper_pairs(key: str, dataset: str) -> str:
    parts = []
    for est in ESTIMATORS:
        a, b = _paper_value(key, dataset, est), _paper_value(key, dataset, with_sg(est))
        if a is not None and b is not None:
            parts.append(f"{LEARNABLE_METHODS[est].label} {a:g} → {b:g}")
    return "; ".join(parts) or "no paper value"


def claim_learnable_pairs(key: str, dataset: str, learnable: dict[str, list[dict[str, Any]]] | None,
                          reason: str | None = None, runs: dict[str, list[str]] | None = None):
    """Tables 3 / 4 / 9 for one dataset: every "X + SG" vs "X" pair goes the paper's way (Table 3: lower BPD;
    Tables 4, 9: the paper's own sign per pair). :func:`aggregate` of :func:`pair_outcomes`."""
    claim, source = _LEARNABLE_CLAIMS[key]
    label = pv.DATASET_LABELS.get(dataset, dataset)
    source = f"{source}, {label}"
    paper = _paper_pairs(key, dataset)
    if reason is not None:
        return _row(claim, source, "—", paper, NOT_RUN, reason)
    pairs = pair_outcomes(learnable or {}, dataset, key)
    runs = [r for est in pairs for m in (est, with_sg(est)) for r in (runs or {}).get(m, [])]
    if not pairs:
        return _row(claim, source, "no pair of X and X + SG runs", paper, NOT_RUN,
                    "needs an estimator and its + SG variant in learnable_variance.methods")
    verdict = aggregate([o for o, _ in pairs.values()])
    missing = [LEARNABLE_METHODS[e].label for e in ESTIMATORS if e not in pairs]
    why = {HOLDS: "every pair significantly the paper's way", CONTRADICTED: "a pair significantly the other way",
           NOT_SHOWN: "some pair not shown apart"}[verdict]
    if missing:
        why += "; not run: " + ", ".join(missing)
        if verdict == HOLDS:
            verdict, why = NOT_SHOWN, why + " (the claim is for every estimator)"
    return _row(claim, source, "; ".join(t for _, t in pairs.values()), paper, verdict, why, runs)


def claim_sg_beats_reinforce(dataset: str, learnable: dict[str, list[dict[str, Any]]] | None,
                             reason: str | None = None, runs: dict[str, list[str]] | None = None):
    """Table 3: standalone discrete SG ("Discrete None + SG") has lower BPD than REINFORCE (MNIST, ImageNet):
    Welch's test of their seeds' final BPD (module rule)."""
    claim, source = "Standalone discrete SG beats REINFORCE (BPD)", f"Table 3, {pv.DATASET_LABELS.get(dataset, dataset)}"
    a, b = _paper_value("val_bpd", dataset, "none_sg_bernoulli"), _paper_value("val_bpd", dataset, "reinforce")
    paper = f"{a:g} vs {b:g}" if a is not None and b is not None else "no paper value"
    if reason is not None:
        return _row(claim, source, "—", paper, NOT_RUN, reason)
    runs = [r for m in ("none_sg_bernoulli", "reinforce") for r in (runs or {}).get(m, [])]
    sg, rf = (learnable or {}).get("none_sg_bernoulli"), (learnable or {}).get("reinforce")
    if not sg or not rf:
        return _row(claim, source, "missing none_sg_bernoulli or reinforce runs", paper, NOT_RUN,
                    "needs none_sg_bernoulli and reinforce in learnable_variance.methods", runs)
    va, vb = _finals(sg, "val_bpd"), _finals(rf, "val_bpd")
    c = welch(va, vb)
    verdict = aggregate([outcome(c, -1)])
    why = {HOLDS: "discrete SG significantly lower", CONTRADICTED: "REINFORCE significantly lower",
           NOT_SHOWN: "not shown apart"}[verdict]
    note = _length_note([(r, _paper_epochs(dataset, "none_sg_bernoulli")) for r in sg]
                        + [(r, _paper_epochs(dataset, "reinforce")) for r in rf])
    init = init_note(sg + rf, "sg_vs_reinforce")
    return _row(claim, source, _versus("SG", va, "REINFORCE", vb, c), paper, verdict, _why([why, init], note), runs)


# ------------------------------------------------------------------------------------------------------
# The whole table
# ------------------------------------------------------------------------------------------------------

def _fixed_inputs(gathered: dict[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[str]]]:
    """method -> finished results over seeds (the selected grid run first) and their run ids."""
    fixed, ids = {}, {}
    for m, run_ids in gathered.get("fixed_runs", {}).items():
        found = [(r, gathered["fixed_results"][r]) for r in run_ids if r in gathered["fixed_results"]]
        if found:
            ids[m], fixed[m] = [r for r, _ in found], [res for _, res in found]
    return fixed, ids


def claims_table(gathered: dict[str, Any], cfg: dict[str, Any]) -> pd.DataFrame:
    """Every claim row from :func:`silentvae.report.writing.gather_results` output and the config (in the paper's
    order), each with its ``Id``. Learnable claims get one row per paper dataset (a dataset not in the config,
    or missing on disk, is one "not run" row per claim)."""
    fixed, fixed_ids = _fixed_inputs(gathered)
    first_runs = {m: ids[0] for m, ids in fixed_ids.items()}
    variance_runs = {m: s["best_run"] for m, s in gathered["fixed_selections"].items()}
    not_run = gathered["not_run"]
    fixed_reason = None
    fixed_dataset = cfg["fixed_variance"]["dataset"]
    if not cfg["fixed_variance"]["enabled"]:
        fixed_reason = "fixed_variance disabled in the config"
    elif fixed_dataset in not_run:
        fixed_reason = not_run[fixed_dataset]
    fixed_rows = {"zero_variance": claim_zero_variance(gathered["variance"], variance_runs or first_runs),
                  "variance_dominates": claim_variance_dominates(gathered["variance"], variance_runs or first_runs),
                  "continuous_sg": claim_continuous_sg(fixed, fixed_ids),
                  "discrete_order": claim_discrete_order(fixed, fixed_ids),
                  "convergence": claim_convergence(
                      fixed, float(cfg["fixed_variance"].get("target_bpd", pv.CONVERGENCE["target_bpd"])), fixed_ids)}
    rows = []
    for name, row in fixed_rows.items():
        if fixed_reason:
            row = {**row, "Verdict": NOT_RUN, "Why / what it would take": fixed_reason}
        rows.append({**row, "Id": claim_id(name)})
    rows.append({**claim_taylor(gathered["taylor"], f"taylor/{cfg['taylor_bias']['dataset']}"),
                 "Id": claim_id("taylor")})
    learnable_cfg = cfg["learnable_variance"]
    ours_for = {pv.paper_dataset(ds): ds for ds in (learnable_cfg["datasets"] if learnable_cfg["enabled"] else {})}
    by_table: dict[str, list[dict[str, str]]] = {"val_bpd": [], "val_kld": [], "val_mse": []}
    for paper_column in pv.PAPER_DATASETS:
        ds = ours_for.get(paper_column, paper_column)
        reason = None
        if not learnable_cfg["enabled"]:
            reason = "learnable_variance disabled in the config"
        elif paper_column not in ours_for:
            reason = f"{pv.DATASET_LABELS[paper_column]} not in learnable_variance.datasets"
        elif ds in not_run:
            reason = not_run[ds]
        data = gathered["learnable"].get(ds)
        run_ids = gathered.get("learnable_runs", {}).get(ds, {})
        for key in by_table:
            by_table[key].append({**claim_learnable_pairs(key, ds, data, reason, run_ids),
                                  "Id": claim_id(key, paper_column)})
        if paper_column in ("mnist", "imagenet32"):
            by_table["val_bpd"].append({**claim_sg_beats_reinforce(ds, data, reason, run_ids),
                                        "Id": claim_id("sg_vs_reinforce", paper_column)})
    for key in by_table:   # Table 3 (every dataset's pairs, then the standalone SG rows), Table 4, Table 9
        rows += sorted(by_table[key], key=lambda r: r["Id"].startswith(CLAIM_IDS["sg_vs_reinforce"]))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    if df["Id"].duplicated().any():
        raise AssertionError(f"duplicate claim ids: {sorted(df['Id'][df['Id'].duplicated()])}")
    return df
