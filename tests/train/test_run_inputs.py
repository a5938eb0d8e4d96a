"""What a run trains on: user data wins over the synthetic world, a missing file is a
start-up error, and the run says which data, tokenizer and model it uses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from configs import qwen3vl_8b
from crpo_jax.data import synthetic
from crpo_jax.train import setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _runlocal(**data):
  c = qwen3vl_8b.get_config("runlocal")
  for k, v in data.items():
    c.data[k] = v
  return c


def test_runlocal_keeps_user_data(tmp_path):
  user = synthetic.generate(str(tmp_path / "mine"), 2, seed=7, split="mine")
  c = _runlocal(train=user)
  data = setup.prepare_data(c, str(tmp_path / "work" / "data"))
  assert data.train_path == user and data.eval_path == ""
  assert not os.path.exists(tmp_path / "work" / "data" / "train.jsonl")  # nothing generated
  lines = setup.describe_inputs(c, data)
  assert lines[0] == f"data.train:  {user}" and lines[1] == "data.eval:   (none)"
  assert lines[2].startswith("tokenizer:   ") and "preset tiny" in lines[3]


def test_runlocal_without_data_generates_the_world(tmp_path):
  c = _runlocal()
  data = setup.prepare_data(c, str(tmp_path / "data"))
  assert data.train_path == str(tmp_path / "data" / "train.jsonl")
  with open(data.train_path) as f:
    assert len(f.readlines()) == c.data.synthetic.num_train
  assert setup.describe_inputs(c, data)[0].endswith("train.jsonl (synthetic world)")


@pytest.mark.parametrize("field", ["train", "eval"])
def test_missing_data_file_is_a_start_up_error(tmp_path, field):
  user = synthetic.generate(str(tmp_path / "mine"), 1, seed=7)
  c = _runlocal(**{"train": user, field: str(tmp_path / "missing.jsonl")})
  with pytest.raises(setup.PreflightError, match=f"config.data.{field}=.*missing.jsonl: file not"):
    setup.preflight(c, str(tmp_path / "work"))
  assert not os.path.exists(tmp_path / "work" / "data")


def test_main_refuses_a_missing_data_file(tmp_path):
  """The issue's command: `:runlocal` with a data.train that does not exist exits non-zero."""
  cmd = [sys.executable, "-m", "crpo_jax.main", f"--config={REPO}/configs/qwen3vl_8b.py:runlocal"]
  cmd += ["--config.data.train=missing.jsonl", f"--workdir={tmp_path / 'work'}"]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
  )
  assert proc.returncode != 0
  assert "config.data.train=missing.jsonl: file not found" in proc.stderr
  assert not os.path.exists(tmp_path / "work" / "data" / "train.jsonl")


@pytest.mark.parametrize("dry_run", [False, True])
def test_main_refuses_a_url_workdir(tmp_path, dry_run):
  """gs://b/run must not become a folder `gs:/b/run` on each host's disk."""
  cmd = [sys.executable, "-m", "crpo_jax.main", f"--config={REPO}/configs/demo.py:test"]
  cmd += ["--workdir=gs://bucket/crpo/run1"] + (["--dry_run"] if dry_run else [])
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
  )
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "--workdir gs://bucket/crpo/run1: URL workdirs are not supported" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert os.listdir(tmp_path) == []  # nothing written under the current directory


def test_url_workdir_is_refused_by_run_too():
  with pytest.raises(setup.PreflightError, match="gs://b/run: URL workdirs"):
    setup.local_workdir("gs://b/run")
  assert setup.local_workdir("rel/dir") == os.path.abspath("rel/dir")
