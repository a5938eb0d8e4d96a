"""Token-selection ops: exclusion sets, sampled frequencies, log-prob convention."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crpo_jax.rl.sampling_ops import sample_logits, token_logprobs, top_k_mask, top_p_mask
from tests.tolerance import assert_close

PROBS = np.array([0.05, 0.4, 0.02, 0.25, 0.1, 0.15, 0.03])  # distinct, unsorted
LOGITS = np.log(PROBS)
N = 20000
# Chi-square 0.9999 quantile for <= 6 degrees of freedom is 27.9; the seed is fixed,
# so the test is deterministic and this bound only guards against a wrong target.
CHI2_LIMIT = 28.0


def _draw(temperature=1.0, top_k=0, top_p=1.0, seed=0):
  logits = jnp.broadcast_to(jnp.asarray(LOGITS, jnp.float32), (N, len(PROBS)))
  tok, lp = jax.jit(
    lambda lg, key: sample_logits(lg, key, temperature=temperature, top_k=top_k, top_p=top_p)
  )(logits, jax.random.key(seed))
  return np.asarray(tok), np.asarray(lp)


def _target(temperature=1.0, keep=None):
  p = PROBS ** (1.0 / temperature)
  if keep is not None:
    p = np.where(np.isin(np.arange(len(p)), keep), p, 0.0)
  return p / p.sum()


def _chi2(tokens, target):
  counts = np.bincount(tokens, minlength=len(target))
  support = target > 0
  assert counts[~support].sum() == 0, f"excluded tokens drawn: {counts}"
  expected = N * target[support]
  return float(((counts[support] - expected) ** 2 / expected).sum())


@pytest.mark.parametrize(
  ("kw", "keep"),
  [
    ({}, None),
    ({"temperature": 0.6}, None),
    ({"top_k": 3}, [1, 3, 5]),
    ({"top_p": 0.7}, [1, 3, 5]),  # mass before: 0, .4, .65 < .7; then .8
    ({"top_p": 0.6}, [1, 3]),
    ({"top_k": 4, "top_p": 0.95}, [1, 3, 4, 5]),  # top-k 4 first: .9 mass, all kept
    ({"temperature": 2.0, "top_k": 2}, [1, 3]),
  ],
)
def test_sampled_frequencies_match_truncated_target(kw, keep):
  tokens, _ = _draw(**kw)
  stat = _chi2(tokens, _target(kw.get("temperature", 1.0), keep))
  assert stat < CHI2_LIMIT


def test_chi2_detects_a_wrong_target():
  """Guards the guard: untempered samples are far from the tempered target."""
  tokens, _ = _draw()
  assert _chi2(tokens, _target(0.6)) > 10 * CHI2_LIMIT


def test_masks_exclude_exactly():
  x = jnp.asarray(LOGITS[None], jnp.float32)
  np.testing.assert_array_equal(np.isfinite(top_k_mask(x, 2))[0], np.isin(range(7), [1, 3]))
  np.testing.assert_array_equal(top_k_mask(x, 0), x)
  np.testing.assert_array_equal(np.isfinite(top_p_mask(x, 0.39))[0], np.isin(range(7), [1]))
  np.testing.assert_array_equal(np.isfinite(top_p_mask(x, 0.41))[0], np.isin(range(7), [1, 3]))
  np.testing.assert_array_equal(top_p_mask(x, 1.0), x)


def test_logprob_convention():
  logits = jax.random.normal(jax.random.key(1), (5, 11)) * 3
  tok, lp = sample_logits(logits, jax.random.key(2))
  np.testing.assert_array_equal(tok, jnp.argmax(logits, -1))  # temperature 0 = greedy
  assert_close(lp, jax.nn.log_softmax(logits)[jnp.arange(5), tok], rtol=1e-6, err_msg="greedy")
  # Sampling: log-softmax of logits / T, not renormalised over the top-k set.
  tok, lp = sample_logits(logits, jax.random.key(3), temperature=0.5, top_k=3)
  full = jax.nn.log_softmax(logits / 0.5)[jnp.arange(5), tok]
  assert_close(lp, full, rtol=1e-6, err_msg="sampled")
  assert_close(token_logprobs(logits / 0.5, tok), full, rtol=1e-6, err_msg="token_logprobs")


def test_rows_draw_independently_and_reproducibly():
  a, _ = _draw(seed=5)
  b, _ = _draw(seed=5)
  c, _ = _draw(seed=6)
  np.testing.assert_array_equal(a, b)
  assert (a != c).mean() > 0.3
