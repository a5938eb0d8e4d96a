"""The train state pytree and the one jitted update with micro-batch accumulation.

The model is split once (`graphdef, params, rest = split_model(model)`); everything
that is trained or checkpointed is a plain pytree of arrays (`TrainState`), and the
update is a pure `jax.jit` function of `(state, batch, aux)` with explicit shardings
and the state donated, as STYLE.md asks.

Exact accumulation: a loss function returns `(loss_sum, denominator)` per
micro-batch; the step sums both over micro-batches (a `lax.scan`) and divides once,
so the gradient equals that of the whole batch in one piece, whatever the split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from crpo_jax import sharding as sharding_lib

PyTree = Any
# loss_fn(params, micro_batch, aux) -> (loss_sum, (denominator, metric_sums)).
LossFn = Callable[[PyTree, PyTree, PyTree], tuple[jax.Array, tuple[jax.Array, dict]]]


@flax.struct.dataclass
class TrainState:
  """Everything an update changes, as arrays (what a checkpoint must hold).

  Attributes:
    step: optimiser updates so far (int32 scalar).
    params: the policy's trainable parameters, a nested dict of arrays.
    opt_state: the optax state (its schedule counts its own updates).
    rng: raw key data (uint32 [2]); `jax.random.wrap_key_data` turns it into a key.
  """

  step: jax.Array
  params: PyTree
  opt_state: PyTree
  rng: jax.Array

  def key(self) -> jax.Array:
    return jax.random.wrap_key_data(self.rng)


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """(graphdef, params, rest): params are `nnx.Param`s, rest anything else (buffers)."""
  return nnx.split(model, nnx.Param, ...)


def merge_model(graphdef: nnx.GraphDef, params: PyTree, rest: nnx.State | None = None):
  """Rebuilds the module from pure-dict (or nnx.State) parameters, e.g. inside jit."""
  if rest is None or not jax.tree.leaves(rest):
    return nnx.merge(graphdef, params)
  return nnx.merge(graphdef, params, rest)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def abstract(tree: PyTree) -> PyTree:
  """`ShapeDtypeStruct`s of a pytree of arrays (or of structs already)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def train_state_shardings(
  params: nnx.State,
  tx: optax.GradientTransformation,
  mesh: Mesh,
  rules: sharding_lib.Rules | None = None,
) -> TrainState:
  """A `TrainState` of `NamedSharding`s: parameters by their `logical_axes`.

  Args:
    params: the `nnx.Param` state (with `logical_axes` metadata); values may be
      arrays or `ShapeDtypeStruct`s.
    tx: the optimiser (its state's structure).
    mesh: the device mesh.
    rules: logical-axis rules (defaults to `sharding.DEFAULT_RULES`).
  """
  param_sh = sharding_lib.param_shardings(params, mesh, rules).to_pure_dict()
  rep = replicated(mesh)
  opt_shapes = jax.eval_shape(tx.init, abstract(params.to_pure_dict()))
  # Every copy of the parameter tree inside the optimiser state (Adam's moments) is
  # laid out like the parameters; counts and other scalars are replicated.
  opt_sh = optax.tree_map_params(
    tx, lambda _, sh: sh, opt_shapes, param_sh, transform_non_params=lambda _: rep
  )
  return TrainState(step=rep, params=param_sh, opt_state=opt_sh, rng=rep)


def make_optimizer_init(tx: optax.GradientTransformation, shardings: TrainState) -> Callable:
  """The jitted `params -> opt_state`, laid out as `shardings.opt_state` says."""
  return jax.jit(tx.init, in_shardings=(shardings.params,), out_shardings=shardings.opt_state)


