"""End to end with a tiny random Qwen3-VL checkpoint and synthetic videos.

Checks the pipeline (load, decode, prompt, greedy generation through the sampler,
score, write, resume, blind baseline), not accuracy: the model is random.
"""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from configs import eval as eval_config
from crpo_jax.data import tokenizer as tokenizer_lib
from crpo_jax.eval import benchmarks, model_policy, predictions, runner
from tests.data import media
from tests.eval import fixtures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A training-workdir look-alike: the HF export (weights + tokenizer) under hf/."""
  from tests.model import hf_reference

  root = tmp_path_factory.mktemp("work")
  hf_reference.save_hf_model(hf_reference.build_hf_model(seed=3), root / "hf")
  words = ["Which way does the ball move?", "What colour is the ball?", "red blue green"]
  tokenizer_lib.build_word_tokenizer(words, root / "hf")
  return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("dy")
  path = fixtures.write_dybench(root)
  for i, name in enumerate(["p0a", "p0b", "p1a", "p1b"]):
    (root / "v").mkdir(exist_ok=True)
    media.write_video(root / "v" / f"{name}.mp4", media.pattern_frames(8, seed=i), fps=4)
  return path


@pytest.fixture(scope="module")
def policy(workdir, data, tmp_path_factory):
  """One loaded, compiled policy shared by the tests (compilation dominates)."""
  return model_policy.ModelPolicy.from_config(_cfg(workdir, data, tmp_path_factory.mktemp("o")))


def _cfg(workdir, data, out):
  c = eval_config.get_config("cpu")
  c.benchmark, c.data, c.model, c.output_dir = "dybench", str(data), str(workdir), str(out)
  c.max_new_tokens = 6
  # Prompt rows split over 'data', parameters over 'fsdp': the sharded path runs.
  c.mesh.data, c.mesh.fsdp = 2, 4
  return c


class Counting:
  def __init__(self, policy):
    self.policy, self.seen = policy, []

  def __call__(self, items, prompts, blind):
    self.seen += [(it.id, blind) for it in items]
    return self.policy(items, prompts, blind)


def test_generate_score_resume(workdir, data, policy, tmp_path):
  cfg = _cfg(workdir, data, tmp_path / "out")
  policy = Counting(policy)
  res = runner.evaluate(cfg, policy=policy)
  assert len(policy.seen) == 8  # 4 items, then 4 blind
  path = tmp_path / "out" / "predictions.jsonl"
  recs = predictions.read(path)
  assert [r["id"] for r in recs] == ["p0a", "p0b", "p1a", "p1b"]
  for r in recs:
    assert isinstance(r["raw_output"], str) and "error" not in r
    assert r["prompt"].endswith("<answer> </answer> tags.")
  assert "C. None of the above" in recs[0]["prompt"]
  assert "D. None of the above" in recs[2]["prompt"]
  assert set(res["metrics"]) >= {"acc", "p_acc", "sensitivity/dynamic_differ"}
  assert "blind" in res["baselines"] and (tmp_path / "out" / "results.md").exists()
  assert json.loads((tmp_path / "out" / "results.json").read_text())["n_items"] == 4

  # Interrupt after the first batch: drop the second batch's records, resume.
  predictions.write_all(path, recs[:2])
  policy.seen.clear()
  again = runner.evaluate(cfg, policy=policy)
  assert policy.seen == [("p1a", False), ("p1b", False)]  # blind file was complete
  assert predictions.read(path) == recs  # greedy: the redone items match
  assert again["metrics"] == res["metrics"]


def test_blind_inputs_are_blank_with_same_shape(data, policy):
  bench = benchmarks.get_benchmark("dybench")
  item = bench.load(str(data), None)[0]
  seen = policy._inputs(item, bench.prompt(item), blind=False)
  blind = policy._inputs(item, bench.prompt(item), blind=True)
  assert seen["pixel_values_videos"].shape == blind["pixel_values_videos"].shape
  np.testing.assert_array_equal(seen["input_ids"], blind["input_ids"])
  assert np.all(blind["pixel_values_videos"] == -1.0)  # black frames after normalisation
  assert np.ptp(seen["pixel_values_videos"]) > 0


def test_missing_video_scores_as_error(workdir, data, policy, tmp_path):
  rows = [json.loads(x) for x in data.read_text().splitlines()[:2]]
  rows[0]["video"] = str(tmp_path / "missing.mp4")
  rows[1]["video"] = str(data.parent / rows[1]["video"])
  bad = tmp_path / "d.jsonl"
  bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
  cfg = _cfg(workdir, bad, tmp_path / "out")
  cfg.baselines = ""
  res = runner.evaluate(cfg, policy=policy)
  assert res["n_errors"] == 1
  rec = predictions.read(tmp_path / "out" / "predictions.jsonl")[0]
  assert "VideoError" in rec["error"] and not rec["correct"]


def test_model_dir_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.model.*neither an HF checkpoint"):
    model_policy.resolve_model_dir(str(tmp_path))


def test_parameters_sharded_and_frame_folder_inputs(policy, tmp_path):
  leaves = jax.tree.leaves(policy.state)
  assert any(not leaf.sharding.is_fully_replicated for leaf in leaves)  # fsdp = 4
  folder = tmp_path / "video" / "tvqa" / "frames_fps3_hq" / "clip"
  folder.mkdir(parents=True)
  for i, im in enumerate(media.pattern_frames(9, 40, 56)):
    Image.fromarray(im).save(folder / f"{i:05d}.jpg")
  (tmp_path / "json").mkdir()
  rec = {
    "video": "clip",
    "question": "Why?",
    "candidates": ["a", "b"],
    "answer": "a",
    "start": 0.5,
    "end": 2.5,
  }
  (tmp_path / "json" / "episodic_reasoning.json").write_text(json.dumps([rec]))
  bench = benchmarks.get_benchmark("mvbench")
  (item,) = bench.load(str(tmp_path), None)
  inputs = policy._inputs(item, bench.prompt(item), blind=False)
  assert inputs["video_grid_thw"].shape == (1, 3) and inputs["video_grid_thw"][0, 0] == 2


def test_mvbench_official_frames_reach_the_processor(policy, tmp_path):
  # config.frames=official gives MVBench segments=16: VideoChat2's 16 segment middles.
  root = fixtures.write_mvbench(tmp_path)
  clip = root / "video" / "clevrer" / "video_validation" / "c1.mp4"
  clip.parent.mkdir(parents=True)
  media.write_pattern_video(clip, 40, 32, 32, fps=8)
  bench = benchmarks.get_benchmark("mvbench")
  item = next(it for it in bench.load(str(root), None) if it.id == "moving_direction/0")
  cfg = runner.apply_frame_rule(eval_config.get_config("cpu"), bench)
  assert cfg.segments == 0  # the CPU variant keeps its own frames (config.frames=config)
  cfg.frames = "official"
  before, policy.segments = policy.segments, runner.apply_frame_rule(cfg, bench).segments
  try:
    inputs = policy._inputs(item, bench.prompt(item), blind=False)
  finally:
    policy.segments = before
  assert inputs["video_grid_thw"][0, 0] == 8  # 16 frames / temporal patch 2
