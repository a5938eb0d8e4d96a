"""CRPO on Qwen3-VL-2B-Instruct, 8 accelerators (one TPU v5p-8/v4-8 host or 8 GPUs).

Launch (from the repository root, on every host of the slice):

  python -m crpo_jax.main --config=configs/qwen3vl_2b.py --workdir=$WORKDIR \
    --config.model.init_from=/path/to/Qwen3-VL-2B-Instruct \
    --config.data.train=/path/to/train.jsonl --config.data.eval=/path/to/heldout.jsonl

Append ":runlocal" to the config path for a CPU smoke run of the same code path with
the tiny preset. --config.algo=grpo|tgrpo|arrowrl runs a baseline with the same
settings. Paper-spirit defaults (configs/common.py): G = 8 per branch, lr 1e-6
cosine, beta 0.04, 16 frames at 2 fps, completions up to 768 tokens.
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.get_base_config()
  c.model.preset = "qwen3vl_2b"  # architecture when no init_from; checked against config.json
  # Masked vision attention scores all patch rows of a call against each other: far
  # too large at 16 frames x 8 prompts (crpo_jax.plan). Attend per temporal group.
  c.model.vision_attention = "segments"
  # Without remat the update needs 111 GiB of temporaries per v5e chip (crpo_jax.plan,
  # benchmarks/RESULTS.md); recomputing each layer brings it to 7.3 GiB.
  c.model.remat = "full"
  c.mesh.data = 1  # no pure data parallelism: FSDP already splits the batch
  c.mesh.fsdp = 8  # 8 chips: FSDP over all
  c.mesh.tensor = 1  # tensor-parallel degree
  c.batch.prompts = 8  # prompts per step: one per accelerator (Video-R1)
  c.batch.micro_rollouts = 8  # one row per batch shard: must divide data x fsdp = 8
  return common.apply_arg(c, arg)
