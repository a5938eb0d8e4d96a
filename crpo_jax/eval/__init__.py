"""crpo_jax.eval."""
