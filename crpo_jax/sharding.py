"""Mesh, logical-axis rules and the one activation-constraint helper.

Every weight carries logical axis names as `nnx.Param` metadata (`logical_axes`),
for example `('embed', 'mlp')`. A rules table maps logical names onto the mesh axes
`('data', 'fsdp', 'tensor')`; experiment configs may pass their own table. Activations
are constrained with `constrain(x, names)`, which is a no-op only when no mesh is
active (`use_mesh` not entered), never merely because the platform is CPU.

Logical names used in crpo_jax:
  batch      examples in a batch (activations)
  length     sequence positions (activations)
  embed      model width D (text) or vision width
  heads      query heads N
  kv_heads   key/value heads K
  head_dim   per-head width H
  mlp        MLP hidden width F
  vocab      vocabulary V
  layers     the leading axis of stacked layer parameters
  patch      flattened patch features (1536) / merged vision features
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axis (or tuple of mesh axes, or None for replicated).
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

DEFAULT_RULES: Rules = (
  ("batch", ("data", "fsdp")),
  ("length", None),
  ("embed", "fsdp"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("head_dim", None),
  ("mlp", "tensor"),
  ("vocab", "tensor"),
  ("layers", None),
  ("patch", None),
  # The vision tower's patch rows (all videos of a call, packed): split like a batch,
  # so each device encodes its share of the videos (FSDP gathers the weights).
  ("vision_rows", ("data", "fsdp")),
  ("vision_slots", ("data", "fsdp")),  # per-segment attention's segments, likewise
)


@dataclasses.dataclass(frozen=True)
class _Context:
  mesh: Mesh
  rules: Rules


_CONTEXT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar(
  "crpo_jax_sharding", default=None
)


def make_mesh(
  shape: Mapping[str, int] | Sequence[int], devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """Builds a ('data', 'fsdp', 'tensor') mesh.

  Args:
    shape: sizes per axis, as a mapping (missing axes get 1; one axis may be -1 to
      take the remaining devices) or a 3-sequence in MESH_AXES order.
    devices: defaults to all of `jax.devices()`.

  Returns:
    A `Mesh` whose size equals the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  if isinstance(shape, Mapping):
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
      raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  else:
    sizes = [int(s) for s in shape]
    if len(sizes) != len(MESH_AXES):
      raise ValueError(f"mesh shape {tuple(sizes)} must have {len(MESH_AXES)} entries {MESH_AXES}")
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {sizes}")
  if -1 in sizes:
    known = int(np.prod([s for s in sizes if s != -1]))
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not divide into mesh {sizes}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(
      f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
      f"but {len(devices)} are available"
    )
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[Mesh]:
  """Activates `mesh` and `rules` for `constrain` and `logical_sharding`."""
  token = _CONTEXT.set(_Context(mesh, tuple(rules)))
  try:
    yield mesh
  finally:
    _CONTEXT.reset(token)


def current_mesh() -> Mesh | None:
  ctx = _CONTEXT.get()
  return None if ctx is None else ctx.mesh


ROW_AXES = ("batch", "vision_rows", "vision_slots")  # logical axes of a batch's rows


def decode_rules(rules: Rules) -> Rules:
  """`rules` with the batch's mesh axes taken off every logical axis but the rows.

  Weights are then laid out for decode: gathered over the FSDP axes (once, when a
  copy is placed so) and split over tensor only, so a decode step gathers no
  weights. Rows are split as before.
  """
  entry = dict(rules).get("batch")
  batch_axes = set((entry,) if isinstance(entry, str) else entry or ())
  out = []
  for name, target in rules:
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    if name not in ROW_AXES:
      axes = tuple(a for a in axes if a not in batch_axes)
    out.append((name, None if not axes else axes[0] if len(axes) == 1 else axes))
  return tuple(out)


