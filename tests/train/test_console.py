"""A console worth reading (issue 15 item 7): our lines on the console, library INFO
in WORKDIR/logs/, hyperparameters in TensorBoard, weighted and unweighted reward
terms named as such, no tags for terms the algorithm never uses, and the fraction of
groups with zero reward spread per branch."""

from __future__ import annotations

import glob
import os
import re
import struct

import numpy as np
import pytest

from configs import demo
from crpo_jax import console
from crpo_jax.rl import algorithms, rewards
from crpo_jax.train import metrics as metrics_lib
from crpo_jax.train import reward_metrics as reward_lib

# absl / glog line prefix: "I1202 15:45:36.123456 18058 file.py:12] ..."
_GLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ (?P<file>[^:]+):\d+\]")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_OURS = {os.path.basename(p) for p in glob.glob(f"{_ROOT}/crpo_jax/**/*.py", recursive=True)}


def library_lines(text: str) -> list[str]:
  """Console lines that a library wrote: absl/glog lines from files outside crpo_jax,
  Python warnings and their source lines, and C++ log lines."""
  out, after_warning = [], False
  for line in text.splitlines():
    m = _GLOG.match(line)
    if m:
      if os.path.basename(m["file"]) not in _OURS:
        out.append(line)
      after_warning = False
    elif re.search(r"\.py:\d+: \w*Warning:", line) or line.startswith("WARNING: All log"):
      out.append(line)
      after_warning = True
    elif after_warning and line.startswith("  "):
      out.append(line)  # the source line Python prints under a warning
    else:
      after_warning = False
  return out


def test_library_lines_counts_what_it_should():
  lines = (
    "I1202 15:45:36.123456 18058 checkpoint_manager.py:12] Saving",  # library
    "W1202 15:45:36.123456 18058 loop.py:12] step 3: update skipped",  # ours
    "/x/site-packages/orbax/a.py:3: DeprecationWarning: old",  # library
    "  warnings.warn(",  # its source line
    "rl 2/2 [####] 100.0%  loss=0.1",  # ours
    "  valid answers 1.00",  # ours (continuation of an eval line)
  )
  assert len(library_lines("\n".join(lines))) == 3


@pytest.mark.slow
def test_demo_console_is_ours(demo_cli_run):
  """The demo's console: our lines, at most 50 library lines; INFO in WORKDIR/logs/."""
  workdir, proc = demo_cli_run
  console_text = proc.stdout + proc.stderr
  lib = library_lines(console_text)
  assert len(lib) <= 50, "\n".join(lib[:60])
  for want in (
    "sft 2/2",
    "rl 2/2",
    "ETA",
    "[eval before_rl]",
    "[eval after_rl]",
    "== crpo_jax run",
  ):
    assert want in console_text, want
  # The per-step line: the few key metrics, not the ~50-scalar dump.
  rl_line = next(line for line in proc.stdout.splitlines() if line.startswith("rl 2/2"))
  assert set(re.findall(r"(\w+)=", rl_line)) == set(console.KEY_METRICS["rl"])
  assert "reward/" not in console_text
  # The library INFO lines went to the log file instead.
  # The run's own log is the first: later commands on this shared workdir (the docs
  # test's exports) add theirs. absl names them ...log.INFO.<YYYYmmdd-HHMMSS>.<pid>.
  logs = sorted(glob.glob(os.path.join(workdir, "logs", "crpo_jax.*.log.INFO.*")))
  assert logs, os.listdir(os.path.join(workdir, "logs"))
  log = logs[0]
  with open(log) as f:
    logged = f.read()
  assert len(library_lines(logged)) > 50  # Orbax alone writes hundreds
  assert "checkpoint_manager.py" in logged


