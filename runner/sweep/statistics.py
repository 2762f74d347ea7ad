"""Which differences between a sweep's configs are real: intervals, tests, seeds needed.

Each config of a sweep repeats over seeds (and, in a K-fold sweep, folds); its runs' final
validation metrics are its sample. Per config: the 95% confidence interval of the mean
(Student t). Against the best config: a two-sided t-test, paired by seed where both ran the
same seeds, else Welch's; in a K-fold sweep, whose results share training rows and so are
not independent, Nadeau and Bengio's corrected resampled t-test, paired by (seed, fold).
For the two best configs: about how many seeds each would need to tell their observed
difference apart at 80% power (the power of the same t-test, from the noncentral t).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import special  # (scipy.stats would cost a sweep's end 3x the import time)

CONFIDENCE = 0.95
ALPHA = 0.05  # p >= ALPHA: tied with the best
POWER = 0.80
MOST_SEEDS = 100_000  # beyond this, "more than" (a difference too small to chase)

Repeat = tuple[str | None, str | None]  # (seed, fold) of one run

WELCH = "Welch t-test"
PAIRED = "paired t-test (by seed)"
CORRECTED = "corrected resampled t-test (Nadeau-Bengio, paired by seed and fold)"


@dataclass(frozen=True)
class Sample:
    """One config's final metric per repeat; `folds`: K of a K-fold sweep, else None."""

    values: Mapping[Repeat, float]
    folds: int | None = None

    @property
    def n(self) -> int:
        """How many runs."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """The mean over its runs."""
        return statistics.fmean(self.values.values())

    @property
    def std(self) -> float | None:
        """The sample standard deviation (None with one run)."""
        return statistics.stdev(self.values.values()) if self.n > 1 else None


def t_quantile(q: float, df: float) -> float:
    """Student t's quantile function (scipy.stats.t.ppf)."""
    return float(special.stdtrit(df, q))


def t_two_sided_p(t: float, df: float) -> float:
    """The two-sided p-value of a t statistic."""
    return float(2 * special.stdtr(df, -abs(t)))


def _paired_p(a: list[float], b: list[float]) -> float:
    """scipy.stats.ttest_rel(b, a)'s p-value."""
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    t = statistics.fmean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs)))
    return t_two_sided_p(t, len(diffs) - 1)


def _welch_p(a: list[float], b: list[float]) -> float:
    """scipy.stats.ttest_ind(b, a, equal_var=False)'s p-value (Welch-Satterthwaite df)."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(b) - statistics.fmean(a)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t_two_sided_p(t, df)


def _resampling_ratio(folds: int | None) -> float:
    """Nadeau and Bengio's n_test / n_train: 1 / (K - 1) for K folds, 0 without folds."""
    return 1 / (folds - 1) if folds and folds > 1 else 0.0


