"""Metrics on fixture data with hand-computed values, plus the constant baselines.

The official aggregates on partial data are in test_official_aggregates.py.
"""

import pytest

from crpo_jax.eval import baselines, benchmarks
from tests.eval import fixtures


def _score(name, path, outputs):
  bench = benchmarks.get_benchmark(name)
  items = bench.load(str(path), None)
  assert len(items) == len(outputs)
  return bench, items, [bench.score(it, out) for it, out in zip(items, outputs)]


def test_dybench_acc_pacc_sensitivity(tmp_path):
  outs = ["<answer>A</answer>", "<answer>A</answer>", "<answer>C</answer>", "<answer>C</answer>"]
  bench, _, scored = _score("dybench", fixtures.write_dybench(tmp_path), outs)
  m = bench.metrics(scored)
  assert m["acc"] == 0.75 and m["p_acc"] == 0.5
  assert m["acc/category=direction"] == 0.5 and m["p_acc/category=direction"] == 0.0
  assert m["acc/category=colour"] == 1.0 and m["p_acc/category=colour"] == 1.0
  assert m["sensitivity/dynamic_differ"] == 0.0 and m["sensitivity/static_agree"] == 1.0
  assert (m["n_items"], m["n_pairs"]) == (4, 2)


def test_dybench_constant_policies_expose_static_pairs(tmp_path):
  bench = benchmarks.get_benchmark("dybench")
  items = bench.load(str(fixtures.write_dybench(tmp_path)), None)
  const = baselines.constant_policies(bench, items)
  # p0 shows A, B + null C; p1 shows A, B, C + null D.
  assert sorted(const) == ["A", "B", "C", "D"]
  assert (const["A"]["acc"], const["A"]["p_acc"]) == (0.25, 0.0)
  assert (const["B"]["acc"], const["B"]["p_acc"]) == (0.25, 0.0)
  # Always "C" solves the static pair: P-Acc 0.5 without looking at the video.
  assert (const["C"]["acc"], const["C"]["p_acc"]) == (0.5, 0.5)
  assert const["D"]["acc"] == 0.0
  best = baselines.best_of(const)
  assert (best["acc"], best["p_acc"]) == (0.5, 0.5)


def test_timeblind_scores(tmp_path):
  outs = ["Yes", "No", "No", "Yes", "A", "A", "B", "A"]
  bench, items, scored = _score("timeblind", fixtures.write_timeblind(tmp_path), outs)
  m = bench.metrics(scored)
  assert m["acc"] == 7 / 8
  assert m["q_acc"] == 3 / 4 and m["v_acc"] == 3 / 4 and m["i_acc"] == 1 / 2
  assert m["ours/sensitivity/question_differ"] == 3 / 4
  assert m["n_instances"] == 2
  const = baselines.constant_policies(bench, items)
  assert sorted(const) == ["choice#1", "choice#2"]  # yes/A and no/B mix across instances
  for c in const.values():
    assert (c["acc"], c["q_acc"], c["v_acc"], c["i_acc"]) == (0.5, 0.0, 0.0, 0.0)


def test_unknown_benchmark():
  with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
    benchmarks.get_benchmark("nope")
