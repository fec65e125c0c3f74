"""Confidence intervals of a mean over independent repeats (seeds).

A figure measured on one seed says nothing about its spread; several seeds give a mean and an interval.
:func:`t_interval` is the one ``mmsec results`` shows: Student's t, the textbook interval for the mean
of a few independent, roughly normal repeats (with 3 seeds the 95% quantile is 4.30 standard errors:
wide, as it should be). :func:`bootstrap_interval` is the percentile bootstrap, for effects that are not
plain means; with fewer than ~10 repeats it is too narrow (3 values have 10 distinct resamples), so prefer
the t interval there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """``mean`` of ``n`` values and its two-sided interval ``[low, high]`` at ``level``; ``method`` says how.
    With one value (or none) the interval is undefined: ``low`` and ``high`` are NaN."""

    mean: float
    low: float
    high: float
    n: int
    level: float
    method: str

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _values(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    if arr.ndim != 1 or len(arr) == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected a non-empty list of finite numbers, got {list(values)!r}")
    return arr


def _check_level(level: float) -> float:
    if not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level: expected a confidence level in (0, 1) such as 0.95, got {level!r}")
    return float(level)


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and Student-t interval ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)`` (sd with n - 1)."""
    from scipy.stats import t as student_t

    level = _check_level(level)
    arr = _values(values, "values")
    n = len(arr)
    mean = float(arr.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level, "t")
    half = float(student_t.ppf((1 + level) / 2, n - 1) * arr.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n, level, "t")


def bootstrap_interval(values: Sequence[float], level: float = 0.95, n_boot: int = 10_000, seed: int = 0,
                       statistic: Callable[[np.ndarray], np.ndarray] | None = None) -> Interval:
    """Percentile bootstrap interval of ``statistic`` (default: the mean) over ``n_boot`` resamples, seeded."""
    level = _check_level(level)
    arr = _values(values, "values")
    n = len(arr)
    stat = statistic or (lambda a: a.mean(axis=-1))
    centre = float(stat(arr[None, :])[0])
    if n < 2:
        return Interval(centre, math.nan, math.nan, n, level, "bootstrap")
    if not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot: expected an integer >= 100, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    resampled = stat(arr[rng.integers(0, n, size=(n_boot, n))])
    low, high = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
    return Interval(centre, float(low), float(high), n, level, "bootstrap")
