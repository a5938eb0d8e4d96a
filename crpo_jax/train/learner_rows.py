"""Host-side batch plumbing for the learner and SFT: videos, prompts, training rows.

`ModelDef` wraps the split policy: the pieces jitted code needs (graphdef, buffers,
the sampler's view of the parameters) and the one traced function both RL and SFT
differentiate, `completion_logprobs`.

Videos travel as HF `pixel_values_videos` rows ([patches, C*Tp*P*P], layout
(t, h/m, w/m, m, m | C, Tp, P, P) of the Qwen2/3-VL processors) with one
`video_grid_thw` row per video. The T-GRPO shuffle and ArrowRL reversal are done on
these rows directly, frames unpacked from their temporal patches, so every branch
shares the original's token layout (METHOD.md section 4).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crpo_jax import bucketing
from crpo_jax import sharding as sharding_lib
from crpo_jax.model import vision as vision_lib
from crpo_jax.model.config import Qwen3VLConfig
from crpo_jax.rl import logprobs as logprobs_lib
from crpo_jax.rl import sampler as sampler_lib
from crpo_jax.train import state as state_lib

Videos = tuple[list[np.ndarray], np.ndarray]  # per-prompt patch rows, grid [P, 3]


@dataclasses.dataclass
class ModelDef:
  """The policy's static structure, split once."""

  config: Qwen3VLConfig
  graphdef: Any  # graphdef of split_model (params, rest)
  rest: Any  # non-parameter state (usually empty)
  full_graphdef: Any  # graphdef of nnx.split(model), what the sampler merges
  template: nnx.State  # parameters with metadata (shapes/shardings), values unused
  dtype: Any = jnp.float32  # the compute dtype
  vision_segments: tuple[int, int] | None = None  # per-segment attention's bounds

  @classmethod
  def from_model(cls, model: nnx.Module) -> ModelDef:
    graphdef, params, rest = state_lib.split_model(model)
    full_graphdef, _ = nnx.split(model)
    v = model.visual
    bounds = None if v.segment_rows is None else (v.segment_rows, v.segments_per_item)
    return cls(model.config, graphdef, rest, full_graphdef, params, jnp.dtype(model.dtype), bounds)

  def check_videos(self, grid: np.ndarray) -> None:
    """Refuses, before any jit, a video the per-segment vision attention cannot hold
    (inside jit its extra rows would be dropped without an error)."""
    if self.vision_segments is None:
      return
    try:
      vision_lib.check_segment_bounds(grid, *self.vision_segments)
    except ValueError as e:
      raise ValueError(
        f"{e}. With model.vision_attention='segments' a temporal group holds at most "
        f"data.max_pixels / patch_size**2 patch rows and a video at most "
        f"ceil(data.num_frames / temporal_patch_size) groups; the run's processor caps "
        f"frames to that (train/setup.py processor_config), a custom one must too"
      ) from None

  def in_compute_dtype(self, pure: Any) -> Any:
    """The policy in the compute dtype: floating parameters rounded to it (others
    as they are), in their master copy's layout.

    Every forward runs these weights: the rollout's copy (made once per step), the
    frozen reference (stored so), and `completion_logprobs`, whose gradients flow
    back to the master weights through the rounding. So the sampler and the learner
    compute with the same numbers (the on-policy ratio is 1), and at bf16 the
    sampler's weight gathers and the reference's memory are half of fp32's.
    """
    return _in_dtype(pure, self.dtype)

  @property
  def eos_ids(self) -> tuple[int, ...]:
    return tuple(dict.fromkeys((self.config.eos_token_id, sampler_lib.ENDOFTEXT_ID)))

  @property
  def pad_id(self) -> int:
    return self.config.pad_token_id

  def params_state(self, pure: Any) -> nnx.State:
    """An nnx.State with the template's metadata and `pure`'s values."""
    flat = dict(nnx.traversals.flatten_mapping(pure))
    return nnx.from_flat_state(
      [(path, v.replace(flat[path])) for path, v in nnx.to_flat_state(self.template)]
    )

  def sampler_state(self, pure: Any) -> nnx.State:
    state = self.params_state(pure)
    if jax.tree.leaves(self.rest):
      state = nnx.merge_state(state, self.rest)
    return state

  def sampler(self, sampling: sampler_lib.SamplingConfig, mesh, rules):
    return sampler_lib.make_sampler(self.full_graphdef, self.config, sampling, mesh, rules)

  def completion_logprobs(self, params, mb, temperature: float, chunk: int):
    """log pi and entropy of `mb['tokens']` after `mb['prompt_ids']`, [b, T] (traced)."""
    model = state_lib.merge_model(self.graphdef, self.in_compute_dtype(params), self.rest)
    ids = jnp.concatenate([mb["prompt_ids"], mb["tokens"]], axis=1)
    attn = jnp.concatenate([mb["prompt_mask"], mb["mask"]], axis=1).astype(jnp.int32)
    lp, t = mb["prompt_ids"].shape[1], mb["tokens"].shape[1]
    # The completion is text whatever ids were sampled (a placeholder id included),
    # as the sampler's decode_step saw it: same positions, same embeddings.
    h = model.hidden_states(
      ids,
      attn,
      pixel_values_videos=mb["pixel_values_videos"],
      video_grid_thw=mb["video_grid_thw"],
      text_from=lp,
    )
    # Position i predicts token i + 1: completion token j comes from position lp-1+j.
    # The head in the compute dtype, as the sampler's `model.logits`.
    h = h[:, lp - 1 : lp - 1 + t].astype(model.dtype)
    return logprobs_lib.token_logprobs(
      h, model.output_kernel(), mb["tokens"], chunk_size=chunk, temperature=temperature
    )


