"""How far apart two results must be to differ: a mean's t-interval over repeats, Welch's t-test
between two configs' repeats, and a single accuracy's binomial standard error. Used by
`exp confirm` (repeats of the best configs) and by the search summary (are the top values apart?).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence

LEVEL = 0.95  # the intervals' confidence, and 1 - the test's significance (5%)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A metric over n repeats: mean, sample standard deviation and the 95% confidence interval of
    the mean from Student's t with n - 1 degrees of freedom (NaN spread with one repeat)."""

    n: int
    mean: float
    sd: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def shown(self) -> str:
        """`0.9512 ± 0.0123`; one repeat has no interval: `0.9512 (1 seed)`."""
        if self.n < 2:
            return f"{self.mean:.4f} ({self.n} seed)"
        return f"{self.mean:.4f} ± {self.half_width:.4f}"


def interval(values: Sequence[float]) -> Interval:
    """The t-interval of the mean of `values`: mean ± t(0.975, n-1) * sd / sqrt(n). With 2 repeats
    t is 12.7, with 3 it is 4.3, with 5 it is 2.8: few seeds give wide, honest intervals."""
    n = len(values)
    mean = statistics.fmean(values) if n else math.nan
    if n < 2:
        return Interval(n, mean, math.nan, math.nan, math.nan)
    from scipy import stats  # here, not at the top: 1-1.8 s of every `exp search`, which never needs it

    sd = statistics.stdev(values)
    half = float(stats.t.ppf((1 + LEVEL) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch's two-sided t-test p-value (no equal-variance assumption) of two sets of repeats;
    NaN when either has fewer than 2; 1.0 when both are constant and equal (nothing differs)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if statistics.stdev(a) == 0 and statistics.stdev(b) == 0:
        return 1.0 if statistics.fmean(a) == statistics.fmean(b) else 0.0
    from scipy import stats  # only exp confirm compares repeats (see `interval`)

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def differ(p: float) -> bool:
    """Distinguishable at the 5% level."""
    return p < 1 - LEVEL


def binomial_se(accuracy: float, n: int) -> float:
    """An accuracy's standard error on n images, sqrt(p(1-p)/n): 0.0103 at 0.96 on 359 images,
    0.041 at 0.2 on 96."""
    if n < 1 or not 0 <= accuracy <= 1:
        return math.nan
    return math.sqrt(accuracy * (1 - accuracy) / n)
