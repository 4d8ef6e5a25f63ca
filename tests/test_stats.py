"""alexnet_jax.stats against formulas written out by hand."""
import math

import numpy as np
import pytest

from alexnet_jax import stats


def test_t_interval_matches_the_textbook_formula():
  diffs = [0.031, 0.012, 0.044, 0.020]
  # t_{0.975, 3} = 3.182446 (printed tables); sem = s / sqrt(n).
  mean = sum(diffs) / 4
  s = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
  half = 3.182446305 * s / 2
  got = stats.t_interval(diffs)
  assert got.mean == pytest.approx(mean)
  assert got.low == pytest.approx(mean - half, rel=1e-6)
  assert got.high == pytest.approx(mean + half, rel=1e-6)
  assert got.half_width == pytest.approx(half, rel=1e-6)
  assert got.resolved  # all four positive and tight
  assert got.p_value < 0.05


def test_an_interval_that_straddles_zero_is_not_resolved():
  got = stats.t_interval([0.02, -0.03, 0.01])
  assert got.low < 0 < got.high and not got.resolved and got.p_value > 0.05
  one = stats.t_interval([0.5])
  assert not one.resolved and one.p_value == 1.0


def test_holm_adjustment_by_hand():
  # sorted p: 0.01 (x3), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04, monotone)
  assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
  assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
  rng = np.random.default_rng(0)
  p = rng.uniform(size=7)
  adjusted = np.asarray(stats.holm(p))
  assert np.all(adjusted >= p) and np.all(adjusted <= 1)
