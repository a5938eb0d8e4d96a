"""A DyBench-style pair built from real footage goes through the whole pipeline.

From a real clip (tests/data/real_clips.py) we write the original and two
transformed clips, each an item whose answer is true by construction: "played
forwards or backwards?" (reverse, temporal) and "mirrored?" (flip, spatial). The
records then go through the training pipeline (decode, counterfactual branch,
Qwen3-VL processing with the real Qwen vocabulary, batching) and the DyBench
evaluation (loader, official-style prompt, extraction, Acc / P-Acc).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from configs import eval as eval_config
from crpo_jax.data import pipeline, synthetic, transforms
from crpo_jax.data import tokenizer as tok_lib
from crpo_jax.data.video import decode_video
from crpo_jax.eval import runner
from tests.data import qwen_tokenizer, real_clips

FORWARD = "Is this video played forwards or backwards?"
MIRROR = "Is this video mirrored left to right?"


@pytest.fixture(scope="module")
def pair_world(tmp_path_factory):
  root = tmp_path_factory.mktemp("real_pair")
  src = real_clips.path("carphone_pristine.mp4")
  frames, _ = decode_video(src, fps=2.0, max_frames=8)  # the frames the pipeline sees
  (root / "videos").mkdir()
  rows = []
  for name, clip in (
    ("orig", frames),
    ("reversed", transforms.reverse(frames)),
    ("flipped", transforms.flip(frames)),
  ):
    synthetic.write_mp4(str(root / "videos" / f"{name}.mp4"), clip, fps=2.0)
  base = {"category": "real", "start": None, "end": None}
  for q, route, other, pair in ((FORWARD, "temporal", "reversed", "fwd"),
                                (MIRROR, "spatial", "flipped", "mir")):  # fmt: skip
    opts = ["forwards", "backwards"] if route == "temporal" else ["no", "yes"]
    rows.append(dict(base, id=f"{pair}-orig", video="videos/orig.mp4", question=q,
                     options=opts, answer="A", answer_cf="B", route=route, pair_id=pair))  # fmt: skip
    rows.append(dict(base, id=f"{pair}-{other}", video=f"videos/{other}.mp4", question=q,
                     options=opts, answer="B", answer_cf="A", route=route, pair_id=pair))  # fmt: skip
  path = root / "pairs.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  tok = tok_lib.load_tokenizer(qwen_tokenizer.build_qwen_tokenizer(root / "tok"))
  return path, tok, frames


def test_training_pipeline_on_a_real_pair(pair_world):
  path, tok, frames = pair_world
  cfg = pipeline.PipelineConfig(batch_size=4, num_epochs=1, shuffle=False, drop_remainder=False,
                                pad_id=tok.pad_token_id, fps=2.0, max_frames=8)  # fmt: skip
  (batch,) = list(pipeline.make_loader(str(path), cfg, pipeline.QwenProcessor(tok)))
  ids = list(batch["id"])
  assert ids == ["fwd-orig", "fwd-reversed", "mir-orig", "mir-flipped"] and batch["valid"].all()
  assert list(batch["transform"]) == ["reverse", "reverse", "flip", "flip"]
  assert list(batch["answer_letter"]) == ["A", "B", "A", "B"]
  assert list(batch["answer_cf_letter"]) == ["B", "A", "B", "A"]
  assert list(batch["num_options"]) == [3, 3, 3, 3]  # the null option, once
  pv_o, pv_c = batch["orig"]["pixel_values_videos"], batch["cf"]["pixel_values_videos"]
  n = [int(np.prod(g)) for g in batch["orig"]["video_grid_thw"][:4]]  # pixel rows per item
  assert len(set(n)) == 1  # all four clips share one shape
  starts = np.cumsum([0, *n])

  def item(pv, i):
    return pv[starts[i] : starts[i + 1]]

  # The counterfactual branch of an original is (up to the codec) the transformed
  # clip's own original branch, and far from the untransformed original.
  for orig, other in ((0, 1), (2, 3)):
    to_other = np.abs(item(pv_c, orig) - item(pv_o, other)).mean()
    to_self = np.abs(item(pv_o, orig) - item(pv_o, other)).mean()
    assert to_other < 0.25 * to_self, (orig, to_other, to_self)
  # Real footage is not flat: the clip has texture and motion.
  assert frames.std() > 20 and np.abs(np.diff(frames.astype(np.float32), axis=0)).mean() > 1


def test_dybench_evaluation_on_a_real_pair(pair_world, tmp_path):
  path, _, _ = pair_world
  cfg = eval_config.get_config("cpu")
  cfg.benchmark, cfg.data, cfg.output_dir, cfg.baselines = "dybench", str(path), str(tmp_path), ""

  def always_a(items, prompts, blind):
    assert all("C. None of the above" in p.user for p in prompts)
    return ["<think>\nLooks normal.\n</think>\n<answer>A</answer>"] * len(items)

  res = runner.evaluate(cfg, policy=always_a)
  assert res["n_items"] == 4 and res["n_errors"] == 0
  assert res["metrics"]["acc"] == 0.5  # the two originals
  assert res["metrics"]["p_acc"] == 0.0  # a constant answer never gets both members right
