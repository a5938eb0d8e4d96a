"""The shortcut runner's bookkeeping: arms, world files, summary schema, report, plots.

The end-to-end run (SFT + RL arms) takes minutes on 2 cores, so it is not run here;
these tests drive every report function on hand-made arm results instead.
"""

from __future__ import annotations

import json
import os

import pytest

from configs import demo
from crpo_jax.experiments import shortcut


def _arm(p_acc, pairs, follows):
  return {
    "heldout": {"p_acc": p_acc, "acc": p_acc, "sensitivity/dynamic_differ": 0.5},
    "before_rl": {},
    "cue_conflict": {"follows_cue": follows},
    "pair_correct": pairs,
    "p_acc_curve": {0: 0.0, 2: p_acc},
    "train_curves": {3: {"reward/original/accuracy": 0.5, "accuracy": 0.5}},
    "train_accuracy_last5": 0.5,
  }


def test_summary_schema_bootstrap_and_mcnemar(tmp_path):
  runs = {
    "grpo": {0: _arm(0.25, {"a": True, "b": False, "c": False, "d": False}, 0.9),
             1: _arm(0.0, {"a": False, "b": False, "c": False, "d": False}, 0.8)},
    "crpo": {0: _arm(0.75, {"a": True, "b": True, "c": True, "d": False}, 0.1),
             1: _arm(0.5, {"a": True, "b": True, "c": False, "d": False}, 0.2)},
  }  # fmt: skip
  s = shortcut.summarise(runs, [0, 1])
  assert s["grpo"]["p_acc_per_seed"] == [0.25, 0.0] and s["crpo"]["p_acc_mean"] == 0.625
  d = s["crpo_minus_grpo"]
  assert d["p_acc_diff_per_seed"] == [0.5, 0.5] and d["num_pairs"] == 8
  # Pooled pairs: CRPO-only right on 4 (b, c of seed 0; a, b of seed 1), GRPO-only on 0.
  assert (d["mcnemar"]["a_only"], d["mcnemar"]["b_only"]) == (4, 0)
  assert d["mcnemar"]["p_value"] == pytest.approx(2 / 16)
  results = {
    "command": "x",
    "seeds": [0, 1],
    "shortcut": 0.9,
    "seconds": 1.0,
    "runs": {a: {str(k): v for k, v in r.items()} for a, r in runs.items()},
    "control": {},
    "summary": s,
  }
  results["plots"] = shortcut.write_plots(str(tmp_path), results)
  assert all(os.path.getsize(p) > 1000 for p in results["plots"])
  shortcut.write_markdown(str(tmp_path / "results.md"), results)
  md = (tmp_path / "results.md").read_text()
  assert "| crpo | 0.625 [" in md and "p = 0.125" in md


def test_world_files_and_arm_configs(tmp_path):
  c = demo.get_config("test")
  world = shortcut.make_world(str(tmp_path), 3, c, shortcut=1.0)
  recs = {}
  for k in ("train", "train_nolabels", "cue"):
    with open(world[k]) as f:
      recs[k] = [json.loads(x) for x in f]
  assert all("answer_cf" in r for r in recs["train"])
  assert not any("answer_cf" in r for r in recs["train_nolabels"])
  assert [r["id"] for r in recs["train"]] == [r["id"] for r in recs["train_nolabels"]]
  assert all(r["cue"] != r["answer"] for r in recs["cue"] if len(r["options"]) > 2)
  pred = [{"id": r["id"], "answer": r["cue"], "correct": False} for r in recs["cue"]]
  assert shortcut.cue_following(pred, world["cue"]) == 1.0
  same = {}
  for name, (overrides, train_file) in shortcut.ARMS.items():
    a = shortcut.arm_config(c, world, overrides, train_file)
    same[name] = (a.optim.lr, a.train_steps, a.batch.prompts, a.sft.steps, a.seed)
    assert a.data.tokenizer == world["tokenizer"] and a.data.eval == world["eval"]
  assert len(set(same.values())) == 1  # identical budgets across arms
  g2 = shortcut.arm_config(c, world, *shortcut.ARMS["grpo_2g"])
  assert g2.sampling.num_generations == 2 * c.sampling.num_generations
  assert shortcut.arm_config(c, world, *shortcut.ARMS["crpo"]).data.train.endswith(
    "train_nolabels.jsonl"
  )
  assert shortcut.arm_config(c, world, *shortcut.ARMS["cf_aug_no_crr"]).reward.crr_weight == 0


def test_cli_rejects_unknown_arm(tmp_path):
  with pytest.raises(SystemExit):
    shortcut.main(["--out", str(tmp_path), "--arms", "grpo,ppo"])
