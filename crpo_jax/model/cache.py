"""KV cache of the text decoder for prefill + token-by-token decoding.

One pytree for all layers, so a sampler can carry it through `jax.lax.while_loop`
and donate it. Slots are shared by all rows: a left-padded prompt of length L
fills slots [0, L) (padding slots have `key_mask` False), then each decode step
writes one slot at `index` for every row.

Positions follow the transformers 5.x convention (reference/qwen3vl.md section 4):
the first generated token of row b gets MRoPE position max prompt position + 1 on
all three rows, and each step adds one.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from crpo_jax.model.array_types import Array, Bool, Float, Int
from crpo_jax.model.config import TextConfig
from crpo_jax.sharding import constrain

CACHE_AXES = ("layers", "batch", "length", "kv_heads", "head_dim")


@struct.dataclass
class Cache:
  """Decoder KV cache.

  Attributes:
    k, v: [L_layers, B, S, K, H] keys (after RoPE) and values, compute dtype.
    key_mask: [B, S] True where a slot holds a real token.
    index: [] next slot to write (same for every row).
    next_position: [B] MRoPE position of the next token (all 3 rows equal).
  """

  k: Float[Array, "L B S K H"]
  v: Float[Array, "L B S K H"]
  key_mask: Bool[Array, "B S"]
  index: Int[Array, ""]
  next_position: Int[Array, " B"]

  @property
  def batch_size(self) -> int:
    return self.k.shape[1]

  @property
  def max_len(self) -> int:
    return self.k.shape[2]

  def repeat(self, n: int) -> Cache:
    """Each row repeated n times (row b -> rows b*n .. b*n+n-1), for group sampling."""
    if n < 1:
      raise ValueError(f"Cache.repeat: n must be >= 1, got {n}")
    return Cache(
      k=jnp.repeat(self.k, n, axis=1),
      v=jnp.repeat(self.v, n, axis=1),
      key_mask=jnp.repeat(self.key_mask, n, axis=0),
      index=self.index,
      next_position=jnp.repeat(self.next_position, n, axis=0),
    )

  def constrained(self) -> Cache:
    """The same cache with sharding constraints (no-op without an active mesh)."""
    return self.replace(k=constrain(self.k, CACHE_AXES), v=constrain(self.v, CACHE_AXES))


def init_cache(text_cfg: TextConfig, batch: int, max_len: int, dtype=jnp.float32) -> Cache:
  """An empty cache for `batch` rows of at most `max_len` tokens (prompt + generation).

  Writing past `max_len` cannot be detected inside jit (the write would clamp to
  the last slot), so callers size the cache for prompt length + max new tokens.
  """
  if batch < 1 or max_len < 1:
    raise ValueError(f"init_cache: batch {batch} and max_len {max_len} must be positive")
  shape = (text_cfg.num_layers, batch, max_len, text_cfg.num_kv_heads, text_cfg.head_dim)
  return Cache(
    k=jnp.zeros(shape, dtype),
    v=jnp.zeros(shape, dtype),
    key_mask=jnp.zeros((batch, max_len), bool),
    index=jnp.zeros((), jnp.int32),
    next_position=jnp.zeros((batch,), jnp.int32),
  )
