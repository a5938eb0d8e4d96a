"""A tiny stand-in policy with the Qwen3VL prefill/decode contract, and its own checks.

The sampler's machinery (group-shared prefill, while-loop decode, stopping,
sharding, bucketing) is tested against this one-layer causal decoder, which
implements the same contract as `crpo_jax.model.vlm.Qwen3VL`: `__call__` full
forward, `prefill` of left-padded prompts into a static cache, `decode_step`, and
a cache with `repeat`. Pixel values shift the embeddings of one marker token so
that visual inputs change the logits. Parity with transformers is checked on the
real model in test_sampler_hf.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from crpo_jax.model.config import Qwen3VLConfig, TextConfig, VisionConfig

VOCAB = 61
MARKER = 7  # the stand-in's "visual" token: pixel values shift its embedding

CONFIG = Qwen3VLConfig(
  text=TextConfig(
    vocab_size=VOCAB,
    hidden_size=24,
    intermediate_size=40,
    num_layers=1,
    num_heads=3,
    num_kv_heads=1,
    head_dim=8,
    mrope_section=(2, 1, 1),
    rope_theta=100.0,
  ),
  vision=VisionConfig(
    depth=1,
    hidden_size=8,
    intermediate_size=8,
    num_heads=1,
    out_hidden_size=24,
    deepstack_visual_indexes=(),
  ),
  eos_token_id=3,
  pad_token_id=0,
)


@struct.dataclass
class StandinCache:
  k: jax.Array  # [1, B, S, K, H]
  v: jax.Array
  key_mask: jax.Array  # bool [B, S]
  index: jax.Array  # int32 []
  next_position: jax.Array  # int32 [B]

  def repeat(self, n: int) -> StandinCache:
    return StandinCache(
      k=jnp.repeat(self.k, n, axis=1),
      v=jnp.repeat(self.v, n, axis=1),
      key_mask=jnp.repeat(self.key_mask, n, axis=0),
      index=self.index,
      next_position=jnp.repeat(self.next_position, n, axis=0),
    )


def init_cache(text: TextConfig, batch: int, max_len: int, dtype) -> StandinCache:
  shape = (1, batch, max_len, text.num_kv_heads, text.head_dim)
  return StandinCache(
    k=jnp.zeros(shape, dtype),
    v=jnp.zeros(shape, dtype),
    key_mask=jnp.zeros((batch, max_len), bool),
    index=jnp.int32(0),
    next_position=jnp.zeros((batch,), jnp.int32),
  )


def _rope(x, pos, theta):
  half = x.shape[-1] // 2
  freq = 1.0 / theta ** (jnp.arange(half, dtype=jnp.float32) / half)
  ang = pos[..., None, None].astype(jnp.float32) * freq  # [B, T, 1, half]
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate(
    [x1 * jnp.cos(ang) - x2 * jnp.sin(ang), x2 * jnp.cos(ang) + x1 * jnp.sin(ang)], -1
  )


class StandinLM(nnx.Module):
  """One attention layer, GQA, 1-D rotary positions counted over real tokens."""

  def __init__(self, config: Qwen3VLConfig = CONFIG, *, scale: float = 3.0, seed: int = 0):
    self.config = config
    t = config.text
    k = iter(jax.random.split(jax.random.key(seed), 8))
    D, N, K, H = t.hidden_size, t.num_heads, t.num_kv_heads, t.head_dim

    def p(shape, names, s=1.0):
      w = s * jax.random.normal(next(k), shape) / np.sqrt(shape[0])
      return nnx.Param(w, logical_axes=names)

    self.embed = p((t.vocab_size, D), ("vocab", "embed"), np.sqrt(t.vocab_size))
    self.wq = p((D, N, H), ("embed", "heads", "head_dim"))
    self.wk = p((D, K, H), ("embed", "kv_heads", "head_dim"))
    self.wv = p((D, K, H), ("embed", "kv_heads", "head_dim"))
    self.wo = p((N, H, D), ("heads", "head_dim", "embed"), 1 / np.sqrt(H))
    self.visual = p((1, D), (None, "embed"))
    self.out = p((D, t.vocab_size), ("embed", "vocab"), scale)

  def _embed(self, ids, pixel_values=None):
    x = self.embed[...][ids]
    if pixel_values is not None:
      shift = jnp.tanh(jnp.mean(pixel_values)) * self.visual[...][0]
      x = x + jnp.where((ids == MARKER)[..., None], shift, 0.0)
    return x

  def _attend(self, x, pos, k_all, v_all, allowed):
    t = self.config.text
    q = _rope(jnp.einsum("BTD,DNH->BTNH", x, self.wq[...]), pos, t.rope_theta)
    q = q.reshape(*q.shape[:2], t.num_kv_heads, -1, t.head_dim)
    s = jnp.einsum("BTKGH,BSKH->BKGTS", q, k_all) / np.sqrt(t.head_dim)
    s = jnp.where(allowed[:, None, None], s, -1e30)
    o = jnp.einsum("BKGTS,BSKH->BTKGH", jax.nn.softmax(s, -1), v_all)
    h = x + jnp.einsum("BTNH,NHD->BTD", o.reshape(*o.shape[:2], -1, t.head_dim), self.wo[...])
    return jnp.einsum("BTD,DV->BTV", h, self.out[...]).astype(jnp.float32)

  def _kv(self, x, pos):
    k = _rope(jnp.einsum("BTD,DKH->BTKH", x, self.wk[...]), pos, self.config.text.rope_theta)
    return k, jnp.einsum("BTD,DKH->BTKH", x, self.wv[...])

  def __call__(self, input_ids, attention_mask=None, pixel_values=None, **unused):
    mask = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
    x = self._embed(input_ids, pixel_values)
    pos = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0)
    k, v = self._kv(x, pos)
    L = input_ids.shape[1]
    allowed = jnp.tril(jnp.ones((L, L), bool))[None] & mask[:, None, :].astype(bool)
    return self._attend(x, pos, k, v, allowed)

  def prefill(self, input_ids, attention_mask, cache, pixel_values=None, **unused):
    x = self._embed(input_ids, pixel_values)
    pos = jnp.maximum(jnp.cumsum(attention_mask, -1) - 1, 0)
    k, v = self._kv(x, pos)
    L = input_ids.shape[1]
    cache = cache.replace(
      k=cache.k.at[0, :, :L].set(k.astype(cache.k.dtype)),
      v=cache.v.at[0, :, :L].set(v.astype(cache.v.dtype)),
      key_mask=cache.key_mask.at[:, :L].set(attention_mask.astype(bool)),
      index=jnp.int32(L),
      next_position=pos[:, -1] + 1,
    )
    allowed = jnp.tril(jnp.ones((L, cache.k.shape[2]), bool))[None] & cache.key_mask[:, None, :]
    return self._attend(x, pos, cache.k[0], cache.v[0], allowed)[:, -1], cache

  def decode_step(self, tokens, cache):
    x = self._embed(tokens[:, None])
    pos = cache.next_position[:, None]
    k, v = self._kv(x, pos)
    i = cache.index
    cache = cache.replace(
      k=jax.lax.dynamic_update_slice(cache.k, k[None].astype(cache.k.dtype), (0, 0, i, 0, 0)),
      v=jax.lax.dynamic_update_slice(cache.v, v[None].astype(cache.v.dtype), (0, 0, i, 0, 0)),
      key_mask=cache.key_mask.at[:, i].set(True),
      index=i + 1,
      next_position=cache.next_position + 1,
    )
    logits = self._attend(x, pos, cache.k[0], cache.v[0], cache.key_mask[:, None, :])
    return logits[:, 0], cache


def test_standin_cached_decode_equals_full_forward():
  """The stand-in honours the contract, so sampler tests built on it mean something."""
  model = StandinLM()
  ids = jnp.array([[0, 0, 5, 9, 11], [4, 8, 7, 2, 6]])
  mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
  nxt = jnp.array([13, 17])
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state):
    m = nnx.merge(graphdef, state)
    last, cache = m.prefill(ids, mask, init_cache(CONFIG.text, 2, 6, jnp.float32))
    step, _ = m.decode_step(nxt, cache)
    ones = jnp.ones((2, 1), int)
    full = m(jnp.concatenate([ids, nxt[:, None]], 1), jnp.concatenate([mask, ones], 1))
    return last, step, full, m(ids[:1, 2:], mask[:1, 2:])

  last, step, full, alone = run(state)
  np.testing.assert_allclose(last, full[:, -2], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(step, full[:, -1], atol=1e-5, rtol=1e-5)
  # Left padding does not change the result of the padded row.
  np.testing.assert_allclose(alone[0, -1], last[0], atol=1e-5, rtol=1e-5)
