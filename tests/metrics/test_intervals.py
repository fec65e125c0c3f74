"""Intervals of a mean over seeds: the textbook values, and coverage measured by simulation (a z quantile in
place of Student's t, or a wrong standard deviation, covers far less than 95% with 3 seeds)."""

import math

import numpy as np
import pytest

from mmsec.metrics.intervals import bootstrap_interval, t_interval


def test_t_interval_matches_the_textbook_value():
    iv = t_interval([0.0, 1.0, 2.0])  # mean 1, sd 1, se 1/sqrt(3), t_{0.975, 2} = 4.3027
    assert iv.mean == 1.0 and iv.n == 3 and iv.method == "t"
    assert iv.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert iv.contains(1.0) and not iv.contains(3.5)


@pytest.mark.parametrize("n", [3, 5])
def test_t_interval_covers_the_true_mean_95_percent_of_the_time(n):
    rng = np.random.default_rng(0)
    draws = rng.normal(0.7, 0.05, size=(4000, n))
    covered = np.mean([t_interval(row).contains(0.7) for row in draws])
    assert 0.935 <= covered <= 0.965, covered


def test_one_value_has_no_interval_and_bad_input_is_named():
    iv = t_interval([0.5])
    assert iv.mean == 0.5 and math.isnan(iv.low) and math.isnan(iv.high)
    with pytest.raises(ValueError, match="finite numbers"):
        t_interval([0.1, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        t_interval([])
    with pytest.raises(ValueError, match="level"):
        t_interval([0.1, 0.2], level=95)


def test_bootstrap_interval_is_seeded_and_agrees_with_t_for_many_values():
    values = np.random.default_rng(1).normal(0.3, 0.1, size=40)
    a, b = bootstrap_interval(values, seed=3), bootstrap_interval(values, seed=3)
    assert a == b and a.method == "bootstrap" and a.low < a.mean < a.high
    t = t_interval(values)
    assert a.half_width == pytest.approx(t.half_width, rel=0.15)
    median = bootstrap_interval(values, statistic=lambda x: np.median(x, axis=-1))
    assert median.mean == pytest.approx(float(np.median(values)))
