"""Batch sizes that do not divide the mesh's batch shards stop the run at start-up."""

import pytest

from configs import qwen3vl_8b
from crpo_jax import sharding
from crpo_jax.train import batch_sizes


def _mesh():
  return sharding.make_mesh({"fsdp": 4, "tensor": 2})  # 4 batch shards


def test_dividing_sizes_pass():
  c = qwen3vl_8b.get_config()
  c.batch.micro_rollouts = 4
  batch_sizes.check_batch_sizes(c, _mesh())


def test_micro_batch_that_does_not_divide_names_the_field():
  c = qwen3vl_8b.get_config()
  c.batch.micro_rollouts = 2
  with pytest.raises(ValueError, match=r"4 batch shards.*batch.micro_rollouts .* = 2"):
    batch_sizes.check_batch_sizes(c, _mesh())


def test_rollout_and_eval_rows_are_checked():
  c = qwen3vl_8b.get_config()
  c.batch.micro_rollouts, c.batch.prompts, c.algo = 4, 2, "grpo"
  with pytest.raises(ValueError) as e:
    batch_sizes.check_batch_sizes(c, _mesh())
  msg = str(e.value)
  assert "batch.prompts x 1 branches (original rollout prompt rows) = 2" in msg
  assert "batch.prompts (evaluation sampler rows) = 2" in msg
  assert "micro_rollouts" not in msg
  c.batch.require_divisible = False
  batch_sizes.check_batch_sizes(c, _mesh())


def test_one_helper_drops_non_dividing_axes():
  mesh = _mesh()
  assert sharding.batch_spec(8, 2, mesh) == sharding.PartitionSpec(("data", "fsdp"), None)
  assert sharding.batch_spec(2, 1, mesh) == sharding.PartitionSpec("data")  # fsdp=4 dropped
  assert sharding.batch_shards(mesh) == 4
