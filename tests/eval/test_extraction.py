"""Answer extraction, table-driven with realistic model outputs.

Expected values follow each benchmark's official rules, quirks included (Video-MME's
joined prefixes, TempCompass's upper-case-only letters), since those rules produce
the published numbers.
"""

import pytest

from crpo_jax.eval import benchmarks, extraction
from crpo_jax.eval.items import EvalItem


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


def test_timeblind_think_block_is_stripped_first():
  bench = benchmarks.get_benchmark("timeblind")
  item = EvalItem("0", "v.mp4", "Does it fall?", (), "no", "yes_no", meta={"role": 1})
  out = "<think>At first yes, the cup... but then it stays.</think> No."
  assert bench.extract(item, out) == "no"
  raw = benchmarks.get_benchmark("timeblind", strip_think=False)
  assert raw.extract(item, out) == "yes"


@pytest.mark.parametrize(
  "pred,expected",
  [
    ("B. right", "B"),
    ("B", "B"),
    ("A. left", "A"),
    ("C) up", "C"),
    ("b", ""),
    ("The answer is B.", ""),
    ("right", ""),
  ],
)
def test_tempcompass_mc(pred, expected):
  assert extraction.tempcompass_mc(pred, "B. right") == expected


@pytest.mark.parametrize(
  "pred,expected",
  [
    ("Yes, the car is going right.", "yes"),
    ("no.", "no"),
    ("NO", "no"),
    ("The car goes right, so yes.", ""),
  ],
)
def test_tempcompass_yes_no(pred, expected):
  assert extraction.tempcompass_yes_no(pred) == expected


_CM_Q = "Which caption matches?\nSentence A: the car goes right\nSentence B: the car goes left"


@pytest.mark.parametrize(
  "pred,expected",
  [
    ("Sentence A", "Sentence A"),
    ("Sentence B.", "Sentence B"),
    ("the car goes left", "Sentence B"),
    ("Sentence A: the car goes right", "Sentence A"),
    ("(A) the car goes right", "Sentence A"),
    ("A", ""),
  ],
)
def test_tempcompass_caption(pred, expected):
  assert extraction.tempcompass_caption(pred, _CM_Q) == expected


@pytest.mark.parametrize(
  "text,expected",
  [
    ("A) Sat on the bed.", "A"),  # continues the prefix "Best option:("
    ("B", "B"),
    ("c) up", "C"),
    ("D.", "D"),
    ("(A)", "A"),
    ("B\nBecause the cube goes right.", "B"),
    ("", ""),
    ("The answer is B", ""),
    ("E) sideways", ""),  # only 4 options
  ],
)
def test_mvbench(text, expected):
  assert extraction.mvbench(text, 4) == expected


@pytest.mark.parametrize(
  "text,expected",
  [
    ("C", "C"),
    ("The best answer is B.", "B"),
    ("The answer is (A) 1 cat", "A"),
    ("I think there are three cats in the video so the answer should be C.", "C"),
    ("There are three cats in the video, which matches the third choice given here.", ""),
    ("d", ""),
    ("Answer: D", "D"),
    # Official quirk: "Best answer:" "Best option:" are one joined prefix, so the
    # B of "Best" is read.
    ("Best option: C", "B"),
  ],
)
def test_videomme(text, expected):
  assert extraction.videomme(text) == expected