def interval(sample: Sample, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The confidence interval of the mean (Student t; a K-fold sample's variance corrected
    as Nadeau and Bengio's); None with fewer than 2 runs."""
    return values_interval(list(sample.values.values()), sample.folds, confidence)


def values_interval(
    values: Sequence[float], folds: int | None = None, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """interval() of plain values (one epoch's over seeds, one plotted point's)."""
    if len(values) < 2:
        return None
    mean, var = statistics.fmean(values), statistics.variance(values)
    if not math.isfinite(mean):
        return None
    se = math.sqrt(var * (1 / len(values) + _resampling_ratio(folds)))
    half = t_quantile((1 + confidence) / 2, len(values) - 1) * se
    return mean - half, mean + half


@dataclass(frozen=True)
class Comparison:
    """A config against the best: the p-value (None: too few runs to test) and the test."""

    p: float | None
    test: str


def _p_without_spread(difference: float) -> float:
    """A test's p when no run varied: the same means cannot be told apart, others always."""
    return 1.0 if difference == 0 else 0.0


def paired_keys(a: Sample, b: Sample) -> list[Repeat]:
    """The seeds both ran, where they ran the same 2 or more seeds (no folds), else []."""
    seeds = set(a.values)
    if a.folds or b.folds or seeds != set(b.values) or len(seeds) < 2:
        return []
    if None in {seed for seed, _ in seeds}:
        return []
    return sorted(seeds, key=str)


def compare(best: Sample, other: Sample) -> Comparison:
    """Two-sided test of `other` against `best` (see the module's docstring for which)."""
    if best.folds or other.folds:
        shared = sorted(set(best.values) & set(other.values), key=str)
        if len(shared) < 2:
            return Comparison(None, CORRECTED)
        diffs = [other.values[k] - best.values[k] for k in shared]
        mean, var = statistics.fmean(diffs), statistics.variance(diffs)
        if var == 0:
            return Comparison(_p_without_spread(mean), CORRECTED)
        ratio = _resampling_ratio(best.folds or other.folds)
        t = mean / math.sqrt(var * (1 / len(diffs) + ratio))
        return Comparison(t_two_sided_p(t, len(diffs) - 1), CORRECTED)
    keys = paired_keys(best, other)
    if keys:
        a, b = [best.values[k] for k in keys], [other.values[k] for k in keys]
        diffs = [y - x for x, y in zip(a, b, strict=True)]
        if statistics.variance(diffs) == 0:
            return Comparison(_p_without_spread(diffs[0]), PAIRED)
        return Comparison(_paired_p(a, b), PAIRED)
    if best.n < 2 or other.n < 2:
        return Comparison(None, WELCH)
    a, b = list(best.values.values()), list(other.values.values())
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        return Comparison(_p_without_spread(statistics.fmean(b) - statistics.fmean(a)), WELCH)
    return Comparison(_welch_p(a, b), WELCH)


def t_test_power(effect: float, n: int, paired: bool = False, alpha: float = ALPHA) -> float:
    """The power of a two-sided t-test with `n` runs per config for a true difference of
    `effect` standard deviations: of the runs (two-sample), or of the per-seed differences
    (paired)."""
    df = n - 1 if paired else 2 * n - 2
    critical = t_quantile(1 - alpha / 2, df)
    shift = effect * math.sqrt(n if paired else n / 2)
    # P(T > c) + P(T < -c) for T noncentral t (scipy.stats.nct.sf + cdf)
    return float(1 - special.nctdtr(df, shift, critical) + special.nctdtr(df, shift, -critical))


def seeds_needed(a: Sample, b: Sample, power: float = POWER) -> int | None:
    """Seeds per config for the test `compare` uses to tell `a` and `b`'s observed
    difference apart with `power` (at ALPHA): a paired t-test's where they ran the same
    seeds, else a two-sample t-test's (also for folds: a rough figure). None when they do
    not differ or cannot tell (one run); MOST_SEEDS + 1 when more than MOST_SEEDS."""
    if a.n < 2 or b.n < 2:
        return None
    keys = paired_keys(a, b)
    if keys:
        diffs = [b.values[k] - a.values[k] for k in keys]
        difference, spread = abs(statistics.fmean(diffs)), statistics.stdev(diffs)
    else:
        difference = abs(a.mean - b.mean)
        spread = math.sqrt(
            ((a.n - 1) * statistics.variance(a.values.values())
             + (b.n - 1) * statistics.variance(b.values.values())) / (a.n + b.n - 2)
        )  # fmt: skip
    if difference == 0 or not math.isfinite(difference):
        return None
    if spread == 0:
        return 2  # no run varied: any two seeds each tell them apart
    effect, paired = difference / spread, bool(keys)
    # The normal approximation, then the exact (noncentral t) power upward from below it.
    z = special.ndtri(1 - ALPHA / 2) + special.ndtri(power)
    n = max(2, math.floor((1 if paired else 2) * (z / effect) ** 2) - 1)
    if n > MOST_SEEDS:
        return MOST_SEEDS + 1
    while t_test_power(effect, n, paired) < power:
        n += 1
    return n


def tied(comparison: Comparison) -> bool | None:
    """Whether the config cannot be told apart from the best (None: not tested)."""
    return None if comparison.p is None else comparison.p >= ALPHA


def ordered(samples: Mapping[str, Sample], lower_is_better: bool) -> list[str]:
    """Config names best first by their mean (configs without runs left out)."""
    named = [name for name, sample in samples.items() if sample.n]
    return sorted(named, key=lambda name: samples[name].mean, reverse=not lower_is_better)
