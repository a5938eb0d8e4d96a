"""Metrics on fixture data with hand-computed values, plus the constant baselines."""

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
  assert m["sensitivity/question_differ"] == 3 / 4
  assert m["n_instances"] == 2
  const = baselines.constant_policies(bench, items)
  assert sorted(const) == ["choice#1", "choice#2"]  # yes/A and no/B mix across instances
  for c in const.values():
    assert (c["acc"], c["q_acc"], c["v_acc"], c["i_acc"]) == (0.5, 0.0, 0.0, 0.0)


def test_timeblind_incomplete_instance_left_out(tmp_path):
  bench = benchmarks.get_benchmark("timeblind")
  items = bench.load(str(fixtures.write_timeblind(tmp_path)), None)[:6]
  scored = [bench.score(it, "Yes" if it.fmt == "yes_no" else "A") for it in items]
  m = bench.metrics(scored)
  assert m["n_instances"] == 1 and m["acc"] == 0.5 and m["n_items"] == 6


def test_tempcompass_per_task_and_aspect(tmp_path):
  bench = benchmarks.get_benchmark("tempcompass")
  items = bench.load(str(fixtures.write_tempcompass(tmp_path)), None)
  outs = {
    "multi-choice/1001/direction/0": "B",
    "multi-choice/1001_reverse/direction/0": "B",
    "multi-choice/1001_reverse/speed/0": "A. slow",
    "yes_no/1001/direction/0": "yes",
    "yes_no/1001_reverse/direction/0": "Yes",
    "caption_matching/1001/order/0": "Sentence A",
  }
  m = bench.metrics([bench.score(it, outs[it.id]) for it in items])
  assert m["acc"] == pytest.approx(4 / 6)
  assert m["acc/task=multi-choice"] == pytest.approx(2 / 3)
  assert m["acc/task=multi-choice/dim=direction"] == 0.5
  assert m["acc/task=multi-choice/dim=speed"] == 1.0
  assert m["acc/task=yes_no"] == 0.5 and m["acc/task=caption_matching"] == 1.0
  assert m["acc/dim=direction"] == 0.5 and m["acc/dim=order"] == 1.0  # over formats
  const = baselines.constant_policies(bench, items)
  assert const["choice#1"]["acc/task=caption_matching"] == 1.0  # "Sentence A" is right


def test_mvbench_task_average(tmp_path):
  outs = ["B) Opened the door.", "D", "B"]
  bench, _, scored = _score("mvbench", fixtures.write_mvbench(tmp_path), outs)
  m = bench.metrics(scored)
  assert m["acc/task=Action Sequence"] == 1.0 and m["acc/task=Moving Direction"] == 0.5
  assert m["acc"] == 0.75 and m["acc_micro"] == pytest.approx(2 / 3)


def test_videomme_breakdowns(tmp_path):
  bench, items, scored = _score("videomme", fixtures.write_videomme(tmp_path), ["C", "B", "D"])
  m = bench.metrics(scored)
  assert m["acc"] == pytest.approx(2 / 3)
  assert m["acc/duration=short"] == 0.5 and m["acc/duration=long"] == 1.0
  assert m["acc/task_type=Counting Problem"] == 1.0 and m["acc/task_type=OCR Problems"] == 0.0
  assert m["acc/domain=Sports"] == 1.0
  const = baselines.constant_policies(bench, items)
  assert [const[k]["acc"] for k in "ABCD"] == pytest.approx([1 / 3, 0, 1 / 3, 1 / 3])


def test_unknown_benchmark():
  with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
    benchmarks.get_benchmark("nope")