def create_train_state(
  params: nnx.State,
  tx: optax.GradientTransformation,
  seed: int,
  mesh: Mesh,
  rules: sharding_lib.Rules | None = None,
) -> tuple[TrainState, TrainState]:
  """Places parameters by their `logical_axes` and initialises the optimiser.

  Args:
    params: the `nnx.Param` state of the model (with `logical_axes` metadata).
    tx: the optimiser.
    seed: seeds the state's RNG (rollout sampling keys derive from it).
    mesh: the device mesh.
    rules: logical-axis rules (defaults to `sharding.DEFAULT_RULES`).

  Returns:
    (state, shardings): the sharded state and a `TrainState` of `NamedSharding`s with
    the same structure, for jit and checkpoint restore.
  """
  shardings = train_state_shardings(params, tx, mesh, rules)
  pure = jax.tree.map(jax.device_put, params.to_pure_dict(), shardings.params)
  rep = shardings.step
  state = TrainState(
    step=jax.device_put(jnp.zeros((), jnp.int32), rep),
    params=pure,
    opt_state=make_optimizer_init(tx, shardings)(pure),
    rng=jax.device_put(jax.random.key_data(jax.random.key(seed)), rep),
  )
  return state, shardings


def reset_optimizer(
  state: TrainState, tx: optax.GradientTransformation, shardings: TrainState
) -> TrainState:
  """A fresh optimiser state for `state.params` (the SFT -> RL switch)."""
  return state.replace(opt_state=make_optimizer_init(tx, shardings)(state.params))


def make_train_step(
  loss_fn: LossFn,
  tx: optax.GradientTransformation,
  shardings: TrainState,
  batch_sharding: PyTree | None = None,
  aux_sharding: PyTree | None = None,
) -> Callable[[TrainState, PyTree, PyTree], tuple[TrainState, dict[str, jax.Array]]]:
  """A jitted `(state, batch, aux) -> (state, metrics)` with gradient accumulation.

  `batch` leaves carry a leading micro-batch axis [M, ...]; `loss_fn` sees one
  micro-batch at a time. `aux` (e.g. frozen reference parameters) is passed to every
  call and never differentiated. The state is donated.

  Metrics: `loss` (= total loss_sum / total denominator, the loss that was
  differentiated), `grad_norm` (before clipping), `param_norm` (after the update),
  `lr` would need the schedule and is added by the caller, and every metric sum
  `loss_fn` returns, summed over micro-batches.
  """

  def step_fn(state: TrainState, batch: PyTree, aux: PyTree):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def micro(carry, mb):
      g_acc, l_acc, d_acc, m_acc = carry
      (loss_sum, (den, mets)), g = grad_fn(state.params, mb, aux)
      g_acc = jax.tree.map(
        lambda a, b, sh: jax.lax.with_sharding_constraint(a + b.astype(a.dtype), sh),
        g_acc,
        g,
        shardings.params,
      )
      m_acc = jax.tree.map(jnp.add, m_acc, mets)
      return (g_acc, l_acc + loss_sum, d_acc + den, m_acc), None

    first = jax.tree.map(lambda x: x[0], batch)
    _, (_, met_shape) = jax.eval_shape(loss_fn, state.params, first, aux)
    zeros_m = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), met_shape)
    # The fp32 gradient accumulators are laid out like their parameters; created from
    # constants, they would otherwise be replicated on every device.
    zeros_g = jax.tree.map(
      lambda p, sh: jax.lax.with_sharding_constraint(jnp.zeros(p.shape, jnp.float32), sh),
      state.params,
      shardings.params,
    )
    init = (zeros_g, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), zeros_m)
    (g_sum, l_sum, d_sum, m_sum), _ = jax.lax.scan(micro, init, batch)
    den = jnp.maximum(d_sum, 1e-8)
    grads = jax.tree.map(lambda g, p: (g / den).astype(p.dtype), g_sum, state.params)
    # A non-finite loss marks the whole step bad even where its gradients came out
    # finite, so that optax.apply_if_finite (train/optimizer.py) skips the update.
    bad_loss = ~(jnp.isfinite(l_sum) & jnp.isfinite(d_sum))
    grads = jax.tree.map(lambda g: jnp.where(bad_loss, jnp.nan, g), grads)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = dict(
      m_sum,
      loss=l_sum / den,
      grad_norm=grad_norm,
      param_norm=optax.global_norm(params),
      denominator=d_sum,
    )
    return new_state, metrics

  return jax.jit(
    step_fn,
    in_shardings=(shardings, batch_sharding, aux_sharding),
    out_shardings=(shardings, None),
    donate_argnums=(0,),
  )


def count_params(params: PyTree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