def logical_to_spec(names: Sequence[str | None], rules: Rules | None = None) -> PartitionSpec:
  """Maps logical axis names to a PartitionSpec; a mesh axis is used at most once."""
  if rules is None:
    ctx = _CONTEXT.get()
    rules = DEFAULT_RULES if ctx is None else ctx.rules
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name in names:
    target = table.get(name) if name is not None else None
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no sharding rule; rules cover {sorted(table)}")
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    axes = tuple(a for a in axes if a not in used)
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def logical_sharding(
  names: Sequence[str | None], mesh: Mesh | None = None, rules: Rules | None = None
) -> NamedSharding:
  mesh = mesh or current_mesh()
  if mesh is None:
    raise ValueError("logical_sharding needs a mesh: pass one or enter sharding.use_mesh(...)")
  return NamedSharding(mesh, logical_to_spec(names, rules))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """`with_sharding_constraint` by logical names; a no-op when no mesh is active."""
  ctx = _CONTEXT.get()
  if ctx is None:
    return x
  if len(names) != x.ndim:
    raise ValueError(f"constrain: {len(names)} names {tuple(names)} for an array of rank {x.ndim}")
  spec = fit_spec(logical_to_spec(names, ctx.rules), x.shape, ctx.mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(ctx.mesh, spec))


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes that do not divide a dimension (e.g. 2 kv heads on tensor=4).

  The one place where a non-dividing mesh axis is dropped; batch sizes are checked
  at start-up instead (`crpo_jax.train.batch_sizes`), so dropping happens for
  weights and head counts, not for the work of a batch.
  """
  fitted = []
  for dim, entry in zip(shape, spec):
    axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
    kept, size = [], 1
    for a in axes:
      if dim % (size * mesh.shape[a]) == 0:
        kept.append(a)
        size *= mesh.shape[a]
    fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return PartitionSpec(*fitted)


def batch_spec(rows: int, rank: int, mesh: Mesh, rules: Rules | None = None) -> PartitionSpec:
  """[rows, ...] split over the rules' 'batch' mesh axes that divide `rows`."""
  spec = logical_to_spec(("batch",) + (None,) * (rank - 1), rules)
  return fit_spec(spec, (rows,) + (1,) * (rank - 1), mesh)


def batch_shards(mesh: Mesh, rules: Rules | None = None) -> int:
  """How many ways the rules' 'batch' axes split a batch on `mesh`."""
  entry = logical_to_spec(("batch",), rules)[0]
  axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
  return int(np.prod([mesh.shape[a] for a in axes]))


def param_shardings(state, mesh: Mesh, rules: Rules | None = None):
  """NamedShardings for an `nnx.State` from each Variable's `logical_axes` metadata.

  Variables without `logical_axes` are replicated. Mesh axes that do not divide a
  dimension are dropped for that dimension, so tiny test models shard too.
  """
  from flax import nnx

  rules = tuple(rules) if rules is not None else DEFAULT_RULES

  def one(v):
    names = v.get_metadata().get("logical_axes") if isinstance(v, nnx.Variable) else None
    shape = np.shape(v.get_value() if isinstance(v, nnx.Variable) else v)
    if names is None:
      return NamedSharding(mesh, PartitionSpec())
    return NamedSharding(mesh, fit_spec(logical_to_spec(names, rules), shape, mesh))

  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def host_get(tree):
  """Numpy copies of (possibly multi-host sharded) arrays, the same on every host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, jax.device_get(tree))


def to_global(tree: Mapping[str, object], shardings: Mapping[str, NamedSharding]) -> dict:
  """Global arrays from host arrays that every process holds in full (multi-host safe).

  Each process fills only its own devices' shards, so nothing crosses hosts; jax
  Arrays are passed through as they are.
  """
  return {
    k: v
    if isinstance(v, jax.Array)
    else jax.make_array_from_callback(
      np.shape(v), shardings[k], lambda idx, v=v: np.asarray(v)[idx]
    )
    for k, v in tree.items()
  }


def open_communicators(mesh: Mesh) -> None:
  """Runs one tiny all-reduce over every group of mesh axes, and one all-gather over
  the processes, so that the cross-process communicators the run's programs use
  exist before those programs run.

  On CPU, gloo creates a communicator at the first collective over a device group
  and waits only 30 s for the other processes to join (XLA's GlooKeyValueStore).
  In the first training step one process may still be compiling while another
  already waits in its first collective (seen: "Gloo context initialization failed:
  DEADLINE_EXCEEDED" with 2 processes on a loaded 2-core machine), so the groups
  are opened here, where the processes are in step. An open communicator waits for
  a late peer as long as a collective may take. One process, or not CPU: a no-op.
  """
  if jax.process_count() == 1 or jax.default_backend() != "cpu":
    return
  from itertools import combinations

  from jax.experimental import multihost_utils

  names = tuple(n for n in mesh.axis_names if mesh.shape[n] > 1)
  spec = PartitionSpec(*mesh.axis_names)
  shard = np.ones((1,) * mesh.devices.ndim, np.float32)
  ones = jax.make_array_from_callback(
    mesh.devices.shape, NamedSharding(mesh, spec), lambda idx: shard
  )
  for r in range(1, len(names) + 1):
    for axes in combinations(names, r):
      psum = jax.shard_map(
        lambda x, axes=axes: jax.lax.psum(x, axes), mesh=mesh, in_specs=spec, out_specs=spec
      )
      jax.block_until_ready(jax.jit(psum)(ones))
  multihost_utils.process_allgather(np.zeros((1,), np.int32))  # host_get's
