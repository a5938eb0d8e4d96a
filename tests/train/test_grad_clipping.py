"""Global-norm clipping really reaches the Adam moments (train/optimizer.py)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from crpo_jax.train.optimizer import make_optimizer
from tests.tolerance import assert_close

B1 = 0.9


@pytest.mark.parametrize("scale", [100.0, 0.01])
def test_clipping_bounds_the_gradient_adam_sees(scale):
  """After one update the first moment is (1 - b1) * clip(g): clipped when |g| > 1 only.

  Adam's first step is invariant to the gradient's scale, so the update alone cannot
  show clipping; the moment it stores can.
  """
  params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros((5,))}
  rng = np.random.default_rng(0)
  grads = {k: jnp.asarray(rng.normal(size=v.shape) * scale, jnp.float32) for k, v in params.items()}
  norm = float(optax.global_norm(grads))
  tx, _ = make_optimizer(1e-3, 10, b1=B1, max_grad_norm=1.0)
  _, state = tx.update(grads, tx.init(params), params)
  mu = optax.tree_utils.tree_get(state, "mu")
  factor = min(1.0, 1.0 / norm)
  for k in params:
    assert_close(mu[k], (1 - B1) * np.asarray(grads[k]) * factor, rtol=1e-6, err_msg=k)
  if scale > 1:
    assert_close(optax.global_norm(mu), 1 - B1, rtol=1e-6, err_msg="clipped norm")
  # Without clipping the same big gradient reaches the moments unscaled.
  tx_off, _ = make_optimizer(1e-3, 10, b1=B1, max_grad_norm=None)
  _, state_off = tx_off.update(grads, tx_off.init(params), params)
  mu_off = optax.tree_utils.tree_get(state_off, "mu")
  assert_close(optax.global_norm(mu_off), (1 - B1) * norm, rtol=1e-6, err_msg="unclipped norm")
