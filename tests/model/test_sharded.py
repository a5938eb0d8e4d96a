"""On 8 fake CPU devices, the model sharded fsdp 4 x tensor 2 equals the unsharded one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from crpo_jax import sharding
from crpo_jax.model.cache import init_cache
from crpo_jax.model.config import get_preset
from crpo_jax.model.vlm import Qwen3VL, hf_params
from tests.model import hf_reference as ref
from tests.tolerance import assert_close

CFG = get_preset("tiny")
VISUAL = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


@pytest.fixture(scope="module")
def split_model():
  model = Qwen3VL(CFG, rngs=nnx.Rngs(0))
  ref.copy_hf_weights(model, ref.build_hf_model(CFG, seed=2))
  return nnx.split(model)


def test_every_weight_has_logical_axes(split_model):
  _, state = split_model
  flat = dict(nnx.to_flat_state(state))
  stacked = {p.path: p.num_layers is not None for p in hf_params(CFG)}
  assert set(flat) == set(stacked)
  for path, var in flat.items():
    names = var.get_metadata().get("logical_axes")
    assert names is not None and len(names) == var.get_value().ndim, (path, names)
    assert (names[0] == "layers") == stacked[path], (path, names)


def test_sharded_forward_and_decode_equal_unsharded(split_model):
  graphdef, state = split_model
  inputs = ref.mixed_batch_inputs(seed=5)
  batch, length = inputs["input_ids"].shape

  def run(state, inputs):
    m = nnx.merge(graphdef, state)
    logits = m(**inputs)
    cache = init_cache(CFG.text, batch, length + 1, jnp.float32)
    visual = {k: inputs[k] for k in VISUAL}
    last, cache = m.prefill(inputs["input_ids"], inputs["attention_mask"], cache, **visual)
    step, _ = m.decode_step(jnp.argmax(last, -1).astype(jnp.int32), cache)
    return logits, step

  want_logits, want_step = jax.jit(run)(state, inputs)

  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  shardings = sharding.param_shardings(state, mesh)
  placed = jax.device_put(state, shardings)
  q_kernel = placed["language_model"]["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q_kernel.get_value().sharding.spec == PartitionSpec(None, "fsdp", "tensor")
  embed = placed["language_model"]["embed_tokens"]["embedding"]
  assert embed.get_value().sharding.spec == PartitionSpec("tensor", "fsdp")
  with sharding.use_mesh(mesh):
    got_logits, got_step = jax.jit(run)(placed, inputs)
  # The constrained activations really are laid out on the mesh.
  assert got_logits.sharding.spec[2] == "tensor"
  mask = inputs["attention_mask"].astype(bool)
  # Sharded matmuls sum their partial products in another order: float32 rounding of
  # order eps * sqrt(depth) of the logits' scale (a pure atol of 2e-5 failed CI once
  # on a logit of 4.93). Measured up to 1e-6 of the scale; the bound leaves ~10x.
  assert_close(
    np.asarray(got_logits)[mask], np.asarray(want_logits)[mask], rtol=1e-5, err_msg="logits"
  )
  assert_close(np.asarray(got_step), np.asarray(want_step), rtol=1e-5, err_msg="decode step")
