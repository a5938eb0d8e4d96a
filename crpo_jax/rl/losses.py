"""GRPO/CRPO policy loss as a pure, jittable function (METHOD.md section 6).

Per completion token t of rollout i, with w the importance ratio and A_i the
rollout's advantage:

  l_t = max(-w A_i, -clip(w, 1 - eps_low, 1 + eps_high) A_i) + beta * KL_t

with dual clip (veRL, for A < 0): l_t = min(l_t_pg, -c A_i) + beta * KL_t.
w is per token (w_t = pi/pi_old) or per sequence (GSPO: s_i = exp(mean_t log w_t),
applied per token as exp(logp - sg(logp) + sg(log s_i)) so the gradient flows
through each token). KL is `kl.kl_penalty` against the frozen reference.

`policy_loss` returns (loss_sum, denominator): the loss of a full batch split into
micro-batches is exactly sum(loss_sum) / sum(denominator), for the value and the
gradient. The aggregation modes (veRL's names; TRL's in brackets):

* token-mean [bnpo/dapo]:      sum_{i,t} l / #tokens
* seq-mean-token-mean [grpo]:  sum_i (mean_t l) / #sequences     (default)
* seq-mean-token-sum:          sum_{i,t} l / #sequences
* seq-mean-token-sum-norm [dr_grpo]: sum_{i,t} l / (#sequences * max_len)

Padding tokens (mask False) never count, and a row without any token counts as no
sequence, so padding never changes the loss.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import Array

from crpo_jax.rl import kl as kl_lib

AGGREGATIONS = (
  "token-mean",
  "seq-mean-token-mean",
  "seq-mean-token-sum",
  "seq-mean-token-sum-norm",
)


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Knobs of the clipped surrogate (reference/video_rl.md section 6.3).

  Attributes:
    ratio_level: "token" (PPO/GRPO) or "sequence" (GSPO, length-normalised).
    eps_low: lower clip range epsilon, w >= 1 - eps_low.
    eps_high: upper clip range, w <= 1 + eps_high (DAPO's clip-higher when larger).
    dual_clip_c: veRL's clip_ratio_c (3.0) bounding the loss for A < 0; None = off.
    delta: TRL's two-sided cap on w in the unclipped term (INTELLECT-2); None = off.
    beta: KL weight; 0 disables the KL term and the reference model.
    kl_estimator: "k1", "k2", "k3" or "k3+".
    kl_log_ratio_clamp: clamp on log(pi_ref/pi) inside k3 (veRL 20, Video-R1 10).
    kl_value_clamp: clamp on the k3 value (veRL 10), None = off.
    aggregation: one of AGGREGATIONS.
    max_len: the constant of seq-mean-token-sum-norm (max completion length).
    log_ratio_clamp: clamp on log w before the exp (veRL 20) so ratios stay finite.
  """

  ratio_level: str = "token"
  eps_low: float = 0.2
  eps_high: float = 0.2
  dual_clip_c: float | None = None
  delta: float | None = None
  beta: float = 0.04
  kl_estimator: str = "k3"
  kl_log_ratio_clamp: float | None = 20.0
  kl_value_clamp: float | None = 10.0
  aggregation: str = "seq-mean-token-mean"
  max_len: int | None = None
  log_ratio_clamp: float = 20.0

  def __post_init__(self):
    if self.ratio_level not in ("token", "sequence"):
      raise ValueError(f"ratio_level must be 'token' or 'sequence', got {self.ratio_level!r}")
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"aggregation {self.aggregation!r} not in {AGGREGATIONS}")
    if self.aggregation == "seq-mean-token-sum-norm" and not self.max_len:
      raise ValueError("seq-mean-token-sum-norm needs max_len (the max completion length)")
    if self.kl_estimator not in kl_lib.ESTIMATORS:
      raise ValueError(f"kl_estimator {self.kl_estimator!r} not in {kl_lib.ESTIMATORS}")
    if self.dual_clip_c is not None and self.dual_clip_c <= 1.0:
      raise ValueError(f"dual_clip_c must be > 1, got {self.dual_clip_c}")


def importance_log_ratio(logp: Array, old_logp: Array, mask: Array, cfg: LossConfig) -> Array:
  """log w per token [B, T]: token level, or GSPO's combined sequence ratio."""
  m = mask.astype(jnp.float32)
  log_ratio = jnp.clip(
    logp - jax.lax.stop_gradient(old_logp), -cfg.log_ratio_clamp, cfg.log_ratio_clamp
  )
  if cfg.ratio_level == "token":
    return log_ratio
  n = jnp.maximum(m.sum(-1, keepdims=True), 1.0)
  log_s = (log_ratio * m).sum(-1, keepdims=True) / n
  # Value log s_i on every token; gradient that of logp_t itself (veRL's GSPO).
  combined = logp - jax.lax.stop_gradient(logp) + jax.lax.stop_gradient(log_s)
  return jnp.minimum(combined, 10.0)


