r"""The statistical rule behind every comparison between methods (:mod:`silentvae.report.claims`) and the final
values the tables show.

* **Final value of a run**: :func:`silentvae.training.history.final_value` (the mean of its last
  :data:`FINAL_EPOCHS` epochs' validation metric), imported here for the report.
* **Comparison** of methods ``a`` and ``b`` (one final value per seed): Welch's two-sided t-test on
  :data:`TRIM`-trimmed means (Yuen's test; ``scipy.stats.ttest_ind(equal_var=False, trim=TRIM)``),
  :math:`t = (\bar a_t - \bar b_t) / \sqrt{d_a + d_b}`, :math:`d = (n - 1) s_w^2 / (h (h - 1))` with
  :math:`g = \lfloor \mathrm{TRIM}\, n \rfloor` values cut from each tail, :math:`h = n - 2g` and
  :math:`s_w^2` the winsorized variance. With 3 or 4 seeds a side g = 0 and it is Welch's test; from 5 seeds
  on, one seed far off its method's others (a REINFORCE run that diverged) no longer decides the verdict:
  with plain Welch, one such seed (10.67 BPD among 8.03-8.28) turned "Gumbel-Softmax below REINFORCE"
  (every REINFORCE seed 0.6 BPD above every Gumbel seed) into p = 0.058.
  ``a`` is shown below ``b`` when p < :data:`ALPHA` and t < 0, above when p < ALPHA and t > 0; otherwise
  not shown apart. Fewer than :data:`MIN_SEEDS` seeds on a side, or a statistic that cannot be computed
  (both sides without spread), shows nothing.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

from ..training.history import FINAL_EPOCHS, final_value

__all__ = ["ALPHA", "MIN_SEEDS", "FINAL_EPOCHS", "TRIM", "final_value", "mean_curve", "Comparison", "welch",
           "trimmed_mean"]

ALPHA = 0.05
MIN_SEEDS = 2
TRIM = 0.2   # fraction trimmed from each tail before the test: floor(0.2 n) values, 0 below 5 seeds


def trimmed_mean(values: Sequence[float], trim: float = TRIM) -> float:
    """Mean after cutting floor(trim * n) values from each end of the sorted values (the plain mean for n < 5
    at trim 0.2): ``scipy.stats.trim_mean``, the means the test compares."""
    from scipy.stats import trim_mean
    return float(trim_mean(values, trim))


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
    def trimmed(self) -> bool:
        """Whether the test cut values from the tails (>= 5 values on a side at TRIM 0.2)."""
        return any(int(TRIM * len(v)) > 0 for v in (self.a, self.b))

    @property
    def gap(self) -> float:
        """trimmed mean(a) - trimmed mean(b) (:func:`trimmed_mean`; the plain means below 5 values a side)."""
        return trimmed_mean(self.a) - trimmed_mean(self.b)

    def describe(self, digits: int = 3) -> str:
        """'Welch t = -3.2, p = 0.012' (with '20%-trimmed' when values were trimmed) or why there is no test."""
        label = f"gap of {TRIM:.0%}-trimmed means" if self.trimmed else "gap"
        if self.p is None:
            n = min(len(self.a), len(self.b))
            why = (f"{n} seed{'s' if n != 1 else ''} on a side: no test (needs >= {MIN_SEEDS})" if n < MIN_SEEDS
                   else "no spread on either side: no test")
            return f"{label} {self.gap:+.{digits}f}; {why}"
        return f"{label} {self.gap:+.{digits}f}, Welch t = {self.t:.2f}, p = {self.p:.3g}"


def welch(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Welch's two-sided t-test of ``a`` against ``b`` on TRIM-trimmed means (Yuen; see the module docstring)."""
    if not a or not b:
        raise ValueError("welch needs at least one value on each side")
    a, b = tuple(float(v) for v in a), tuple(float(v) for v in b)
    if min(len(a), len(b)) < MIN_SEEDS or (len(set(a)) == 1 and len(set(b)) == 1):
        return Comparison(a, b, None, None)   # too few seeds, or no spread on either side (t undefined)
    from scipy.stats import ttest_ind
    with warnings.catch_warnings():   # near-identical seeds: scipy warns of precision loss; the test is still valid
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        res = ttest_ind(a, b, equal_var=False, trim=TRIM)
    t, p = float(res.statistic), float(res.pvalue)
    if not (math.isfinite(t) and math.isfinite(p)):
        return Comparison(a, b, None, None)
    return Comparison(a, b, t, p)
