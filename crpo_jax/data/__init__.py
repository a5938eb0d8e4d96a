"""crpo_jax.data."""
