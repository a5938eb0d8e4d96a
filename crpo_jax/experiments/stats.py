"""Statistics for comparing training arms across seeds and held-out pairs.

- `mean_interval`: mean and two-sided 95% Student-t interval across seeds.
- `paired_bootstrap`: percentile interval of mean(a - b) over resampled pairs, for
  per-pair correctness of two arms on the same pairs (same seed, same held-out set).
- `mcnemar_exact`: the exact (binomial) McNemar test on paired binary outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
  """(mean, low, high): a Student-t interval; one value gives a zero-width interval."""
  from scipy import stats  # a jax dependency

  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError("mean_interval needs at least one value")
  mean = float(x.mean())
  if x.size == 1:
    return mean, mean, mean
  half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
  return mean, mean - half, mean + half


def paired_bootstrap(
  a: Sequence[float],
  b: Sequence[float],
  *,
  num_resamples: int = 10000,
  level: float = 0.95,
  seed: int = 0,
) -> tuple[float, float, float]:
  """(mean(a - b), low, high): percentile bootstrap over pairs, resampled together."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 1 or a.size == 0:
    raise ValueError(f"paired_bootstrap needs two equal-length 1-D arrays, got {a.shape} {b.shape}")
  d = a - b
  idx = np.random.default_rng(seed).integers(0, d.size, size=(num_resamples, d.size))
  means = d[idx].mean(axis=1)
  tail = (1 - level) / 2
  low, high = np.quantile(means, [tail, 1 - tail])
  return float(d.mean()), float(low), float(high)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float]:
  """Exact McNemar test: two-sided binomial p-value on the discordant pairs.

  Returns:
    {"a_only": pairs only `a` got right, "b_only": only `b`, "p_value"}; the
    p-value is min(1, 2 * P[Binomial(n, 1/2) <= min(a_only, b_only)]), n the
    number of discordant pairs (1 when there are none).
  """
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  if a.shape != b.shape:
    raise ValueError(f"mcnemar_exact needs paired outcomes, got shapes {a.shape} {b.shape}")
  a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
  n, k = a_only + b_only, min(a_only, b_only)
  tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 1.0
  return {"a_only": a_only, "b_only": b_only, "p_value": min(1.0, 2 * tail)}