def _events(logdir: str):
  """Every Event of the tensorboardX event files in `logdir` (TFRecord framing)."""
  from tensorboardX.proto import event_pb2

  out = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    i = 0
    while i < len(data):
      (n,) = struct.unpack("<Q", data[i : i + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[i + 12 : i + 12 + n])
      out.append(event)
      i += 12 + n + 4
  return out


def test_hyperparameters_reach_tensorboard(tmp_path):
  config = demo.get_config("test")
  flat = metrics_lib.flat_config(config)
  assert flat["loss.beta"] == 0.04 and flat["sampling.num_generations"] == 2
  assert len(flat) > 50
  writer = metrics_lib.TensorBoardWriter(str(tmp_path))
  writer.write_hparams(flat)
  writer.close()
  tags, text = set(), ""
  for event in _events(str(tmp_path)):
    for value in event.summary.value:
      tags.add(value.tag)
      if value.tag.startswith("hparams"):
        text += value.tensor.string_val[0].decode() if value.tensor.string_val else ""
      if value.metadata.plugin_data.plugin_name == "hparams":
        text += value.metadata.plugin_data.content.decode("latin-1")
  assert "_hparams_/session_start_info" in tags  # the HPARAMS dashboard's entry
  assert "loss.beta: 0.04" in text and "algo: crpo" in text


def _prompt(acc, fmt, crr, total):
  z = np.zeros_like(np.asarray(acc, np.float32))
  return rewards.PromptRewards(
    answers=(("A", "B"), ("A", "A")),
    accuracy=np.asarray(acc, np.float32),
    format=np.asarray(fmt, np.float32),
    crr=np.asarray(crr, np.float32),
    temporal_bonus=z,
    reverse_reward=z,
    length_bonus=z,
    total=np.asarray(total, np.float32),
    accuracy_applies=np.array([True, True]),
  )


def test_reward_metrics_names_weights_and_spread():
  cfg = rewards.RewardConfig()
  spec = algorithms.get_algorithm("crpo")
  # Two prompts, branches [orig, cf], G = 2. Totals: both prompts have spread on
  # orig; on cf prompt 0 has none, prompt 1 has.
  scored = [
    _prompt([[1, 0], [1, 1]], [[1, 1], [1, 1]], [[1, 0], [0, 0]], [[2.5, 1.0], [2.0, 2.0]]),
    _prompt([[0, 0], [0, 1]], [[1, 1], [0, 1]], [[0, 0], [0, 1]], [[1.0, 0.0], [0.0, 2.5]]),
  ]
  infos = [rewards.ExampleInfo("Temporal", "A", 3, "B"), rewards.ExampleInfo("Static", "A", 3)]
  got = reward_lib.reward_metrics(
    scored, infos, ["original", "counterfactual"], spec.reward_terms, cfg
  )
  assert got["reward/original/unweighted/accuracy"] == pytest.approx(0.25)
  assert got["reward/original/weighted/crr"] == pytest.approx(cfg.crr_weight * 0.25)
  assert got["reward/counterfactual/unweighted/crr"] == pytest.approx(0.25)
  assert got["reward/counterfactual/weighted/format"] == pytest.approx(cfg.format_weight * 0.75)
  assert got["reward/original/weighted/total"] == pytest.approx(4.5 / 4)
  assert got["reward/original/zero_spread_groups"] == 0.0
  assert got["reward/counterfactual/zero_spread_groups"] == pytest.approx(0.5)
  assert got["reward_route/original/unweighted/accuracy/temporal"] == pytest.approx(0.5)
  assert got["reward_route/counterfactual/weighted/total/static"] == pytest.approx(1.25)
  assert got["accuracy"] == pytest.approx(0.25) and got["crr"] == pytest.approx(0.25)
  # Every reward tag says weighted or unweighted; terms CRPO never uses have no tag.
  for key in got:
    if key.startswith("reward"):
      assert "/weighted/" in key or "/unweighted/" in key or key.endswith("zero_spread_groups")
  unused = set(rewards.TERMS) - set(spec.reward_terms)
  assert unused == {"temporal_bonus", "reverse_reward", "length_bonus"}
  assert not [k for k in got if any(t in k for t in unused)]
  # GRPO has no CRR at all.
  grpo = reward_lib.reward_metrics(
    scored, infos, ["original"], algorithms.get_algorithm("grpo").reward_terms, cfg
  )
  assert not [k for k in grpo if "crr" in k]
  assert not [k for k in grpo if "counterfactual" in k]


def test_rollout_sample_is_bounded_and_complete():
  spec = algorithms.get_algorithm("crpo")
  scored = [_prompt([[1, 0], [1, 1]], [[1, 1], [1, 1]], [[1, 0], [0, 0]], [[2.5, 1], [2, 2]])] * 3
  infos = [rewards.ExampleInfo("Temporal", "A", 3, "B")] * 3
  texts = {
    b: [[f"{b} p{p} g{g}" for g in range(2)] for p in range(3)]
    for b in ("original", "counterfactual")
  }
  adv = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
  sample = reward_lib.rollout_sample(
    scored, infos, texts, adv, ["original", "counterfactual"], spec.reward_terms, ["a", "b", "c"], 2
  )
  assert len(sample) == 2 and sample[1]["id"] == "b"
  cf = sample[1]["branches"]["counterfactual"][1]
  assert cf["text"] == "counterfactual p1 g1" and cf["answer"] == "A"
  assert cf["advantage"] == 7.0 and cf["total"] == 2.0
  assert set(cf["terms"]) == set(spec.reward_terms)
  assert sample[0]["target"] == {"original": "A", "counterfactual": "B"}


def test_key_metrics_pick_the_few():
  metrics = {"loss": 0.5, "accuracy": 0.25, "crr": 0.1, "kl": 0.01, "grad_norm": 3.0,
             "reward/original/weighted/total": 1.5}  # fmt: skip
  assert console.key_metrics(metrics, "rl") == {
    "loss": 0.5, "acc": 0.25, "crr": 0.1, "reward": 1.5, "kl": 0.01
  }  # fmt: skip
  assert console.key_metrics({"loss": 1.0, "grad_norm": 2.0}, "sft") == {"loss": 1.0}
