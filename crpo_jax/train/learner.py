"""RL orchestration: sample every branch, score on the host, advantages, update.

One code path for crpo, grpo, tgrpo and arrowrl (`rl/algorithms.AlgorithmSpec`):

  1. For each group of branches with the same rollout count and greediness, one
     sampler call on the prompts stacked along the batch (CRPO: original and
     counterfactual together, G each).
  2. Decode, `rewards.score_prompt` per prompt (every term separately), and
     `advantages.compute_advantages` over the gradient branches [P, Bn, G].
  3. Training rows (prompt + completion, the row's own video, old log-probs,
     advantage) for the gradient branches, padded to whole micro-batches; one
     jitted update accumulates (loss_sum, denominator) over them exactly
     (`train/state.make_train_step`). The frozen reference model's log-probs are
     computed inside the same step, and not at all when beta is 0.

Input batches (crpo_jax.data pipeline): `batch['orig']` and `batch['cf']` hold
HF-style model inputs (`input_ids`, `attention_mask` [P, L] left-padded,
`pixel_values_videos`, `video_grid_thw`), plus per-example lists `route`,
`answer`, `answer_cf`, `num_options` (null option included).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from crpo_jax import sharding
from crpo_jax.data import transforms
from crpo_jax.rl import advantages as adv_lib
from crpo_jax.rl import algorithms, losses
from crpo_jax.rl import rewards as rewards_lib
from crpo_jax.rl import sampler as sampler_lib
from crpo_jax.train import faults
from crpo_jax.train import learner_rows as rows_lib
from crpo_jax.train import reward_metrics as reward_lib
from crpo_jax.train import scalars as scalars_lib
from crpo_jax.train import state as state_lib

if TYPE_CHECKING:  # configs are ml_collections, which accelerator images may lack
  import ml_collections

# sampling.rollout_layout: "fsdp" keeps the master weights' layout (each decode step
# gathers the weights it uses); "decode" gathers them over the FSDP axes once per
# step (sharding.decode_rules).
ROLLOUT_LAYOUTS = ("fsdp", "decode")
_SUM_METRICS = ("clip_frac", "dual_clip_frac", "kl", "ratio_mean", "entropy")


def example_infos(batch: dict[str, Any]) -> list[rewards_lib.ExampleInfo]:
  """Reward-side facts of each prompt in a pipeline batch (data/pipeline.py format)."""
  out = []
  for i, route in enumerate(batch["route"]):
    cf = str(batch["answer_cf_letter"][i])
    out.append(
      rewards_lib.ExampleInfo(
        route=transforms.ROUTES[int(route)].capitalize(),
        answer=str(batch["answer_letter"][i]),
        num_options=int(batch["num_options"][i]),
        cf_answer=cf or None,
      )
    )
  return out


def loss_config(config: ml_collections.ConfigDict) -> losses.LossConfig:
  c = config.loss
  return losses.LossConfig(
    ratio_level=c.ratio_level,
    eps_low=c.eps_low,
    eps_high=c.eps_high,
    dual_clip_c=c.dual_clip_c,
    delta=c.delta,
    beta=c.beta,
    kl_estimator=c.kl_estimator,
    kl_log_ratio_clamp=c.kl_log_ratio_clamp,
    kl_value_clamp=c.kl_value_clamp,
    aggregation=c.aggregation,
    max_len=config.sampling.max_new_tokens,
    log_ratio_clamp=c.log_ratio_clamp,
  )


def reward_config(config: ml_collections.ConfigDict) -> rewards_lib.RewardConfig:
  fields = {f.name for f in dataclasses.fields(rewards_lib.RewardConfig)}
  return rewards_lib.RewardConfig(**{k: v for k, v in config.reward.items() if k in fields})


class Learner:
  """Owns the samplers and the jitted RL update of one run."""

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
    self.spec = algorithms.get_algorithm(
      config.algo,
      length_bonus=config.reward.length_bonus,
      advantage_mode=config.advantages.mode,
    )
    self.reward_cfg = reward_config(config)
    self.loss_cfg = loss_config(config)
    self.use_ref = self.loss_cfg.beta > 0
    self.last_rollouts: list[dict[str, Any]] = []  # the last step's rollout sample
    s = config.sampling
    if s.rollout_layout not in ROLLOUT_LAYOUTS:
      raise ValueError(
        f"config.sampling.rollout_layout={s.rollout_layout!r}: expected one of "
        f"{', '.join(ROLLOUT_LAYOUTS)}"
      )
    # The rollout's copy of the policy: the compute dtype, in the sampler's layout.
    self.rollout_rules = self.rules
    if s.rollout_layout == "decode":
      self.rollout_rules = sharding.decode_rules(self.rules)
    self._rollout_copy = jax.jit(
      model_def.in_compute_dtype,
      out_shardings=sharding.param_shardings(
        model_def.template, mesh, self.rollout_rules
      ).to_pure_dict(),
    )
    self._samplers = {}
    for branch in self.spec.branches:
      n = branch.num_rollouts(s.num_generations)
      key = (n, branch.greedy)
      if key not in self._samplers:
        self._samplers[key] = model_def.sampler(
          sampler_lib.SamplingConfig(
            max_new_tokens=s.max_new_tokens,
            num_samples=n,
            temperature=0.0 if branch.greedy else s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            eos_ids=model_def.eos_ids,
            pad_id=model_def.pad_id,
            cache_dtype=s.cache_dtype,
          ),
          mesh,
          self.rollout_rules,
        )
    aux_sharding = shardings.params if self.use_ref else None
    keys = ("prompt_ids", "prompt_mask", "tokens", "mask", "old_logp", "advantages")
    batch_sharding = rows_lib.micro_batch_shardings(
      mesh, rules, config.batch.micro_rollouts, (*keys, "pixel_values_videos", "video_grid_thw")
    )
    self._batch_sharding = batch_sharding
    self.train_step = state_lib.make_train_step(
      self._loss, tx, shardings, batch_sharding=batch_sharding, aux_sharding=aux_sharding
    )

  # ------------------------------------------------------------------ device side

  def _loss(self, params, mb, ref_params):
    temp = max(self.config.sampling.temperature, 1e-6)
    chunk = self.config.loss.logprob_chunk
    logp, ent = self.model_def.completion_logprobs(params, mb, temp, chunk)
    ref_logp = None
    if self.use_ref:
      ref_logp, _ = self.model_def.completion_logprobs(ref_params, mb, temp, chunk)
      ref_logp = jax.lax.stop_gradient(ref_logp)
    loss_sum, den, m = losses.policy_loss(
      logp, mb["old_logp"], mb["advantages"], mb["mask"], self.loss_cfg, ref_logp, ent
    )
    n = m["num_tokens"]
    sums = {k: m[k] * n for k in _SUM_METRICS if k in m}
    sums["num_tokens"] = n
    return loss_sum, (den, sums)

  # -------------------------------------------------------------------- host side

  def rollout_copy(self, params):
    """The policy the rollout samples from, made once per step: the compute dtype
    (`ModelDef.in_compute_dtype`), laid out by `sampling.rollout_layout`."""
    return self._rollout_copy(params)

  def sample(self, state: state_lib.TrainState, batch: dict[str, Any], step: int):
    """Rollouts of every branch: {name: (GenerateOutput as numpy, Videos, n per prompt)}."""
    key = jax.random.fold_in(state.key(), step)
    g = self.config.sampling.num_generations
    vision = self.model_def.config.vision
    sampler_state = self.model_def.sampler_state(self.rollout_copy(state.params))
    num_prompts = len(batch["route"])
    out = {}
    for gi, ((n, greedy), sampler) in enumerate(self._samplers.items()):
      group = [b for b in self.spec.branches if (b.num_rollouts(g), b.greedy) == (n, greedy)]
      videos = [
        rows_lib.branch_video(batch, b.video, vision, (self.config.seed, step, gi, bi))
        for bi, b in enumerate(group)
      ]
      for _, grid in videos:
        self.model_def.check_videos(grid)
      inputs = rows_lib.stack_prompts(batch["orig"], videos)
      with sharding.use_mesh(self.mesh, self.rollout_rules):
        gen = sampler(sampler_state, inputs, jax.random.fold_in(key, gi))
      gen = sharding.host_get(gen)
      for bi, b in enumerate(group):
        rows = slice(bi * num_prompts * n, (bi + 1) * num_prompts * n)
        out[b.name] = (jax.tree.map(lambda x, rows=rows: x[rows], gen), videos[bi], n)
    return out

  def decode(self, rollouts, num_prompts: int):
    """Completion texts and lengths per branch, [prompt][rollout]."""
    texts, lengths = {}, {}
    for name, (gen, _, n) in rollouts.items():
      decoded = [rows_lib.decode(self.tokenizer, t, ln) for t, ln in zip(gen.tokens, gen.lengths)]
      texts[name] = [decoded[p * n : (p + 1) * n] for p in range(num_prompts)]
      lengths[name] = [gen.lengths[p * n : (p + 1) * n] for p in range(num_prompts)]
    return texts, lengths

  def score(self, rollouts, infos, decoded=None) -> list[rewards_lib.PromptRewards]:
    """Decodes completions (unless `decoded`, from `decode`, is given) and scores every
    prompt on the host."""
    texts, lengths = decoded or self.decode(rollouts, len(infos))
    get = lambda d, name, p: d[name][p] if name in d else None
    scored = []
    for p, info in enumerate(infos):
      rev = get(texts, "reversed", p)
      scored.append(
        rewards_lib.score_prompt(
          texts["original"][p],
          get(texts, "counterfactual", p),
          info,
          self.reward_cfg,
          terms=self.spec.reward_terms,
          cf_greedy=rev[0] if rev else None,
          shuffled_completions=get(texts, "shuffled", p),
          lengths=get(lengths, "original", p),
          cf_lengths=get(lengths, "counterfactual", p),
        )
      )
    return scored

  def train_rows(self, batch, rollouts, adv: np.ndarray) -> dict[str, Any]:
    """Rows of the gradient branches, branch-major then prompt-major, G per prompt."""
    grad = [b.name for b in self.spec.gradient_branches]
    num_prompts, g = adv.shape[0], adv.shape[2]
    prompt_index = np.tile(np.repeat(np.arange(num_prompts), g), len(grad))
    videos, grids = [], []
    for name in grad:
      vids, grid = rollouts[name][1]
      videos += [vids[p] for p in range(num_prompts) for _ in range(g)]
      grids.append(np.repeat(grid, g, axis=0))
    cat = lambda f: np.concatenate([getattr(rollouts[name][0], f) for name in grad])
    return rows_lib.make_rows(
      batch["orig"],
      prompt_index,
      videos,
      np.concatenate(grids),
      cat("tokens"),
      cat("mask"),
      old_logp=cat("logprobs").astype(np.float32),
      advantages=np.transpose(adv, (1, 0, 2)).reshape(-1).astype(np.float32),
    )

  def update(self, state, micro: dict[str, np.ndarray], ref_params):
    """The jitted update on host micro-batches [M, micro, ...]; the state is donated."""
    micro = sharding.to_global(micro, self._batch_sharding)
    with sharding.use_mesh(self.mesh, self.rules):
      return self.train_step(state, micro, ref_params if self.use_ref else None)

  def step(self, state, batch, ref_params, step: int):
    """One RL update; returns (new state, host metrics).

    `step` counts the updates done before this one (global, SFT included).
    """
    t0 = time.perf_counter()
    rollouts = self.sample(state, batch, step)
    t_sample = time.perf_counter() - t0
    faults.at("rollout", step + 1)
    infos = example_infos(batch)
    decoded = self.decode(rollouts, len(infos))
    scored = self.score(rollouts, infos, decoded)
    total = np.stack([r.total for r in scored])  # [P, Bn, G]
    adv = np.asarray(
      adv_lib.compute_advantages(
        total, mode=self.spec.advantage_mode, eps=self.config.advantages.eps
      )
    )
    micro = rows_lib.to_micro_batches(
      self.train_rows(batch, rollouts, adv), self.config.batch.micro_rollouts
    )
    if faults.nan_at(step + 1):  # a bad batch, for the tests (train/faults.py)
      micro["advantages"][0, 0] = np.nan
    t1 = time.perf_counter()
    state, dev_metrics = self.update(state, micro, ref_params)
    faults.at("update", step + 1)
    dev = scalars_lib.to_scalars(dev_metrics)
    t_update = time.perf_counter() - t1
    n_tok = max(dev.pop("num_tokens", 0.0), 1.0)
    out = {k: dev[k] / n_tok for k in self._used_metrics() if k in dev}
    out.update(loss=dev["loss"], grad_norm=dev["grad_norm"], param_norm=dev["param_norm"])
    gen_tokens = sum(int(gen.lengths.sum()) for gen, _, _ in rollouts.values())
    out.update(
      rollout_tokens_per_s=gen_tokens / max(t_sample, 1e-9),
      time_sample=t_sample,
      time_update=t_update,
      response_length=float(np.mean(rollouts["original"][0].lengths)),
      advantage_abs=float(np.abs(adv).mean()),
    )
    grad = [b.name for b in self.spec.gradient_branches]
    terms = self.spec.reward_terms
    out.update(reward_lib.reward_metrics(scored, infos, grad, terms, self.reward_cfg))
    self.last_rollouts = reward_lib.rollout_sample(
      scored, infos, decoded[0], adv, grad, terms, batch.get("id", []), self.config.log_rollouts
    )  # the loop writes it to WORKDIR/rollouts/ on logged steps
    return state, out

  def _used_metrics(self) -> tuple[str, ...]:
    """The loss metrics this run can make non-zero (no KL without a reference model,
    no dual-clip fraction without dual clipping)."""
    unused = set()
    if not self.use_ref:
      unused.add("kl")
    if self.loss_cfg.dual_clip_c is None:
      unused.add("dual_clip_frac")
    return tuple(k for k in _SUM_METRICS if k not in unused)
