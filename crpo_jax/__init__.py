"""crpo_jax: Counterfactual Relational Policy Optimization for video LLMs in JAX.

Importing `crpo_jax` is cheap; subpackages load on use. `crpo_jax.model` and
`crpo_jax.rl` need only jax, flax, optax and numpy.
"""

__version__ = "0.1.0"


def __getattr__(name):
  if name == "generate":
    from crpo_jax.rl.sampler import generate

    return generate
  raise AttributeError(f"module 'crpo_jax' has no attribute {name!r}")
