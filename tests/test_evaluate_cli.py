"""`python -m crpo_jax.evaluate --config.model=...`: what a model path may be, and
no output folder left behind by a failed run. The successful run on a real
training workdir is in tests/train/test_loop.py (it reuses the demo run)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from crpo_jax import evaluate

REPO = pathlib.Path(__file__).resolve().parent.parent


def _run_cli(cwd, *args):
  cmd = [sys.executable, "-m", "crpo_jax.evaluate", f"--config={REPO}/configs/eval.py:cpu"]
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  return subprocess.run(
    [*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=300
  )


def test_resolve_model_kinds(tmp_path):
  hf = tmp_path / "hf_model"
  hf.mkdir()
  (hf / "config.json").write_text(json.dumps({"text_config": {}, "vision_config": {}}))
  assert evaluate.resolve_model(str(hf)) == (str(hf), "hf_model")
  # A training workdir's config.json is the run config, not an HF one.
  work = tmp_path / "run1"
  work.mkdir()
  (work / "config.json").write_text(json.dumps({"model": {"preset": "tiny"}}))
  (work / "model_config.json").write_text(json.dumps({"text_config": {}}))
  with pytest.raises(FileNotFoundError, match="no checkpoint in checkpoints/ and no hf/ export"):
    evaluate.resolve_model(str(work))
  (work / "hf").mkdir()
  (work / "hf" / "config.json").write_text((hf / "config.json").read_text())
  assert evaluate.resolve_model(str(work)) == (str(work / "hf"), "run1")
  with pytest.raises(FileNotFoundError, match="neither an HF checkpoint"):
    evaluate.resolve_model(str(tmp_path / "nothing"))


def test_failed_run_creates_no_output_directory(tmp_path):
  """A bad model path, and a model that fails to load after the settings were
  recorded: neither leaves eval_results/ behind."""
  data = tmp_path / "dy.jsonl"
  row = {"id": "a", "video": "a.mp4", "question": "q?", "options": ["x", "y"], "answer": "A"}
  data.write_text(json.dumps(row) + "\n")
  common = ["--config.benchmark=dybench", f"--config.data={data}", "--config.baselines="]
  proc = _run_cli(tmp_path, *common, f"--config.model={tmp_path / 'missing'}")
  assert proc.returncode != 0 and "neither an HF checkpoint" in proc.stderr
  assert not (tmp_path / "eval_results").exists()
  broken = tmp_path / "run2"
  (broken / "hf").mkdir(parents=True)
  (broken / "model_config.json").write_text("{}")
  (broken / "hf" / "config.json").write_text(json.dumps({"text_config": {}}))  # no weights
  proc = _run_cli(tmp_path, *common, f"--config.model={broken}")
  assert proc.returncode != 0, proc.stdout
  assert not (tmp_path / "eval_results" / "dybench" / "run2").exists(), proc.stderr[-2000:]