def to_dtype(x: jax.Array, dtype) -> jax.Array:
  """A floating array rounded to `dtype` (others unchanged).

  `reduce_precision` first: inside a jit, XLA removes an f32 -> bf16 -> f32 round
  trip of converts (excess precision), so a bare `astype` would not round weights
  that a layer uses in f32 (norm scales, biases) where a materialised bf16 copy
  does. Rounded values convert exactly.
  """
  if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == dtype:
    return x
  f = jnp.finfo(dtype)
  if f.bits < jnp.finfo(x.dtype).bits:
    x = jax.lax.reduce_precision(x, exponent_bits=f.nexp, mantissa_bits=f.nmant)
  return x.astype(dtype)


@functools.partial(jax.jit, static_argnums=1)
def _in_dtype(tree: Any, dtype) -> Any:
  return jax.tree.map(lambda x: to_dtype(x, dtype), tree)


def decode(tokenizer, tokens: np.ndarray, length: int) -> str:
  return tokenizer.decode([int(t) for t in tokens[:length]], skip_special_tokens=True)


# -------------------------------------------------------------------- videos


def split_videos(inputs: dict[str, Any], num_prompts: int) -> Videos:
  """Per-prompt patch rows of a (possibly bucket-padded) batch; padding rows dropped."""
  grid = np.asarray(inputs["video_grid_thw"]).reshape(-1, 3)[:num_prompts]
  pix = np.asarray(inputs["pixel_values_videos"])
  sizes = np.prod(grid, axis=1)
  starts = np.concatenate([[0], np.cumsum(sizes)])
  return [pix[starts[i] : starts[i + 1]] for i in range(num_prompts)], grid.copy()


