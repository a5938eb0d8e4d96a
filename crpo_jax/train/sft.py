"""Supervised warm start: teacher-forced cross-entropy on a well-formed answer.

A random tiny model cannot find `<think>...</think><answer>X</answer>` by sampling,
so the demo (and any run with `sft.steps > 0`) first trains on the target
completion built from the ground truth (ours):

  <think>{sft.think}</think><answer>{letter}</answer><|im_end|>

on the branches `sft.branches` names: "orig" (the default for every algorithm) is
the original video with y; "cf" adds the counterfactual video with its own target
(y for Static routes, y_cf where the data gives one; rows without a target are left
out). Training the cf branch would hand a GRPO baseline counterfactual supervision,
so a comparison of algorithms keeps the default. The loss is the token mean of -log pi over completion tokens,
accumulated exactly over micro-batches like the RL loss.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from crpo_jax import sharding
from crpo_jax.data import transforms
from crpo_jax.train import learner_rows as rows_lib
from crpo_jax.train import metrics as metrics_lib
from crpo_jax.train import state as state_lib


def target_text(letter: str, think: str) -> str:
  return f"<think>{think}</think><answer>{letter}</answer>"


def encode_targets(tokenizer, texts: list[str], eos_id: int, length: int, pad_id: int):
  """Right-padded token ids [N, length] and mask; raises if a target does not fit."""
  tokens = np.full((len(texts), length), pad_id, np.int32)
  mask = np.zeros((len(texts), length), bool)
  for i, text in enumerate(texts):
    ids = list(tokenizer.encode(text, add_special_tokens=False)) + [eos_id]
    if len(ids) > length:
      raise ValueError(
        f"SFT target {text!r} is {len(ids)} tokens, more than sampling.max_new_tokens="
        f"{length}; shorten sft.think or raise max_new_tokens"
      )
    tokens[i, : len(ids)] = ids
    mask[i, : len(ids)] = True
  return tokens, mask


BRANCHES = ("orig", "cf")


def parse_branches(value: str) -> tuple[str, ...]:
  """`sft.branches` ("orig" or "orig,cf") as a tuple; raises on anything else."""
  branches = tuple(b.strip() for b in value.split(",") if b.strip())
  if not branches or any(b not in BRANCHES for b in branches) or len(set(branches)) < len(branches):
    raise ValueError(f"config sft.branches={value!r}: expected a subset of {BRANCHES}")
  return branches


def branch_targets(
  batch: dict[str, Any], branches: tuple[str, ...] = ("orig",)
) -> list[tuple[str, int, str]]:
  """(branch, prompt index, letter) for every row of `branches` with a known target."""
  out = []
  for p in range(len(batch["route"])):
    if "orig" in branches:
      out.append(("orig", p, str(batch["answer_letter"][p])))
    route = transforms.ROUTES[int(batch["route"][p])]
    cf = str(batch["answer_letter"][p]) if route == "static" else batch["answer_cf_letter"][p]
    if "cf" in branches and cf:
      out.append(("cf", p, str(cf)))
  return out


class SFT:
  """The jitted warm-start step and the host code that builds its rows."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    model_def: rows_lib.ModelDef,
    tokenizer,
    tx,
    shardings: state_lib.TrainState,
    mesh,
    rules,
  ):
    self.config, self.model_def, self.tokenizer = config, model_def, tokenizer
    self.mesh, self.rules = mesh, tuple(rules)
    self.branches = parse_branches(config.sft.branches)
    keys = ("prompt_ids", "prompt_mask", "tokens", "mask", "pixel_values_videos", "video_grid_thw")
    batch_sharding = rows_lib.micro_batch_shardings(mesh, rules, config.batch.micro_rollouts, keys)
    self._batch_sharding = batch_sharding
    self.train_step = state_lib.make_train_step(
      self._loss, tx, shardings, batch_sharding=batch_sharding
    )

  def _loss(self, params, mb, aux):
    del aux
    logp, ent = self.model_def.completion_logprobs(params, mb, 1.0, self.config.loss.logprob_chunk)
    m = mb["mask"].astype(jnp.float32)
    n = m.sum()
    nll = -(logp * m).sum()
    correct = ((logp > jnp.log(0.5)) * m).sum()  # tokens the model already prefers
    return nll, (n, {"num_tokens": n, "entropy": (ent * m).sum(), "confident": correct})

  def rows(self, batch: dict[str, Any]) -> dict[str, Any]:
    targets = branch_targets(batch, self.branches)
    num_prompts = len(batch["route"])
    videos = {
      "orig": rows_lib.split_videos(batch["orig"], num_prompts),
      "cf": rows_lib.split_videos(batch["cf"], num_prompts),
    }
    for _, grid in videos.values():
      self.model_def.check_videos(grid)
    texts = [target_text(letter, self.config.sft.think) for _, _, letter in targets]
    tokens, mask = encode_targets(
      self.tokenizer,
      texts,
      self.model_def.config.eos_token_id,
      self.config.sampling.max_new_tokens,
      self.model_def.pad_id,
    )
    index = np.array([p for _, p, _ in targets])
    return rows_lib.make_rows(
      batch["orig"],
      index,
      [videos[b][0][p] for b, p, _ in targets],
      np.stack([videos[b][1][p] for b, p, _ in targets]),
      tokens,
      mask,
    )

  def step(self, state: state_lib.TrainState, batch: dict[str, Any]):
    micro = rows_lib.to_micro_batches(self.rows(batch), self.config.batch.micro_rollouts)
    micro = sharding.to_global(micro, self._batch_sharding)
    with sharding.use_mesh(self.mesh, self.rules):
      state, dev = self.train_step(state, micro, None)
    dev = metrics_lib.to_scalars(dev)
    n = max(dev["num_tokens"], 1.0)
    return state, {
      "loss": dev["loss"],
      "grad_norm": dev["grad_norm"],
      "entropy": dev["entropy"] / n,
      "token_confident": dev["confident"] / n,
    }
