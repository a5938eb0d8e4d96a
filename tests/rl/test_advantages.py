"""Advantages: hand-computed values per mode, zero-sum groups, padding, no NaN."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from crpo_jax.rl.advantages import MODES, compute_advantages

EPS = 1e-4


def test_group_mode_by_hand():
  r = np.array([[[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 0.0, 0.0]]])
  adv = np.asarray(compute_advantages(r, mode="group"))
  std = np.sqrt(1.0 / 3.0)  # unbiased std of [1, 0, 0, 1]
  np.testing.assert_allclose(adv[0, 0], np.array([0.5, -0.5, -0.5, 0.5]) / (std + EPS), rtol=1e-5)
  np.testing.assert_allclose(
    adv[0, 1], np.array([1.0, 1.0, -1.0, -1.0]) / (2 * std + EPS), rtol=1e-5
  )


def test_joint_mode_by_hand():
  r = np.array([[[1.0, 0.0], [3.0, 0.0]]])
  adv = np.asarray(compute_advantages(r, mode="joint"))
  flat = np.array([1.0, 0.0, 3.0, 0.0])
  expected = (flat - 1.0) / (np.std(flat, ddof=1) + EPS)
  np.testing.assert_allclose(adv.reshape(-1), expected, rtol=1e-5)


def test_batch_std_mode_by_hand():
  r = np.array([[[1.0, 0.0]], [[4.0, 2.0]]])
  adv = np.asarray(compute_advantages(r, mode="batch_std"))
  std = np.std([1.0, 0.0, 4.0, 2.0], ddof=1)
  np.testing.assert_allclose(
    adv[:, 0], np.array([[0.5, -0.5], [1.0, -1.0]]) / (std + EPS), rtol=1e-5
  )


def test_none_mode_is_centred_rewards():
  r = np.array([[[1.0, 0.0, 2.0]]])
  np.testing.assert_allclose(
    np.asarray(compute_advantages(r, mode="none"))[0, 0], [0.0, -1.0, 1.0], atol=1e-6
  )


@pytest.mark.parametrize("mode", MODES)
def test_identical_rewards_give_exact_zero(mode):
  r = np.full((2, 2, 8), 0.7, np.float32)
  adv = np.asarray(compute_advantages(r, mode=mode))
  assert np.all(adv == 0.0)


@pytest.mark.parametrize("mode", MODES)
def test_padding_rows_are_zero_and_ignored(mode):
  r = np.array([[[1.0, 0.0, 5.0, -3.0]]])
  valid = np.array([[[True, True, False, False]]])
  adv = np.asarray(compute_advantages(r, valid, mode=mode))
  ref = np.asarray(compute_advantages(r[..., :2], mode=mode))
  np.testing.assert_allclose(adv[..., :2], ref, rtol=1e-6)
  np.testing.assert_array_equal(adv[..., 2:], 0.0)
  # A group with a single valid rollout has no baseline: A = 0, never NaN.
  single = np.asarray(compute_advantages(r, np.array([[[True, False, False, False]]]), mode=mode))
  np.testing.assert_array_equal(single, 0.0)


def test_unknown_mode_raises():
  with pytest.raises(ValueError):
    compute_advantages(np.zeros((1, 1, 2)), mode="rloo")


@settings(max_examples=30, deadline=None)
@given(
  r=hnp.arrays(np.float32, (3, 2, 5), elements=st.floats(-3, 3, width=32)),
  valid=hnp.arrays(bool, (3, 2, 5)),
  mode=st.sampled_from(MODES),
)
def test_advantages_sum_to_zero_within_a_group(r, valid, mode):
  adv = np.asarray(compute_advantages(r, valid, mode=mode))
  assert np.all(np.isfinite(adv))
  axes = (1, 2) if mode == "joint" else (2,)
  sums = np.where(valid, adv, 0.0).sum(axes)
  scale = 1.0 + np.abs(adv).sum(axes)
  assert np.all(np.abs(sums) <= 1e-4 * scale)
  assert np.all(adv[~valid] == 0.0)
