"""Chunked log-probs: equal to the full-logits computation, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crpo_jax.rl.logprobs import token_logprobs
from tests.tolerance import assert_close

B, T, D, V = 3, 7, 5, 11  # distinct odd sizes so a transposed axis cannot hide


def _inputs(seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  hidden = jax.random.normal(k[0], (B, T, D))
  kernel = jax.random.normal(k[1], (D, V))
  targets = jax.random.randint(k[2], (B, T), 0, V)
  return hidden, kernel, targets


def _full(hidden, kernel, targets, temperature=1.0):
  logits = jnp.einsum("BTD,DV->BTV", hidden, kernel) / temperature
  logp_all = jax.nn.log_softmax(logits, -1)
  logp = jnp.take_along_axis(logp_all, targets[..., None], -1)[..., 0]
  entropy = -(jnp.exp(logp_all) * logp_all).sum(-1)
  return logp, entropy


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64])
def test_chunked_matches_full_logits(chunk_size):
  hidden, kernel, targets = _inputs()
  logp, ent = token_logprobs(hidden, kernel, targets, chunk_size=chunk_size, temperature=0.7)
  ref_logp, ref_ent = _full(hidden, kernel, targets, 0.7)
  assert logp.shape == ent.shape == (B, T) and logp.dtype == jnp.float32
  np.testing.assert_allclose(logp, ref_logp, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ent, ref_ent, rtol=1e-5, atol=1e-5)


def test_gradients_match_full_logits():
  hidden, kernel, targets = _inputs(1)
  w = jax.random.normal(jax.random.key(9), (B, T))

  def objective(fn):
    def f(h, k):
      logp, ent = fn(h, k)
      return (w * logp).sum() + 0.1 * ent.sum()

    return jax.grad(f, argnums=(0, 1))(hidden, kernel)

  got = objective(jax.jit(lambda h, k: token_logprobs(h, k, targets, chunk_size=3)))
  want = objective(lambda h, k: _full(h, k, targets))
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def _all_shapes(jaxpr) -> set[tuple[int, ...]]:
  """Every intermediate's shape in a jaxpr and in all its sub-jaxprs (jit, checkpoint,
  scan/map bodies, cond branches, custom derivatives), at any depth."""
  shapes = set()
  for eqn in jaxpr.eqns:
    shapes |= {tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape")}
    for param in eqn.params.values():
      for p in param if isinstance(param, (tuple, list)) else (param,):
        inner = getattr(p, "jaxpr", p)  # ClosedJaxpr -> Jaxpr
        if hasattr(inner, "eqns"):
          shapes |= _all_shapes(inner)
  return shapes


def _largest_vocab_tensor(fn, *args) -> int:
  """The most elements of any intermediate that has a vocabulary-sized axis."""
  shapes = _all_shapes(jax.make_jaxpr(fn)(*args).jaxpr)
  return max((int(np.prod(s)) for s in shapes if V in s), default=0)


def test_never_builds_full_logits():
  """Neither the forward nor the backward of the chunked path holds [B, T, V]."""
  hidden, kernel, targets = _inputs()

  def chunked(h, k):
    return token_logprobs(h, k, targets, chunk_size=2)[0].sum()

  assert _largest_vocab_tensor(chunked, hidden, kernel) < B * T * V
  assert _largest_vocab_tensor(jax.grad(chunked, argnums=(0, 1)), hidden, kernel) < B * T * V

  # The check sees through wrappers: full logits hidden inside jit or checkpoint are caught.
  for wrap in (jax.jit, jax.checkpoint):
    hidden_full = wrap(lambda h, k: _full(h, k, targets)[0].sum())
    assert _largest_vocab_tensor(hidden_full, hidden, kernel) >= B * T * V, wrap


def test_bf16_hidden_gives_float32():
  hidden, kernel, targets = _inputs()
  logp, _ = token_logprobs(
    hidden.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), targets, chunk_size=4
  )
  assert logp.dtype == jnp.float32
  # bf16 inputs carry 2**-9 relative rounding each, so the logits (and log-probs) move
  # by a few bf16 ulps of their scale; float32 accumulation keeps it from growing.
  assert_close(logp, _full(hidden, kernel, targets)[0], rtol=2**-8, err_msg="bf16 logprobs")


def test_shape_errors():
  hidden, kernel, targets = _inputs()
  with pytest.raises(ValueError):
    token_logprobs(hidden, kernel, targets[:, :-1])
  with pytest.raises(ValueError):
    token_logprobs(hidden, kernel.T, targets)


def test_out_of_vocabulary_pad_ids_stay_finite():
  hidden, kernel, targets = _inputs()
  targets = targets.at[:, -2:].set(V + 100)  # e.g. a pad id beyond a truncated vocabulary
  logp, ent = token_logprobs(hidden, kernel, targets, chunk_size=4)
  assert np.all(np.isfinite(logp)) and np.all(np.isfinite(ent))
  np.testing.assert_allclose(
    logp[:, :-2], _full(hidden, kernel, targets)[0][:, :-2], rtol=1e-5, atol=1e-5
  )
