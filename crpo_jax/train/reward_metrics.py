"""Reward metrics of one RL step, and the bounded rollout sample a run keeps.

Names (only the terms in the algorithm's `reward_terms` are logged, so a CRPO run
has no always-zero T-GRPO or ArrowRL tags):
  reward/<branch>/unweighted/<term>   the term as scored, in [0, 1]
  reward/<branch>/weighted/<term>     the term times its weight (RewardConfig)
  reward/<branch>/weighted/total      their sum: the reward the advantages use
  reward_route/<branch>/unweighted/<term>/<route>, .../weighted/total/<route>
  reward/<branch>/zero_spread_groups  fraction of prompts whose G rollouts all got
                                      the same total (no learning signal there)
  accuracy, crr                       summaries (original branch; CRR over both)

`rollout_sample` is what `WORKDIR/rollouts/step_N.jsonl` holds: per sampled prompt,
every rollout of every branch with its text, extracted answer, terms and advantage.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from crpo_jax.rl import rewards as rewards_lib
from crpo_jax.train import scalars as scalars_lib

# RewardConfig field of each term's weight.
WEIGHT_FIELDS = {
  "accuracy": "accuracy_weight",
  "format": "format_weight",
  "crr": "crr_weight",
  "temporal_bonus": "temporal_weight",
  "reverse_reward": "reverse_weight",
  "length_bonus": "length_weight",
}


def weights(cfg: rewards_lib.RewardConfig) -> dict[str, float]:
  return {term: float(getattr(cfg, field)) for term, field in WEIGHT_FIELDS.items()}


def reward_metrics(
  scored: Sequence[rewards_lib.PromptRewards],
  infos: Sequence[rewards_lib.ExampleInfo],
  branch_names: Sequence[str],
  terms: Sequence[str],
  cfg: rewards_lib.RewardConfig,
) -> dict[str, float]:
  """The scalars of the module docstring for one step's scored prompts."""
  out = {}
  routes = [i.route for i in infos]
  w = weights(cfg)
  for term in (*terms, "total"):
    arr = np.stack([getattr(r, term) for r in scored])  # [P, Bn, G]
    for k, name in enumerate(branch_names[: arr.shape[1]]):
      per_prompt = arr[:, k].mean(-1).tolist()
      if term == "total":
        out[f"reward/{name}/weighted/total"] = float(arr[:, k].mean())
        out.update(scalars_lib.mean_by(per_prompt, routes, f"reward_route/{name}/weighted/total"))
        spread = arr[:, k].max(-1) - arr[:, k].min(-1)
        out[f"reward/{name}/zero_spread_groups"] = float(np.mean(spread == 0))
        continue
      out[f"reward/{name}/unweighted/{term}"] = float(arr[:, k].mean())
      out[f"reward/{name}/weighted/{term}"] = w[term] * float(arr[:, k].mean())
      out.update(scalars_lib.mean_by(per_prompt, routes, f"reward_route/{name}/unweighted/{term}"))
  out["accuracy"] = float(np.mean([r.accuracy[0].mean() for r in scored]))
  if "crr" in terms:
    out["crr"] = float(np.mean([r.crr.mean() for r in scored]))
  return out


def rollout_sample(
  scored: Sequence[rewards_lib.PromptRewards],
  infos: Sequence[rewards_lib.ExampleInfo],
  texts: dict[str, list[list[str]]],
  adv: np.ndarray,
  branch_names: Sequence[str],
  terms: Sequence[str],
  ids: Sequence[Any],
  num_prompts: int,
) -> list[dict[str, Any]]:
  """The first `num_prompts` prompts of a step, every rollout of each scored branch.

  Args:
    scored, infos: per prompt, as the learner scored them.
    texts: decoded completions {branch: [prompt][rollout]}.
    adv: advantages [P, Bn, G] of the gradient branches `branch_names`.
    ids: record ids per prompt (may be empty).
  """
  out = []
  for p in range(min(num_prompts, len(scored))):
    r, info = scored[p], infos[p]
    branches = {}
    for k, name in enumerate(branch_names[: len(r.answers)]):
      branches[name] = [
        {
          "text": texts[name][p][g],
          "answer": r.answers[k][g],
          "terms": {t: float(getattr(r, t)[k, g]) for t in terms},
          "total": float(r.total[k, g]),
          "advantage": float(adv[p, k, g]),
        }
        for g in range(len(r.answers[k]))
      ]
    out.append(
      {
        "prompt": p,
        "id": str(ids[p]) if p < len(ids) else None,
        "route": info.route,
        "target": {"original": info.answer, "counterfactual": info.cf_target},
        "branches": branches,
      }
    )
  return out


def write_rollouts(workdir: str, step: int, sample: list[dict[str, Any]]) -> str:
  """`WORKDIR/rollouts/step_N.jsonl`, one line per sampled prompt (overwritten on a redo)."""
  path = os.path.join(workdir, "rollouts", f"step_{step}.jsonl")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.writelines(json.dumps(record) + "\n" for record in sample)
  return path
