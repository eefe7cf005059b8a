r"""The statistical rule behind every comparison between methods (:mod:`silentvae.claims`) and the final
values the tables show.

* **Final value of a run**: the mean of its last :data:`FINAL_EPOCHS` epochs' validation metric,
  :math:`\bar v = \frac1k \sum_{e=E-k+1}^{E} v_e` (fewer when the run has fewer epochs), not one noisy epoch.
* **Comparison** of methods ``a`` and ``b`` (one final value per seed): Welch's two-sided t-test,
  :math:`t = (\bar a - \bar b) / \sqrt{s_a^2/n_a + s_b^2/n_b}` (``scipy.stats.ttest_ind(equal_var=False)``).
  ``a`` is shown below ``b`` when p < :data:`ALPHA` and t < 0, above when p < ALPHA and t > 0; otherwise
  not shown apart. Fewer than :data:`MIN_SEEDS` seeds on a side, or a statistic that cannot be computed
  (both sides without spread), shows nothing.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["ALPHA", "MIN_SEEDS", "FINAL_EPOCHS", "final_value", "mean_curve", "Comparison", "welch"]

ALPHA = 0.05
MIN_SEEDS = 2
FINAL_EPOCHS = 3


def final_value(result: dict[str, Any], key: str = "val_bpd", epochs: int = FINAL_EPOCHS) -> float:
    """Mean of ``key`` over the last ``epochs`` history entries of a result dict."""
    history = result.get("history") or []
    if not history:
        raise ValueError("result has an empty history: it has no final value")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    return statistics.fmean(float(h[key]) for h in history[-epochs:])


def mean_curve(results: Sequence[dict[str, Any]], key: str = "val_bpd") -> list[tuple[int, float]]:
    """(epoch, mean of ``key`` over the runs) for each epoch every run reached (seeds' mean learning curve)."""
    if not results:
        raise ValueError("mean_curve needs at least one result")
    per_run = [{int(h["epoch"]): float(h[key]) for h in r["history"]} for r in results]
    common = sorted(set.intersection(*(set(p) for p in per_run)))
    return [(e, statistics.fmean(p[e] for p in per_run)) for e in common]


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`welch` for values ``a`` vs ``b``."""

    a: tuple[float, ...]
    b: tuple[float, ...]
    t: float | None
    p: float | None

    @property
    def direction(self) -> int:
        """-1: a shown below b; +1: shown above; 0: not shown apart (or not testable)."""
        if self.p is None or self.t is None or self.p >= ALPHA:
            return 0
        return -1 if self.t < 0 else 1

    @property
    def testable(self) -> bool:
        return self.p is not None

    @property
    def gap(self) -> float:
        """mean(a) - mean(b)."""
        return statistics.fmean(self.a) - statistics.fmean(self.b)

    def describe(self, digits: int = 3) -> str:
        """'Welch t = -3.2, p = 0.012' or why there is no test."""
        if self.p is None:
            n = min(len(self.a), len(self.b))
            why = (f"{n} seed{'s' if n != 1 else ''} on a side: no test (needs >= {MIN_SEEDS})" if n < MIN_SEEDS
                   else "no spread on either side: no test")
            return f"gap {self.gap:+.{digits}f}; {why}"
        return f"gap {self.gap:+.{digits}f}, Welch t = {self.t:.2f}, p = {self.p:.3g}"


def welch(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Welch's two-sided t-test of ``a`` against ``b`` (see the module docstring)."""
    if not a or not b:
        raise ValueError("welch needs at least one value on each side")
    a, b = tuple(float(v) for v in a), tuple(float(v) for v in b)
    if min(len(a), len(b)) < MIN_SEEDS or (len(set(a)) == 1 and len(set(b)) == 1):
        return Comparison(a, b, None, None)   # too few seeds, or no spread on either side (t undefined)
    from scipy.stats import ttest_ind
    res = ttest_ind(a, b, equal_var=False)
    t, p = float(res.statistic), float(res.pvalue)
    if not (math.isfinite(t) and math.isfinite(p)):
        return Comparison(a, b, None, None)
    return Comparison(a, b, t, p)
