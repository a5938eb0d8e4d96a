"""Outcome advantages from per-rollout rewards (METHOD.md section 6).

Rewards come as R [P, Bn, G]: P prompts, Bn branches (1 for GRPO, 2 for CRPO's
original and counterfactual branches), G rollouts per branch. Modes:

* "group" (default, ours for CRPO): per branch, A = (R - mean_G) / (std_G + eps),
  each branch normalised over its own G rollouts.
* "joint": one group of Bn*G rollouts per prompt, same formula (ours, option).
* "batch_std": mean per branch group, std over every valid rollout of the batch
  (TRL's scale_rewards="batch").
* "none": R - mean_G, no std division (Dr. GRPO).

std is the unbiased one (ddof = 1) as in Video-R1, TRL and veRL. Padding rollouts
(valid False) get A = 0 and never enter a mean or std. A group with fewer than two
valid rollouts has no baseline and gets A = 0 (ours; veRL would pass the raw score).
A group whose rewards are all equal gets A = 0 exactly, never NaN.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

MODES = ("group", "joint", "batch_std", "none")


def _masked_mean_std(r: Array, m: Array, axes: tuple[int, ...]) -> tuple[Array, Array, Array]:
  """Mean, unbiased std and count of r over `axes`, counting only where m."""
  n = m.sum(axes, keepdims=True)
  mean = jnp.where(m, r, 0.0).sum(axes, keepdims=True) / jnp.maximum(n, 1.0)
  sq = jnp.where(m, (r - mean) ** 2, 0.0).sum(axes, keepdims=True)
  std = jnp.sqrt(sq / jnp.maximum(n - 1.0, 1.0))
  return mean, std, n


def compute_advantages(
  rewards: Array,
  valid: Array | None = None,
  mode: str = "group",
  eps: float = 1e-4,
) -> Array:
  """Advantages A [P, Bn, G] for rewards R [P, Bn, G].

  Args:
    rewards: total reward per rollout, float [P, Bn, G].
    valid: bool [P, Bn, G]; False marks padding rollouts. Default: all valid.
    mode: "group", "joint", "batch_std" or "none" (module docstring).
    eps: added to the std (Video-R1/TRL 1e-4; veRL 1e-6).

  Returns:
    float32 [P, Bn, G]; zero on padding and on groups without spread.
  """
  r = jnp.asarray(rewards, jnp.float32)
  if r.ndim != 3:
    raise ValueError(f"rewards must be [P, Bn, G], got shape {r.shape}")
  m = jnp.ones(r.shape, bool) if valid is None else jnp.asarray(valid, bool)
  mf = m.astype(jnp.float32)
  if mode not in MODES:
    raise ValueError(f"unknown advantage mode {mode!r}; expected one of {MODES}")
  axes = (1, 2) if mode == "joint" else (2,)
  mean, std, n = _masked_mean_std(r, mf, axes)
  # Equal rewards must give exactly 0: the float mean of equal values can be off by
  # one ulp, which (R - mean) / (0 + eps) would blow up to ~1e-4 instead of 0.
  hi = jnp.where(m, r, -jnp.inf).max(axes, keepdims=True)
  lo = jnp.where(m, r, jnp.inf).min(axes, keepdims=True)
  if mode == "batch_std":
    _, std, _ = _masked_mean_std(r, mf, (0, 1, 2))
  adv = r - mean if mode == "none" else (r - mean) / (std + eps)
  return jnp.where(m & (n >= 2) & (hi > lo), adv, 0.0)
