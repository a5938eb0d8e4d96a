"""Every program a training run executes, lowered ahead of time on abstract inputs.

The planner does not re-implement the run: it builds the run's own objects (the
train-state shardings, `Learner`, `SFT`, `Evaluator`) around an abstract model
(`nnx.eval_shape`, no weights), feeds the run's own host plumbing
(`learner_rows.stack_prompts`, `Learner.train_rows`, `SFT.rows`,
`learner_rows.to_micro_batches`) a stand-in pipeline batch of the config's
worst-case shapes, and lowers the same jitted functions the run calls with
`ShapeDtypeStruct`s of what comes out.

The stand-in batch: `batch.prompts` prompts, each with a video of `data.num_frames`
frames at the largest frame the processor makes within `data.max_pixels` (h and w
multiples of 32 pixels), and a prompt of those video tokens plus `text_tokens`
(chat template, instruction, question, options and timestamps), bucketed as the
pipeline buckets it. Pixel rows are built one feature wide on the host (the
plumbing only concatenates and pads them) and widened to the patch size for the
compile, so the planner never holds a step's pixels in host memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crpo_jax import bucketing, sharding
from crpo_jax.model import vlm
from crpo_jax.model.config import Qwen3VLConfig
from crpo_jax.rl import sampler as sampler_lib
from crpo_jax.train import evaluation, setup
from crpo_jax.train import learner as learner_lib
from crpo_jax.train import learner_rows as rows_lib
from crpo_jax.train import optimizer as optim_lib
from crpo_jax.train import sft as sft_lib
from crpo_jax.train import state as state_lib


@dataclasses.dataclass
class Program:
  """One jitted program of the run, ready to lower.

  Attributes:
    name: table row name (`init`, `sft_step`, `rollout`, `update`, `eval_sampler`).
    lower: `() -> jax.stages.Lowered`, traced under the run's mesh and rules.
    resident_bytes: per-device bytes of state that is alive while the program runs
      but is not one of its arguments (e.g. the optimiser state during a rollout).
    note: what the program's inputs are, for the report.
    argument_bytes: per-device bytes of the arguments as passed (the compiler drops
      unused ones from its count, but they stay in memory).
  """

  name: str
  lower: Callable[[], Any]
  resident_bytes: int
  note: str
  argument_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class Shapes:
  """The stand-in batch's worst-case sizes."""

  grid: tuple[int, int, int]  # (t, h, w) of every video, in patches
  prompt_len: int  # bucketed prompt length L
  pixel_rows: int  # bucketed pixel rows of one branch of the pipeline batch


