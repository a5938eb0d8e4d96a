"""Mesh construction, logical-axis rules and constrain()."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from crpo_jax import sharding


def test_make_mesh_from_mapping_and_minus_one():
  mesh = sharding.make_mesh({"fsdp": -1, "tensor": 2})
  assert mesh.axis_names == sharding.MESH_AXES
  assert dict(mesh.shape) == {"data": 1, "fsdp": 4, "tensor": 2}


@pytest.mark.parametrize(
  "shape, message",
  [({"fsdp": 3}, "needs 3 devices"), ({"expert": 2}, "unknown mesh axes"), ((2, 2), "3 entries")],
)
def test_make_mesh_rejects_bad_shapes(shape, message):
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(shape)


def test_logical_to_spec_uses_each_mesh_axis_once():
  spec = sharding.logical_to_spec(("batch", "length", "embed"))
  # batch takes data+fsdp, so embed (-> fsdp) must stay unsharded.
  assert spec == P(("data", "fsdp"), None, None)
  assert sharding.logical_to_spec(("embed", "mlp")) == P("fsdp", "tensor")


def test_logical_to_spec_unknown_name_is_an_error():
  with pytest.raises(KeyError, match="no sharding rule"):
    sharding.logical_to_spec(("bogus",))


def test_constrain_is_noop_without_mesh_and_shards_with_one():
  x = jnp.arange(8 * 6, dtype=jnp.float32).reshape(8, 6)
  assert sharding.constrain(x, ("batch", "embed")) is x
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  with sharding.use_mesh(mesh):
    y = jax.jit(lambda a: sharding.constrain(a * 2, ("embed", "mlp")))(x)
  assert y.sharding.spec == P("fsdp", "tensor")
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x) * 2)
  with pytest.raises(ValueError, match="rank"), sharding.use_mesh(mesh):
    sharding.constrain(x, ("embed",))


def test_param_shardings_follow_metadata_and_drop_non_dividing_axes():
  class Tiny(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.ones((8, 6)), logical_axes=("embed", "mlp"))
      self.odd = nnx.Param(jnp.ones((3, 5)), logical_axes=("embed", "mlp"))
      self.bias = nnx.Param(jnp.ones((6,)))

  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  shardings = sharding.param_shardings(nnx.state(Tiny()), mesh)
  assert shardings["w"].spec == P("fsdp", "tensor")
  assert shardings["odd"].spec == P(None, None)  # 3 % 4 and 5 % 2 are nonzero
  assert shardings["bias"].spec == P()
