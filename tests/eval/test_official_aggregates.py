"""The official aggregates on partial data, with the numbers each scorer prints.

Each expected number is worked out by hand from the official aggregation
(denominators and averaging restated in the comments; sources and commits:
crpo_jax/eval/extraction.py), on data with a piece missing: an incomplete
TimeBlind instance, a task with fewer items, an unanswered Video-MME question, a
DyBench pair with a missing member.
"""

import json

import pytest

from configs import eval as eval_config
from crpo_jax.eval import benchmarks, runner
from tests.eval import fixtures


def _metrics(name, items, outs, variant=None):
  bench = benchmarks.get_benchmark(name)
  judge = bench.variants[variant] if variant else bench.judge
  return bench.metrics([judge(it, outs[it.id]) for it in items])


def test_timeblind_incomplete_instance_is_kept_and_wrong(tmp_path):
  # build_answers: an instance (index // 4) missing a role gets -1 for all four
  # roles; get_scores divides by 4, 2, 2 and 1 per instance seen.
  bench = benchmarks.get_benchmark("timeblind")
  items = [it for it in bench.load(str(fixtures.write_timeblind(tmp_path, 3)), None)]
  items = [it for it in items if it.id != "11"]  # instance 2 lacks role 3
  outs = dict(zip([str(i) for i in range(11)], ["Yes", "No", "No", "Yes"]))  # instance 0 right
  outs |= {"4": "A", "5": "A", "6": "B", "7": "A"}  # instance 1: role 1 wrong
  outs |= {"8": "Yes", "9": "No", "10": "No"}  # instance 2: right, but incomplete
  m = _metrics("timeblind", items, outs)
  assert m["acc"] == pytest.approx((4 + 3 + 0) / 12)
  assert m["q_acc"] == pytest.approx((2 + 1 + 0) / 6)  # instance 1: q1 right
  assert m["v_acc"] == pytest.approx((2 + 1 + 0) / 6)  # instance 1: video 0 right
  assert m["i_acc"] == pytest.approx(1 / 3)
  assert (m["n_instances"], m["n_instances_incomplete"]) == (3, 1)


def test_tempcompass_per_task_aspects_fine_aspects_and_match_rate(tmp_path):
  # print_result per task file: rating summed per aspect and per fine-grained
  # aspect (meta_info eval_dim[dim].type, "order" for order), 'avg' = all ratings
  # / all questions of the task, match rate = matched / questions.
  root = fixtures.write_tempcompass(tmp_path)
  meta = {
    "1001": {"eval_dim": {"direction": {"type": "object motion"}, "order": None}},
    "1001_reverse": {
      "eval_dim": {"direction": {"type": "camera motion"}, "speed": {"type": "absolute speed"}}
    },
  }
  (root / "meta_info.json").write_text(json.dumps(meta))
  items = benchmarks.get_benchmark("tempcompass").load(str(root), None)
  outs = {
    "multi-choice/1001/direction/0": "B",  # right
    "multi-choice/1001_reverse/direction/0": "B",  # wrong (A. left)
    "multi-choice/1001_reverse/speed/0": "A. slow",  # right
    "yes_no/1001/direction/0": "yes",  # right
    "yes_no/1001_reverse/direction/0": "The car goes left.",  # unmatched: 0
    "caption_matching/1001/order/0": "A",  # bare index, right
  }
  m = _metrics("tempcompass", items, outs)
  assert m["acc/task=multi-choice"] == pytest.approx(2 / 3)
  assert m["acc/task=multi-choice/dim=direction"] == 0.5
  assert m["acc/task=multi-choice/dim=speed"] == 1.0
  assert m["acc/task=multi-choice/fine_dim=object motion"] == 1.0
  assert m["acc/task=multi-choice/fine_dim=camera motion"] == 0.0
  assert m["acc/task=multi-choice/fine_dim=absolute speed"] == 1.0
  assert m["match_rate/task=multi-choice"] == 1.0
  assert m["acc/task=yes_no"] == 0.5 and m["match_rate/task=yes_no"] == 0.5
  assert m["acc/task=caption_matching"] == 1.0
  assert m["acc/task=caption_matching/fine_dim=order"] == 1.0
  # Ours, labelled so: one number over every format.
  assert m["ours/acc_pooled"] == pytest.approx(4 / 6)
  assert "acc" not in m  # no official cross-format number to put there


