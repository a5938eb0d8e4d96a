"""3-D MRoPE position ids and rope deltas, computed with jnp inside jit.

Reproduces transformers 5.23 `Qwen3VLModel.get_rope_index` (reference/qwen3vl.md
section 4) without host loops. Per row, only attended tokens count. Text tokens
advance the position by 1. A maximal run of image (or video) placeholder tokens is
one visual block: it takes the next grid of its modality, in row-major (batch,
sequence) order across the batch; its tokens get T = start + frame, H = start + row,
W = start + column, and the block advances the position by max(h', w') with
h' = h / merge, w' = w / merge. Videos are split into one block per temporal group
(t = 1 each), because every group sits between its own timestamp text tokens. This
makes the result independent of the video prompt layout (4.57 or 5.x).

Grid arrays have static shapes; an all-zero grid row is padding and is skipped.

`text_from` marks where generated text begins (the completion after a prompt):
tokens from there on are text whatever their id, so a sampled placeholder id gets
the position `decode_step` gave it, and positions of completion tokens never depend
on which tokens were sampled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crpo_jax.model.array_types import Array, Int
from crpo_jax.model.config import Qwen3VLConfig


def _block_grids(
  token_run: Int[Array, "B L"], grid_thw: Int[Array, "n 3"] | None, split_time: bool
) -> Int[Array, "B L 3"]:
  """(t, h, w) of the visual block each token belongs to (run index -> grid row).

  Args:
    token_run: 0-based global index of the run (block) of each token of this
      modality; anything for other tokens.
    grid_thw: grids of this modality, padding rows all zero.
    split_time: videos: each grid row yields t blocks of (1, h, w).
  """
  if grid_thw is None:
    return jnp.zeros(token_run.shape + (3,), jnp.int32)
  grid = jnp.asarray(grid_thw, jnp.int32).reshape(-1, 3)
  t = grid[:, 0]
  blocks_per_row = t if split_time else (t > 0).astype(jnp.int32)
  ends = jnp.cumsum(blocks_per_row)
  row = jnp.searchsorted(ends, token_run, side="right")
  row = jnp.clip(row, 0, grid.shape[0] - 1)
  block = grid[row]
  if split_time:
    block = block.at[..., 0].set(1)
  return block


def get_rope_index(
  input_ids: Int[Array, "B L"],
  attention_mask: Int[Array, "B L"] | None,
  image_grid_thw: Int[Array, "ni 3"] | None,
  video_grid_thw: Int[Array, "nv 3"] | None,
  config: Qwen3VLConfig,
  text_from: int | None = None,
) -> tuple[Int[Array, "3 B L"], Int[Array, " B"]]:
  """MRoPE positions [3, B, L] (0 at padding) and deltas [B] = max + 1 - valid length.

  The next token after a prompt of row b has position `deltas[b] + valid_length[b]`
  on all three rows. Tokens at index >= `text_from` (static) are text whatever
  their id (module docstring).
  """
  ids = jnp.asarray(input_ids, jnp.int32)
  b, length = ids.shape
  valid = (
    jnp.ones((b, length), bool) if attention_mask is None else jnp.asarray(attention_mask) != 0
  )
  merge = config.vision.spatial_merge_size
  kind = jnp.where(ids == config.image_token_id, 1, jnp.where(ids == config.video_token_id, 2, 0))
  idx = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (b, length))
  if text_from is not None:
    kind = jnp.where(idx >= text_from, 0, kind)
  kind = jnp.where(valid, kind, -1)  # -1: padding, ignored

  # Kind of the previous attended token in the row (padding is skipped over).
  last_valid = jax.lax.cummax(jnp.where(valid, idx, -1), axis=1)
  prev_valid = jnp.concatenate([jnp.full((b, 1), -1, jnp.int32), last_valid[:, :-1]], axis=1)
  prev_kind = jnp.where(
    prev_valid >= 0, jnp.take_along_axis(kind, jnp.maximum(prev_valid, 0), axis=1), -1
  )
  visual = kind > 0
  run_start = visual & (prev_kind != kind)

  # Global run number per modality, in row-major (batch, sequence) order.
  def run_number(k):
    starts = (run_start & (kind == k)).reshape(-1)
    return (jnp.cumsum(starts) - 1).reshape(b, length).astype(jnp.int32)

  image_block = _block_grids(run_number(1), image_grid_thw, split_time=False)
  video_block = _block_grids(run_number(2), video_grid_thw, split_time=True)
  block = jnp.where((kind == 2)[..., None], video_block, image_block)
  grid_h, grid_w = block[..., 1] // merge, block[..., 2] // merge
  advance = jnp.maximum(grid_h, grid_w)

  # Position contributed by each token: 1 per text token, `advance` per block
  # (counted at the block's first token).
  contrib = jnp.where(valid & ~visual, 1, 0) + jnp.where(run_start, advance, 0)
  inclusive = jnp.cumsum(contrib, axis=1)
  text_pos = inclusive - 1
  block_start = inclusive - advance  # same for every token of a block

  # Offset of each visual token inside its block, counting attended tokens only.
  seen = jnp.cumsum(valid.astype(jnp.int32), axis=1)
  first = jax.lax.cummax(jnp.where(run_start, idx, 0), axis=1)
  offset = seen - jnp.take_along_axis(seen, first, axis=1)
  area = jnp.maximum(grid_h * grid_w, 1)
  frame = offset // area
  within = offset % area
  row = within // jnp.maximum(grid_w, 1)
  col = within % jnp.maximum(grid_w, 1)

  pos_t = jnp.where(visual, block_start + frame, text_pos)
  pos_h = jnp.where(visual, block_start + row, text_pos)
  pos_w = jnp.where(visual, block_start + col, text_pos)
  positions = jnp.stack([pos_t, pos_h, pos_w]) * valid[None]
  positions = positions.astype(jnp.int32)

  max_pos = jnp.max(jnp.where(valid[None], positions, -1), axis=(0, 2))
  deltas = max_pos + 1 - valid.sum(axis=1)
  return positions, deltas.astype(jnp.int32)