class _Tokenizer:
  """Stands in for the tokenizer where only target lengths matter (SFT rows)."""

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    del add_special_tokens
    return [0] * max(1, len(text) // 4)


def abstract_model(config, cfg: Qwen3VLConfig) -> nnx.Module:
  """The policy as `crpo_jax.train.setup.build_model` makes it, without weights."""
  return nnx.eval_shape(
    lambda: vlm.Qwen3VL(cfg, rngs=nnx.Rngs(0), **setup.model_kwargs(config, cfg))
  )


def worst_case_shapes(config, cfg: Qwen3VLConfig, text_tokens: int) -> Shapes:
  """Largest video the processor makes under the config's budget, and its prompt."""
  v = cfg.vision
  m, p = v.spatial_merge_size, v.patch_size
  # h, w are multiples of m patches with h * w * p * p <= max_pixels (per frame).
  budget = config.data.max_pixels // (p * p * m * m)  # merge blocks per frame
  blocks = max(a * (budget // a) for a in range(1, budget + 1))
  bh = max(a for a in range(1, math.isqrt(blocks) + 1) if blocks % a == 0)
  t = -(-int(config.data.num_frames) // v.temporal_patch_size)
  grid = (t, bh * m, (blocks // bh) * m)
  video_tokens = t * blocks
  prompt_len = bucketing.bucket_size(video_tokens + text_tokens, None, 64)
  rows = config.batch.prompts * t * grid[1] * grid[2]
  return Shapes(grid, prompt_len, bucketing.bucket_size(rows, None, 256))


def stand_in_batch(config, shapes: Shapes) -> dict[str, Any]:
  """A pipeline batch (data/pipeline.py format) of `shapes`, pixels one feature wide."""
  n = int(config.batch.prompts)
  t, h, w = shapes.grid

  def branch():
    grid = np.zeros((n + 1, 3), np.int64)
    grid[:n] = (t, h, w)
    return {
      "input_ids": np.zeros((n, shapes.prompt_len), np.int32),
      "attention_mask": np.ones((n, shapes.prompt_len), np.int32),
      "pixel_values_videos": np.zeros((shapes.pixel_rows, 1), np.float32),
      "video_grid_thw": grid,
    }

  return {
    "orig": branch(),
    "cf": branch(),
    "route": np.zeros(n, np.int32),  # not static: every counterfactual has a target
    "answer_letter": np.array(["A"] * n),
    "answer_cf_letter": np.array(["B"] * n),
    "num_options": np.full(n, 5, np.int32),
  }


def abstract_inputs(batch: dict[str, Any], patch_dim: int) -> dict[str, jax.ShapeDtypeStruct]:
  """`ShapeDtypeStruct`s of host arrays; pixel rows widened to `patch_dim` features."""
  out = {}
  for k, v in batch.items():
    shape = tuple(np.shape(v))
    if k in ("pixel_values", "pixel_values_videos"):
      shape = shape[:-1] + (patch_dim,)
    out[k] = jax.ShapeDtypeStruct(shape, np.asarray(v).dtype)
  return out


def device_bytes(tree: Any, shardings: Any) -> int:
  """Bytes one device holds of `tree` laid out as `shardings` (the largest shard)."""
  total = 0
  for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
    total += math.prod(s.shard_shape(tuple(x.shape))) * jnp.dtype(x.dtype).itemsize
  return total


def _sampler_arg_bytes(sampler, state, inputs) -> int:
  state_sh, input_sh, _ = sampler.in_shardings(state, inputs)
  return device_bytes(state, state_sh) + device_bytes(inputs, input_sh)


def _fake_rollouts(learner, batch, shapes: Shapes) -> dict[str, Any]:
  """Every branch's sampler output as `Learner.sample` returns it (host arrays)."""
  n_prompts, t_new = int(learner.config.batch.prompts), learner.config.sampling.max_new_tokens
  g = learner.config.sampling.num_generations
  videos = rows_lib.split_videos(batch["orig"], n_prompts)
  out = {}
  for b in learner.spec.branches:
    n = b.num_rollouts(g)
    rows = n_prompts * n
    gen = sampler_lib.GenerateOutput(
      tokens=np.zeros((rows, t_new), np.int32),
      logprobs=np.zeros((rows, t_new), np.float32),
      lengths=np.full((rows,), t_new, np.int32),
      mask=np.ones((rows, t_new), bool),
    )
    out[b.name] = (gen, videos, n)
  return out


def build_programs(config, mesh, rules, *, text_tokens: int = 256) -> tuple[list[Program], dict]:
  """The run's programs for `config` on `mesh`, and a summary of the shapes used."""
  cfg = setup.model_config(config)
  model_def = rows_lib.ModelDef.from_model(abstract_model(config, cfg))
  patch_dim = cfg.vision.patch_dim
  sft_steps, rl_steps = int(config.sft.steps), int(config.train_steps)
  clip = config.optim.max_grad_norm
  sft_tx, _ = optim_lib.make_optimizer(
    config.sft.lr, max(sft_steps, 1), warmup_steps=config.sft.warmup_steps, max_grad_norm=clip
  )
  rl_tx, _ = optim_lib.optimizer_from_config(config.optim, max(rl_steps, 1))
  first_tx = sft_tx if sft_steps else rl_tx
  shardings = state_lib.train_state_shardings(model_def.template, first_tx, mesh, rules)
  params = state_lib.abstract(model_def.template.to_pure_dict())
  state = state_lib.TrainState(
    step=jax.ShapeDtypeStruct((), jnp.int32),
    params=params,
    opt_state=jax.eval_shape(first_tx.init, params),
    rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
  )
  key = jax.eval_shape(lambda: jax.random.key(0))
  param_bytes = device_bytes(params, shardings.params)
  opt_bytes = device_bytes(state.opt_state, shardings.opt_state)
  state_bytes = device_bytes(state, shardings)

  learner = learner_lib.Learner(config, model_def, None, rl_tx, shardings, mesh, rules)
  # The rollout's copy and the reference: the policy in the compute dtype.
  compute_params = jax.eval_shape(model_def.in_compute_dtype, params)
  ref = compute_params if learner.use_ref else None
  ref_bytes = device_bytes(ref, shardings.params) if learner.use_ref else 0
  shapes = worst_case_shapes(config, cfg, text_tokens)
  batch = stand_in_batch(config, shapes)
  n_prompts = int(config.batch.prompts)

  def under_mesh(fn):
    def lower():
      with sharding.use_mesh(mesh, rules):
        return fn()

    return lower

  programs = [
    Program(
      "init",
      under_mesh(lambda: state_lib.make_optimizer_init(first_tx, shardings).lower(params)),
      0,
      "optimizer init on the placed parameters",
      param_bytes,
    )
  ]

  if sft_steps > 0:
    sft = sft_lib.SFT(config, model_def, _Tokenizer(), sft_tx, shardings, mesh, rules)
    sft_rows = sft.rows(batch)
    sft_micro = abstract_inputs(
      rows_lib.to_micro_batches(sft_rows, config.batch.micro_rollouts), patch_dim
    )
    programs.append(
      Program(
        "sft_step",
        under_mesh(lambda: sft.train_step.lower(state, sft_micro, None)),
        0,
        f"{len(sft_rows['tokens'])} rows as {sft_micro['tokens'].shape[0]} micro-batches of "
        f"{config.batch.micro_rollouts}",
        state_bytes + device_bytes(sft_micro, sft._batch_sharding),
      )
    )

  # The learner's sampler groups (Learner.sample): branches with the same rollout
  # count and greediness share one call, prompts stacked per branch.
  sampler_state = model_def.sampler_state(compute_params)  # the evaluator's
  rollout_state = model_def.sampler_state(jax.eval_shape(learner.rollout_copy, params))
  g = config.sampling.num_generations
  videos = rows_lib.split_videos(batch["orig"], n_prompts)
  for (n, greedy), sampler in learner._samplers.items():
    group = [b.name for b in learner.spec.branches if (b.num_rollouts(g), b.greedy) == (n, greedy)]
    inputs = abstract_inputs(
      rows_lib.stack_prompts(batch["orig"], [videos] * len(group)), patch_dim
    )
    name = "rollout" if len(learner._samplers) == 1 else f"rollout[{'+'.join(group)}]"
    rows = inputs["input_ids"].shape[0]
    programs.append(
      Program(
        name,
        under_mesh(lambda s=sampler, i=inputs: s.lower(rollout_state, i, key)),
        param_bytes + opt_bytes + ref_bytes,
        f"{rows} prompts x {n} samples, prompt {shapes.prompt_len} + "
        f"{config.sampling.max_new_tokens} new tokens",
        _sampler_arg_bytes(sampler, rollout_state, inputs),
      )
    )

  rollouts = _fake_rollouts(learner, batch, shapes)
  adv = np.zeros((n_prompts, len(learner.spec.gradient_branches), g), np.float32)
  rows = learner.train_rows(batch, rollouts, adv)
  micro = abstract_inputs(rows_lib.to_micro_batches(rows, config.batch.micro_rollouts), patch_dim)
  programs.append(
    Program(
      "update",
      under_mesh(lambda: learner.train_step.lower(state, micro, ref)),
      0,
      f"{len(rows['tokens'])} rows as {micro['tokens'].shape[0]} micro-batches of "
      f"{config.batch.micro_rollouts}" + (" + reference" if ref is not None else ""),
      state_bytes + device_bytes(micro, learner._batch_sharding) + ref_bytes,
    )
  )

  evaluator = evaluation.Evaluator(config, model_def, None, "", mesh, rules)
  eval_inputs = abstract_inputs(rows_lib.stack_prompts(batch["orig"], [videos]), patch_dim)
  programs.append(
    Program(
      "eval_sampler",
      under_mesh(lambda: evaluator._sampler.lower(sampler_state, eval_inputs, key)),
      param_bytes + opt_bytes + ref_bytes,
      f"{n_prompts} prompts, greedy, {config.eval_max_new_tokens} new tokens",
      _sampler_arg_bytes(evaluator._sampler, sampler_state, eval_inputs),
    )
  )
  summary = {
    "video_grid_thw": list(shapes.grid),
    "prompt_len": shapes.prompt_len,
    "param_bytes_per_device": param_bytes,
    "opt_state_bytes_per_device": opt_bytes,
  }
  return programs, summary
