"""Qwen3 grouped-query self-attention with q/k RMSNorm, MRoPE and an optional KV cache.

reference/qwen3vl.md section 3.5: q = q_norm(q_proj(x)), k = k_norm(k_proj(x)) with
RMSNorm over head_dim (one weight shared by all heads) *before* RoPE; kv head j
serves query heads j*G .. j*G+G-1; scale H^-0.5; softmax in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from crpo_jax.model.array_types import Array, Bool, Float, Int
from crpo_jax.model.config import TextConfig
from crpo_jax.model.layers import Linear, RMSNorm, merge_heads, split_heads
from crpo_jax.model.rope import apply_rope
from crpo_jax.sharding import constrain

_BTNH = ("batch", "length", "heads", "head_dim")
_BSKH = ("batch", "length", "kv_heads", "head_dim")


# Queries per block in `dot_product_attention`: bounds the score matrix to
# [B, N, QUERY_CHUNK, S] for long (video) prompts.
QUERY_CHUNK = 512


def _attend(q_BTNH, k_BSKH, v_BSKH, key_mask_BS, query_slot_T):
  b, t, n, h = q_BTNH.shape
  k = k_BSKH.shape[2]
  q_BTKGH = q_BTNH.reshape(b, t, k, n // k, h)
  logits_BKGTS = jnp.einsum(
    "BTKGH,BSKH->BKGTS", q_BTKGH, k_BSKH, preferred_element_type=jnp.float32
  )
  logits_BKGTS = logits_BKGTS * jnp.float32(h**-0.5)
  slots_S = jnp.arange(k_BSKH.shape[1], dtype=jnp.int32)
  mask_BTS = key_mask_BS[:, None, :] & (slots_S[None, None, :] <= query_slot_T[None, :, None])
  big_neg = jnp.finfo(jnp.float32).min
  logits_BKGTS = jnp.where(mask_BTS[:, None, None, :, :], logits_BKGTS, big_neg)
  probs_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1).astype(v_BSKH.dtype)
  out_BTKGH = jnp.einsum("BKGTS,BSKH->BTKGH", probs_BKGTS, v_BSKH)
  return out_BTKGH.reshape(b, t, n, h)


def dot_product_attention(
  q_BTNH: Float[Array, "B T N H"],
  k_BSKH: Float[Array, "B S K H"],
  v_BSKH: Float[Array, "B S K H"],
  key_mask_BS: Bool[Array, "B S"],
  query_slot_T: Int[Array, " T"],
  *,
  chunk: int | None = QUERY_CHUNK,
) -> Float[Array, "B T N H"]:
  """Causal masked softmax attention with GQA; logits and softmax in float32.

  Query t may see key slot s when `key_mask[b, s]` and `s <= query_slot[t]`, so
  one rule covers the full forward (slot = position in the row), prefill and
  decode (slots of the cache). A query that sees no key (a padding position)
  gets a uniform average instead of NaN; such rows are never read.

  With more than `chunk` queries they are processed `chunk` at a time under
  `jax.checkpoint`, so neither the forward nor the backward pass holds the whole
  [B, N, T, S] score matrix.
  """
  t = q_BTNH.shape[1]
  if chunk is None or t <= chunk:
    return _attend(q_BTNH, k_BSKH, v_BSKH, key_mask_BS, query_slot_T)
  pad = -t % chunk
  b, _, n, h = q_BTNH.shape
  q = jnp.pad(q_BTNH, ((0, 0), (0, pad), (0, 0), (0, 0)))
  q_CBTNH = q.reshape(b, -1, chunk, n, h).swapaxes(0, 1)
  slots_CT = jnp.pad(query_slot_T, (0, pad), constant_values=-1).reshape(-1, chunk)

  @jax.checkpoint
  def one(args):
    return _attend(args[0], k_BSKH, v_BSKH, key_mask_BS, args[1])

  out_CBTNH = jax.lax.map(one, (q_CBTNH, slots_CT))
  return out_CBTNH.swapaxes(0, 1).reshape(b, -1, n, h)[:, :t]


class Attention(nnx.Module):
  """One Qwen3 attention layer (or, with `stack`, all layers' weights stacked)."""

  def __init__(
    self,
    cfg: TextConfig,
    *,
    stack: int | None = None,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    kw = {"stack": stack, "dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.q_proj = Linear(d, n * h, logical_axes=("embed", "heads"), **kw)
    self.k_proj = Linear(d, k * h, logical_axes=("embed", "kv_heads"), **kw)
    self.v_proj = Linear(d, k * h, logical_axes=("embed", "kv_heads"), **kw)
    self.o_proj = Linear(n * h, d, logical_axes=("heads", "embed"), **kw)
    norm_kw = {
      "eps": cfg.rms_norm_eps,
      "logical_axes": ("head_dim",),
      "stack": stack,
      "dtype": dtype,
    }
    self.q_norm = RMSNorm(h, param_dtype=param_dtype, **norm_kw)
    self.k_norm = RMSNorm(h, param_dtype=param_dtype, **norm_kw)
    self.num_heads, self.num_kv_heads = n, k

  def __call__(
    self,
    x_BTD: Float[Array, "B T D"],
    cos: Float[Array, "B T H"],
    sin: Float[Array, "B T H"],
    key_mask_BS: Bool[Array, "B S"],
    query_slot_T: Int[Array, " T"],
    kv_cache: tuple[Array, Array] | None = None,
    write_index: Int[Array, ""] | None = None,
  ) -> tuple[Float[Array, "B T D"], tuple[Array, Array] | None]:
    """Attention over this call's keys, or over a cache after writing them into it.

    Args:
      x_BTD: normed hidden states.
      cos, sin: rotary tables for the T query positions.
      key_mask_BS: keys that hold real tokens (S = T without a cache, the cache
        length with one).
      query_slot_T: key slot of each query; it sees slots up to its own (causal).
      kv_cache: (k, v) [B, S, K, H] of this layer, or None.
      write_index: slot where this call's T keys are written (with kv_cache).

    Returns:
      The layer output [B, T, D] and the updated (k, v) cache (None without one).
    """
    q_BTNH = split_heads(self.q_proj(x_BTD), self.num_heads)
    k_BTKH = split_heads(self.k_proj(x_BTD), self.num_kv_heads)
    v_BTKH = split_heads(self.v_proj(x_BTD), self.num_kv_heads)
    q_BTNH = constrain(apply_rope(self.q_norm(q_BTNH), cos, sin), _BTNH)
    k_BTKH = constrain(apply_rope(self.k_norm(k_BTKH), cos, sin), _BSKH)
    v_BTKH = constrain(v_BTKH, _BSKH)
    if kv_cache is None:
      k_BSKH, v_BSKH, new_cache = k_BTKH, v_BTKH, None
    else:
      k_cache, v_cache = kv_cache
      start = (0, write_index, 0, 0)
      k_BSKH = jax.lax.dynamic_update_slice(k_cache, k_BTKH.astype(k_cache.dtype), start)
      v_BSKH = jax.lax.dynamic_update_slice(v_cache, v_BTKH.astype(v_cache.dtype), start)
      new_cache = (k_BSKH, v_BSKH)
      k_BSKH, v_BSKH = k_BSKH.astype(q_BTNH.dtype), v_BSKH.astype(q_BTNH.dtype)
    out_BTNH = dot_product_attention(q_BTNH, k_BSKH, v_BSKH, key_mask_BS, query_slot_T)
    return self.o_proj(merge_heads(out_BTNH)), new_cache
