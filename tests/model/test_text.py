"""Text-decoder pieces against transformers 5.23, HF mapping, full-size shapes."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers.models.qwen3_vl import modeling_qwen3_vl as hf_mod

from crpo_jax.model.attention import dot_product_attention
from crpo_jax.model.config import get_preset
from crpo_jax.model.layers import rms_norm
from crpo_jax.model.rope import inv_freq, mrope_cos_sin
from crpo_jax.model.text import text_hf_params
from crpo_jax.model.vlm import Qwen3VL, hf_params
from tests.model import hf_reference as ref
from tests.tolerance import assert_close

CFG = get_preset("tiny")


def _torch_inv_freq(head_dim: int, theta: float) -> np.ndarray:
  """HF's compute_default_rope_parameters formula, verbatim, in torch."""
  return (1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))).numpy()


@pytest.mark.parametrize(
  ("head_dim", "theta", "max_ulp_mismatches"),
  [(16, 5e6, 0), (20, 1e4, 0), (64, 1e4, 0), (128, 5e6, 1), (128, 1e6, 1), (128, 1e4, 1)],
)
def test_inv_freq_reproduces_torch_bits(head_dim, theta, max_ulp_mismatches):
  """Exact for the tiny and vision configs; at most one 1-ulp miss at head_dim 128.

  The misses are torch's Sleef pow being 1 ulp off correct rounding (our value is
  the correctly rounded one); a pure float32 numpy pow misses 13/64 at (128, 5e6).
  """
  ours, theirs = inv_freq(head_dim, theta), _torch_inv_freq(head_dim, theta)
  assert ours.dtype == np.float32 and ours.shape == theirs.shape
  ulps = np.abs(ours.view(np.int32) - theirs.view(np.int32))
  assert ulps.max() <= 1 and (ulps > 0).sum() <= max_ulp_mismatches, ulps


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_mrope_cos_sin_match_hf(dtype):
  hf_cfg = ref.hf_config_for(CFG).text_config
  rotary = hf_mod.Qwen3VLTextRotaryEmbedding(config=hf_cfg)
  positions = np.random.default_rng(0).integers(0, 3000, size=(3, 2, 9))
  torch_dtype = torch.float32 if dtype == jnp.float32 else torch.bfloat16
  x = torch.zeros((), dtype=torch_dtype)
  with torch.no_grad():
    cos_hf, sin_hf = rotary(x, torch.from_numpy(positions))
  cos, sin = mrope_cos_sin(
    jnp.asarray(positions),
    head_dim=CFG.text.head_dim,
    theta=CFG.text.rope_theta,
    mrope_section=CFG.text.mrope_section,
    dtype=dtype,
  )
  assert cos.dtype == dtype and cos.shape == tuple(cos_hf.shape)
  # Angles up to 3000 rad: one float32 ulp of the angle is ~2.4e-4 of cos/sin.
  atol = 5e-4 if dtype == jnp.float32 else 1e-2
  np.testing.assert_allclose(np.asarray(cos, np.float32), cos_hf.float().numpy(), atol=atol)
  np.testing.assert_allclose(np.asarray(sin, np.float32), sin_hf.float().numpy(), atol=atol)
  small = np.random.default_rng(1).integers(0, 40, size=(3, 2, 9))  # prompt-sized
  with torch.no_grad():
    cos_hf, _ = rotary(x, torch.from_numpy(small))
  cos, _ = mrope_cos_sin(
    jnp.asarray(small), head_dim=16, theta=CFG.text.rope_theta, mrope_section=(4, 2, 2), dtype=dtype
  )
  tight = 1e-6 if dtype == jnp.float32 else 4e-3
  np.testing.assert_allclose(np.asarray(cos, np.float32), cos_hf.float().numpy(), atol=tight)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_rms_norm_matches_hf(dtype):
  rng = np.random.default_rng(0)
  x = (rng.standard_normal((3, 5, 48)) * 4).astype(np.float32)
  w = (1 + 0.2 * rng.standard_normal(48)).astype(np.float32)
  norm = hf_mod.Qwen3VLTextRMSNorm(48, eps=1e-6)
  torch_dtype = torch.float32 if dtype == jnp.float32 else torch.bfloat16
  norm.weight.data = torch.from_numpy(w).to(torch_dtype)
  with torch.no_grad():
    want = norm(torch.from_numpy(x).to(torch_dtype)).float().numpy()
  got = rms_norm(jnp.asarray(x, dtype), jnp.asarray(w, dtype), 1e-6, dtype)
  assert got.dtype == dtype
  # bf16: the weight multiply happens in bf16 in both; allow one bf16 ulp.
  # float32: the mean of squares is summed in another order (a few ulps of the scale).
  rtol = 1e-6 if dtype == jnp.float32 else 2**-8
  assert_close(np.asarray(got, np.float32), want, rtol=rtol, err_msg=f"rms_norm {dtype}")


