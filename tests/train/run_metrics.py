"""Per-step metrics of whole runs (metrics.jsonl) and how two runs are compared."""

from __future__ import annotations

import json
import os

import numpy as np

# Wall-clock figures: they differ between any two runs.
NONDETERMINISTIC = ("step_time", "time_sample", "time_update", "rollout_tokens_per_s")


def read_metrics(workdir) -> list[dict]:
  """Every line of WORKDIR/metrics.jsonl (a resumed run repeats the steps it redid)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def scales(history) -> dict[str, float]:
  """Each metric's largest magnitude over a run ({step: row} or a list of rows)."""
  rows = history.values() if isinstance(history, dict) else history
  out: dict[str, float] = {}
  for row in rows:
    for k, v in row.items():
      if isinstance(v, (int, float)) and np.isfinite(v):
        out[k] = max(out.get(k, 0.0), abs(float(v)))
  return out


def assert_same_metrics(
  got: dict, want: dict, step: int, run_scales: dict[str, float], rtol: float = 1e-6
) -> None:
  """Every deterministic metric within rtol of its value plus its scale over the run.

  The scale term is there because a float32 result recomputed in another process
  (or with another reduction order) differs in proportion to the magnitudes that
  were summed, not to the result: e.g. grad_norm at an RL step whose group rewards
  are all equal is ~5e-5, pure rounding noise of a gradient that is ~1 in SFT, and
  two processes differed there by 1e-8 (2e-4 relative to the value, 1e-8 of the
  scale)."""
  keys = sorted(set(want) - set(NONDETERMINISTIC) - {"step"})
  assert keys == sorted(set(got) - set(NONDETERMINISTIC) - {"step"}), step
  for k in keys:
    bound = rtol * (abs(want[k]) + run_scales.get(k, 0.0))
    assert abs(got[k] - want[k]) <= bound, (step, k, got[k], want[k], bound)
