"""Runner without a model: scripted policies, resume, re-scoring, reports, CLI."""

import json
import subprocess
import sys

import pytest

from configs import eval as eval_config
from crpo_jax.eval import predictions, runner
from tests.eval import fixtures


class Scripted:
  """Answers right on even-indexed items, 'No idea' on odd ones; 'Yes' when blind."""

  def __init__(self, fail_after: int | None = None):
    self.calls, self.seen, self.fail_after = 0, [], fail_after

  def __call__(self, items, prompts, blind):
    if self.fail_after is not None and self.calls >= self.fail_after:
      raise KeyboardInterrupt("simulated interruption")
    self.calls += 1
    self.seen += [it.id for it in items]
    assert all(p.user.endswith(("Yes or No.", "A or B.")) for p in prompts)
    if blind:
      return ["Yes" if it.fmt == "yes_no" else "A" for it in items]
    return [it.answer.capitalize() if int(it.id) % 2 == 0 else "Unsure" for it in items]


def _cfg(tmp_path, **kw):
  c = eval_config.get_config()
  c.benchmark = "timeblind"
  c.data = str(fixtures.write_timeblind(tmp_path / "data"))
  c.output_dir = str(tmp_path / "out")
  c.model = "scripted"
  c.batch_size = 3
  for k, v in kw.items():
    c[k] = v
  return c


def test_evaluate_writes_predictions_results_and_baselines(tmp_path):
  cfg = _cfg(tmp_path)
  res = runner.evaluate(cfg, policy=Scripted())
  recs = predictions.read(tmp_path / "out" / "predictions.jsonl")
  assert [r["id"] for r in recs] == [str(i) for i in range(8)]
  assert set(predictions.FIELDS) <= set(recs[0])
  assert recs[0]["prompt"].endswith("Please output Yes or No.") and recs[0]["correct"]
  assert recs[1]["raw_output"] == "Unsure" and recs[1]["extracted"] == "" and not recs[1]["correct"]
  m = res["metrics"]
  assert m["acc"] == 0.5 and m["q_acc"] == 0.0 and m["i_acc"] == 0.0
  blind = res["baselines"]["blind"]
  assert (blind["acc"], blind["i_acc"]) == (0.5, 0.0)
  assert res["baselines"]["constant_best"]["i_acc"] == 0.0
  on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
  assert on_disk["metrics"]["acc"] == 0.5 and on_disk["n_items"] == 8
  md = (tmp_path / "out" / "results.md").read_text()
  # Columns: official, <think> stripped (ours), blind, best constant.
  assert "| **i_acc** | 0.0 | 0.0 | 0.0 | 0.0 |" in md
  assert "| acc | 50.0 | 50.0 | 50.0 | 50.0 |" in md
  assert "| n_items | 8 | 8 | 8 |" in md


def test_resume_redoes_only_unfinished_items(tmp_path):
  cfg = _cfg(tmp_path, baselines="")
  with pytest.raises(KeyboardInterrupt):
    runner.evaluate(cfg, policy=Scripted(fail_after=2))
  path = tmp_path / "out" / "predictions.jsonl"
  assert len(predictions.read(path)) == 6
  # A write cut short mid-line: dropped on resume, and that item is redone.
  with path.open("a") as f:
    f.write('{"id": "6", "prompt": "trunc')
  again = Scripted()
  res = runner.evaluate(cfg, policy=again)
  assert again.seen == ["6", "7"]
  recs = predictions.read(path)
  assert [r["id"] for r in recs] == [str(i) for i in range(8)]
  fresh = runner.evaluate(_cfg(tmp_path / "b", baselines=""), policy=Scripted())
  assert res["metrics"] == fresh["metrics"]


def test_corrupt_middle_line_is_an_error(tmp_path):
  path = tmp_path / "p.jsonl"
  path.write_text('{"id": 1}\nnot json\n{"id": 2}\n')
  with pytest.raises(predictions.PredictionsError, match=r"p\.jsonl:1: missing field"):
    predictions.read(path)
  path.write_text('{"bad\n{"id": 2}\n')
  with pytest.raises(predictions.PredictionsError, match=r"p\.jsonl:1: invalid JSON"):
    predictions.read(path)


def test_policy_errors_score_as_wrong(tmp_path):
  def policy(items, prompts, blind):
    return [ValueError("cannot decode") if it.id == "0" else it.answer for it in items]

  res = runner.evaluate(_cfg(tmp_path, baselines=""), policy=policy)
  assert res["n_errors"] == 1 and res["metrics"]["acc"] == 7 / 8
  rec = predictions.read(tmp_path / "out" / "predictions.jsonl")[0]
  assert rec["error"] == "ValueError: cannot decode" and rec["raw_output"] == ""


def test_rescore_without_model_or_data(tmp_path):
  runner.evaluate(_cfg(tmp_path), policy=Scripted())
  src = tmp_path / "out" / "predictions.jsonl"
  recs = predictions.read(src)
  # Simulate an old extraction: every stored verdict wrong; re-scoring fixes them.
  predictions.write_all(src, [r | {"correct": False, "extracted": "?"} for r in recs])
  cfg = eval_config.get_config()
  cfg.benchmark, cfg.predictions = "timeblind", str(src)
  res = runner.evaluate(cfg)
  assert res["metrics"]["acc"] == 0.5 and res["baselines"]["blind"]["acc"] == 0.5
  assert (tmp_path / "out" / "predictions.rescored.jsonl").exists()


def test_cli_rescores(tmp_path):
  runner.evaluate(_cfg(tmp_path, baselines="constant"), policy=Scripted())
  src = tmp_path / "out" / "predictions.jsonl"
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "crpo_jax.evaluate",
      "--config=configs/eval.py",
      "--config.benchmark=timeblind",
      f"--config.predictions={src}",
      f"--config.output_dir={tmp_path / 'cli'}",
      "--config.baselines=constant",
    ],
    capture_output=True,
    text=True,
    check=False,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "| **i_acc** |" in proc.stdout
  assert json.loads((tmp_path / "cli" / "results.json").read_text())["metrics"]["acc"] == 0.5


def test_config_variants_and_errors(tmp_path):
  assert eval_config.get_config("cpu").limit == 8
  with pytest.raises(ValueError, match="unknown variant"):
    eval_config.get_config("tpu")
  with pytest.raises(ValueError, match="config.baselines"):
    runner.evaluate(_cfg(tmp_path, baselines="constant,oracle"), policy=Scripted())
  with pytest.raises(FileNotFoundError, match="config.predictions"):
    runner.evaluate(_cfg(tmp_path, predictions=str(tmp_path / "none.jsonl")))
  with pytest.raises(ValueError, match="config.data"):
    runner.evaluate(_cfg(tmp_path, data=""), policy=Scripted())


def test_resume_refuses_other_generation_settings(tmp_path):
  runner.evaluate(_cfg(tmp_path, baselines=""), policy=Scripted())
  with pytest.raises(ValueError, match=r"other settings.*max_new_tokens"):
    runner.evaluate(_cfg(tmp_path, baselines="", max_new_tokens=7), policy=Scripted())
  # Settings that only change scoring may differ.
  runner.evaluate(_cfg(tmp_path, baselines="", strip_think=False), policy=Scripted())
