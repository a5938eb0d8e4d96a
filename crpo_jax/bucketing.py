"""Padding of HF-processor-style batches to a small set of static shapes.

Every distinct input shape costs one XLA compilation, so prompt lengths and visual
patch counts are rounded up to buckets before they reach a jitted function. The
default buckets grow geometrically (multiples of `multiple` times 1, 2, 3, 4, 6,
8, 12, ...), so padding wastes at most a third of a bucket and a run that sees
lengths up to N compiles O(log N) shapes.

Padding conventions (shared by the sampler and the data pipeline):
  * `input_ids` are left-padded with `pad_id`; `attention_mask` and
    `mm_token_type_ids` get 0 there. Right-padded rows are re-aligned to the left.
  * `pixel_values` / `pixel_values_videos` get zero rows at the end, which no
    grid row covers, and their grids (`image_grid_thw` / `video_grid_thw`) get
    `(0, 0, 0)` rows up to a bucketed item count. The vision tower
    (`crpo_jax.model.vision`) treats both as padding that changes no real output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Multipliers of `multiple` for the default geometric buckets (ratio <= 1.5).
_GROWTH = (1, 2, 3, 4, 6)

# Pixel rows come in whole 2x2 merge blocks; padding keeps that.
_MERGE_ROWS = 4

# Default pixel-row bucket unit: the pipeline's batches, the sampler's and the
# learner's inputs all round their pixel-row totals with it.
PATCH_MULTIPLE = 256


def bucket_size(n: int, buckets: Sequence[int] | None = None, multiple: int = 64) -> int:
  """The smallest bucket that holds `n` items.

  Args:
    n: the size to hold (>= 0).
    buckets: explicit increasing bucket sizes; `n` above the largest is an error.
    multiple: with `buckets=None`, sizes are `multiple * m` for m in 1, 2, 3, 4, 6,
      8, 12, 16, 24, ... (each step at most 1.5x the previous).

  Returns:
    The bucketed size, >= n (and >= `multiple` without explicit buckets).
  """
  if n < 0:
    raise ValueError(f"bucket_size: n must be >= 0, got {n}")
  if buckets is not None:
    ordered = sorted(int(b) for b in buckets)
    for b in ordered:
      if b >= n:
        return b
    raise ValueError(f"size {n} exceeds the largest bucket {ordered[-1] if ordered else None}")
  if multiple <= 0:
    raise ValueError(f"bucket_size: multiple must be positive, got {multiple}")
  units = -(-n // multiple)
  scale = 1
  while True:
    for m in _GROWTH[1:] if scale > 1 else _GROWTH:
      if m * scale >= units:
        return m * scale * multiple
    scale *= 4


def left_align(input_ids: np.ndarray, attention_mask: np.ndarray, *others: np.ndarray):
  """Moves each row's real tokens (mask 1) to the right end, padding to the left.

  Args:
    input_ids: [B, L] token ids.
    attention_mask: [B, L] 0/1 mask; real tokens must be contiguous per row.
    *others: further [B, L] arrays (e.g. `mm_token_type_ids`) moved the same way.

  Returns:
    `(input_ids, attention_mask, *others)`, left-padded. Padding slots keep the
    values they had (the caller overwrites them).
  """
  mask = np.asarray(attention_mask).astype(bool)
  arrays = [np.array(input_ids), np.array(attention_mask), *(np.array(o) for o in others)]
  L = mask.shape[1]
  for b in range(mask.shape[0]):
    idx = np.flatnonzero(mask[b])
    if idx.size and idx[-1] - idx[0] + 1 != idx.size:
      raise ValueError(f"row {b}: attention_mask has holes; real tokens must be contiguous")
    shift = L - 1 - idx[-1] if idx.size else 0
    if shift:
      for a in arrays:
        a[b] = np.roll(a[b], shift)
  return tuple(arrays)


def pad_visual(
  pixels: np.ndarray, grid: np.ndarray, rows: int, grid_rows: int
) -> tuple[np.ndarray, np.ndarray]:
  """Pads pixel rows with zeros up to `rows` and the grid with (0, 0, 0) rows up to
  `grid_rows` (module docstring: no grid row covers the padding).

  The one pixel padding of the project: `pad_batch` (pipeline, sampler) and the
  learner's rows (`train/learner_rows.py`) call it with a bucketed `rows`.
  """
  pixels, grid = np.asarray(pixels), np.asarray(grid, dtype=np.int64).reshape(-1, 3)
  n = pixels.shape[0]
  if n != int(np.prod(grid, axis=1).sum()):
    raise ValueError(f"{n} pixel rows but the grid {grid.tolist()} covers {np.prod(grid, 1).sum()}")
  if n % _MERGE_ROWS:
    raise ValueError(f"pixel row count {n} is not a multiple of the 2x2 merge ({_MERGE_ROWS})")
  pad = rows - n
  if pad < 0 or pad % _MERGE_ROWS:
    raise ValueError(f"cannot pad {n} pixel rows to {rows} (a multiple of {_MERGE_ROWS} above)")
  if grid_rows < grid.shape[0]:
    raise ValueError(f"grid_rows={grid_rows} cannot hold {grid.shape[0]} items")
  pad_rows = np.zeros((grid_rows - grid.shape[0], 3), np.int64)
  pixels = np.concatenate([pixels, np.zeros((pad, *pixels.shape[1:]), pixels.dtype)])
  return pixels, np.concatenate([grid, pad_rows]).astype(grid.dtype)


def _pad_visual(
  pixels: np.ndarray, grid: np.ndarray, patch_buckets, patch_multiple: int, grid_rows: int | None
) -> tuple[np.ndarray, np.ndarray]:
  grid = np.asarray(grid).reshape(-1, 3)
  rows = bucket_size(grid.shape[0], None, 1) if grid_rows is None else grid_rows
  target = bucket_size(np.asarray(pixels).shape[0], patch_buckets, patch_multiple)
  return pad_visual(pixels, grid, target, rows)


def pad_batch(
  inputs: Mapping[str, Any],
  *,
  pad_id: int,
  length_buckets: Sequence[int] | None = None,
  length_multiple: int = 64,
  patch_buckets: Sequence[int] | None = None,
  patch_multiple: int = PATCH_MULTIPLE,
  grid_rows: int | None = None,
) -> dict[str, np.ndarray]:
  """Pads a HF-processor-style batch to bucketed shapes (module docstring).

  Args:
    inputs: dict with `input_ids` [B, L] and optionally `attention_mask`,
      `mm_token_type_ids`, `pixel_values` + `image_grid_thw`,
      `pixel_values_videos` + `video_grid_thw` (numpy, torch or jax arrays).
      Other keys are passed through unchanged.
    pad_id: the token id written into padding slots.
    length_buckets, length_multiple: buckets for the prompt length (`bucket_size`).
    patch_buckets, patch_multiple: buckets for pixel rows (images and videos alike).
    grid_rows: fixed number of grid rows; default buckets the item count.

  Returns:
    A new dict of numpy arrays; `attention_mask` and `mm_token_type_ids` are
    always present (the latter derived by the caller's processor, or zeros).
  """
  if "input_ids" not in inputs:
    raise KeyError("pad_batch: inputs need 'input_ids'")
  out = {k: np.asarray(v) for k, v in inputs.items() if v is not None}
  ids = out["input_ids"]
  if ids.ndim != 2:
    raise ValueError(f"input_ids must be [B, L], got shape {ids.shape}")
  mask = out.get("attention_mask", np.ones_like(ids))
  types = out.get("mm_token_type_ids", np.zeros_like(ids))
  ids, mask, types = left_align(ids, mask, types)
  B, L = ids.shape
  extra = bucket_size(L, length_buckets, length_multiple) - L
  out["input_ids"] = np.concatenate([np.full((B, extra), pad_id, ids.dtype), ids], axis=1)
  out["attention_mask"] = np.concatenate([np.zeros((B, extra), mask.dtype), mask], axis=1)
  out["mm_token_type_ids"] = np.concatenate([np.zeros((B, extra), types.dtype), types], axis=1)
  keep = out["attention_mask"].astype(bool)
  out["input_ids"] = np.where(keep, out["input_ids"], pad_id).astype(ids.dtype)
  out["mm_token_type_ids"] = np.where(keep, out["mm_token_type_ids"], 0).astype(types.dtype)
  for pix, grid in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
    if (pix in out) != (grid in out):
      raise ValueError(f"pad_batch: {pix!r} and {grid!r} must come together")
    if pix in out:
      out[pix], out[grid] = _pad_visual(
        out[pix], out[grid], patch_buckets, patch_multiple, grid_rows
      )
  return out


def concat_batches(*batches: Mapping[str, Any], pad_id: int) -> dict[str, np.ndarray]:
  """Stacks HF-style batches along the batch axis (e.g. original + counterfactual).

  Prompts are left-aligned and left-padded to the longest; pixel rows and grid rows
  are concatenated in batch order, which is the order in which the model assigns
  visual items to placeholder tokens (row-major over the batch), so every row keeps
  its own images and videos.

  Args:
    *batches: dicts as `pad_batch` takes (with or without visual arrays; a key
      present in one batch must be present in all that have visual inputs of that
      modality).
    pad_id: token id for the new padding slots.

  Returns:
    One dict of numpy arrays; `attention_mask` and `mm_token_type_ids` included.
  """
  if not batches:
    raise ValueError("concat_batches needs at least one batch")
  rows = []
  for batch in batches:
    ids = np.asarray(batch["input_ids"])
    mask = np.asarray(batch.get("attention_mask", np.ones_like(ids)))
    types = np.asarray(batch.get("mm_token_type_ids", np.zeros_like(ids)))
    rows.append(left_align(ids, mask, types))
  length = max(r[0].shape[1] for r in rows)

  def widen(x: np.ndarray, fill) -> np.ndarray:
    return np.concatenate([np.full((x.shape[0], length - x.shape[1]), fill, x.dtype), x], 1)

  out = {
    "input_ids": np.concatenate([widen(np.where(m != 0, i, pad_id), pad_id) for i, m, _ in rows]),
    "attention_mask": np.concatenate([widen(m, 0) for _, m, _ in rows]),
    "mm_token_type_ids": np.concatenate([widen(t * (m != 0), 0) for _, m, t in rows]),
  }
  for pix, grid in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
    having = [b for b in batches if b.get(pix) is not None]
    if having:
      out[pix] = np.concatenate([np.asarray(b[pix]) for b in having])
      out[grid] = np.concatenate([np.asarray(b[grid]).reshape(-1, 3) for b in having])
  return out


def pad_rows(batch: Mapping[str, Any], rows: int, *, pad_id: int) -> dict[str, np.ndarray]:
  """Appends filler prompts so the batch has `rows` rows (for a bucketed batch size).

  A filler row is all `pad_id` with only its last slot attended, so it is a valid
  one-token text prompt (a fully masked row would give NaNs in attention) that
  refers to no visual item. Callers drop the filler rows from the results.
  """
  out = {k: np.asarray(v) for k, v in batch.items() if v is not None}
  ids = out["input_ids"]
  extra = rows - ids.shape[0]
  if extra < 0:
    raise ValueError(f"pad_rows: batch has {ids.shape[0]} rows, more than {rows}")
  if extra == 0:
    return out
  filler = {
    "input_ids": np.full((extra, ids.shape[1]), pad_id),
    "attention_mask": np.zeros((extra, ids.shape[1])),
    "mm_token_type_ids": np.zeros((extra, ids.shape[1])),
  }
  filler["attention_mask"][:, -1] = 1
  for key, fill in filler.items():
    if key in out:
      out[key] = np.concatenate([out[key], fill.astype(out[key].dtype)])
  return out