def _unpack(rows: np.ndarray, grid: np.ndarray, vision) -> np.ndarray:
  """[t*h*w, C*Tp*P*P] -> [t, h/m, w/m, m, m, C, Tp, P, P]."""
  t, h, w = (int(x) for x in grid)
  m, c, tp, p = (
    vision.spatial_merge_size,
    vision.in_channels,
    vision.temporal_patch_size,
    vision.patch_size,
  )
  return rows.reshape(t, h // m, w // m, m, m, c, tp, p, p)


def transform_rows(rows: np.ndarray, grid: np.ndarray, vision, kind: str, rng=None) -> np.ndarray:
  """Flip, reverse or frame-shuffle one video given as processor patch rows."""
  x = _unpack(rows, grid, vision)
  if kind == "flip":  # mirror columns: block order, in-block order, pixel columns
    x = x[:, :, ::-1, :, ::-1, :, :, :, ::-1]
  elif kind in ("reverse", "shuffle"):
    t, tp = x.shape[0], x.shape[6]
    frames = np.moveaxis(x, 6, 1).reshape(t * tp, *x.shape[1:6], *x.shape[7:])
    order = np.arange(t * tp)[::-1] if kind == "reverse" else rng.permutation(t * tp)
    frames = frames[order].reshape(t, tp, *x.shape[1:6], *x.shape[7:])
    x = np.moveaxis(frames, 1, 6)
  else:
    raise ValueError(f"unknown video transform {kind!r}")
  return np.ascontiguousarray(x).reshape(rows.shape)


def branch_video(batch: dict[str, Any], source: str, vision, seed) -> Videos:
  """The videos one branch samples on (algorithms.VIDEO_SOURCES)."""
  num_prompts = len(batch["route"])
  if source == "route":
    return split_videos(batch["cf"], num_prompts)
  vids, grid = split_videos(batch["orig"], num_prompts)
  if source == "original":
    return vids, grid
  if source not in ("shuffle", "reverse"):
    raise ValueError(f"unknown video source {source!r}")
  rng = np.random.default_rng(list(seed))
  return [transform_rows(v, g, vision, source, rng) for v, g in zip(vids, grid)], grid


def stack_prompts(orig: dict[str, Any], videos: list[Videos]) -> dict[str, np.ndarray]:
  """Sampler input: the prompts once per branch, each branch with its own videos."""
  k = len(videos)
  pix = np.concatenate([np.concatenate(v) for v, _ in videos])
  grid = np.concatenate([g for _, g in videos]).astype(np.int64)
  num_prompts = grid.shape[0] // k
  rows = bucketing.bucket_size(pix.shape[0], None, bucketing.PATCH_MULTIPLE)
  pix, grid = bucketing.pad_visual(pix, grid, rows, grid.shape[0] + 1)
  return {
    "input_ids": np.tile(np.asarray(orig["input_ids"])[:num_prompts], (k, 1)),
    "attention_mask": np.tile(np.asarray(orig["attention_mask"])[:num_prompts], (k, 1)),
    "pixel_values_videos": pix,
    "video_grid_thw": grid,
  }


# -------------------------------------------------------------------- training rows


def make_rows(
  orig: dict[str, Any],
  prompt_index: np.ndarray,
  videos: list[np.ndarray],
  grids: np.ndarray,
  tokens: np.ndarray,
  mask: np.ndarray,
  **per_row: np.ndarray,
) -> dict[str, Any]:
  """Training rows: prompt (by index), completion, the row's own video, extras."""
  ids = np.asarray(orig["input_ids"])[prompt_index]
  rows = {
    "prompt_ids": ids.astype(np.int32),
    "prompt_mask": np.asarray(orig["attention_mask"])[prompt_index].astype(np.int32),
    "tokens": tokens.astype(np.int32),
    "mask": mask.astype(bool),
    "videos": videos,
    "grids": grids,
  }
  rows.update(per_row)
  return rows


def micro_batch_shardings(mesh, rules, micro: int, keys) -> dict[str, Any]:
  """Rows of each micro-batch split over the mesh's batch axes; videos replicated.

  Pixel rows are not per-example (a row's video has a variable number of patches),
  so they stay replicated, as in the sampler; the model's activation constraints
  then split the work by rows. Batch axes that do not divide `micro` are dropped.
  """
  from jax.sharding import NamedSharding, PartitionSpec

  rows = NamedSharding(mesh, PartitionSpec(None, *sharding_lib.batch_spec(micro, 1, mesh, rules)))
  rep = NamedSharding(mesh, PartitionSpec())
  return {k: rep if k in ("pixel_values_videos", "video_grid_thw") else rows for k in keys}


def to_micro_batches(rows: dict[str, Any], micro: int) -> dict[str, np.ndarray]:
  """Pads rows to whole micro-batches (zero-mask copies) and stacks them [M, micro, ...]."""
  n = rows["tokens"].shape[0]
  m = -(-n // micro)
  fill = np.concatenate([np.arange(n), np.zeros(m * micro - n, np.int64)])
  out = {}
  for key, value in rows.items():
    if key in ("videos", "grids"):
      continue
    v = np.asarray(value)[fill]
    if key == "mask":
      v = v & (np.arange(m * micro) < n)[:, None]
    out[key] = v.reshape(m, micro, *v.shape[1:])
  groups = [fill[i * micro : (i + 1) * micro] for i in range(m)]
  pix = [np.concatenate([rows["videos"][j] for j in g]) for g in groups]
  # One bucketed pixel-row count for every micro-batch of the step (they are stacked).
  target = bucketing.bucket_size(max(p.shape[0] for p in pix), None, bucketing.PATCH_MULTIPLE)
  padded = [
    bucketing.pad_visual(p, np.asarray(rows["grids"])[g].astype(np.int64), target, micro + 1)
    for p, g in zip(pix, groups)
  ]
  out["pixel_values_videos"] = np.stack([p for p, _ in padded])
  out["video_grid_thw"] = np.stack([g for _, g in padded])
  return out
