"""Small-sample statistics for experiments over a few seeds.

Paired differences (the same seed gives both arms the same init and data order), their 95 %
t-interval, the interval's half-width (the smallest effect these seeds can resolve), and Holm's
step-down adjustment when a table tests several effects at once.
"""
import dataclasses
import math

import numpy as np
from scipy import stats as scipy_stats


@dataclasses.dataclass(frozen=True)
class Interval:
  mean: float
  low: float
  high: float
  n: int
  p_value: float  # two-sided t-test of mean 0

  @property
  def half_width(self) -> float:
    return (self.high - self.low) / 2

  @property
  def resolved(self) -> bool:
    """The interval excludes 0: the data resolve the sign of the effect."""
    return self.low > 0 or self.high < 0


def t_interval(values, confidence: float = 0.95) -> Interval:
  """Student-t interval of the mean of `values` (e.g. paired differences over seeds).

  With one value the interval is (-inf, inf) and p = 1: one seed resolves nothing.
  """
  x = np.asarray(values, np.float64)
  n = x.size
  if n == 0:
    return Interval(math.nan, math.nan, math.nan, 0, math.nan)
  mean = float(x.mean())
  if n == 1:
    return Interval(mean, -math.inf, math.inf, 1, 1.0)
  sem = float(x.std(ddof=1)) / math.sqrt(n)
  if sem == 0:  # identical differences: exact, p is 0 unless the mean is 0 too
    return Interval(mean, mean, mean, n, 1.0 if mean == 0 else 0.0)
  t = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1))
  p = float(2 * scipy_stats.t.sf(abs(mean) / sem, df=n - 1))
  return Interval(mean, mean - t * sem, mean + t * sem, n, p)


def holm(p_values) -> list[float]:
  """Holm-Bonferroni adjusted p-values (family-wise error), in the order given."""
  p = np.asarray(p_values, np.float64)
  m = p.size
  order = np.argsort(p, kind='stable')
  adjusted = np.empty(m)
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    adjusted[i] = running
  return adjusted.tolist()
