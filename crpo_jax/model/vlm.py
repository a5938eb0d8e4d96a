"""Qwen3-VL: vision encoder + text decoder + output head, with prefill/decode.

`Qwen3VL.__call__` takes the keyword arguments the HF processor produces (numpy or
jax arrays) and returns float32 logits [B, L, V]. Everything that depends on the
data (placeholder positions, 3-D positions, masks) is computed with jnp, so all
entry points are jittable with static shapes, also as pure functions of
`nnx.split(model)`.

Visual tokens are spliced in order: the i-th image placeholder of the batch (in
row-major (batch, sequence) order) takes merged image token i, likewise for video
(HF's `masked_scatter`, reference/qwen3vl.md section 3.2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crpo_jax.model.array_types import Array, Float, Int
from crpo_jax.model.cache import Cache
from crpo_jax.model.config import Qwen3VLConfig
from crpo_jax.model.hf_spec import HFParam
from crpo_jax.model.layers import Linear
from crpo_jax.model.positions import get_rope_index
from crpo_jax.model.text import DeepStack, TextModel, text_hf_params
from crpo_jax.model.vision import VisionEncoder, vision_hf_params
from crpo_jax.sharding import constrain


def _concrete(*xs) -> bool:
  return all(x is None or not isinstance(x, jax.core.Tracer) for x in xs)


def _ids(name: str, x, rank: int) -> Array | None:
  if x is None:
    return None
  x = jnp.asarray(x)
  if x.ndim != rank:
    raise ValueError(f"crpo_jax/model/vlm.py: {name} must have rank {rank}, got shape {x.shape}")
  return x.astype(jnp.int32)


class Qwen3VL(nnx.Module):
  """Qwen3-VL for conditional generation (HF `Qwen3VLForConditionalGeneration`)."""

  def __init__(
    self,
    config: Qwen3VLConfig,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    remat: str | bool = "none",
    vision_segments: tuple[int, int] | None = None,
    rngs: nnx.Rngs,
  ):
    """Builds the model.

    Args:
      config: architecture.
      dtype: compute dtype (activations, matmul inputs); logits are float32.
      param_dtype: storage dtype of every weight.
      remat: rematerialisation policy of the text and vision layer stacks in the
        backward pass, `none`, `full` or `dots` (`crpo_jax.model.remat`).
      vision_segments: (rows per image or temporal group, temporal groups per
        video): the vision tower then attends within each segment only
        (`vision.slot_attention`), linear in the number of segments. None keeps
        the masked attention over all patch rows of a call.
      rngs: parameter initialisation.
    """
    self.config = config
    self.dtype = dtype
    kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    rows, groups = vision_segments or (None, None)
    self.visual = VisionEncoder(
      config.vision, remat=remat, segment_rows=rows, segments_per_item=groups, **kw
    )
    self.language_model = TextModel(config.text, remat=remat, **kw)
    t = config.text
    self.lm_head = (
      None
      if t.tie_word_embeddings
      else Linear(t.hidden_size, t.vocab_size, logical_axes=("embed", "vocab"), **kw)
    )

  # ---------------------------------------------------------------- pieces

  def output_kernel(self) -> Float[Array, "D V"]:
    """The head's kernel [D, V] in the compute dtype: the embedding table transposed
    when tied.

    The sampler's `logits` and the learner's chunked head (`rl/logprobs.py`) both
    multiply the compute-dtype hidden states by it, so their log-probs agree in
    bf16 too (an on-policy ratio of 1).
    """
    if self.lm_head is None:
      return self.language_model.embed_tokens.embedding[...].T.astype(self.dtype)
    return self.lm_head.kernel[...].astype(self.dtype)

  def logits(self, hidden: Float[Array, "B T D"]) -> Float[Array, "B T V"]:
    """Float32 logits from final hidden states (products in the compute dtype)."""
    logits_BTV = jnp.einsum(
      "BTD,DV->BTV",
      hidden.astype(self.dtype),
      self.output_kernel(),
      preferred_element_type=jnp.float32,
    )
    return constrain(logits_BTV, ("batch", "length", "vocab"))

  def embed(
    self,
    input_ids: Int[Array, "B T"],
    pixel_values=None,
    image_grid_thw=None,
    pixel_values_videos=None,
    video_grid_thw=None,
    text_from: int | None = None,
  ) -> tuple[Float[Array, "B T D"], DeepStack | None]:
    """Token embeddings with visual features spliced in, and the DeepStack features.

    Tokens at index >= `text_from` are text whatever their id (positions.py).
    """
    cfg = self.config
    x_BTD = self.language_model.embed_tokens(input_ids)
    tables, levels = [], []
    is_visual = jnp.zeros(input_ids.shape, bool)
    token_index = jnp.zeros(input_ids.shape, jnp.int32)
    offset = 0
    for name, pixels, grid, token_id in (
      ("pixel_values", pixel_values, image_grid_thw, cfg.image_token_id),
      ("pixel_values_videos", pixel_values_videos, video_grid_thw, cfg.video_token_id),
    ):
      if pixels is None:
        continue
      if grid is None:
        raise ValueError(f"crpo_jax/model/vlm.py: {name} given without its grid_thw")
      is_token = input_ids == token_id
      if text_from is not None:
        is_token = is_token & (jnp.arange(input_ids.shape[1]) < text_from)[None, :]
      unit = cfg.vision.spatial_merge_size**2
      if _concrete(input_ids, grid):  # eager calls get a clear error; jit cannot raise
        want = int(np.prod(np.asarray(grid), axis=-1).sum()) // unit
        have = int(is_token.sum())
        rows = np.shape(pixels)[0] // unit
        if have != want or want > rows:
          raise ValueError(
            f"crpo_jax/model/vlm.py: {have} placeholder tokens (id {token_id}) in input_ids "
            f"but the grid of {name} gives {want} merged tokens ({rows} pixel rows / {unit})"
          )
      merged, deep = self.visual(jnp.asarray(pixels), grid)
      order = (jnp.cumsum(is_token.reshape(-1)) - 1).reshape(input_ids.shape)
      token_index = jnp.where(is_token, order + offset, token_index)
      is_visual = is_visual | is_token
      tables.append(merged)
      levels.append(deep)
      offset += merged.shape[0]
    if not tables:
      return x_BTD, None
    table = jnp.concatenate(tables, axis=0)
    x_BTD = jnp.where(is_visual[..., None], table[token_index].astype(x_BTD.dtype), x_BTD)
    features = jnp.concatenate(levels, axis=1)
    if features.shape[0] == 0:
      return x_BTD, None
    return x_BTD, DeepStack(features, token_index, is_visual)

  # ---------------------------------------------------------------- full forward

  def hidden_states(
    self,
    input_ids,
    attention_mask=None,
    pixel_values=None,
    image_grid_thw=None,
    pixel_values_videos=None,
    video_grid_thw=None,
    text_from: int | None = None,
    **unused_processor_keys,
  ) -> Float[Array, "B L D"]:
    """Final-normed hidden states [B, L, D] in the compute dtype (no cache).

    `text_from` (static): where generated text begins; tokens from there on are
    text whatever their id, as `decode_step` treats them (positions.py).
    """
    del unused_processor_keys  # e.g. mm_token_type_ids: token types come from the ids
    ids = _ids("input_ids", input_ids, 2)
    mask = jnp.ones(ids.shape, bool) if attention_mask is None else jnp.asarray(attention_mask) != 0
    image_grid = _ids("image_grid_thw", image_grid_thw, 2)
    video_grid = _ids("video_grid_thw", video_grid_thw, 2)
    positions, _ = get_rope_index(ids, mask, image_grid, video_grid, self.config, text_from)
    x_BTD, deepstack = self.embed(
      ids, pixel_values, image_grid, pixel_values_videos, video_grid, text_from
    )
    query_slot = jnp.arange(ids.shape[1], dtype=jnp.int32)
    hidden, _ = self.language_model(x_BTD, positions, mask, query_slot, deepstack)
    return hidden

  def __call__(
    self,
    input_ids,
    attention_mask=None,
    pixel_values=None,
    image_grid_thw=None,
    pixel_values_videos=None,
    video_grid_thw=None,
    **unused_processor_keys,
  ) -> Float[Array, "B L V"]:
    """Float32 logits [B, L, V] for processor outputs (numpy or jax arrays)."""
    hidden = self.hidden_states(
      input_ids,
      attention_mask,
      pixel_values,
      image_grid_thw,
      pixel_values_videos,
      video_grid_thw,
      **unused_processor_keys,
    )
    return self.logits(hidden)

  # ---------------------------------------------------------------- cached decoding

  def prefill(
    self,
    input_ids,
    attention_mask,
    cache: Cache,
    pixel_values=None,
    image_grid_thw=None,
    pixel_values_videos=None,
    video_grid_thw=None,
  ) -> tuple[Float[Array, "B V"], Cache]:
    """Runs a left-padded prompt into an empty cache; returns last-position logits.

    Keys go to slots [0, L); `key_mask` marks the attended ones, `index` becomes L
    and `next_position` the MRoPE position of the first generated token.
    """
    ids = _ids("input_ids", input_ids, 2)
    batch, length = ids.shape
    if cache.batch_size != batch or cache.max_len < length:
      raise ValueError(
        f"crpo_jax/model/vlm.py prefill: cache (batch {cache.batch_size}, max_len "
        f"{cache.max_len}) cannot hold input_ids of shape {ids.shape}"
      )
    mask = jnp.asarray(attention_mask) != 0
    image_grid = _ids("image_grid_thw", image_grid_thw, 2)
    video_grid = _ids("video_grid_thw", video_grid_thw, 2)
    positions, deltas = get_rope_index(ids, mask, image_grid, video_grid, self.config)
    x_BTD, deepstack = self.embed(ids, pixel_values, image_grid, pixel_values_videos, video_grid)
    key_mask = jax.lax.dynamic_update_slice(cache.key_mask, mask, (0, 0))
    query_slot = jnp.arange(length, dtype=jnp.int32)
    hidden, (k, v) = self.language_model(
      x_BTD, positions, key_mask, query_slot, deepstack, (cache.k, cache.v), jnp.int32(0)
    )
    new_cache = Cache(
      k=k,
      v=v,
      key_mask=key_mask,
      index=jnp.asarray(length, jnp.int32),
      next_position=(deltas + mask.sum(axis=1)).astype(jnp.int32),
    ).constrained()
    return self.logits(hidden[:, -1:, :])[:, 0], new_cache

  def decode_step(
    self, tokens: Int[Array, " B"], cache: Cache
  ) -> tuple[Float[Array, "B V"], Cache]:
    """One token per row at slot `cache.index`, position `cache.next_position`."""
    tokens = _ids("tokens", tokens, 1)
    x_BTD = self.language_model.embed_tokens(tokens[:, None])
    positions = jnp.broadcast_to(cache.next_position[None, :, None], (3, tokens.shape[0], 1))
    key_mask = jax.lax.dynamic_update_slice(
      cache.key_mask, jnp.ones((tokens.shape[0], 1), bool), (0, cache.index)
    )
    query_slot = cache.index[None].astype(jnp.int32)
    hidden, (k, v) = self.language_model(
      x_BTD, positions, key_mask, query_slot, None, (cache.k, cache.v), cache.index
    )
    new_cache = Cache(
      k=k, v=v, key_mask=key_mask, index=cache.index + 1, next_position=cache.next_position + 1
    ).constrained()
    return self.logits(hidden)[:, 0], new_cache


def hf_params(cfg: Qwen3VLConfig) -> list[HFParam]:
  """Every parameter of `Qwen3VL(cfg)` with its HF safetensors key(s)."""
  vision = [p.prefixed(("visual",)) for p in vision_hf_params(cfg.vision)]
  return text_hf_params(cfg) + vision
