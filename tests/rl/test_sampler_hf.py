"""The sampler on the real tiny Qwen3-VL: parity with transformers' generate.

One random-init HF model (tests/model/hf_reference.py) is saved and loaded with
`load_hf` in float32. Prompts: text only, and a left-padded batch of three rows
(text, image, video) that exercises per-row MRoPE offsets and DeepStack.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from crpo_jax import bucketing, sharding
from crpo_jax.model.cache import init_cache
from crpo_jax.model.config import get_preset
from crpo_jax.model.hf_io import load_hf
from crpo_jax.rl.sampler import SamplingConfig, generate, make_sampler
from crpo_jax.rl.sampling_ops import token_logprobs
from tests.model import hf_reference as ref
from tests.tolerance import assert_close

CFG = get_preset("tiny")
EOS = (CFG.eos_token_id, 151643)
PAD = CFG.pad_token_id
T = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  hf = ref.build_hf_model(CFG, seed=1)
  path = tmp_path_factory.mktemp("tiny_hf")
  ref.save_hf_model(hf, path)
  return hf, load_hf(path, dtype=jnp.float32)


def _three_rows() -> dict[str, np.ndarray]:
  """Text, image and video prompts of different lengths, left-padded together."""
  text, mixed = ref.text_inputs(seed=2), ref.mixed_batch_inputs(seed=3)
  rows = [
    r[m == 1] for src in (text, mixed) for r, m in zip(src["input_ids"], src["attention_mask"])
  ]
  length = max(len(r) for r in rows)
  ids = np.full((3, length), PAD, np.int64)
  mask = np.zeros((3, length), np.int64)
  for b, r in enumerate(rows):
    ids[b, length - len(r) :], mask[b, length - len(r) :] = r, 1
  out = {
    k: mixed[k] for k in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")
  }
  types = np.where(ids == CFG.image_token_id, 1, np.where(ids == CFG.video_token_id, 2, 0))
  return dict(out, input_ids=ids, attention_mask=mask, mm_token_type_ids=types * mask)


@torch.no_grad()
def _hf_greedy(hf, inputs) -> np.ndarray:
  out = hf.generate(
    **ref.to_torch(inputs),
    max_new_tokens=T,
    do_sample=False,
    eos_token_id=list(EOS),
    pad_token_id=PAD,
  )[:, inputs["input_ids"].shape[1] :].numpy()
  return np.pad(out, ((0, 0), (0, T - out.shape[1])), constant_values=PAD)


@pytest.mark.parametrize("which", ["text", "text_image_video"])
def test_greedy_matches_transformers(models, which):
  hf, model = models
  inputs = ref.text_inputs(seed=4) if which == "text" else _three_rows()
  # The text case passes torch tensors, as a HF processor returns them.
  ours = generate(model, ref.to_torch(inputs) if which == "text" else inputs, max_new_tokens=T)
  expected = _hf_greedy(hf, inputs)
  np.testing.assert_array_equal(np.asarray(ours.tokens), expected)
  stops = np.isin(expected, EOS)
  want_len = np.where(stops.any(1), stops.argmax(1) + 1, T)
  np.testing.assert_array_equal(ours.lengths, want_len)


def test_sampled_logprobs_equal_teacher_forced_forward(models):
  """Float32: sampler log-probs (cached decode) equal a full forward's (1e-5 abs + rel)."""
  _, model = models
  inputs = _three_rows()
  G, temp = 2, 0.8
  out = generate(model, inputs, max_new_tokens=T, num_samples=G, temperature=temp, top_k=40, seed=5)
  batch = bucketing.pad_batch(inputs, pad_id=PAD)
  ids = np.repeat(batch["input_ids"], G, 0)
  mask = np.repeat(batch["attention_mask"], G, 0)
  seq = np.concatenate([ids, np.asarray(out.tokens)], 1)
  seq_mask = np.concatenate([mask, np.asarray(out.mask, mask.dtype)], 1)
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda st, s, m, v: nnx.merge(graphdef, st)(s, m, **v))
  logits = forward(state, seq, seq_mask, _repeat_visual(inputs, G))[:, ids.shape[1] - 1 : -1]
  expected = np.asarray(token_logprobs(logits / temp, out.tokens))
  m = np.asarray(out.mask)
  assert_close(np.asarray(out.logprobs)[m], expected[m], rtol=5e-6, err_msg="logprobs")
  assert len({tuple(r) for r in np.asarray(out.tokens)}) == 6  # samples differ


