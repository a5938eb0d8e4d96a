"""Full-model logits against transformers 5.23 Qwen3VLForConditionalGeneration (eager).

Tiny random-init reference (weights re-randomised so logits are of order 10), the
same weights in crpo_jax, float32: max abs difference < 1e-4 at every attended
position. One jit compile per input shape, through `nnx.split` / `nnx.merge`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crpo_jax.model.config import get_preset
from crpo_jax.model.vlm import Qwen3VL
from tests.model import hf_reference as ref
from tests.tolerance import assert_close

CFG = get_preset("tiny")
# Ours (XLA) vs transformers (torch eager), float32: the same sums in other orders
# through 3 text layers, the vision tower and DeepStack. The error scales with the
# logits' magnitude (up to ~10 here); measured below 1e-5 of that scale.
RTOL = 2e-5


def load_ours(hf_model, cfg, tmp_dir, dtype=jnp.float32):
  """Our model with the reference weights: through hf_io.load_hf when it exists."""
  try:
    from crpo_jax.model.hf_io import load_hf
  except ImportError:
    model = Qwen3VL(cfg, dtype=dtype, rngs=nnx.Rngs(0))
    ref.copy_hf_weights(model, hf_model)
    return model
  ref.save_hf_model(hf_model, tmp_dir)
  return load_hf(tmp_dir, dtype=dtype, param_dtype=jnp.float32)


def jitted(model):
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, batch):
    return nnx.merge(graphdef, state)(**batch)

  return lambda batch: np.asarray(forward(state, batch))


@pytest.fixture(scope="module")
def hf_model():
  return ref.build_hf_model(CFG, seed=0)


@pytest.fixture(scope="module")
def model(hf_model, tmp_path_factory):
  return load_ours(hf_model, CFG, tmp_path_factory.mktemp("tiny_hf"))


@pytest.fixture(scope="module")
def forward(model):
  return jitted(model)


CASES = {
  "text": ref.text_inputs,
  "image": ref.image_inputs,
  "video": ref.video_inputs,
  "mixed_batch": ref.mixed_batch_inputs,
}


def _assert_close(got, want, mask, rtol=RTOL):
  assert got.dtype == np.float32 and got.shape == want.shape
  assert np.abs(want).max() > 5.0, "reference logits are too small to make the test meaningful"
  mask = mask.astype(bool)
  assert_close(got[mask], want[mask], rtol=rtol, err_msg="logits vs transformers")


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_hf(case, hf_model, forward):
  inputs = CASES[case](seed=1)
  _assert_close(forward(inputs), ref.hf_logits(hf_model, inputs), inputs["attention_mask"])


def test_jax_inputs_and_hidden_states(hf_model, model, forward):
  """jax arrays work like numpy; hidden_states @ output_kernel reproduces the logits."""
  inputs = ref.mixed_batch_inputs(seed=2)
  batch = {k: jnp.asarray(v) for k, v in inputs.items()}
  logits = forward(batch)
  _assert_close(logits, ref.hf_logits(hf_model, inputs), inputs["attention_mask"])
  graphdef, state = nnx.split(model)

  @jax.jit
  def via_hidden(state, batch):
    m = nnx.merge(graphdef, state)
    return jnp.einsum("BTD,DV->BTV", m.hidden_states(**batch), m.output_kernel())

  assert_close(np.asarray(via_hidden(state, batch)), logits, rtol=5e-6, err_msg="via hidden")


def test_tied_embeddings_match_hf(tmp_path):
  """2B/4B tie the head to the embedding: no lm_head, output kernel = embed.T."""
  cfg = dataclasses.replace(CFG, text=dataclasses.replace(CFG.text, tie_word_embeddings=True))
  hf = ref.build_hf_model(cfg, seed=4)
  model = load_ours(hf, cfg, tmp_path)
  assert model.lm_head is None
  inputs = ref.image_inputs(seed=4, cfg=cfg)
  _assert_close(jitted(model)(inputs), ref.hf_logits(hf, inputs), inputs["attention_mask"])


def test_bfloat16_within_noise_of_float32(model, forward):
  """bf16 compute, same fp32-stored weights: differences of bf16 rounding size only.

  Measured on this batch (logits std 3, max ~17): mean abs diff 0.027, max 0.27,
  argmax agreement 95 %. Thresholds leave ~4x margin; a real bug (wrong cast, bf16
  softmax, a missed norm upcast) moves the logits by O(1) everywhere.
  """
  inputs = ref.mixed_batch_inputs(seed=3)
  fp32 = forward(inputs)
  bf16_model = Qwen3VL(CFG, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(1))
  nnx.update(bf16_model, nnx.state(model))
  bf16 = jitted(bf16_model)(inputs)
  assert bf16.dtype == np.float32
  mask = inputs["attention_mask"].astype(bool)
  diff = np.abs(bf16 - fp32)[mask]
  agree = (bf16.argmax(-1) == fp32.argmax(-1))[mask].mean()
  assert diff.mean() < 0.1, diff.mean()
  assert agree >= 0.9, agree
  assert diff.mean() > 0, "bf16 run was not actually bf16"


def test_placeholder_count_mismatch_is_a_clear_error(model):
  inputs = ref.image_inputs(seed=0)
  inputs["image_grid_thw"] = np.asarray([[1, 6, 12]])
  with pytest.raises(ValueError, match="placeholder tokens"):
    model(**inputs)