def aggregate(per_token: Array, mask: Array, cfg: LossConfig) -> tuple[Array, Array]:
  """(sum, denominator) of per-token values under cfg.aggregation."""
  m = mask.astype(jnp.float32)
  n = m.sum(-1)
  num_seqs = (n > 0).sum().astype(jnp.float32)
  token_sum = (per_token * m).sum()
  if cfg.aggregation == "token-mean":
    return token_sum, m.sum()
  if cfg.aggregation == "seq-mean-token-mean":
    return ((per_token * m).sum(-1) / jnp.maximum(n, 1.0)).sum(), num_seqs
  if cfg.aggregation == "seq-mean-token-sum":
    return token_sum, num_seqs
  return token_sum, num_seqs * float(cfg.max_len)


def policy_loss(
  logp: Array,
  old_logp: Array,
  advantages: Array,
  mask: Array,
  cfg: LossConfig,
  ref_logp: Array | None = None,
  entropy: Array | None = None,
) -> tuple[Array, Array, dict[str, Array]]:
  """Clipped surrogate plus beta * KL, as (loss_sum, denominator, metrics).

  Args:
    logp: log pi(token) under the current policy, [B, T] (differentiated).
    old_logp: log pi_old(token) from the sampler, [B, T] (constant).
    advantages: A per rollout [B] (or per token [B, T]).
    mask: bool [B, T], True on completion tokens that count.
    cfg: loss knobs.
    ref_logp: log pi_ref(token) [B, T]; required when cfg.beta > 0.
    entropy: per-token entropy of pi [B, T] for the metrics only.

  Returns:
    loss_sum and denominator (scalars; loss = loss_sum / denominator), and metrics:
    token means over this micro-batch (clip_frac, dual_clip_frac, kl, ratio_mean,
    and entropy when given) with num_tokens to weight them, ratio_min/max, and the aggregated
    pg_loss and kl_loss of this micro-batch.
  """
  mask = jnp.asarray(mask, bool)
  # Sanitise padding first so garbage there cannot turn into inf/NaN (or gradients).
  logp = jnp.where(mask, jnp.asarray(logp, jnp.float32), 0.0)
  old_logp = jnp.where(mask, jnp.asarray(old_logp, jnp.float32), 0.0)
  adv = jnp.asarray(advantages, jnp.float32)
  adv = adv[:, None] if adv.ndim == 1 else adv
  adv = jnp.where(mask, jnp.broadcast_to(adv, mask.shape), 0.0)

  w = jnp.exp(importance_log_ratio(logp, old_logp, mask, cfg))
  w_unclipped = w if cfg.delta is None else jnp.minimum(w, cfg.delta)
  pg1 = -adv * w_unclipped
  pg2 = -adv * jnp.clip(w, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
  pg = jnp.maximum(pg1, pg2)
  clipped = pg2 > pg1
  dual = jnp.zeros_like(mask)
  if cfg.dual_clip_c is not None:
    pg3 = -adv * cfg.dual_clip_c
    dual = (adv < 0) & (pg > pg3)
    pg = jnp.where(adv < 0, jnp.minimum(pg, pg3), pg)

  kl = jnp.zeros_like(logp)
  if cfg.beta > 0:
    if ref_logp is None:
      raise ValueError("beta > 0 needs ref_logp")
    ref_logp = jnp.where(mask, jnp.asarray(ref_logp, jnp.float32), 0.0)
    kl = kl_lib.kl_penalty(
      logp,
      ref_logp,
      cfg.kl_estimator,
      log_ratio_clamp=cfg.kl_log_ratio_clamp,
      value_clamp=cfg.kl_value_clamp,
    )
  loss_sum, denom = aggregate(pg + cfg.beta * kl, mask, cfg)

  m = mask.astype(jnp.float32)
  num_tokens = m.sum()
  safe = jnp.maximum(num_tokens, 1.0)
  tok_mean = lambda x: jax.lax.stop_gradient((x * m).sum() / safe)
  ws = jax.lax.stop_gradient(w)
  pg_sum, _ = aggregate(jax.lax.stop_gradient(pg), mask, cfg)
  kl_sum, _ = aggregate(jax.lax.stop_gradient(kl), mask, cfg)
  metrics = {
    "num_tokens": num_tokens,
    "clip_frac": tok_mean(clipped.astype(jnp.float32)),
    "dual_clip_frac": tok_mean(dual.astype(jnp.float32)),
    "kl": tok_mean(kl),
    "ratio_mean": tok_mean(ws),
    "ratio_min": jnp.where(mask, ws, jnp.inf).min(),
    "ratio_max": jnp.where(mask, ws, -jnp.inf).max(),
    "pg_loss": pg_sum / jnp.maximum(denom, 1e-12),
    "kl_loss": kl_sum / jnp.maximum(denom, 1e-12),
  }
  if entropy is not None:
    metrics["entropy"] = tok_mean(jnp.asarray(entropy, jnp.float32))
  return loss_sum, denom, metrics
