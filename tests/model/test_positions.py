"""3-D MRoPE position ids and rope deltas against transformers 5.23 `get_rope_index`."""

from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from crpo_jax.model.config import get_preset
from crpo_jax.model.positions import get_rope_index
from tests.model import hf_reference as ref

CFG = get_preset("tiny")


@functools.cache
def _hf_rope_index():
  """HF's `Qwen3VLModel.get_rope_index` bound to a config, without building weights."""
  model_cls = transformers.Qwen3VLModel
  shim = types.SimpleNamespace(config=ref.hf_config_for(CFG))
  shim.get_vision_position_ids = functools.partial(model_cls.get_vision_position_ids, shim)
  return functools.partial(model_cls.get_rope_index, shim)


def hf_positions(inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  t = ref.to_torch(inputs)
  with torch.no_grad():
    pos, deltas = _hf_rope_index()(
      t["input_ids"],
      t["mm_token_type_ids"],
      t.get("image_grid_thw"),
      t.get("video_grid_thw"),
      t["attention_mask"],
    )
  return pos.numpy(), deltas[:, 0].numpy()


_JITTED = jax.jit(functools.partial(get_rope_index, config=CFG))


def ours(inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  pos, deltas = _JITTED(
    inputs["input_ids"],
    inputs["attention_mask"],
    inputs.get("image_grid_thw"),
    inputs.get("video_grid_thw"),
  )
  return np.asarray(pos), np.asarray(deltas)


CASES = {
  "text": ref.text_inputs,
  "image": ref.image_inputs,
  "video_457": functools.partial(ref.video_inputs, layout="4.57"),
  "video_5x": functools.partial(ref.video_inputs, layout="5.x"),
  "mixed_457": functools.partial(ref.mixed_batch_inputs, layout="4.57"),
  "mixed_5x": functools.partial(ref.mixed_batch_inputs, layout="5.x"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_hf(case):
  inputs = CASES[case](seed=3)
  want_pos, want_deltas = hf_positions(inputs)
  got_pos, got_deltas = ours(inputs)
  np.testing.assert_array_equal(got_pos, want_pos)
  np.testing.assert_array_equal(got_deltas, want_deltas)
  assert got_pos.dtype == np.int32 and got_deltas.dtype == np.int32


_ROWS, _LEN, _GRIDS = 3, 160, 10  # one static shape, so one jit compile for all cases


def _random_batch(rng: np.random.Generator, layout: str) -> dict[str, np.ndarray]:
  """Rows with a random mix of text, images and multi-group videos, left-padded."""
  rows, image_grids, video_grids = [], [], []
  for _ in range(_ROWS):
    row = rng.integers(10, 5000, size=int(rng.integers(1, 4))).tolist()
    for _ in range(int(rng.integers(0, 4))):
      kind = rng.choice(["image", "video", "text"])
      if kind == "image":
        grid = (1, 2 * int(rng.integers(1, 4)), 2 * int(rng.integers(1, 5)))
        row += ref._image_block(CFG, grid)
        image_grids.append(grid)
      elif kind == "video":
        grid = (int(rng.integers(1, 4)), 2 * int(rng.integers(1, 3)), 2 * int(rng.integers(1, 4)))
        row += ref._video_block(CFG, grid, rng, layout)
        video_grids.append(grid)
      row += rng.integers(10, 5000, size=int(rng.integers(1, 4))).tolist()
    rows.append(row)
  out = ref._batch(rows + [[0] * _LEN], CFG)  # a dummy full row fixes the length
  out = {k: v[:_ROWS] for k, v in out.items()}
  if image_grids:
    out["image_grid_thw"] = np.asarray(image_grids, np.int64)
  if video_grids:
    out["video_grid_thw"] = np.asarray(video_grids, np.int64)
  return out


def _pad_grid(grid: np.ndarray | None) -> np.ndarray:
  """Bucketed grid rows: real grids, then all-zero padding rows."""
  out = np.zeros((_GRIDS, 3), np.int32)
  if grid is not None:
    out[: len(grid)] = grid
  return out


@pytest.mark.parametrize("layout", ["4.57", "5.x"])
def test_random_prompts_match_hf(layout):
  rng = np.random.default_rng(0 if layout == "4.57" else 1)
  for _ in range(12):
    inputs = _random_batch(rng, layout)
    want_pos, want_deltas = hf_positions(inputs)
    got_pos, got_deltas = _JITTED(
      inputs["input_ids"],
      inputs["attention_mask"],
      _pad_grid(inputs.get("image_grid_thw")),
      _pad_grid(inputs.get("video_grid_thw")),
    )
    np.testing.assert_array_equal(np.asarray(got_pos), want_pos)
    np.testing.assert_array_equal(np.asarray(got_deltas), want_deltas)


def test_padded_grid_rows_change_nothing():
  """Zero grid rows (bucketing padding), before or after real ones, are skipped."""
  inputs = ref.mixed_batch_inputs(seed=5)
  want_pos, want_deltas = hf_positions(inputs)
  image = np.concatenate([inputs["image_grid_thw"], np.zeros((2, 3), np.int64)])
  video = np.concatenate([np.zeros((0, 3), np.int64), inputs["video_grid_thw"], np.zeros((3, 3))])
  pos, deltas = _JITTED(
    inputs["input_ids"], inputs["attention_mask"], image, video.astype(np.int64)
  )
  np.testing.assert_array_equal(np.asarray(pos), want_pos)
  np.testing.assert_array_equal(np.asarray(deltas), want_deltas)


def test_next_position_is_max_plus_one():
  """deltas + valid length = max position + 1: the first generated token's position."""
  inputs = ref.mixed_batch_inputs(seed=2)
  pos, deltas = ours(inputs)
  valid = inputs["attention_mask"].sum(1)
  np.testing.assert_array_equal(deltas + valid, pos.max(axis=(0, 2)) + 1)
  # Padding slots are 0 on every row (the 5.23 convention).
  assert (pos[:, inputs["attention_mask"] == 0] == 0).all()


def test_text_only_left_padding_counts_real_tokens():
  ids = jnp.asarray([[CFG.pad_token_id, CFG.pad_token_id, 11, 12, 13], [21, 22, 23, 24, 25]])
  mask = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
  pos, deltas = get_rope_index(ids, mask, None, None, CFG)
  np.testing.assert_array_equal(np.asarray(pos[0]), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
  np.testing.assert_array_equal(np.asarray(deltas), [0, 0])
