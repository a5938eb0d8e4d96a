"""Host-side metric helpers with no writer dependency.

Kept apart from `train.metrics` (which needs CLU for its writers) so that
`crpo_jax.rl` imports on an accelerator image without CLU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from crpo_jax.sharding import host_get


def to_scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """Host floats from (possibly device) scalars; non-finite values are kept so they show."""
  out = {}
  metrics = host_get(dict(metrics))
  for key, value in metrics.items():
    arr = np.asarray(value)
    if arr.size != 1:
      continue
    out[f"{prefix}{key}"] = float(arr.reshape(()))
  return out


def mean_by(values: list[float], groups: list[str], name: str) -> dict[str, float]:
  """Means of `values` per group label: {f'{name}/{group}': mean}."""
  sums: dict[str, list[float]] = {}
  for v, g in zip(values, groups):
    if v is None or (isinstance(v, float) and math.isnan(v)):
      continue
    sums.setdefault(g, []).append(float(v))
  return {f"{name}/{g}": float(np.mean(vs)) for g, vs in sorted(sums.items())}
