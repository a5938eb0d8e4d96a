"""Sanity baselines: constant-answer policies and the blind policy's blank video.

A reader of P-Acc or I-Acc must see that the number is not reachable by always
giving the same answer (answer priors) or by reading the question alone (language
priors). The constant policies need no model: policy k answers every item with
its k-th choice (option letter, yes/no, caption label), scored through the same
metrics. The blind policy is the model itself on a blank video with the same frame
count and size, so it sees exactly as many video tokens; the runner uses
`blank_video` for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from crpo_jax.eval.benchmarks import Benchmark
from crpo_jax.eval.items import EvalItem
from crpo_jax.eval.metrics import Scored


def blank_video(frames: np.ndarray) -> np.ndarray:
  """A black video of the same shape and dtype as `frames`."""
  return np.zeros_like(frames)


def constant_policies(
  benchmark: Benchmark, items: Sequence[EvalItem]
) -> dict[str, dict[str, float]]:
  """Metrics of each constant-answer policy.

  Returns:
    {label: metrics}, one policy per choice position. The label is the answer
    itself ("A", "yes") when every item's choice at that position is the same,
    else "choice#k". Items with fewer choices get no valid answer from policy k.
  """
  per_item = [benchmark.choices(it) for it in items]
  out = {}
  for k in range(max(len(c) for c in per_item)):
    answers = [c[k] if k < len(c) else "" for c in per_item]
    labels = {a for a in answers if a}
    label = next(iter(labels)) if len(labels) == 1 else f"choice#{k + 1}"
    scored = [
      Scored(it, a, bool(a) and a == it.answer) for it, a in zip(items, answers, strict=True)
    ]
    out[label] = benchmark.metrics(scored)
  return out


def best_of(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  """Per metric, the best value over policies (an upper bound a reader can trust)."""
  best: dict[str, float] = {}
  for metrics in results.values():
    for name, value in metrics.items():
      if isinstance(value, float) and math.isnan(value):
        continue
      best[name] = max(best.get(name, value), value)
  return best
