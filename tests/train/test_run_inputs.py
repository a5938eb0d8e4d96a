"""What a run trains on: user data wins over the synthetic world, a missing file is a
start-up error, and the run says which data, tokenizer and model it uses."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from configs import qwen3vl_8b
from crpo_jax.data import processor, synthetic
from crpo_jax.data.video import VideoMeta
from crpo_jax.model.config import get_preset
from crpo_jax.train import setup
from tests.tolerance import assert_close

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


def test_per_segment_vision_attention_holds_its_bounds_and_equals_masked(tmp_path):
  """The real-scale configs attend within each temporal group (`vision_attention =
  "segments"`, kept by `:runlocal`). Its bounds follow from data.max_pixels and
  data.num_frames, and the processor keeps every clip inside them: short clips
  (whose frames the budget rule alone would enlarge) and odd sizes included. On a
  pipeline batch, both branches, the model equals the masked attention."""
  c = _runlocal()
  assert c.model.vision_attention == "segments"
  vision = get_preset(c.model.preset).vision
  rows, groups = setup.vision_segments(c, vision)
  assert (rows, groups) == (c.data.max_pixels // vision.patch_size**2, 2)
  pcfg = setup.processor_config(c)
  for n in range(2, c.data.num_frames + 1):
    for hw in ((48, 64), (240, 320), (500, 90), (1080, 1920)):
      frames = np.zeros((n, *hw, 3), np.uint8)
      meta = VideoMeta(fps=2.0, total_frames=n, frame_indices=np.arange(n), duration=n / 2)
      t, h, w = processor.process_video_frames(frames, meta, pcfg).grid_thw.tolist()[0]
      assert t <= groups and h * w <= rows, (n, hw, (t, h, w))

  batch = next(setup.prepare_data(c, str(tmp_path / "data")).train_loader())
  masked = c.copy_and_resolve_references()
  masked.model.vision_attention = "masked"
  seg_model, masked_model = setup.build_model(c, None), setup.build_model(masked, None)
  assert seg_model.visual.segment_rows == rows and masked_model.visual.segment_rows is None
  for branch in ("orig", "cf"):
    got, want = (np.asarray(m.hidden_states(**batch[branch])) for m in (seg_model, masked_model))
    assert_close(got, want, rtol=1e-5, err_msg=branch)


def test_unknown_vision_attention_names_the_field():
  c = _runlocal()
  c.model.vision_attention = "flash"
  with pytest.raises(ValueError, match="config.model.vision_attention='flash'.*masked, segments"):
    setup.build_model(c, None)
