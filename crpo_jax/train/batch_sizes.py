"""Every batch size a run uses, checked against the mesh's batch shards at start-up.

The learner and the sampler split rows over the rules' 'batch' mesh axes
(`sharding.batch_spec`). A size that does not divide them cannot be split, and the
work would silently be replicated on every shard (the 8B config once asked for
micro-batches of 2 rows on fsdp = 4). So the run refuses to start instead, naming
the config fields.
"""

from __future__ import annotations

from crpo_jax import sharding
from crpo_jax.rl import algorithms


def batch_sizes(config) -> dict[str, int]:
  """{what (config fields): rows} for every jitted program that splits rows."""
  spec = algorithms.get_algorithm(config.algo)
  prompts, g = int(config.batch.prompts), int(config.sampling.num_generations)
  sizes = {
    "batch.micro_rollouts (update and SFT micro-batch rows)": int(config.batch.micro_rollouts)
  }
  groups: dict[tuple[int, bool], list[str]] = {}
  for b in spec.branches:
    groups.setdefault((b.num_rollouts(g), b.greedy), []).append(b.name)
  for names in groups.values():
    what = f"batch.prompts x {len(names)} branches ({'+'.join(names)} rollout prompt rows)"
    sizes[what] = prompts * len(names)
  sizes["batch.prompts (evaluation sampler rows)"] = prompts
  return sizes


def check_batch_sizes(config, mesh, rules=sharding.DEFAULT_RULES) -> None:
  """Raises ValueError naming every config field whose rows do not divide the batch shards.

  `config.batch.require_divisible = False` lets small CPU runs on many fake devices
  replicate instead.
  """
  shards = sharding.batch_shards(mesh, rules)
  bad = {what: n for what, n in batch_sizes(config).items() if n % shards}
  if not bad or not config.batch.get("require_divisible", True):
    return
  axes = " x ".join(f"{a}={mesh.shape[a]}" for a in ("data", "fsdp") if a in mesh.shape)
  listed = "; ".join(f"{what} = {n}" for what, n in bad.items())
  raise ValueError(
    f"batch sizes do not divide the mesh's {shards} batch shards ({axes}, config.mesh): "
    f"{listed}. Make them multiples of {shards}, or change config.mesh "
    "(config.batch.require_divisible=False replicates them instead)."
  )
