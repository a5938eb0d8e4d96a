"""Tests for crpo_jax.bucketing: bucket sizes and HF-style batch padding."""

import numpy as np
import pytest

from crpo_jax.bucketing import bucket_size, concat_batches, left_align, pad_batch, pad_rows

PAD = 151643


def test_bucket_size_default_geometric():
  sizes = [bucket_size(n) for n in (0, 1, 64, 65, 128, 129, 200, 257, 385, 1000)]
  assert sizes == [64, 64, 64, 128, 128, 192, 256, 384, 512, 1024]
  # Bounded: all lengths up to 8192 fall into few buckets, each wasting < 1/2.
  seen = {bucket_size(n) for n in range(1, 8193)}
  assert len(seen) <= 14
  assert all(bucket_size(n) < 1.5 * n + 64 for n in range(1, 8193))


def test_bucket_size_explicit_and_errors():
  assert bucket_size(5, [4, 8, 16]) == 8
  assert bucket_size(16, [16, 4, 8]) == 16
  with pytest.raises(ValueError, match="exceeds"):
    bucket_size(17, [4, 8, 16])
  with pytest.raises(ValueError):
    bucket_size(-1)


def test_left_align_moves_right_padding():
  ids = np.array([[5, 6, 0, 0], [0, 7, 8, 9]])
  mask = np.array([[1, 1, 0, 0], [0, 1, 1, 1]])
  ids2, mask2 = left_align(ids, mask)
  np.testing.assert_array_equal(mask2, [[0, 0, 1, 1], [0, 1, 1, 1]])
  np.testing.assert_array_equal(ids2[mask2 == 1], [5, 6, 7, 8, 9])
  with pytest.raises(ValueError, match="holes"):
    left_align(ids, np.array([[1, 0, 1, 0], [1, 1, 1, 1]]))


def test_pad_batch_text_and_visual():
  ids = np.array([[11, 151655, 151655, 151655, 151655, 12], [PAD, PAD, 13, 14, 15, 16]])
  mask = np.array([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
  types = (ids == 151655).astype(np.int64)
  pixels = np.arange(16 * 6, dtype=np.float32).reshape(16, 6)
  grid = np.array([[1, 4, 4]])
  out = pad_batch(
    {
      "input_ids": ids,
      "attention_mask": mask,
      "mm_token_type_ids": types,
      "pixel_values": pixels,
      "image_grid_thw": grid,
    },
    pad_id=PAD,
    length_multiple=8,
    patch_multiple=32,
  )
  assert out["input_ids"].shape == (2, 8)
  np.testing.assert_array_equal(out["input_ids"][:, 2:], ids)
  np.testing.assert_array_equal(out["input_ids"][:, :2], PAD)
  np.testing.assert_array_equal(out["attention_mask"][:, 2:], mask)
  np.testing.assert_array_equal(out["mm_token_type_ids"][0, 2:], types[0])
  assert out["pixel_values"].shape == (32, 6)
  np.testing.assert_array_equal(out["pixel_values"][:16], pixels)
  assert not out["pixel_values"][16:].any()
  # One item stays one grid row; padding pixel rows are covered by no grid row.
  np.testing.assert_array_equal(out["image_grid_thw"], [[1, 4, 4]])


def test_pad_batch_grid_rows_bucketed_with_empty_items():
  grid = np.array([[1, 2, 2], [2, 2, 2], [1, 2, 4], [1, 2, 2], [1, 2, 2]])
  n = int(np.prod(grid, axis=1).sum())
  out = pad_batch(
    {
      "input_ids": np.ones((1, 3), np.int64),
      "pixel_values_videos": np.ones((n, 2)),
      "video_grid_thw": grid,
    },
    pad_id=PAD,
  )
  assert out["pixel_values_videos"].shape == (256, 2)
  np.testing.assert_array_equal(out["video_grid_thw"][:5], grid)
  np.testing.assert_array_equal(out["video_grid_thw"][5:], 0)
  assert out["video_grid_thw"].shape == (6, 3)


def test_pad_batch_rejects_inconsistent_grid():
  with pytest.raises(ValueError, match="covers"):
    pad_batch(
      {
        "input_ids": np.ones((1, 3), np.int64),
        "pixel_values": np.zeros((8, 2)),
        "image_grid_thw": np.array([[1, 2, 2]]),
      },
      pad_id=PAD,
    )


def test_concat_batches_keeps_rows_and_visual_order():
  a = {
    "input_ids": np.array([[PAD, 5, 151655, 6]]),
    "attention_mask": np.array([[0, 1, 1, 1]]),
    "pixel_values": np.full((4, 2), 1.0),
    "image_grid_thw": np.array([[1, 2, 2]]),
  }
  b = {
    "input_ids": np.array([[7, 151655, 8, 9, 10, 0]]),
    "attention_mask": np.array([[1, 1, 1, 1, 1, 0]]),  # right-padded: re-aligned
    "pixel_values": np.full((4, 2), 2.0),
    "image_grid_thw": np.array([[1, 2, 2]]),
  }
  out = concat_batches(a, b, pad_id=PAD)
  np.testing.assert_array_equal(
    out["input_ids"], [[PAD, PAD, PAD, 5, 151655, 6], [PAD, 7, 151655, 8, 9, 10]]
  )
  np.testing.assert_array_equal(out["attention_mask"].sum(1), [3, 5])
  np.testing.assert_array_equal(out["pixel_values"][:, 0], [1] * 4 + [2] * 4)
  np.testing.assert_array_equal(out["image_grid_thw"], [[1, 2, 2], [1, 2, 2]])


def test_pad_rows_adds_valid_filler_prompts():
  batch = {"input_ids": np.array([[PAD, 5, 6]]), "attention_mask": np.array([[0, 1, 1]])}
  out = pad_rows(batch, 3, pad_id=PAD)
  np.testing.assert_array_equal(out["input_ids"], [[PAD, 5, 6], [PAD] * 3, [PAD] * 3])
  np.testing.assert_array_equal(out["attention_mask"], [[0, 1, 1], [0, 0, 1], [0, 0, 1]])
  assert "mm_token_type_ids" not in out
  assert pad_rows(batch, 1, pad_id=PAD)["input_ids"].shape == (1, 3)
  with pytest.raises(ValueError, match="more than"):
    pad_rows(batch, 0, pad_id=PAD)
