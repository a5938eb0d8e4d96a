"""Qwen3-VL vision encoder (reference/qwen3vl.md section 2).

Patch embedding, bilinearly resampled learned positions, 2-D axial rotary, ViT
blocks with attention restricted to each image and each temporal group of a
video, the 2x2 patch merger and the DeepStack mergers.

Everything that depends on `grid_thw` (interpolation taps, rotary ids, segment ids)
is computed with jnp inside jit, so a batch is bucketed to a fixed number of patch
rows P: rows after sum(t*h*w) are padding, grid rows (0, 0, 0) are padding, and
neither changes the outputs of real rows.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crpo_jax.model import remat as remat_lib
from crpo_jax.model.array_types import Array, Float, Int
from crpo_jax.model.config import VisionConfig
from crpo_jax.model.hf_spec import IDENTITY, PATCH_CONV, TRANSPOSE, HFParam
from crpo_jax.sharding import constrain

_INIT = nnx.initializers.normal(0.02)  # HF initializer_range for Linear / Embedding


def _param(rngs, shape, axes, param_dtype, init=_INIT) -> nnx.Param:
  return nnx.Param(init(rngs.params(), shape, param_dtype), logical_axes=axes)


def _ones(shape, axes, param_dtype) -> nnx.Param:
  return nnx.Param(jnp.ones(shape, param_dtype), logical_axes=axes)


def _zeros(shape, axes, param_dtype) -> nnx.Param:
  return nnx.Param(jnp.zeros(shape, param_dtype), logical_axes=axes)


def _layer_norm(x: Array, scale: Array, bias: Array, eps: float) -> Array:
  """LayerNorm over the last axis in float32 (torch LayerNorm numerics), cast back."""
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.square(x32 - mean).mean(-1, keepdims=True)
  y = (x32 - mean) * jax.lax.rsqrt(var + eps)
  return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


# ----------------------------------------------------------------- grid layout


def patch_layout(grid_thw: Int[Array, "n 3"], num_patches: int, cfg: VisionConfig):
  """Per-row position-table taps, rotary ids and attention segments, inside jit.

  Args:
    grid_thw: (t, h, w) per image or video, h and w in patch units; (0, 0, 0) rows
      are padding.
    num_patches: P, the static number of `pixel_values` rows.
    cfg: vision config.

  Returns:
    taps: int [P, 4] indices into the flattened position table.
    weights: float32 [P, 4] bilinear weights (align_corners=True, as HF).
    rot_ids: int [P, 2] (row, col) rotary ids in merge-block order.
    segment: int [P] one id per image and per temporal group; -1 on padding rows.
  """
  m = cfg.spatial_merge_size
  side = math.isqrt(cfg.num_position_embeddings)
  grid = jnp.asarray(grid_thw, jnp.int32)
  t, h, w = grid[:, 0], grid[:, 1], grid[:, 2]
  counts = t * h * w
  ends = jnp.cumsum(counts)
  starts = ends - counts
  p = jnp.arange(num_patches, dtype=jnp.int32)
  # First item whose end lies beyond p; empty (padding) grid rows are skipped.
  item = jnp.clip(jnp.searchsorted(ends, p, side="right"), 0, grid.shape[0] - 1)
  valid = p < ends[-1]
  hh, ww = h[item], w[item]
  frame = jnp.maximum(hh * ww, 1)
  offset = p - starts[item]
  within, group = offset % frame, offset // frame
  # Decode merge-block order (block_row, block_col, in_row, in_col) back to (row, col).
  blocks_w = jnp.maximum(ww // m, 1)
  row = (within // (m * m * blocks_w)) * m + (within // m) % m
  col = ((within // (m * m)) % blocks_w) * m + within % m
  segment = jnp.where(valid, (jnp.cumsum(t) - t)[item] + group, -1)

  def axis_taps(index, size):
    # Closed form of torch.linspace(0, side - 1, size)[index], in float32 like HF 5.23.
    src = index.astype(jnp.float32) * (side - 1) / jnp.maximum(size - 1, 1).astype(jnp.float32)
    floor = jnp.floor(src)
    offsets = jnp.arange(2, dtype=jnp.float32)
    taps = jnp.clip(floor.astype(jnp.int32)[:, None] + jnp.arange(2), 0, side - 1)
    wts = jnp.maximum(1.0 - jnp.abs(src[:, None] - floor[:, None] - offsets), 0.0)
    return taps, wts

  h_taps, h_wts = axis_taps(row, hh)
  w_taps, w_wts = axis_taps(col, ww)
  taps = (h_taps[:, :, None] * side + w_taps[:, None, :]).reshape(num_patches, 4)
  weights = (h_wts[:, :, None] * w_wts[:, None, :]).reshape(num_patches, 4)
  return taps, weights, jnp.stack([row, col], -1), segment


def _check_grid(grid: np.ndarray, num_patches: int, merge: int) -> None:
  if grid.ndim != 2 or grid.shape[1] != 3:
    raise ValueError(f"vision.py: grid_thw must be [n, 3], got shape {grid.shape}")
  if (grid[:, 1:] % merge).any():
    raise ValueError(
      f"vision.py: grid_thw h and w must be multiples of {merge}, got {grid.tolist()}"
    )
  if int(grid.prod(-1).sum()) > num_patches:
    raise ValueError(
      f"vision.py: grid_thw covers {int(grid.prod(-1).sum())} patches, pixel_values has {num_patches}"
    )


def rotary_cos_sin(rot_ids: Int[Array, "P 2"], cfg: VisionConfig):
  """cos/sin [P, H] in float32, layout [h-freqs, w-freqs, h-freqs, w-freqs]."""
  half = cfg.head_dim // 2
  # Built in float32 numpy like torch's `base ** (arange(0, half, 2) / half)`.
  inv_freq = 1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, half, 2, dtype=np.float32) / half))
  freqs = rot_ids.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
  freqs = freqs.reshape(rot_ids.shape[0], -1)  # [P, (h-freqs, w-freqs)]
  freqs = jnp.concatenate([freqs, freqs], -1)
  return jnp.cos(freqs), jnp.sin(freqs)


def _rotate(x: Float[Array, "P N H"], cos: Array, sin: Array) -> Array:
  """HF apply_rotary_pos_emb_vision: fp32 rotation, cast back."""
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], -1)
  return (x32 * cos[:, None] + rotated * sin[:, None]).astype(x.dtype)


def _attend(q_PNH, k_SNH, v_SNH, q_segment, k_segment):
  """Softmax attention of queries onto keys of the same segment (fp32 softmax)."""
  logits_NPS = jnp.einsum("PNH,SNH->NPS", q_PNH, k_SNH) * q_PNH.shape[-1] ** -0.5
  same = q_segment[:, None] == k_segment[None, :]
  # A finite fill keeps rows that match no key (chunk padding) finite, also in grads.
  fill = jnp.finfo(jnp.float32).min
  logits_NPS = jnp.where(same[None], logits_NPS.astype(jnp.float32), fill)
  probs_NPS = jax.nn.softmax(logits_NPS, axis=-1).astype(v_SNH.dtype)
  return jnp.einsum("NPS,SNH->PNH", probs_NPS, v_SNH)


def segment_attention(
  q_PNH: Float[Array, "P N H"],
  k_SNH: Float[Array, "P N H"],
  v_SNH: Float[Array, "P N H"],
  segment: Int[Array, " P"],
  chunk: int | None = None,
  window: int | None = None,
) -> Float[Array, "P N H"]:
  """Block-diagonal attention: a row attends to the rows with its segment id.

  Args:
    q_PNH, k_SNH, v_SNH: queries, keys, values of the packed rows.
    segment: segment id per row; segments are contiguous runs of rows.
    chunk: queries are processed `chunk` rows at a time (`lax.map`), so the score
      matrix is [N, chunk, P] instead of [N, P, P]: long videos fit in memory.
    window: with `chunk`, a bound on the segment length. Each query chunk then
      scores only the `chunk + 2 * window` keys around it (compute O(P * window)
      instead of O(P * P)). If a segment is longer, the full-key path runs instead
      (`lax.cond`), so the result is always exact.
  """
  num_p, rest = q_PNH.shape[0], q_PNH.shape[1:]
  if chunk is None or num_p <= chunk:
    return _attend(q_PNH, k_SNH, v_SNH, segment, segment)
  pad = -num_p % chunk
  q = jnp.pad(q_PNH, ((0, pad), (0, 0), (0, 0))).reshape(-1, chunk, *rest)
  q_seg = jnp.pad(segment, (0, pad), constant_values=-2).reshape(-1, chunk)  # -2 matches no key

  def full():
    out = jax.lax.map(lambda a: _attend(a[0], k_SNH, v_SNH, a[1], segment), (q, q_seg))
    return out.reshape(-1, *rest)[:num_p]

  if window is None or chunk + 2 * window >= num_p:
    return full()
  real = jnp.where(segment >= 0, segment, num_p)
  longest = jnp.zeros((num_p,), jnp.int32).at[real].add(1, mode="drop").max()
  return jax.lax.cond(
    longest <= window, lambda: windowed_attention(q_PNH, k_SNH, v_SNH, segment, chunk, window), full
  )


def windowed_attention(q_PNH, k_SNH, v_SNH, segment, chunk: int, window: int):
  """`segment_attention` when no segment is longer than `window` rows.

  Query chunk i (rows [i*chunk, (i+1)*chunk)) sees keys [i*chunk - window,
  (i+1)*chunk + window), which holds every row of every segment it touches.
  """
  num_p, rest = q_PNH.shape[0], q_PNH.shape[1:]
  pad = -num_p % chunk
  q = jnp.pad(q_PNH, ((0, pad), (0, 0), (0, 0))).reshape(-1, chunk, *rest)
  q_seg = jnp.pad(segment, (0, pad), constant_values=-2).reshape(-1, chunk)
  edge = ((window, window + pad), (0, 0), (0, 0))
  k_pad, v_pad = jnp.pad(k_SNH, edge), jnp.pad(v_SNH, edge)
  k_seg = jnp.pad(segment, (window, window + pad), constant_values=-3)  # matches no query
  size = chunk + 2 * window

  def one(a):
    i, qq, qs = a
    take = lambda x: jax.lax.dynamic_slice_in_dim(x, i * chunk, size, 0)
    return _attend(qq, take(k_pad), take(v_pad), qs, take(k_seg))

  out = jax.lax.map(one, (jnp.arange(q.shape[0]), q, q_seg))
  return out.reshape(-1, *rest)[:num_p]


def slot_layout(grid_thw: Int[Array, "n 3"], num_patches: int, rows: int, groups: int):
  """Per-segment slots: slot z = item * groups + temporal group, `rows` rows each.

  Args:
    grid_thw: (t, h, w) per item; (0, 0, 0) rows are padding.
    num_patches: P, the static number of pixel rows.
    rows: S, a bound on the rows of one segment (h * w of one temporal group).
    groups: a bound on the temporal groups t of one item.

  Returns:
    gather: int [n * groups, S] pixel row of each slot position; P (one past the
      last row) where the slot is shorter than S or empty.
    scatter: int [P] flat slot position (z * S + j) of each pixel row; 0 on
      padding rows (whose outputs are zeroed).
    valid: bool [P] rows that belong to a real segment.
  """
  grid = jnp.asarray(grid_thw, jnp.int32)
  t, h, w = grid[:, 0], grid[:, 1], grid[:, 2]
  frame = h * w
  starts = jnp.cumsum(t * frame) - t * frame
  g = jnp.arange(groups, dtype=jnp.int32)
  start_zg = starts[:, None] + g[None, :] * frame[:, None]  # [n, groups]
  size_zg = jnp.where(g[None, :] < t[:, None], frame[:, None], 0)
  j = jnp.arange(rows, dtype=jnp.int32)
  gather = jnp.where(
    j[None, None, :] < size_zg[..., None], start_zg[..., None] + j[None, None, :], num_patches
  ).reshape(-1, rows)
  p = jnp.arange(num_patches, dtype=jnp.int32)
  ends = jnp.cumsum(t * frame)
  item = jnp.clip(jnp.searchsorted(ends, p, side="right"), 0, grid.shape[0] - 1)
  offset = p - starts[item]
  fr = jnp.maximum(frame[item], 1)
  group, within = offset // fr, offset % fr
  valid = (p < ends[-1]) & (group < groups) & (within < rows)
  scatter = jnp.where(valid, (item * groups + group) * rows + within, 0)
  return gather, scatter, valid


def check_segment_bounds(grid_thw, segment_rows: int, segments_per_item: int) -> None:
  """Raises ValueError when a concrete (t, h, w) grid row exceeds `slot_layout`'s
  bounds; inside jit such rows would be silently cut (their outputs zeroed)."""
  g = np.asarray(grid_thw).reshape(-1, 3)
  if (g[:, 1] * g[:, 2]).max(initial=0) > segment_rows or g[:, 0].max(
    initial=0
  ) > segments_per_item:
    raise ValueError(
      f"vision.py: grid_thw {g.tolist()} exceeds segment_rows={segment_rows} "
      f"rows per temporal group or segments_per_item={segments_per_item} groups"
    )


def slot_attention(q_PNH, k_SNH, v_SNH, gather, scatter, valid):
  """Attention within each segment only: rows gathered into [slots, S], scored there.

  Score tensors are [slots, N, S, S]: no row is scored against another segment's,
  and the work grows linearly with the number of segments.
  """
  pad = lambda x: jnp.concatenate([x, jnp.zeros_like(x[:1])], axis=0)  # row P = empty
  slot_axes = ("vision_slots", None, "heads", "head_dim")
  q_ZSNH, k_ZSNH, v_ZSNH = (constrain(pad(x)[gather], slot_axes) for x in (q_PNH, k_SNH, v_SNH))
  key_ok = gather < q_PNH.shape[0]  # [Z, S]
  logits = jnp.einsum("ZSNH,ZTNH->ZNST", q_ZSNH, k_ZSNH) * q_PNH.shape[-1] ** -0.5
  fill = jnp.finfo(jnp.float32).min
  logits = jnp.where(key_ok[:, None, None, :], logits.astype(jnp.float32), fill)
  probs = jax.nn.softmax(logits, axis=-1).astype(v_SNH.dtype)
  out_ZSNH = jnp.einsum("ZNST,ZTNH->ZSNH", probs, v_ZSNH)
  out = out_ZSNH.reshape(-1, *q_PNH.shape[1:])[scatter]
  return jnp.where(valid[:, None, None], out, 0).astype(q_PNH.dtype)


# ----------------------------------------------------------------- modules


class PatchMerger(nnx.Module):
  """LayerNorm, 2x2 concat, Linear, erf-GELU, Linear; optionally stacked over K.

  `postshuffle=True` (DeepStack) normalises after the 2x2 concat over 4*D features.
  """

  def __init__(
    self,
    cfg: VisionConfig,
    *,
    postshuffle: bool,
    stack: int | None,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
  ):
    d, m4 = cfg.hidden_size, cfg.hidden_size * cfg.spatial_merge_size**2
    lead, lax_ = ((stack,), ("layers",)) if stack is not None else ((), ())
    norm = m4 if postshuffle else d
    norm_axes = lax_ + (("patch",) if postshuffle else ("embed",))
    self.postshuffle, self.merged, self.eps, self.dtype = postshuffle, m4, cfg.layer_norm_eps, dtype
    self.norm_scale = _ones(lead + (norm,), norm_axes, param_dtype)
    self.norm_bias = _zeros(lead + (norm,), norm_axes, param_dtype)
    self.fc1_kernel = _param(rngs, lead + (m4, m4), lax_ + ("patch", "mlp"), param_dtype)
    self.fc1_bias = _zeros(lead + (m4,), lax_ + ("mlp",), param_dtype)
    self.fc2_kernel = _param(
      rngs, lead + (m4, cfg.out_hidden_size), lax_ + ("mlp", "embed"), param_dtype
    )
    self.fc2_bias = _zeros(lead + (cfg.out_hidden_size,), lax_ + ("embed",), param_dtype)

  def weights(self) -> dict[str, Array]:
    return {
      k: getattr(self, k)[...]
      for k in ("norm_scale", "norm_bias", "fc1_kernel", "fc1_bias", "fc2_kernel", "fc2_bias")
    }

  def apply(self, w: dict[str, Array], x_PD: Float[Array, "P D"]) -> Float[Array, "Q O"]:
    """One merger on one input; `w` holds one (unstacked) slice of `weights()`."""
    dt = self.dtype
    if self.postshuffle:
      x = _layer_norm(x_PD.reshape(-1, self.merged), w["norm_scale"], w["norm_bias"], self.eps)
    else:
      x = _layer_norm(x_PD, w["norm_scale"], w["norm_bias"], self.eps).reshape(-1, self.merged)
    x = jnp.einsum("QC,CF->QF", x, w["fc1_kernel"].astype(dt)) + w["fc1_bias"].astype(dt)
    x = jax.nn.gelu(x, approximate=False)
    return jnp.einsum("QF,FO->QO", x, w["fc2_kernel"].astype(dt)) + w["fc2_bias"].astype(dt)


class VisionBlocks(nnx.Module):
  """`depth` pre-norm ViT blocks, parameters stacked on a leading layer axis."""

  def __init__(
    self,
    cfg: VisionConfig,
    *,
    dtype,
    param_dtype,
    rngs: nnx.Rngs,
    attention_chunk: int | None = None,
    attention_window: int | None = None,
  ):
    n, d, f = cfg.depth, cfg.hidden_size, cfg.intermediate_size
    self.cfg, self.dtype = cfg, dtype
    self.attention_chunk, self.attention_window = attention_chunk, attention_window
    self.norm1_scale = _ones((n, d), ("layers", "embed"), param_dtype)
    self.norm1_bias = _zeros((n, d), ("layers", "embed"), param_dtype)
    # qkv output ordered (q, k, v) x heads x head_dim, as HF's fused Linear.
    self.qkv_kernel = _param(rngs, (n, d, 3 * d), ("layers", "embed", "heads"), param_dtype)
    self.qkv_bias = _zeros((n, 3 * d), ("layers", "heads"), param_dtype)
    self.proj_kernel = _param(rngs, (n, d, d), ("layers", "heads", "embed"), param_dtype)
    self.proj_bias = _zeros((n, d), ("layers", "embed"), param_dtype)
    self.norm2_scale = _ones((n, d), ("layers", "embed"), param_dtype)
    self.norm2_bias = _zeros((n, d), ("layers", "embed"), param_dtype)
    self.fc1_kernel = _param(rngs, (n, d, f), ("layers", "embed", "mlp"), param_dtype)
    self.fc1_bias = _zeros((n, f), ("layers", "mlp"), param_dtype)
    self.fc2_kernel = _param(rngs, (n, f, d), ("layers", "mlp", "embed"), param_dtype)
    self.fc2_bias = _zeros((n, d), ("layers", "embed"), param_dtype)

  def weights(self) -> dict[str, Array]:
    return {k: v[...] for k, v in vars(self).items() if isinstance(v, nnx.Param)}

  def block(self, w, x_PD, cos, sin, segment, slots=None):
    """One block; `w` is one layer slice of `weights()`; `slots` from `slot_layout`."""
    cfg, dt = self.cfg, self.dtype
    num_p, nh, hd = x_PD.shape[0], cfg.num_heads, cfg.head_dim
    h = _layer_norm(x_PD, w["norm1_scale"], w["norm1_bias"], cfg.layer_norm_eps)
    qkv = jnp.einsum("PD,DE->PE", h, w["qkv_kernel"].astype(dt)) + w["qkv_bias"].astype(dt)
    q_PNH, k_SNH, v_SNH = jnp.unstack(qkv.reshape(num_p, 3, nh, hd), axis=1)
    q_PNH, k_SNH = _rotate(q_PNH, cos, sin), _rotate(k_SNH, cos, sin)
    q_PNH = constrain(q_PNH, ("vision_rows", "heads", "head_dim"))
    if slots is not None:
      out_PNH = slot_attention(q_PNH, k_SNH, v_SNH, *slots)
    else:
      out_PNH = segment_attention(
        q_PNH, k_SNH, v_SNH, segment, self.attention_chunk, self.attention_window
      )
    out = out_PNH.reshape(num_p, nh * hd)
    x_PD = (
      x_PD + jnp.einsum("PE,ED->PD", out, w["proj_kernel"].astype(dt)) + w["proj_bias"].astype(dt)
    )
    h = _layer_norm(x_PD, w["norm2_scale"], w["norm2_bias"], cfg.layer_norm_eps)
    h_PF = jnp.einsum("PD,DF->PF", h, w["fc1_kernel"].astype(dt)) + w["fc1_bias"].astype(dt)
    h_PF = jax.nn.gelu(h_PF, approximate=True)
    x_PD = (
      x_PD + jnp.einsum("PF,FD->PD", h_PF, w["fc2_kernel"].astype(dt)) + w["fc2_bias"].astype(dt)
    )
    return constrain(x_PD, ("vision_rows", "embed"))


class VisionEncoder(nnx.Module):
  """Qwen3-VL ViT: pixels [P, C*Tp*P*P] -> merged tokens and DeepStack features.

  Attributes mirror `model.visual` of HF (see `vision_hf_params` for the mapping).
  """

  def __init__(
    self,
    cfg: VisionConfig,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
    attention_chunk: int | None = 2048,
    attention_window: int | None = None,
    remat: str | bool = "none",
    segment_rows: int | None = None,
    segments_per_item: int | None = None,
  ):
    """Builds the encoder.

    Args:
      cfg: vision config.
      dtype: compute dtype (rotary, softmax and LayerNorm statistics stay float32).
      param_dtype: storage dtype of the parameters.
      rngs: parameter initialisation.
      attention_chunk: query rows per attention step when P is larger (memory
        O(chunk * P) instead of O(P * P)); None for one dense step.
      attention_window: optional bound on rows per image / temporal group (e.g. the
        bucketed frame size h*w); chunks then score only nearby keys. Exact either
        way: a longer segment switches to the full-key path at run time.
      remat: rematerialisation policy of the blocks (`crpo_jax.model.remat`).
      segment_rows, segments_per_item: with both, attention runs per segment
        (`slot_attention`): at most `segment_rows` rows per image or temporal group
        (the largest frame the processor makes, h * w patches) and at most
        `segments_per_item` temporal groups per item. Work is then linear in the
        number of segments; inputs beyond the bounds are an error when the grid is
        concrete (and must not reach jit).
    """
    d = cfg.hidden_size
    self.cfg, self.dtype = cfg, dtype
    self.remat = remat_lib.policy_name(remat)
    if (segment_rows is None) != (segments_per_item is None):
      raise ValueError("vision.py: give both segment_rows and segments_per_item, or neither")
    self.segment_rows, self.segments_per_item = segment_rows, segments_per_item
    self.patch_kernel = _param(rngs, (cfg.patch_dim, d), ("patch", "embed"), param_dtype)
    self.patch_bias = _zeros((d,), ("embed",), param_dtype)
    self.pos_embed = _param(rngs, (cfg.num_position_embeddings, d), (None, "embed"), param_dtype)
    self.blocks = VisionBlocks(
      cfg,
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
      attention_chunk=attention_chunk,
      attention_window=attention_window,
    )
    self.merger = PatchMerger(
      cfg, postshuffle=False, stack=None, dtype=dtype, param_dtype=param_dtype, rngs=rngs
    )
    k = len(cfg.deepstack_visual_indexes)
    self.deepstack = (
      PatchMerger(cfg, postshuffle=True, stack=k, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
      if k
      else None
    )

  def __call__(self, pixel_values: Float[Array, "P C"], grid_thw: Int[Array, "n 3"]):
    """Encodes packed images/videos.

    Args:
      pixel_values: [P, cfg.patch_dim] rows in merge-block order (HF processor
        output), padded at the end to a bucketed P (a multiple of merge_size**2).
      grid_thw: int [n, 3]; (0, 0, 0) rows are padding.

    Returns:
      merged: [P // m**2, out_hidden]; deepstack: [K, P // m**2, out_hidden], K =
      len(deepstack_visual_indexes), ordered by tap layer (as HF).
    """
    cfg, dt = self.cfg, self.dtype
    num_p, unit = pixel_values.shape[0], cfg.spatial_merge_size**2
    if pixel_values.ndim != 2 or pixel_values.shape[1] != cfg.patch_dim:
      raise ValueError(
        f"vision.py: pixel_values shape {pixel_values.shape}, expected [P, {cfg.patch_dim}]"
      )
    if num_p % unit:
      raise ValueError(f"vision.py: P={num_p} pixel rows is not a multiple of merge unit {unit}")
    if not isinstance(grid_thw, jax.core.Tracer):  # checkable only outside jit
      _check_grid(np.asarray(grid_thw), num_p, cfg.spatial_merge_size)
    taps, wts, rot_ids, segment = patch_layout(grid_thw, num_p, cfg)
    cos, sin = rotary_cos_sin(rot_ids, cfg)
    slots = None
    if self.segment_rows is not None:
      if not isinstance(grid_thw, jax.core.Tracer):
        check_segment_bounds(grid_thw, self.segment_rows, self.segments_per_item)
      slots = slot_layout(grid_thw, num_p, self.segment_rows, self.segments_per_item)

    x = jnp.einsum("PC,CD->PD", pixel_values.astype(dt), self.patch_kernel[...].astype(dt))
    x = x + self.patch_bias[...].astype(dt)
    # HF 5.23: gathered rows in model dtype times fp32 weights, summed in fp32, cast.
    pos = self.pos_embed[...].astype(dt)[taps].astype(jnp.float32)
    x = constrain(x + (pos * wts[..., None]).sum(1).astype(dt), ("vision_rows", "embed"))

    # DeepStack taps as data: layer -> slot table, written into a carried buffer.
    order = sorted(cfg.deepstack_visual_indexes)
    slot_of_layer = np.full((cfg.depth,), -1, np.int32)
    for s, layer in enumerate(order):
      slot_of_layer[layer] = s
    taps_buf = jnp.zeros((len(order), num_p, cfg.hidden_size), dt)

    def step(carry, xs):
      x, buf = carry
      w, slot = xs
      x = self.blocks.block(w, x, cos, sin, segment, slots)
      buf = jnp.where((jnp.arange(buf.shape[0]) == slot)[:, None, None], x[None], buf)
      return (x, buf), None

    (x, taps_buf), _ = jax.lax.scan(
      remat_lib.wrap(step, self.remat),
      (x, taps_buf),
      (self.blocks.weights(), jnp.asarray(slot_of_layer)),
    )
    merged = self.merger.apply(self.merger.weights(), x)
    if self.deepstack is None:
      return merged, jnp.zeros((0,) + merged.shape, merged.dtype)
    # Output j is tap layer order[j], merged by deepstack_merger_list[index of that layer].
    which = np.asarray([cfg.deepstack_visual_indexes.index(layer) for layer in order])
    ds_w = jax.tree.map(lambda a: a[which], self.deepstack.weights())
    deepstack = jax.vmap(self.deepstack.apply)(ds_w, taps_buf)
    return merged, deepstack


def vision_hf_params(cfg: VisionConfig) -> list[HFParam]:
  """HF safetensors keys of the encoder; paths are relative to `VisionEncoder`."""
  pre = "model.visual."
  blk, n = pre + "blocks.{i}.", cfg.depth
  out = [
    HFParam(("patch_kernel",), pre + "patch_embed.proj.weight", None, PATCH_CONV),
    HFParam(("patch_bias",), pre + "patch_embed.proj.bias"),
    HFParam(("pos_embed",), pre + "pos_embed.weight"),
  ]
  for ours, theirs, tr in (
    ("norm1_scale", "norm1.weight", IDENTITY),
    ("norm1_bias", "norm1.bias", IDENTITY),
    ("qkv_kernel", "attn.qkv.weight", TRANSPOSE),
    ("qkv_bias", "attn.qkv.bias", IDENTITY),
    ("proj_kernel", "attn.proj.weight", TRANSPOSE),
    ("proj_bias", "attn.proj.bias", IDENTITY),
    ("norm2_scale", "norm2.weight", IDENTITY),
    ("norm2_bias", "norm2.bias", IDENTITY),
    ("fc1_kernel", "mlp.linear_fc1.weight", TRANSPOSE),
    ("fc1_bias", "mlp.linear_fc1.bias", IDENTITY),
    ("fc2_kernel", "mlp.linear_fc2.weight", TRANSPOSE),
    ("fc2_bias", "mlp.linear_fc2.bias", IDENTITY),
  ):
    out.append(HFParam(("blocks", ours), blk + theirs, n, tr))
  merger_names = (
    ("norm_scale", "norm.weight", IDENTITY),
    ("norm_bias", "norm.bias", IDENTITY),
    ("fc1_kernel", "linear_fc1.weight", TRANSPOSE),
    ("fc1_bias", "linear_fc1.bias", IDENTITY),
    ("fc2_kernel", "linear_fc2.weight", TRANSPOSE),
    ("fc2_bias", "linear_fc2.bias", IDENTITY),
  )
  for ours, theirs, tr in merger_names:
    out.append(HFParam(("merger", ours), pre + "merger." + theirs, None, tr))
  k = len(cfg.deepstack_visual_indexes)
  if k:
    for ours, theirs, tr in merger_names:
      out.append(HFParam(("deepstack", ours), pre + "deepstack_merger_list.{i}." + theirs, k, tr))
  return out
