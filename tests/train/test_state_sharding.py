"""Optimiser moments and gradient accumulators are sharded exactly like their parameters."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crpo_jax import sharding
from crpo_jax.model import vlm
from crpo_jax.model.config import get_preset
from crpo_jax.train import optimizer
from crpo_jax.train import state as state_lib


def _setup():
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  model = vlm.Qwen3VL(get_preset("tiny"), rngs=nnx.Rngs(0))
  _, params, _ = state_lib.split_model(model)
  return mesh, params


def _param_path(path):
  """The parameter's key path inside an optimiser-state leaf path (after mu / nu)."""
  names = [getattr(k, "name", None) for k in path]
  for moment in ("mu", "nu"):
    if moment in names:
      return tuple(path[names.index(moment) + 1 :])
  return None


def _check_like_params(state):
  params = dict(jax.tree_util.tree_flatten_with_path(state.params)[0])
  moments = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]:
    p_path = _param_path(path)
    if p_path is None:  # counts: scalars, replicated
      assert leaf.sharding.is_fully_replicated, (path, leaf.sharding)
      continue
    param = params[p_path]
    assert leaf.shape == param.shape, path
    assert leaf.sharding.is_equivalent_to(param.sharding, leaf.ndim), (
      jax.tree_util.keystr(path),
      leaf.sharding,
      param.sharding,
    )
    shard = leaf.addressable_shards[0].data.shape
    assert shard == param.addressable_shards[0].data.shape, path
    moments += 1
  assert moments == 2 * len(params)
  assert any(not p.sharding.is_fully_replicated for p in params.values())


def test_moments_sharded_like_params_at_start_and_after_reset():
  mesh, params = _setup()
  sft_tx, _ = optimizer.make_optimizer(1e-2, 3, max_grad_norm=1.0)
  state, shardings = state_lib.create_train_state(params, sft_tx, 0, mesh)
  _check_like_params(state)
  rl_tx, _ = optimizer.make_optimizer(1e-3, 5, weight_decay=0.01, max_grad_norm=5.0)
  state = state_lib.reset_optimizer(state, rl_tx, shardings)
  _check_like_params(state)
  assert int(jax.tree.leaves(state.opt_state)[0]) == 0  # a fresh optimiser


def test_gradient_accumulators_sharded_like_params():
  # A loss whose activations are tiny: the step's temporaries are then dominated by
  # the fp32 gradient accumulators, a full copy of the parameters when replicated.
  mesh, params = _setup()
  tx, _ = optimizer.make_optimizer(1e-3, 5, max_grad_norm=None)
  state, shardings = state_lib.create_train_state(params, tx, 0, mesh)

  def loss_fn(p, mb, aux):
    del aux
    sq = sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(p))
    return sq * mb["w"].sum(), (jnp.float32(1.0), {})

  batch = {"w": jnp.ones((3, 1), jnp.float32)}  # 3 micro-batches
  step = state_lib.make_train_step(loss_fn, tx, shardings)
  with sharding.use_mesh(mesh):
    compiled = step.lower(state, batch, None).compile()
  full = sum(x.size * 4 for x in jax.tree.leaves(state.params))
  temp = compiled.memory_analysis().temp_size_in_bytes
  # Sharded over 8 devices, accumulator + gradient + update need ~3/8 of the parameters.
  assert temp < 0.6 * full, (temp, full)
  with sharding.use_mesh(mesh):
    _, metrics = step(state, batch, None)
  assert np.isfinite(float(metrics["loss"]))
