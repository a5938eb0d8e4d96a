"""crpo_jax.rl."""
