"""CRPO on Qwen3-VL-32B-Instruct, 16 accelerators (a TPU v5p-32 slice: 16 chips on 4 hosts).

Check that it fits before renting (compiles every program for the slice, CPU only):

  python -m crpo_jax.plan --config=configs/qwen3vl_32b.py --topology=v5p-32

Launch (from the repository root, on every host of the slice):

  python -m crpo_jax.main --config=configs/qwen3vl_32b.py --workdir=$WORKDIR \\
    --config.model.init_from=/path/to/Qwen3-VL-32B-Instruct \\
    --config.data.train=/path/to/train.jsonl --config.data.eval=/path/to/heldout.jsonl

Append ":runlocal" to the config path for a CPU smoke run of the same code path with
the tiny preset. Paper-spirit defaults (configs/common.py): G = 8 per branch, lr 1e-6
cosine, beta 0.04, 16 frames at 2 fps, completions up to 768 tokens.
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.get_base_config()
  c.model.preset = "qwen3vl_32b"  # architecture when no init_from; checked against config.json
  # Masked vision attention scores all patch rows of a call against each other: far
  # too large at 16 frames x 8 prompts (crpo_jax.plan). Attend per temporal group.
  c.model.vision_attention = "segments"
  c.model.remat = "full"  # 64 layers of 5120-wide activations: recompute in the backward
  c.mesh.data = 1  # no pure data parallelism: FSDP already splits the batch
  c.mesh.fsdp = 8  # 16 chips: FSDP 8 x tensor 2; fp32 master + Adam = 16 B/param over 8
  c.mesh.tensor = 2  # tensor-parallel degree, within a host
  c.batch.prompts = 8  # prompts per step (Video-R1); 16 rollout prompt rows over 8 shards
  c.batch.micro_rollouts = 8  # one row per batch shard (must divide data x fsdp = 8)
  return common.apply_arg(c, arg)