def test_text_hf_params_cover_hf_text_keys():
  for tied in (False, True):
    cfg = dataclasses.replace(CFG, text=dataclasses.replace(CFG.text, tie_word_embeddings=tied))
    names = ref.hf_config_for(cfg)
    with torch.device("meta"):
      hf_keys = set(hf_mod.Qwen3VLForConditionalGeneration(names).state_dict())
    text_keys = {k for k in hf_keys if not k.startswith("model.visual.")}
    ours = [k for p in text_hf_params(cfg) for k in p.keys()]  # noqa: SIM118
    assert len(ours) == len(set(ours))
    if tied:  # one copy is written; lm_head.weight aliases the embedding
      text_keys.discard("lm_head.weight")
    assert set(ours) == text_keys
    assert {k for p in hf_params(cfg) for k in p.keys()} == hf_keys - (  # noqa: SIM118
      {"lm_head.weight"} if tied else set()
    )


@pytest.mark.parametrize(("preset", "billions"), [("qwen3vl_4b", 4.438), ("qwen3vl_8b", 8.767)])
def test_full_size_parameter_count(preset, billions):
  """Shapes only (nnx.eval_shape): unique parameters match the published counts."""
  model = nnx.eval_shape(lambda: Qwen3VL(get_preset(preset), rngs=nnx.Rngs(0)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert round(count / 1e9, 3) == billions, count


def test_left_padding_does_not_change_text_logits():
  """A text row alone equals the same row left-padded in a batch (positions skip pads)."""
  model = Qwen3VL(CFG, rngs=nnx.Rngs(3))
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, ids, mask: nnx.merge(graphdef, s)(ids, mask))
  rng = np.random.default_rng(0)
  short, long = rng.integers(10, 5000, size=7), rng.integers(10, 5000, size=11)
  ids = np.stack([np.concatenate([np.full(4, CFG.pad_token_id), short]), long])
  mask = np.stack([np.r_[np.zeros(4), np.ones(7)], np.ones(11)]).astype(np.int32)
  batched = np.asarray(forward(state, ids, mask))
  alone = np.asarray(forward(state, short[None], np.ones((1, 7), np.int32)))
  assert_close(batched[0, 4:], alone[0], rtol=5e-6, err_msg="left-padded")
  assert np.abs(batched[0, 4:] - batched[1, 4:]).max() > 1e-3


def test_chunked_attention_equals_unchunked_with_grads():
  """Query chunking (long prompts) changes neither outputs nor gradients."""
  keys = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(keys[0], (2, 10, 6, 4))
  k = jax.random.normal(keys[1], (2, 10, 2, 4))
  v = jax.random.normal(keys[2], (2, 10, 2, 4))
  key_mask = jnp.arange(10)[None, :] >= jnp.asarray([[3], [0]])  # row 0 left-padded by 3
  slots = jnp.arange(10, dtype=jnp.int32)

  def loss(q, k, v, chunk):
    out = dot_product_attention(q, k, v, key_mask, slots, chunk=chunk)
    return jnp.sum(out[:, 3:] ** 2), out

  (_, o1), g1 = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, None)
  (_, o2), g2 = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, 3)
  assert_close(np.asarray(o2), np.asarray(o1), rtol=1e-6, err_msg="chunked out")
  for a, b in zip(g1, g2, strict=True):
    assert_close(np.asarray(b), np.asarray(a), rtol=1e-6, err_msg="chunked grad")
  # Causality: changing the last key/value leaves earlier real queries untouched.
  o3 = dot_product_attention(q, k.at[:, -1].set(9.0), v.at[:, -1].set(9.0), key_mask, slots)
  assert_close(np.asarray(o3[:, 3:-1]), np.asarray(o1[:, 3:-1]), rtol=1e-6, err_msg="causal")
  assert np.abs(np.asarray(o3[:, -1] - o1[:, -1])).max() > 1e-2


def test_remat_keeps_gradients():
  """`remat=True` recomputes layers in the backward pass; gradients are unchanged."""
  ids = np.random.default_rng(0).integers(10, 5000, size=(1, 9))
  # A random projection, not sum(h**2): the final RMSNorm makes that nearly
  # constant, leaving gradients that are pure rounding noise.
  proj = jax.random.normal(jax.random.key(1), (1, 9, CFG.text.hidden_size))
  grads = []
  for remat in (False, True):
    graphdef, state = nnx.split(Qwen3VL(CFG, remat=remat, rngs=nnx.Rngs(0)))

    def loss(state, graphdef=graphdef):
      return jnp.sum(nnx.merge(graphdef, state).hidden_states(ids) * proj)

    grads.append(jax.jit(jax.grad(loss))(state))
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
    assert_close(np.asarray(b), np.asarray(a), rtol=1e-5, err_msg="remat grad")
  layer_grad = grads[0]["language_model"]["layers"]["mlp"]["up_proj"]["kernel"].get_value()
  assert float(jnp.abs(layer_grad).max()) > 0