def test_mvbench_avg_is_over_all_items_and_strict_beside_it(tmp_path):
  # final_res: per task correct / total; 'Avg' = all correct / all items.
  items = benchmarks.get_benchmark("mvbench").load(str(fixtures.write_mvbench(tmp_path)), None)
  outs = {"action_sequence/0": "B) Opened the door.", "moving_direction/0": ""}
  outs["moving_direction/1"] = "C"
  m = _metrics("mvbench", items, outs)
  assert m["acc/task=Action Sequence"] == 1.0
  assert m["acc/task=Moving Direction"] == 0.5  # the empty output counts (official bug)
  assert m["acc"] == pytest.approx(2 / 3)
  assert m["ours/acc_task_mean"] == pytest.approx(0.75)
  strict = _metrics("mvbench", items, outs, "strict")
  assert strict["acc"] == pytest.approx(1 / 3) and strict["acc/task=Moving Direction"] == 0.0


def test_videomme_divides_by_answered(tmp_path):
  # eval_your_results: correct / answered, an empty extraction is not answered;
  # a group with none answered prints 0.
  items = benchmarks.get_benchmark("videomme").load(str(fixtures.write_videomme(tmp_path)), None)
  outs = {"001-1": "C", "001-2": "I do not know.", "301-1": "B"}  # right, unanswered, wrong
  m = _metrics("videomme", items, outs)
  assert m["acc"] == 0.5 and m["n_answered"] == 2
  assert m["acc/duration=short"] == 1.0 and m["acc/duration=long"] == 0.0
  assert m["acc/task_type=Counting Problem"] == 0.5
  assert m["acc/task_type=OCR Problems"] == 0.0  # none answered
  assert m["acc/domain=Knowledge"] == 1.0 and m["acc/sub_category=Football"] == 0.0
  assert m["acc/duration=short/task_type=OCR Problems"] == 0.0
  assert m["acc/duration=short/sub_category=Humanity"] == 1.0
  strict = _metrics("videomme", items, outs, "strict")
  assert strict["acc"] == pytest.approx(1 / 3) and strict["acc/duration=short"] == 0.5


def test_dybench_pair_missing_a_member_counts_wrong(tmp_path):
  # Ours (no official scorer): a pair counts only when complete and all right; an
  # incomplete pair stays in P-Acc's and sensitivity's denominators.
  bench = benchmarks.get_benchmark("dybench")
  items = [it for it in bench.load(str(fixtures.write_dybench(tmp_path)), None) if it.id != "p0b"]
  outs = {"p0a": "<answer>A</answer>", "p1a": "<answer>C</answer>", "p1b": "<answer>C</answer>"}
  m = _metrics("dybench", items, outs)
  assert m["acc"] == 1.0
  assert m["p_acc"] == 0.5 and m["p_acc/category=direction"] == 0.0
  assert m["sensitivity/dynamic_differ"] == 0.0 and m["sensitivity/static_agree"] == 1.0
  assert (m["n_pairs"], m["n_pairs_incomplete"]) == (2, 1)


def test_results_md_shows_official_and_strict_side_by_side(tmp_path):
  c = eval_config.get_config("cpu")
  c.benchmark, c.model, c.baselines = "mvbench", "scripted", ""
  c.data = str(fixtures.write_mvbench(tmp_path / "data"))
  c.output_dir = str(tmp_path / "out")
  outs = {"action_sequence/0": "B) Opened the door.", "moving_direction/0": ""}
  outs["moving_direction/1"] = "<think>maybe C</think>A"
  res = runner.evaluate(c, policy=lambda items, prompts, blind: [outs[it.id] for it in items])
  assert res["metrics"]["acc"] == pytest.approx(2 / 3)
  assert res["variants"]["strict"]["acc"] == pytest.approx(1 / 3)
  assert res["variants"]["think"]["acc"] == 1.0  # after stripping, "A" is right
  md = (tmp_path / "out" / "results.md").read_text()
  assert "| model (official) | model, strict (official bug fixed) | model, <think>" in md
  assert "| **acc** | 66.7 | 33.3 | 100.0 |" in md
