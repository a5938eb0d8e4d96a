"""Prefill + decode_step with the KV cache equal a full forward over the same tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crpo_jax.model.cache import Cache, init_cache
from crpo_jax.model.config import get_preset
from crpo_jax.model.positions import get_rope_index
from crpo_jax.model.vlm import Qwen3VL
from tests.model import hf_reference as ref
from tests.tolerance import assert_close

CFG = get_preset("tiny")
STEPS = 3
SLACK = 2  # unwritten slots after the last decode step must be ignored
VISUAL = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


@pytest.fixture(scope="module")
def fns():
  """Jitted pure functions of (state, ...) over a model with non-trivial weights."""
  model = Qwen3VL(CFG, rngs=nnx.Rngs(0))
  ref.copy_hf_weights(model, ref.build_hf_model(CFG, seed=1))
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, batch):
    return nnx.merge(graphdef, state)(**batch)

  @jax.jit
  def prefill(state, batch, cache):
    visual = {k: batch[k] for k in VISUAL if k in batch}
    m = nnx.merge(graphdef, state)
    return m.prefill(batch["input_ids"], batch["attention_mask"], cache, **visual)

  @jax.jit
  def decode(state, tokens, cache):
    return nnx.merge(graphdef, state).decode_step(tokens, cache)

  return {
    "forward": lambda b: np.asarray(forward(state, b)),
    "prefill": lambda b, c: prefill(state, b, c),
    "decode": lambda t, c: decode(state, t, c),
  }


def _repeat_batch(inputs: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
  """Rows repeated n times in place; pixels repeated per item (row-major order)."""
  out = {k: np.repeat(inputs[k], n, axis=0) for k in ("input_ids", "attention_mask")}
  for pix, grid in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
    if pix not in inputs:
      continue
    sizes = np.prod(inputs[grid], axis=-1)  # pixel rows per item
    chunks = np.split(inputs[pix], np.cumsum(sizes)[:-1])
    out[pix] = np.concatenate([c for c in chunks for _ in range(n)])
    out[grid] = np.repeat(inputs[grid], n, axis=0)
  return out


def test_prefill_repeat_decode_equals_full_forward(fns):
  """Left-padded image + video prompts, group-shared prefill, then 3 decode steps."""
  inputs = ref.mixed_batch_inputs(seed=7)
  batch, length = inputs["input_ids"].shape
  cache = init_cache(CFG.text, batch, length + STEPS + SLACK, jnp.float32)
  # Garbage in never-written slots must not leak into attention.
  noise = jax.random.normal(jax.random.key(0), cache.k.shape) * 100.0
  cache = cache.replace(k=noise, v=-noise)
  last, cache = fns["prefill"](inputs, cache)

  full_prompt = fns["forward"](inputs)
  assert_close(np.asarray(last), full_prompt[:, -1], rtol=5e-6, err_msg="prefill")
  positions, _ = get_rope_index(
    inputs["input_ids"], inputs["attention_mask"], inputs["image_grid_thw"],
    inputs["video_grid_thw"], CFG,
  )  # fmt: skip
  np.testing.assert_array_equal(np.asarray(cache.next_position), positions.max(axis=(0, 2)) + 1)
  assert int(cache.index) == length
  np.testing.assert_array_equal(np.asarray(cache.key_mask[:, :length]), inputs["attention_mask"])

  group = 2
  cache = cache.repeat(group)
  tokens = np.random.default_rng(0).integers(10, 5000, size=(batch * group, STEPS))
  step_logits = []
  for i in range(STEPS):
    logits, cache = fns["decode"](jnp.asarray(tokens[:, i], jnp.int32), cache)
    step_logits.append(np.asarray(logits))
  assert int(cache.index) == length + STEPS

  # The same sequences in one full forward: generated tokens continue as text.
  rep = _repeat_batch(inputs, group)
  rep["input_ids"] = np.concatenate([rep["input_ids"], tokens], axis=1)
  rep["attention_mask"] = np.concatenate([rep["attention_mask"], np.ones_like(tokens)], axis=1)
  full = fns["forward"](rep)
  assert np.abs(full).max() > 5.0
  # The full forward encodes twice the pixels (a different vision-tower shape), so
  # float32 rounding differs a little more than for the prompt.
  for i in range(STEPS):
    assert_close(step_logits[i], full[:, length + i], rtol=1e-5, err_msg=f"decode step {i}")
  # Copies of one prompt given different tokens really diverge.
  assert np.abs(step_logits[-1][0] - step_logits[-1][1]).max() > 1e-2


def test_cache_repeat_and_init():
  cache = init_cache(CFG.text, 2, 5, jnp.bfloat16)
  assert cache.k.shape == (CFG.text.num_layers, 2, 5, CFG.text.num_kv_heads, CFG.text.head_dim)
  assert cache.k.dtype == jnp.bfloat16 and cache.key_mask.dtype == jnp.bool_
  cache = cache.replace(
    key_mask=jnp.asarray([[1, 1, 0, 0, 0], [0, 1, 0, 0, 0]], bool),
    next_position=jnp.asarray([7, 9], jnp.int32),
    k=cache.k.at[:, 1].set(1.0),
  )
  rep = cache.repeat(3)
  assert isinstance(rep, Cache) and rep.batch_size == 6 and rep.max_len == 5
  np.testing.assert_array_equal(np.asarray(rep.next_position), [7, 7, 7, 9, 9, 9])
  np.testing.assert_array_equal(np.asarray(rep.key_mask[3:]), np.asarray(cache.key_mask)[[1, 1, 1]])
  assert float(rep.k[:, :3].sum()) == 0.0 and bool((rep.k[:, 3:] == 1.0).all())
  with pytest.raises(ValueError, match="batch"):
    init_cache(CFG.text, 0, 4)
