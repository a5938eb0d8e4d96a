"""Policy loss and KL estimators: hand values, clipping, aggregation, invariances."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crpo_jax.rl import kl as kl_lib
from crpo_jax.rl import losses

B, T = 4, 6


def _batch(seed: int, b: int = B, t: int = T):
  rng = np.random.default_rng(seed)
  logp = rng.normal(-1.5, 0.5, (b, t)).astype(np.float32)
  old = (logp + rng.normal(0, 0.3, (b, t))).astype(np.float32)
  ref = (logp + rng.normal(0, 0.3, (b, t))).astype(np.float32)
  adv = rng.normal(0, 1, (b,)).astype(np.float32)
  lengths = rng.integers(1, t + 1, (b,))
  mask = np.arange(t)[None] < lengths[:, None]
  return logp, old, ref, adv, mask


def _loss(logp, old, adv, mask, cfg, ref=None):
  s, d, _ = losses.policy_loss(logp, old, adv, mask, cfg, ref_logp=ref)
  return s / d


@functools.partial(jax.jit, static_argnames="cfg")
def _sum_grad(logp, old, adv, mask, ref, cfg):
  """(loss_sum, denominator, d loss_sum / d logp); jitted, as the learner will be."""

  def f(lp):
    s, d, _ = losses.policy_loss(lp, old, adv, mask, cfg, ref_logp=ref)
    return s, d

  (s, d), g = jax.value_and_grad(f, has_aux=True)(logp)
  return s, d, g


def _value_grad(logp, old, adv, mask, ref, cfg):
  s, d, g = _sum_grad(logp, old, adv, mask, ref, cfg)
  return s / d, g / d


@pytest.mark.parametrize(
  "estimator, expected",
  [
    ("k1", 0.5),  # logp - ref
    ("k2", 0.125),  # (ref - logp)^2 / 2
    ("k3", np.exp(-0.5) + 0.5 - 1.0),
    ("k3+", np.exp(-0.5) + 0.5 - 1.0),
  ],
)
def test_kl_estimators_by_hand(estimator, expected):
  value = kl_lib.kl_penalty(jnp.array(-1.0), jnp.array(-1.5), estimator)
  np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_k3_plus_has_k2_gradient_and_k3_clamps():
  grad = lambda est: jax.grad(lambda lp: kl_lib.kl_penalty(lp, jnp.array(-1.5), est))(
    jnp.array(-1.0)
  )
  np.testing.assert_allclose(grad("k3+"), grad("k2"), rtol=1e-6)
  assert not np.isclose(grad("k3"), grad("k2"))
  # x = ref - logp = 30 is clamped to 20, then the value to 10.
  assert kl_lib.kl_penalty(jnp.array(-31.0), jnp.array(-1.0), "k3") == 10.0
  unclamped = kl_lib.kl_penalty(jnp.array(-6.0), jnp.array(-1.0), "k3", value_clamp=None)
  np.testing.assert_allclose(unclamped, np.exp(5.0) - 6.0, rtol=1e-6)


@pytest.mark.parametrize(
  "log_w, adv, dual, expected",
  [
    (np.log(1.5), 1.0, None, -1.2),  # A > 0: clipped at 1 + eps
    (np.log(0.5), 1.0, None, -0.5),  # A > 0, w below the range: unclipped
    (np.log(0.5), -1.0, None, 0.8),  # A < 0: clipped at 1 - eps
    (np.log(5.0), -1.0, None, 5.0),  # A < 0, large w: unbounded without dual clip
    (np.log(5.0), -1.0, 3.0, 3.0),  # dual clip bounds it at -c A
  ],
)
def test_clipped_surrogate_by_hand(log_w, adv, dual, expected):
  cfg = losses.LossConfig(beta=0.0, dual_clip_c=dual)
  logp, old = jnp.array([[log_w - 1.0]]), jnp.array([[-1.0]])
  value = _loss(logp, old, jnp.array([adv]), jnp.array([[True]]), cfg)
  np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_aggregation_modes_by_hand():
  # Ratios 1 (old == logp), beta 0: per-token loss = -A.
  logp = jnp.zeros((2, 4))
  mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
  adv = jnp.array([1.0, 2.0])
  expected = {
    "token-mean": (-1 * 2 - 2 * 4) / 6,
    "seq-mean-token-mean": (-1 - 2) / 2,
    "seq-mean-token-sum": (-2 - 8) / 2,
    "seq-mean-token-sum-norm": (-2 - 8) / (2 * 5),
  }
  for mode, value in expected.items():
    cfg = losses.LossConfig(beta=0.0, aggregation=mode, max_len=5)
    np.testing.assert_allclose(_loss(logp, logp, adv, mask, cfg), value, rtol=1e-6, err_msg=mode)


def test_kl_term_added_with_beta():
  logp, old, ref, adv, mask = _batch(0)
  cfg0 = losses.LossConfig(beta=0.0, aggregation="token-mean")
  cfg = dataclasses.replace(cfg0, beta=0.1)
  kl = kl_lib.kl_penalty(logp, ref, "k3")
  expected = _loss(logp, old, adv, mask, cfg0) + 0.1 * (kl * mask).sum() / mask.sum()
  np.testing.assert_allclose(_loss(logp, old, adv, mask, cfg, ref), expected, rtol=1e-5)
  with pytest.raises(ValueError, match="ref_logp"):
    losses.policy_loss(logp, old, adv, mask, cfg)


def test_metrics_by_hand():
  logp = jnp.log(jnp.array([[1.5, 1.0, 0.5, 9.0]]))
  mask = jnp.array([[True, True, True, False]])
  _, _, m = losses.policy_loss(
    logp, jnp.zeros((1, 4)), jnp.array([1.0]), mask, losses.LossConfig(beta=0.0)
  )
  assert m["num_tokens"] == 3
  np.testing.assert_allclose(m["clip_frac"], 1 / 3, rtol=1e-6)  # only w = 1.5 is clipped
  np.testing.assert_allclose(
    [m["ratio_min"], m["ratio_max"], m["ratio_mean"]], [0.5, 1.5, 1.0], rtol=1e-6
  )


def test_jittable():
  logp, old, ref, adv, mask = _batch(1)
  cfg = losses.LossConfig(dual_clip_c=3.0, ratio_level="sequence")
  f = jax.jit(lambda *a: losses.policy_loss(*a, cfg, ref_logp=ref))
  s, d, _ = f(logp, old, adv, mask)
  s2, d2, _ = losses.policy_loss(logp, old, adv, mask, cfg, ref_logp=ref)
  np.testing.assert_allclose([s, d], [s2, d2], rtol=1e-5)


CONFIGS = st.builds(
  losses.LossConfig,
  ratio_level=st.sampled_from(["token", "sequence"]),
  eps_low=st.sampled_from([0.2, 3e-4]),
  eps_high=st.sampled_from([0.2, 0.28]),
  dual_clip_c=st.sampled_from([None, 3.0]),
  beta=st.sampled_from([0.0, 0.04]),
  kl_estimator=st.sampled_from(kl_lib.ESTIMATORS),
  aggregation=st.sampled_from(losses.AGGREGATIONS),
  max_len=st.just(T),
)


@settings(max_examples=8, deadline=None)
@given(cfg=CONFIGS, seed=st.integers(0, 1000))
def test_zero_advantage_and_zero_beta_give_zero_gradient(cfg, seed):
  logp, old, ref, adv, mask = _batch(seed)
  cfg = dataclasses.replace(cfg, beta=0.0)
  _, grad = _value_grad(logp, old, np.zeros_like(adv), mask, ref, cfg)
  np.testing.assert_array_equal(grad, 0.0)


@settings(max_examples=8, deadline=None)
@given(cfg=CONFIGS, seed=st.integers(0, 1000), log_w=st.floats(-0.5, 0.5))
def test_sequence_and_token_ratio_agree_when_all_tokens_share_it(cfg, seed, log_w):
  logp, _, ref, adv, mask = _batch(seed)
  old = logp - log_w  # every token has ratio exp(log_w)
  tok = dataclasses.replace(cfg, ratio_level="token")
  seq = dataclasses.replace(cfg, ratio_level="sequence")
  v_tok, g_tok = _value_grad(logp, old, adv, mask, ref, tok)
  v_seq, g_seq = _value_grad(logp, old, adv, mask, ref, seq)
  np.testing.assert_allclose(v_seq, v_tok, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_seq, g_tok, rtol=1e-4, atol=1e-6)


@settings(max_examples=8, deadline=None)
@given(cfg=CONFIGS, seed=st.integers(0, 1000), pads=st.sampled_from([(0, 2), (1, 0), (2, 3)]))
def test_padding_never_changes_the_loss(cfg, seed, pads):
  pad_b, pad_t = pads  # few distinct shapes: eager jax compiles once per shape
  logp, old, ref, adv, mask = _batch(seed)
  rng = np.random.default_rng(seed + 1)
  pad = lambda x, fill: np.pad(x, ((0, pad_b), (0, pad_t)), constant_values=fill)
  # Garbage in the padding: huge log-probs and advantages must not leak in.
  big = [pad(x, 50.0) for x in (logp, old, ref)]
  big_adv = np.concatenate([adv, rng.normal(0, 9, pad_b).astype(np.float32)])
  big_mask = pad(mask, False)
  v, g = _value_grad(logp, old, adv, mask, ref, cfg)
  v2, g2 = _value_grad(big[0], big[1], big_adv, big_mask, big[2], cfg)
  np.testing.assert_allclose(v2, v, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g2[:B, :T], g, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(g2)[~big_mask], 0.0)


@pytest.mark.parametrize("aggregation", losses.AGGREGATIONS)
@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("dual_clip_c", [None, 3.0])
@settings(max_examples=3, deadline=None)
@given(cfg=CONFIGS, seed=st.integers(0, 1000), split=st.sampled_from([1, 2]))
def test_micro_batch_accumulation_equals_one_big_batch(
  aggregation, ratio_level, dual_clip_c, cfg, seed, split
):
  """Every aggregation x ratio level x dual clip, each drawn with random other knobs."""
  cfg = dataclasses.replace(
    cfg, aggregation=aggregation, ratio_level=ratio_level, dual_clip_c=dual_clip_c
  )
  logp, old, ref, adv, mask = _batch(seed)
  s, d, g = _sum_grad(logp, old, adv, mask, ref, cfg)
  parts = [
    _sum_grad(logp[sl], old[sl], adv[sl], mask[sl], ref[sl], cfg)
    for sl in (slice(None, split), slice(split, None))
  ]
  total_d = sum(p[1] for p in parts)
  np.testing.assert_allclose(sum(p[0] for p in parts) / total_d, s / d, rtol=1e-5)
  # Gradients: each micro-batch's grad of its sum, divided by the global denominator.
  g_acc = np.concatenate([p[2] for p in parts]) / total_d
  np.testing.assert_allclose(g_acc, g / d, rtol=1e-5, atol=1e-7)


def test_config_validation():
  with pytest.raises(ValueError):
    losses.LossConfig(aggregation="seq-mean-token-sum-norm")  # needs max_len
  with pytest.raises(ValueError):
    losses.LossConfig(kl_estimator="k4")
  with pytest.raises(ValueError):
    losses.LossConfig(ratio_level="chunk")
