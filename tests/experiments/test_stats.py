"""Seed intervals, paired bootstrap and exact McNemar against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from crpo_jax.experiments import stats


def test_mean_interval_by_hand():
  # mean 2, sd 1, n 3: half-width t_{0.975, 2} * 1 / sqrt(3) = 4.302653 / 1.732051.
  mean, low, high = stats.mean_interval([1.0, 2.0, 3.0])
  assert mean == 2.0
  assert high - mean == pytest.approx(4.302653 / 3**0.5, rel=1e-6)
  assert mean - low == pytest.approx(high - mean, rel=1e-12)
  assert stats.mean_interval([0.5]) == (0.5, 0.5, 0.5)


def test_mcnemar_exact_by_hand():
  # 8 pairs only a got right, 2 only b, 5 both, 3 neither.
  a = [1] * 8 + [0] * 2 + [1] * 5 + [0] * 3
  b = [0] * 8 + [1] * 2 + [1] * 5 + [0] * 3
  out = stats.mcnemar_exact(np.array(a, bool), np.array(b, bool))
  # 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
  assert (out["a_only"], out["b_only"]) == (8, 2)
  assert out["p_value"] == pytest.approx(112 / 1024, rel=1e-12)
  # Balanced discordance: p = 1 (capped); none at all: p = 1.
  assert stats.mcnemar_exact([True, False], [False, True])["p_value"] == 1.0
  assert stats.mcnemar_exact([True], [True])["p_value"] == 1.0
  # All 6 discordant pairs one way: 2 / 64.
  assert stats.mcnemar_exact([True] * 6, [False] * 6)["p_value"] == pytest.approx(2 / 64)


def test_paired_bootstrap_by_hand():
  # Constant difference: every resample has the same mean, so the interval is a point.
  assert stats.paired_bootstrap([1, 1, 0, 1], [0, 0, -1, 0]) == (1.0, 1.0, 1.0)
  # Two pairs, differences 1 and 0: a resample mean is 0, 1/2 or 1 with probability
  # 1/4, 1/2, 1/4, so the 95% percentile interval is [0, 1] around the mean 1/2.
  mean, low, high = stats.paired_bootstrap([1, 0], [0, 0], num_resamples=4000, seed=1)
  assert (mean, low, high) == (0.5, 0.0, 1.0)
  # Differences (1, 0, 0, 0): a resample mean is Binomial(4, 1/4) / 4, whose 2.5% and
  # 97.5% quantiles are 0 and 3/4 (P[<= 1/2] = 0.949, P[<= 3/4] = 0.996).
  assert stats.paired_bootstrap([1, 0, 0, 0], [0] * 4, num_resamples=4000) == (0.25, 0.0, 0.75)
  with pytest.raises(ValueError, match="equal-length"):
    stats.paired_bootstrap([1, 0], [1])
