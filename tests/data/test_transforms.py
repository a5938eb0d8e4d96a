"""Counterfactual transforms: involutions, where branches differ, seeded choice."""

from __future__ import annotations

import dataclasses

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crpo_jax.data import transforms as tf


@dataclasses.dataclass(frozen=True)
class _Ex:
  id: str
  route: str
  answer: str
  answer_cf: str | None = None


_frames = hnp.arrays(
  np.uint8,
  st.tuples(st.integers(1, 5), st.integers(1, 7), st.integers(1, 9), st.just(3)),
)


@settings(max_examples=30, deadline=None)
@given(_frames)
def test_flip_and_reverse_twice_are_identity(frames):
  np.testing.assert_array_equal(tf.flip(tf.flip(frames)), frames)
  np.testing.assert_array_equal(tf.reverse(tf.reverse(frames)), frames)


def test_flip_mirrors_columns_only():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
  out = tf.flip(frames)
  assert out.shape == frames.shape and out.dtype == frames.dtype
  for w in range(7):
    np.testing.assert_array_equal(out[:, :, w], frames[:, :, 6 - w])
  # Frame order and rows are untouched: per-frame, per-row pixel multisets agree.
  np.testing.assert_array_equal(np.sort(out, axis=2), np.sort(frames, axis=2))


def test_reverse_reorders_frames_only():
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (4, 5, 7, 3), dtype=np.uint8)
  out = tf.reverse(frames)
  for t in range(4):
    np.testing.assert_array_equal(out[t], frames[3 - t])


def test_branch_pair_differs_only_where_it_should():
  rng = np.random.default_rng(2)
  half = rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
  symmetric = np.concatenate([half, half[:, :, ::-1]], axis=2)  # mirror-symmetric frames
  static = np.repeat(half[:1], 4, axis=0)  # identical frames over time
  ex = _Ex("x", "spatial", "A", "B")
  b = tf.make_branches(symmetric, ex, seed=0)
  assert b.transform == "flip"
  np.testing.assert_array_equal(b.counterfactual, b.original)
  b = tf.make_branches(static, dataclasses.replace(ex, route="temporal"), seed=0)
  assert b.transform == "reverse"
  np.testing.assert_array_equal(b.counterfactual, b.original)
  # A pattern changing in both time and space differs in every frame that changes.
  moving = np.zeros((4, 3, 8, 3), np.uint8)
  for t in range(4):
    moving[t, :, t] = 255
  for route, transform in (("spatial", "flip"), ("temporal", "reverse")):
    b = tf.make_branches(moving, dataclasses.replace(ex, route=route), seed=0)
    assert b.transform == transform
    assert b.counterfactual.shape == b.original.shape
    assert all(not np.array_equal(b.counterfactual[t], b.original[t]) for t in range(4))


def test_choose_transform_is_seeded_and_per_example():
  ids = [f"ex{i}" for i in range(200)]
  for route in ("spatiotemporal", "static"):
    draws = [tf.choose_transform(route, 7, i) for i in ids]
    assert draws == [tf.choose_transform(route, 7, i) for i in ids]  # deterministic
    assert set(draws) == {"flip", "reverse"}
    assert 60 < draws.count("flip") < 140
    other = [tf.choose_transform(route, 8, i) for i in ids]
    assert other != draws  # the seed matters
  assert {tf.choose_transform("spatial", s, "a") for s in range(20)} == {"flip"}
  assert {tf.choose_transform("temporal", s, "a") for s in range(20)} == {"reverse"}


def test_configurable_route_table():
  table = dict(tf.DEFAULT_ROUTE_TABLE, spatiotemporal=("reverse",))
  tf.validate_route_table(table)
  assert {tf.choose_transform("spatiotemporal", s, "a", table) for s in range(20)} == {"reverse"}
  with pytest.raises(ValueError, match="unknown transforms"):
    tf.validate_route_table(dict(table, spatial=("rotate",)))
  with pytest.raises(ValueError, match="no entry"):
    tf.validate_route_table({"spatial": ("flip",)})
  with pytest.raises(ValueError, match="unknown route"):
    tf.choose_transform("bogus", 0, "a")


def test_counterfactual_answer_rules():
  assert tf.counterfactual_answer(_Ex("a", "static", "C", "A"), "flip") == "C"
  assert tf.counterfactual_answer(_Ex("a", "temporal", "A", "B"), "reverse") == "B"
  assert tf.counterfactual_answer(_Ex("a", "spatial", "A", None), "flip") is None
  assert tf.counterfactual_answer(_Ex("a", "spatial", "A", ""), "flip") is None
  with pytest.raises(ValueError, match="unknown transform"):
    tf.counterfactual_answer(_Ex("a", "spatial", "A"), "both")


def test_null_option_and_letters():
  from crpo_jax.data.prompts import with_null_option

  assert with_null_option(["red", "blue"]) == ("red", "blue", "None of the above")
  # Exactly once: a list that already ends with it is unchanged (same letter either way).
  assert with_null_option(["red", "none of the above"]) == ("red", "none of the above")
  for bad in (["None of the above", "red"], ["red", "None of the above", "none of the above"]):
    with pytest.raises(ValueError, match="only be the last option, once"):
      with_null_option(bad)
  assert tf.letter(2) == "C" and tf.letter_index(" c ") == 2
  with pytest.raises(ValueError):
    tf.letter_index("AB")


def test_bad_frames_shape_rejected():
  with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
    tf.flip(np.zeros((4, 4, 3), np.uint8))
