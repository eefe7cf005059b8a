r"""The statistical rule behind every comparison between methods (:mod:`silentvae.report.claims`), fixed before the
measurements it decides (:data:`RULE_DATE`, :data:`RULE_COMMIT`; the README keeps the history of rule changes).

* **Final value of a run**: :func:`silentvae.training.history.final_value` (the mean of its last
  :data:`FINAL_EPOCHS` epochs' validation metric); **epochs to a target**:
  :func:`silentvae.training.history.epochs_to_target`. Imported here for the report: one home for each number.
* **Comparison** of methods ``a`` and ``b`` (one final value per seed, :func:`compare`): an exact two-sided
  permutation test of the Mann-Whitney U statistic (``scipy.stats.permutation_test`` over every split of the
  pooled seeds, mid-ranks for ties) at :data:`ALPHA`. The effect is the Hodges-Lehmann shift (the median of every
  ``a_i - b_j``) with its distribution-free interval of at least 95% (the order statistics of those differences
  cut at the exact null distribution's 2.5% tail). No trimming, no switch by seed count: with 3 seeds a side the
  smallest two-sided p is 2 / C(6, 3) = 0.1, so no 3-vs-3 comparison can be significant ("3 vs 3 seeds cannot
  reach 5%"). ``a`` is shown below ``b`` when p < ALPHA and the shift < 0, above when p < ALPHA and the shift > 0.
* **Convergence** (epochs to a target, censored where a seed never reached it, :func:`compare_censored`): the
  log-rank test (``scipy.stats.logrank``) on the seeds' epochs to target, at ALPHA; a seed that did not reach the
  target is right-censored at its last epoch (never "epochs + 1").
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..training.history import FINAL_EPOCHS, epochs_to_target, final_value

__all__ = ["ALPHA", "FINAL_EPOCHS", "RULE_DATE", "RULE_COMMIT", "final_value", "epochs_to_target", "mean_curve",
           "Comparison", "compare", "smallest_p", "CensoredComparison", "compare_censored",
           "median_epochs_to_target"]

ALPHA = 0.05
#: the day the rule below was fixed, and the commit that fixed it (README "How a verdict is decided": its history)
RULE_DATE = "2026-12-07"
RULE_COMMIT = "062c9ec"   # the commit that landed this rule (README "How a verdict is decided")


def mean_curve(results: Sequence[dict[str, Any]], key: str = "val_bpd") -> list[tuple[int, float]]:
    """(epoch, mean of ``key`` over the runs) for each epoch every run reached (seeds' mean learning curve)."""
    if not results:
        raise ValueError("mean_curve needs at least one result")
    per_run = [{int(h["epoch"]): float(h[key]) for h in r["history"]} for r in results]
    common = sorted(set.intersection(*(set(p) for p in per_run)))
    return [(e, statistics.fmean(p[e] for p in per_run)) for e in common]


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p an exact rank test of ``n_a`` vs ``n_b`` distinct values can give: 2 / C(n_a + n_b,
    n_a) (the two complete separations), 1 without values."""
    if n_a < 1 or n_b < 1:
        return 1.0
    return min(1.0, 2 / math.comb(n_a + n_b, n_a))


def _u_statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mann-Whitney U of ``x`` (mid-ranks of the pooled values), vectorised along ``axis``."""
    from scipy.stats import rankdata
    ranks = rankdata(np.concatenate([x, y], axis=axis), axis=axis)
    n = x.shape[axis]
    return np.take(ranks, np.arange(n), axis=axis).sum(axis=axis) - n * (n + 1) / 2


@functools.lru_cache(maxsize=None)
def _u_null(n_a: int, n_b: int) -> np.ndarray:
    """The sorted exact null distribution of U for ``n_a`` vs ``n_b`` distinct values (every split of the ranks,
    ``scipy.stats.permutation_test``)."""
    from scipy.stats import permutation_test
    ranks = np.arange(n_a + n_b, dtype=float)
    res = permutation_test((ranks[:n_a], ranks[n_a:]), _u_statistic, permutation_type="independent",
                           n_resamples=np.inf, vectorized=True, axis=-1)
    return np.sort(np.asarray(res.null_distribution))


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare` for values ``a`` vs ``b``: the exact test's U and p, the Hodges-Lehmann
    shift (a - b) and its interval (None where the seeds are too few for a 95% interval)."""

    a: tuple[float, ...]
    b: tuple[float, ...]
    u: float | None
    p: float | None
    shift: float
    interval: tuple[float, float] | None

    @property
    def direction(self) -> int:
        """-1: a shown below b; +1: shown above; 0: not shown apart (or not testable)."""
        if self.p is None or self.p >= ALPHA or self.shift == 0:
            return 0
        return -1 if self.shift < 0 else 1

    @property
    def testable(self) -> bool:
        """Whether the seeds can reach ALPHA at all (:func:`smallest_p` < ALPHA)."""
        return self.p is not None and smallest_p(len(self.a), len(self.b)) < ALPHA

    @property
    def seeds(self) -> str:
        return f"{len(self.a)} vs {len(self.b)} seeds"

    def why_untestable(self) -> str:
        """'3 vs 3 seeds cannot reach 5% (smallest p 0.1)', or '' when the seeds can."""
        if self.testable:
            return ""
        return (f"{self.seeds} cannot reach {ALPHA:.0%} (smallest p "
                f"{smallest_p(len(self.a), len(self.b)):.2g})")

    def describe(self, digits: int = 3) -> str:
        """'shift -0.062 [-0.081, -0.040], p = 0.0079 (5 vs 5 seeds)' or why the seeds cannot decide."""
        ci = (f" [{self.interval[0]:+.{digits}f}, {self.interval[1]:+.{digits}f}]" if self.interval
              else " (no 95% interval)")
        if not self.testable:
            return f"shift {self.shift:+.{digits}f}{ci}; {self.why_untestable()}"
        return f"shift {self.shift:+.{digits}f}{ci}, p = {self.p:.2g} ({self.seeds})"


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """The rule's comparison of ``a`` against ``b`` (module docstring): exact two-sided permutation test of the
    Mann-Whitney U (``scipy.stats.permutation_test``, every split of the pooled values), Hodges-Lehmann shift and
    its interval of at least 95% from the test's own null distribution."""
    if not a or not b:
        raise ValueError("compare needs at least one value on each side")
    a, b = tuple(float(v) for v in a), tuple(float(v) for v in b)
    if not all(math.isfinite(v) for v in a + b):
        raise ValueError(f"compare needs finite values, got {a} vs {b}")
    diffs = np.sort(np.subtract.outer(np.array(a), np.array(b)).ravel())
    shift = float(np.median(diffs))
    from scipy.stats import permutation_test
    res = permutation_test((np.array(a), np.array(b)), _u_statistic, permutation_type="independent",
                           alternative="two-sided", n_resamples=np.inf, vectorized=True, axis=-1)
    # the interval [D_(k), D_(nm + 1 - k)] holds the shift with probability >= 1 - 2 P(U <= k - 1) under the exact
    # null of U without ties: the largest k with P(U <= k - 1) <= ALPHA / 2 (no such k with too few seeds)
    null = _u_null(len(a), len(b))
    tail = np.searchsorted(null, np.arange(len(diffs)), side="right") / len(null)   # P(U <= k - 1), k = 1..nm
    ks = np.nonzero(tail <= ALPHA / 2)[0]
    interval = None
    if len(ks):
        k = int(ks[-1]) + 1
        interval = (float(diffs[k - 1]), float(diffs[len(diffs) - k]))
    return Comparison(a, b, float(res.statistic), float(min(1.0, res.pvalue)), shift, interval)


@dataclass(frozen=True)
class CensoredComparison:
    """The outcome of :func:`compare_censored`: per side (epoch, reached) of each seed, the log-rank z and p."""

    a: tuple[tuple[int, bool], ...]
    b: tuple[tuple[int, bool], ...]
    z: float | None
    p: float | None

    @property
    def direction(self) -> int:
        """-1: ``a`` reaches the target sooner (significantly); +1: later; 0: not shown apart or no test."""
        if self.p is None or self.z is None or self.p >= ALPHA:
            return 0
        return -1 if self.z > 0 else 1   # z > 0: more of a's seeds reach the target than expected: sooner

    @property
    def testable(self) -> bool:
        return self.p is not None

    def describe(self) -> str:
        if self.p is None:
            return "no seed reached the target: no test"
        return f"log-rank z = {self.z:.2f}, p = {self.p:.2g} ({len(self.a)} vs {len(self.b)} seeds)"


def compare_censored(a: Sequence[tuple[int, bool]], b: Sequence[tuple[int, bool]]) -> CensoredComparison:
    """Log-rank test (``scipy.stats.logrank``, two-sided) of epochs to target, ``(epoch, reached)`` per seed: a
    seed with ``reached`` False is right-censored at that epoch (its last). No test when no seed reached it."""
    if not a or not b:
        raise ValueError("compare_censored needs at least one seed on each side")
    a, b = tuple((int(e), bool(r)) for e, r in a), tuple((int(e), bool(r)) for e, r in b)
    if not any(r for _, r in a + b):
        return CensoredComparison(a, b, None, None)
    from scipy.stats import CensoredData, logrank

    def data(side):
        return CensoredData(uncensored=[e for e, r in side if r], right=[e for e, r in side if not r])

    res = logrank(data(a), data(b), alternative="two-sided")
    z, p = float(res.statistic), float(res.pvalue)
    if not (math.isfinite(z) and math.isfinite(p)):
        return CensoredComparison(a, b, None, None)
    return CensoredComparison(a, b, z, p)


def median_epochs_to_target(times: Sequence[tuple[int, bool]]) -> str:
    """The seeds' median epoch to target, Kaplan-Meier (``scipy.stats.ecdf`` of the right-censored epochs: the
    first epoch at which at least half the seeds had reached it), or '> E' when fewer than half ever did (E: the
    longest run's last epoch)."""
    if not times:
        raise ValueError("median_epochs_to_target needs at least one seed")
    from scipy.stats import CensoredData, ecdf
    data = CensoredData(uncensored=[e for e, r in times if r], right=[e for e, r in times if not r])
    if not any(r for _, r in times):
        return f"> {max(e for e, _ in times)}"
    sf = ecdf(data).sf
    reached = [q for q, s in zip(sf.quantiles, sf.probabilities) if s <= 0.5]
    return f"{min(reached):g}" if reached else f"> {max(e for e, _ in times)}"
