"""Rewards and CRR: hand-computed values for every term and variant."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crpo_jax.rl import crr as crr_lib
from crpo_jax.rl import rewards

CRPO_TERMS = ("accuracy", "format", "crr")


def done(letter: str) -> str:
  return f"<think>look</think>\n<answer>{letter}</answer>"


def test_extract_answer_first_span_stripped():
  assert rewards.extract_answer("<answer> B </answer> <answer>C</answer>") == "B"
  assert rewards.extract_answer("no tags") is None
  assert rewards.extract_answer("<answer>\nA\n</answer>") == "A"


def test_extract_letter_validates_options_incl_null():
  assert rewards.extract_letter("<answer>E</answer>", 5) == "E"  # null option of A-D
  assert rewards.extract_letter("<answer>F</answer>", 5) is None
  assert rewards.extract_letter("<answer>a</answer>", 5) is None
  assert rewards.extract_letter("<answer>A. red</answer>", 5) is None
  # Neither an empty answer nor several letters names one option.
  assert rewards.extract_letter("<answer></answer>", 5) is None
  assert rewards.extract_letter("<answer>AB</answer>", 5) is None


@pytest.mark.parametrize(
  "text, expected",
  [
    ("<think>x</think><answer>A</answer>", 1.0),
    ("<think>x\ny</think>  \n<answer>A</answer>", 1.0),
    ("hi <think>x</think><answer>A</answer>", 0.0),
    ("<think>x</think><answer>A</answer> bye", 0.0),
    ("<answer>A</answer>", 0.0),
  ],
)
def test_format_reward(text, expected):
  assert rewards.format_reward(text) == expected


def test_crr_expected_dynamic_by_hand():
  # Dynamic: rel = [a != b]. b valid = [A, B, E] (None dropped).
  a, b = ["A", "B", None], ["A", "B", "E", None]
  crr_a, crr_b = crr_lib.crr(a, b, "Temporal")
  np.testing.assert_allclose(crr_a, [2 / 3, 2 / 3, 0.0])
  # b_j against valid a = [A, B]: A -> 1/2, B -> 1/2, E -> 1, None -> 0.
  np.testing.assert_allclose(crr_b, [0.5, 0.5, 1.0, 0.0])


def test_crr_expected_static_by_hand():
  crr_a, crr_b = crr_lib.crr(["A", "A", "C"], ["A", "C", None], "Static")
  np.testing.assert_allclose(crr_a, [0.5, 0.5, 0.5])
  np.testing.assert_allclose(crr_b, [2 / 3, 1 / 3, 0.0])


def test_crr_majority_and_ties():
  crr_a, crr_b = crr_lib.crr(["A", "A", "B"], ["B", "B", "C"], "Spatial", "majority")
  np.testing.assert_allclose(crr_a, [1.0, 1.0, 0.0])  # other's majority is B
  np.testing.assert_allclose(crr_b, [1.0, 1.0, 1.0])  # other's majority is A
  # A tie between B and C on the other branch is averaged.
  crr_a, _ = crr_lib.crr(["B", "D"], ["B", "C"], "Spatial", "majority")
  np.testing.assert_allclose(crr_a, [0.5, 1.0])


def test_crr_paired():
  crr_a, crr_b = crr_lib.crr(["A", "B", None], ["B", "B", "A"], "Spatiotemporal", "paired")
  np.testing.assert_allclose(crr_a, [1.0, 0.0, 0.0])
  np.testing.assert_allclose(crr_b, crr_a)
  with pytest.raises(ValueError):
    crr_lib.crr(["A"], ["A", "B"], "Temporal", "paired")


def test_crr_no_valid_other_branch_gives_zero():
  crr_a, crr_b = crr_lib.crr(["A", "B"], [None, None], "Temporal")
  np.testing.assert_array_equal(crr_a, 0.0)
  np.testing.assert_array_equal(crr_b, 0.0)


@settings(max_examples=40, deadline=None)
@given(
  letter=st.sampled_from("ABCDE"),
  g=st.integers(1, 8),
  route=st.sampled_from(crr_lib.DYNAMIC_ROUTES),
  variant=st.sampled_from(crr_lib.VARIANTS),
)
def test_constant_letter_policy_earns_no_crr_on_dynamic_routes(letter, g, route, variant):
  info = rewards.ExampleInfo(route, "A", 5)
  out = rewards.score_prompt(
    [done(letter)] * g,
    [done(letter)] * g,
    info,
    rewards.RewardConfig(crr_variant=variant),
    terms=CRPO_TERMS,
  )
  np.testing.assert_array_equal(out.crr, 0.0)


def test_score_prompt_crpo_by_hand():
  info = rewards.ExampleInfo("Temporal", "A", num_options=5, cf_answer="B")
  orig = [done("A"), done("B"), "<answer>A</answer>", "garbage"]
  cf = [done("B"), done("A"), done("E"), done("B")]
  out = rewards.score_prompt(orig, cf, info, rewards.RewardConfig(), terms=CRPO_TERMS)
  np.testing.assert_array_equal(out.accuracy, [[1, 0, 1, 0], [1, 0, 0, 1]])
  np.testing.assert_array_equal(out.format, [[1, 1, 0, 0], [1, 1, 1, 1]])
  # valid orig = [A, B, A]; cf = [B, A, E, B].
  np.testing.assert_allclose(out.crr[0], [0.75, 0.5, 0.75, 0.0])
  np.testing.assert_allclose(out.crr[1], [2 / 3, 1 / 3, 1.0, 2 / 3])
  np.testing.assert_allclose(out.total, out.accuracy + out.format + 0.5 * out.crr)
  assert out.answers[0] == ("A", "B", "A", None)
  np.testing.assert_array_equal(out.accuracy_applies, [True, True])
  assert set(out.terms()) == {*rewards.TERMS, "total"}


def test_cf_accuracy_rules():
  cfg = rewards.RewardConfig()
  comps = [done("A"), done("B")]
  # Dynamic without y_cf: no accuracy term on the cf branch (ours).
  out = rewards.score_prompt(
    comps, comps, rewards.ExampleInfo("Spatial", "A", 3), cfg, terms=CRPO_TERMS
  )
  np.testing.assert_array_equal(out.accuracy, [[1, 0], [0, 0]])
  np.testing.assert_array_equal(out.accuracy_applies, [True, False])
  # Static: the cf target is y, whatever cf_answer says.
  out = rewards.score_prompt(
    comps, comps, rewards.ExampleInfo("Static", "A", 3), cfg, terms=CRPO_TERMS
  )
  np.testing.assert_array_equal(out.accuracy, [[1, 0], [1, 0]])
  # Null option as y_cf.
  info = rewards.ExampleInfo("Temporal", "A", 3, cf_answer="C")
  out = rewards.score_prompt(comps, [done("C"), done("A")], info, cfg, terms=CRPO_TERMS)
  np.testing.assert_array_equal(out.accuracy[1], [1, 0])


def test_gate_on_correct():
  info = rewards.ExampleInfo("Temporal", "A", 5)
  cfg = rewards.RewardConfig(crr_gate_on_correct=True)
  out = rewards.score_prompt(
    [done("A"), done("C")], [done("B"), done("B")], info, cfg, terms=CRPO_TERMS
  )
  # Orig CRR before the gate is [1, 1]; only the correct rollout keeps it. The cf
  # branch has no accuracy term, so it is not gated.
  np.testing.assert_array_equal(out.crr, [[1, 0], [1, 1]])


def test_temporal_bonus_by_hand():
  info = rewards.ExampleInfo("Temporal", "A", 5)
  orig = [done("A"), done("A"), done("B"), done("C")]  # p = 0.5
  cfg = rewards.RewardConfig()
  terms = ("accuracy", "format", "temporal_bonus")
  out = rewards.score_prompt(
    orig, None, info, cfg, terms=terms, shuffled_completions=[done("A"), done("B")]
  )
  assert out.shuffled_accuracy == 0.5 and out.temporal_condition  # 0.5 >= 0.8 * 0.5
  np.testing.assert_array_equal(out.temporal_bonus, [[1, 1, 0, 0]])
  np.testing.assert_allclose(out.total, [[2.3, 2.3, 1.0, 1.0]], rtol=1e-6)
  out = rewards.score_prompt(
    orig, None, info, cfg, terms=terms, shuffled_completions=[done("A")] * 2
  )
  assert not out.temporal_condition  # 0.5 < 0.8 * 1.0
  np.testing.assert_array_equal(out.temporal_bonus, 0.0)


@pytest.mark.parametrize(
  "route, expected", [("Temporal", [0, 1, 0]), ("Spatial", [1, 0, 0]), ("Static", [1, 0, 0])]
)
def test_reverse_reward_by_hand(route, expected):
  info = rewards.ExampleInfo(route, "A", 5)
  out = rewards.score_prompt(
    [done("A"), done("B"), "none"],
    None,
    info,
    rewards.RewardConfig(),
    terms=("accuracy", "reverse_reward"),
    cf_greedy=done("A"),
  )
  np.testing.assert_array_equal(out.reverse_reward[0], expected)
  np.testing.assert_allclose(out.total[0], out.accuracy[0] + 0.5 * np.array(expected))


def test_length_bonus_by_hand():
  acc = np.array([1, 1, 1, 0], np.float32)
  np.testing.assert_array_equal(
    rewards.length_bonus(acc, [320, 600, 512, 400], 320, 512), [1, 0, 1, 0]
  )
  # A single correct rollout earns nothing.
  np.testing.assert_array_equal(
    rewards.length_bonus(np.array([1.0, 0.0]), [400, 400], 320, 512), [0, 0]
  )


def test_missing_inputs_and_unknown_terms_raise():
  info = rewards.ExampleInfo("Temporal", "A", 5)
  cfg = rewards.RewardConfig()
  with pytest.raises(ValueError, match="cf_completions"):
    rewards.score_prompt([done("A")], None, info, cfg, terms=CRPO_TERMS)
  with pytest.raises(ValueError, match="unknown"):
    rewards.score_prompt([done("A")], None, info, cfg, terms=("bogus",))
  with pytest.raises(ValueError):
    rewards.ExampleInfo("Temporal", "E", 5)  # the null option is never the answer
  with pytest.raises(ValueError):
    rewards.ExampleInfo("Dynamic", "A", 5)


@settings(max_examples=40, deadline=None)
@given(
  a=st.lists(st.sampled_from(["A", "B", "C", None]), min_size=1, max_size=6),
  b=st.lists(st.sampled_from(["A", "B", "C", None]), min_size=1, max_size=6),
  route=st.sampled_from(crr_lib.ROUTES),
  variant=st.sampled_from(["expected", "majority"]),
)
def test_crr_bounds_and_invalid_answers(a, b, route, variant):
  crr_a, crr_b = crr_lib.crr(a, b, route, variant)
  assert crr_a.shape == (len(a),) and crr_b.shape == (len(b),)
  for answers, values in ((a, crr_a), (b, crr_b)):
    assert np.all((values >= 0) & (values <= 1))
    assert all(v == 0 for x, v in zip(answers, values) if x is None)
  # Expected relation: both branches see the same pairs, so the sums over valid pairs agree.
  if variant == "expected" and any(x is not None for x in a) and any(x is not None for x in b):
    n_a, n_b = sum(x is not None for x in a), sum(x is not None for x in b)
    np.testing.assert_allclose(crr_a.sum() * n_b, crr_b.sum() * n_a, rtol=1e-5)
