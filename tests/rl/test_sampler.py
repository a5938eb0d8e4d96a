"""Sampler machinery on the stand-in policy: exactness, stopping, groups, sharding, compiles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crpo_jax import sharding
from crpo_jax.rl.sampler import SamplingConfig, generate, make_sampler
from crpo_jax.rl.sampling_ops import token_logprobs
from tests.rl.test_sampler_standin import CONFIG, MARKER, StandinLM, init_cache
from tests.tolerance import assert_close

PAD = CONFIG.pad_token_id
NO_STOP = (CONFIG.text.vocab_size + 5,)  # an id the model can never emit


def _prompts():
  """A left-padded batch of three prompts of different lengths, one with a marker."""
  ids = np.array(
    [[PAD, PAD, PAD, 5, 9, 11], [4, 8, MARKER, 2, 6, 10], [PAD, 12, 13, 14, 15, 16]], np.int32
  )
  mask = (np.arange(6)[None] >= np.array([[3], [0], [1]])).astype(np.int32)
  return {"input_ids": ids, "attention_mask": mask}


def _run(model, batch, **kw):
  kw.setdefault("eos_ids", NO_STOP)
  return generate(model, batch, init_cache=init_cache, **kw)


def _full_logits(model, batch, out, num_samples):
  """Teacher-forced logits over [prompt | completion] for every output row."""
  ids = np.repeat(batch["input_ids"], num_samples, 0)
  mask = np.repeat(batch["attention_mask"], num_samples, 0)
  seq = jnp.concatenate([ids, out.tokens], 1)
  full_mask = jnp.concatenate([mask, out.mask.astype(mask.dtype)], 1)
  L = ids.shape[1]
  return model(seq, full_mask)[:, L - 1 : -1]


def test_greedy_equals_uncached_greedy_loop():
  model, batch = StandinLM(), _prompts()
  out = _run(model, batch, max_new_tokens=7)
  # Greedy by repeated full forwards, no cache: a fixed [B, 6 + 7] buffer whose
  # unfilled tail is masked out (causal, so it cannot affect earlier positions).
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda st, i, m: nnx.merge(graphdef, st)(i, m))
  ids = np.concatenate([batch["input_ids"], np.zeros((3, 7), np.int32)], 1)
  mask = np.concatenate([batch["attention_mask"], np.zeros((3, 7), np.int32)], 1)
  for t in range(7):
    ids[:, 6 + t] = np.argmax(np.asarray(forward(state, ids, mask))[:, 5 + t], -1)
    mask[:, 6 + t] = 1
  np.testing.assert_array_equal(out.tokens, ids[:, 6:])
  assert out.tokens.dtype == jnp.int32 and out.logprobs.dtype == jnp.float32
  np.testing.assert_array_equal(out.lengths, 7)
  assert out.mask.all()


@pytest.mark.parametrize(
  "kw", [{}, {"temperature": 0.7, "top_k": 9, "num_samples": 2}, {"temperature": 1.3, "top_p": 0.8}]
)
def test_logprobs_equal_teacher_forced(kw):
  model, batch = StandinLM(), _prompts()
  out = _run(model, batch, max_new_tokens=6, seed=3, eos_ids=(4, 5), **kw)
  logits = _full_logits(model, batch, out, kw.get("num_samples", 1))
  expected = token_logprobs(logits / kw.get("temperature", 1.0), out.tokens)
  m = np.asarray(out.mask)
  assert_close(np.asarray(out.logprobs)[m], np.asarray(expected)[m], rtol=5e-6, err_msg="logprobs")
  assert not np.asarray(out.logprobs)[~m].any()


def test_rows_stop_independently():
  model, batch = StandinLM(), _prompts()
  free = np.asarray(_run(model, batch, max_new_tokens=8).tokens)
  stop = int(free[1, 2])  # row 1 stops at step 2 (or earlier if it appears before)
  out = _run(model, batch, max_new_tokens=8, eos_ids=(stop,))
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  for b in range(3):
    hits = np.flatnonzero(free[b] == stop)
    n = hits[0] + 1 if hits.size else 8
    assert lengths[b] == n
    np.testing.assert_array_equal(tokens[b, :n], free[b, :n])
    np.testing.assert_array_equal(tokens[b, n:], PAD)
    np.testing.assert_array_equal(np.asarray(out.mask)[b], np.arange(8) < n)
  assert len(set(lengths.tolist())) > 1, "choose a stop token that separates the rows"


def test_groups_share_prefill_prompt_major():
  model, batch = StandinLM(), _prompts()
  one = _run(model, batch, max_new_tokens=5)
  three = _run(model, batch, max_new_tokens=5, num_samples=3)
  np.testing.assert_array_equal(three.tokens, np.repeat(one.tokens, 3, 0))
  sampled = np.asarray(_run(model, batch, max_new_tokens=5, num_samples=4, temperature=1.0).tokens)
  assert sampled.shape == (12, 5)
  for b in range(3):  # samples of one prompt differ (a fixed seed; 4 draws of 5 tokens)
    assert len({tuple(r) for r in sampled[4 * b : 4 * b + 4]}) > 1
  again = np.asarray(_run(model, batch, max_new_tokens=5, num_samples=4, temperature=1.0).tokens)
  np.testing.assert_array_equal(sampled, again)


def test_pixel_values_reach_the_model():
  model, batch = StandinLM(), _prompts()
  pix = dict(
    batch, pixel_values=np.full((8, 6), 2.0, np.float32), image_grid_thw=np.array([[1, 2, 4]])
  )
  a = _run(model, batch, max_new_tokens=4)
  b = _run(model, pix, max_new_tokens=4)
  assert not np.allclose(a.logprobs[1], b.logprobs[1])  # row 1 holds the marker
  assert_close(a.logprobs[0], b.logprobs[0], rtol=1e-6, err_msg="row 0")


def test_sharded_equals_unsharded():
  model = StandinLM()
  batch = _prompts()
  batch = {k: np.concatenate([v, v[::-1]]) for k, v in batch.items()}  # 6 prompts
  cfg = SamplingConfig(max_new_tokens=6, num_samples=2, temperature=1.0, top_k=20, eos_ids=(4,))
  graphdef, state = nnx.split(model)
  rng = jax.random.key(7)
  ref = make_sampler(graphdef, CONFIG, cfg, init_cache=init_cache)(state, batch, rng)
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  sharded_state = jax.device_put(state, sharding.param_shardings(state, mesh))
  fn = make_sampler(graphdef, CONFIG, cfg, mesh=mesh, init_cache=init_cache)
  out = fn(sharded_state, batch, rng)
  np.testing.assert_array_equal(out.tokens, ref.tokens)
  np.testing.assert_array_equal(out.lengths, ref.lengths)
  assert_close(out.logprobs, ref.logprobs, rtol=5e-6, err_msg="sharded logprobs")
  assert len(out.tokens.sharding.device_set) == 8
  # 12 rows over fsdp=4 (data=1): rows are split, not replicated.
  assert out.tokens.sharding.spec[0] == ("data", "fsdp") or out.tokens.sharding.spec[0] == "fsdp"


def test_compilations_bounded_by_buckets():
  """Varied prompt lengths, patch counts and batch sizes compile one shape per bucket."""
  from crpo_jax.rl import sampler as sampler_mod

  model = StandinLM()
  rng = np.random.default_rng(0)
  graphdef, _ = nnx.split(model)
  cfg = SamplingConfig(max_new_tokens=3, num_samples=2, eos_ids=NO_STOP, pad_id=PAD)
  cases = [(2, 5, 8), (2, 17, 40), (2, 60, 200), (2, 70, 300), (2, 9, 16), (2, 100, 500)]
  cases += [(5, 20, 40), (6, 50, 100), (2, 33, 64)]
  counts = []
  for rows, length, patches in cases:
    ids = rng.integers(1, 60, (rows, length)).astype(np.int32)
    ids[0, : length // 2] = PAD
    mask = (ids != PAD).astype(np.int32)
    batch = {
      "input_ids": ids,
      "attention_mask": mask,
      "pixel_values": rng.normal(size=(patches, 6)).astype(np.float32),
      "image_grid_thw": np.array([[1, 2, patches // 2]]),
    }
    out = _run(model, batch, max_new_tokens=3, num_samples=2)
    assert out.tokens.shape == (rows * 2, 3)  # filler rows are dropped
    counts.append(sampler_mod._cached_sampler(graphdef, CONFIG, cfg, init_cache).num_traces)
  # Shapes (rows, length, patches) after bucketing: (2, 64, 256) for lengths <= 64
  # and <= 256 patches, (2, 128, 512) for (70, 300) and (100, 500), and (6, 64, 256)
  # for 5 and 6 rows: 9 calls, 3 compilations.
  assert counts == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_prefill_runs_once_per_prompt_not_per_sample():
  """Group-shared prefill: the prompt is encoded for its P rows, never for P x G."""
  seen = []

  class CountingLM(StandinLM):
    def prefill(self, input_ids, attention_mask, cache, **kw):
      seen.append(input_ids.shape[0])  # runs at trace time: one entry per traced call
      return super().prefill(input_ids, attention_mask, cache, **kw)

  batch = _prompts()
  out = _run(CountingLM(), batch, max_new_tokens=3, num_samples=4, temperature=1.0)
  assert out.tokens.shape[0] == 3 * 4
  assert seen == [3], seen  # the 3 prompts (length bucketed), not 12 rows
