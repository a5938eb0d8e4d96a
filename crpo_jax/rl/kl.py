"""Per-token estimators of KL(pi || pi_ref) from sampled tokens (Schulman's k1/k2/k3).

With x = logp_ref - logp for a token sampled from pi:

* k1 = -x = logp - logp_ref              unbiased, high variance, can be negative;
* k2 = x^2 / 2                            biased, low variance, gradient is the
                                          true KL gradient in expectation;
* k3 = exp(x) - x - 1                     unbiased, >= 0, low variance (GRPO's);
* k3+ = value of k3, gradient of k2       veRL's straight-through variant.

As in veRL's `low_var_kl`, x is clamped to [-log_ratio_clamp, log_ratio_clamp]
before k3's exp, and k3's value to [-value_clamp, value_clamp]; Video-R1 clamps x at
10 and does not clamp the value. Either clamp can be None.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

ESTIMATORS = ("k1", "k2", "k3", "k3+")


def kl_penalty(
  logp: Array,
  ref_logp: Array,
  estimator: str = "k3",
  *,
  log_ratio_clamp: float | None = 20.0,
  value_clamp: float | None = 10.0,
) -> Array:
  """Per-token KL estimate, same shape as `logp`, float32.

  Args:
    logp: log pi(token) under the current policy (differentiated).
    ref_logp: log pi_ref(token) under the frozen reference (treated as constant).
    estimator: "k1", "k2", "k3" or "k3+".
    log_ratio_clamp: bound on |x| before the exp of k3 (veRL 20, Video-R1 10).
    value_clamp: bound on |k3| (veRL 10), None for no bound.
  """
  logp = jnp.asarray(logp, jnp.float32)
  ref_logp = jax.lax.stop_gradient(jnp.asarray(ref_logp, jnp.float32))
  x = ref_logp - logp
  if estimator == "k1":
    return -x
  k2 = 0.5 * x**2
  if estimator == "k2":
    return k2
  if estimator not in ("k3", "k3+"):
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {ESTIMATORS}")
  if log_ratio_clamp is not None:
    x = jnp.clip(x, -log_ratio_clamp, log_ratio_clamp)
  k3 = jnp.exp(x) - x - 1.0
  if value_clamp is not None:
    k3 = jnp.clip(k3, -value_clamp, value_clamp)
  if estimator == "k3":
    return k3
  # Straight-through: forward value k3, backward gradient of k2.
  return k2 + jax.lax.stop_gradient(k3 - k2)