def _repeat_visual(inputs, G):
  """Visual inputs for the batch whose prompts are each repeated G times.

  Only row 1 has an image and only row 2 a video, so in row-major placeholder
  order each of the two items simply appears G times.
  """
  return {
    "pixel_values": np.tile(inputs["pixel_values"], (G, 1)),
    "image_grid_thw": np.repeat(inputs["image_grid_thw"], G, 0),
    "pixel_values_videos": np.tile(inputs["pixel_values_videos"], (G, 1)),
    "video_grid_thw": np.repeat(inputs["video_grid_thw"], G, 0),
  }


def test_sharded_equals_unsharded(models):
  _, model = models
  batch = bucketing.pad_batch(_three_rows(), pad_id=PAD)
  cfg = SamplingConfig(max_new_tokens=6, num_samples=4, temperature=1.0, eos_ids=EOS, pad_id=PAD)
  graphdef, state = nnx.split(model)
  rng = jax.random.key(11)
  ref_out = make_sampler(graphdef, CFG, cfg, init_cache=init_cache)(state, batch, rng)
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  placed = jax.device_put(state, sharding.param_shardings(state, mesh))
  out = make_sampler(graphdef, CFG, cfg, mesh=mesh)(placed, batch, rng)
  np.testing.assert_array_equal(out.tokens, ref_out.tokens)
  np.testing.assert_array_equal(out.lengths, ref_out.lengths)
  assert_close(out.logprobs, ref_out.logprobs, rtol=5e-6, err_msg="sharded logprobs")
  assert len(out.tokens.sharding.device_set) == 8


def test_cached_decode_logits_equal_full_forward(models):
  """Prefill + decode_step logits equal a full forward over the same sequence."""
  _, model = models
  batch = bucketing.pad_batch(_three_rows(), pad_id=PAD)
  ids, mask = batch["input_ids"], batch["attention_mask"]
  visual = {
    k: batch[k] for k in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")
  }
  steps = 3
  graphdef, state = nnx.split(model)

  @jax.jit
  def cached_and_full(state):
    m = nnx.merge(graphdef, state)
    cache = init_cache(CFG.text, ids.shape[0], ids.shape[1] + steps, jnp.float32)
    logits, cache = m.prefill(ids, mask, cache, **visual)
    seen, fed = [logits], []
    for _ in range(steps):
      tok = jnp.argmax(seen[-1], -1).astype(jnp.int32)
      fed.append(tok)
      logits, cache = m.decode_step(tok, cache)
      seen.append(logits)
    seq = jnp.concatenate([ids, jnp.stack(fed, 1)], 1)
    seq_mask = jnp.concatenate([mask, jnp.ones((ids.shape[0], steps), jnp.int32)], 1)
    full = m(seq, seq_mask, **visual)[:, ids.shape[1] - 1 :]
    return jnp.stack(seen, 1), full

  cached, full = cached_and_full(state)
  assert float(jnp.abs(full).max()) > 1.0  # logits of order 10: the check is not vacuous
  assert_close(cached, full, rtol=1e-5, err_msg="cached vs full")


def test_bfloat16_model_samples_with_a_bfloat16_cache(models, tmp_path):
  hf, _ = models
  ref.save_hf_model(hf, tmp_path)
  model = load_hf(tmp_path, dtype=jnp.bfloat16)
  out = generate(model, _three_rows(), max_new_tokens=4, num_samples=2, temperature=1.0)
  assert out.tokens.shape == (6, 4) and out.logprobs.dtype == jnp.float32
  lp = np.asarray(out.logprobs)[np.asarray(out.mask)]
  assert np.isfinite(lp).all() and (lp <= 0).all() and (lp < 0).any()
