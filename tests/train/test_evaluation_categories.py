"""Training-time evaluation keeps every metric per category (and per route)."""

from __future__ import annotations

import pytest

from crpo_jax.eval import items as items_lib
from crpo_jax.eval import metrics as eval_metrics
from crpo_jax.train import evaluation


def _scored(pair, category, route, answer, got):
  item = items_lib.EvalItem(
    id=f"{pair}-{len(got)}-{answer}",
    video="",
    question="",
    options=(),
    answer=answer,
    fmt="mcq",
    meta={"pair_id": pair, "route": route, "category": category},
  )
  return eval_metrics.Scored(item, got, got == answer)


def test_per_category_metrics_are_kept():
  scored = [
    # moving_direction: pair p1 right on both items (answers differ), p2 one wrong.
    _scored("p1", "moving_direction", "temporal", "A", "A"),
    _scored("p1", "moving_direction", "temporal", "B", "B"),
    _scored("p2", "moving_direction", "temporal", "A", "A"),
    _scored("p2", "moving_direction", "temporal", "B", "A"),
    # static: one pair, both right, answers agree.
    _scored("p3", "static", "static", "C", "C"),
    _scored("p3", "static", "static", "C", "C"),
  ]
  out = evaluation.summarise(scored, [True] * 6)
  assert out["acc"] == pytest.approx(5 / 6) and out["p_acc"] == pytest.approx(2 / 3)
  assert out["acc/category=moving_direction"] == pytest.approx(3 / 4)
  assert out["acc/category=static"] == 1.0
  assert out["p_acc/category=moving_direction"] == pytest.approx(1 / 2)
  assert out["p_acc/category=static"] == 1.0
  assert out["acc/route=temporal"] == pytest.approx(3 / 4)
  assert out["sensitivity/dynamic_differ"] == pytest.approx(1 / 2)
  assert out["sensitivity/dynamic_differ/category=moving_direction"] == pytest.approx(1 / 2)
  assert out["sensitivity/static_agree/category=static"] == 1.0
  assert "sensitivity/dynamic_differ/category=static" not in out
  assert out["valid_answer"] == 1.0
