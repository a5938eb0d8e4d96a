"""CRPO on Qwen3-VL-8B-Instruct, 8 accelerators (one TPU v5p-8/v4-8 host or 8 GPUs).

Check that it fits before renting (compiles every program, CPU only):

  python -m crpo_jax.plan --config=configs/qwen3vl_8b.py --topology=v5p-16

Launch (from the repository root, on every host of the slice):

  python -m crpo_jax.main --config=configs/qwen3vl_8b.py --workdir=$WORKDIR \
    --config.model.init_from=/path/to/Qwen3-VL-8B-Instruct \
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
  c.model.preset = "qwen3vl_8b"  # architecture when no init_from; checked against config.json
  # Masked vision attention scores all patch rows of a call against each other: far
  # too large at 16 frames x 8 prompts (crpo_jax.plan). Attend per temporal group.
  c.model.vision_attention = "segments"
  # Without remat the update's activations overflow a v5p-16 (crpo_jax.plan, RESULTS.md).
  c.model.remat = "full"  # recompute each layer in the backward pass
  c.mesh.data = 1  # no pure data parallelism: FSDP already splits the batch
  c.mesh.fsdp = 4  # 8 chips: FSDP 4 x tensor 2 (8B activations need TP)
  c.mesh.tensor = 2  # tensor-parallel degree
  c.batch.prompts = 8  # prompts per step: one per accelerator (Video-R1)
  c.batch.micro_rollouts = 4  # one row per batch shard: must divide data x fsdp = 4
  # The rollout's bf16 copy keeps the FSDP layout, which fits v6e-8 (31 GiB chips).
  # On v5p-16, --config.sampling.rollout_layout=decode also fits (rollout peak 29.5
  # GiB, benchmarks/RESULTS.md) and gathers no weights while decoding.
  return common.apply_arg(c, arg)
