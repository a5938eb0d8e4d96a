"""crpo_jax.train."""
