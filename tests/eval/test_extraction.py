"""DyBench extraction (ours), `strip_think` (ours) and TimeBlind's regex cascade.

The official benchmarks' judges are tested end to end in test_official_rules.py.
"""

import pytest

from crpo_jax.eval import extraction


@pytest.mark.parametrize(
  "text,lenient,expected",
  [
    ("<think>The ball moves left.</think> <answer>A</answer>", False, "A"),
    ("<think>hmm</think>\n<answer> B </answer>", False, "B"),
    ("<answer>E</answer>", False, "E"),  # the null option of 4 + 1
    ("<answer>F</answer>", False, ""),  # not an option
    ("<answer>b</answer>", False, ""),  # lower case is not a letter of ours
    ("<answer>A</answer> <answer>B</answer>", False, "A"),  # the first span
    ("<answer>A, B</answer>", False, ""),  # several letters
    ("<answer>AB</answer>", False, ""),
    ("<answer></answer>", False, ""),
    ("<answer>A. left</answer>", False, ""),  # extra words
    ("The answer is A", False, ""),  # missing tags
    ("The answer is A", True, ""),  # lenient reads the whole output, which is no letter
    ("<think>left</think>A", True, "A"),
    ("<think>left</think>A", False, ""),
  ],
)
def test_dybench(text, lenient, expected):
  assert extraction.dybench(text, 5, lenient) == expected


@pytest.mark.parametrize(
  "text,expected",
  [
    ("<think>a</think>B", "B"),
    ("<think>a</think> <think>b</think> B ", "B"),
    ("<think>unfinished A", ""),
    ("A", "A"),
  ],
)
def test_strip_think(text, expected):
  assert extraction.strip_think(text) == expected


@pytest.mark.parametrize(
  "text,fmt,expected",
  [
    ("Yes.", "yes_no", "yes"),
    ("no", "yes_no", "no"),
    ("Final answer: yes", "yes_no", "yes"),
    ("The answer is no, the ball falls first.", "yes_no", "no"),
    ("Yesterday nobody came.", "yes_no", ""),
    ("I cannot tell.", "yes_no", ""),
    ("", "yes_no", ""),
    ("A", "mcq", "A"),
    ("answer: b", "mcq", "B"),
    ("(B) the ball rolls", "mcq", "B"),
    ("Option B is correct.", "mcq", "B"),
    ("B. the ball rolls", "mcq", "B"),
    ("It is b", "mcq", "B"),
    ("Neither of them.", "mcq", ""),
  ],
)
def test_timeblind(text, fmt, expected):
  assert extraction.timeblind(text, fmt) == expected
