"""Each benchmark's rendered prompt against the template restated from its official code.

The expected strings are written out here from the official sources (commits in
crpo_jax/eval/extraction.py), not built with our prompt helpers: TimeBlind
`add_question_suffix`, TempCompass `run_qwen2_vl.py` `answer_prompt`, VideoChat2
`mvbench.ipynb` (`qa_template`, `infer_mvbench` with system_llm=True), and the
Video-MME README's w/o-subtitles example.
"""

import pytest

from configs import eval as eval_config
from crpo_jax.eval import benchmarks, runner
from tests.eval import fixtures


def _first(name, path, item_id=None):
  bench = benchmarks.get_benchmark(name)
  items = bench.load(str(path), None)
  item = next(it for it in items if item_id in (None, it.id))
  return bench.prompt(item)


def test_timeblind_prompt(tmp_path):
  path = fixtures.write_timeblind(tmp_path)
  p = _first("timeblind", path, "0")
  assert p.user == "Does the cup fall before the ball (0, q0)? Please output Yes or No."
  p = _first("timeblind", path, "4")
  assert p.user == (
    "Which happens first (1, q0)? A. the cup falls B. the ball rolls Please output A or B."
  )
  assert (p.system, p.assistant_prefix) == (None, "")


@pytest.mark.parametrize(
  "item_id,expected",
  [
    (
      "multi-choice/1001/direction/0",
      (
        "Which way is the car going?\nA. left\nB. right\nC. up\nD. down\n"
        "Please directly give the best option:"
      ),
    ),
    ("yes_no/1001/direction/0", "Is the car going right?\nPlease answer yes or no:"),
    (
      "caption_matching/1001/order/0",
      (
        "Which caption matches the video?\nSentence A: the car goes right\n"
        "Sentence B: the car goes left\nPlease directly give the best option:"
      ),
    ),
  ],
)
def test_tempcompass_prompt(tmp_path, item_id, expected):
  p = _first("tempcompass", fixtures.write_tempcompass(tmp_path), item_id)
  assert p.user == expected and p.system is None and p.assistant_prefix == ""


_MVBENCH_SYSTEM = (
  "Carefully watch the video and pay attention to the cause and sequence of events, the detail "
  "and movement of objects, and the action and pose of persons. Based on your observations, "
  "select the best option that accurately addresses the question.\n"
)


def test_mvbench_prompt(tmp_path):
  p = _first("mvbench", fixtures.write_mvbench(tmp_path), "action_sequence/0")
  question = (
    "Question: What did the person do first?\nOptions:\n(A) Sat on the bed.\n"
    "(B) Opened the door.\n(C) Took a cup."
  )
  assert p.system == _MVBENCH_SYSTEM
  assert p.user == _MVBENCH_SYSTEM + question + "\nOnly give the best option."
  assert p.assistant_prefix == "Best option:("


def test_videomme_prompt(tmp_path):
  p = _first("videomme", fixtures.write_videomme(tmp_path), "001-1")
  assert p.user == (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option.\n"
    "How many cats?\nA. 1\nB. 2\nC. 3\nD. 4\nThe best answer is:"
  )
  assert p.system is None and p.assistant_prefix == ""


@pytest.mark.parametrize(
  "name,fps,min_frames,max_frames,max_pixels,segments",
  [
    # mvbench.ipynb: num_frame = 16, the middles of 16 equal segments of the clip.
    ("mvbench", None, 16, 16, None, 16),
    # run_qwen2_vl.py: "fps": 1.0, "max_pixels": 720 * 720; qwen_vl_utils bounds 4..768.
    ("tempcompass", 1.0, 4, 768, 720 * 720, 0),
    # No frame rule in the official code: the config's.
    ("timeblind", 2.0, 4, 16, 128 * 32 * 32, 0),
    ("videomme", 2.0, 4, 16, 128 * 32 * 32, 0),
  ],
)
def test_official_frame_rule(name, fps, min_frames, max_frames, max_pixels, segments):
  cfg = eval_config.get_config()
  out = runner.apply_frame_rule(cfg, benchmarks.get_benchmark(name))
  if fps is not None:
    assert out.fps == fps
  assert (out.min_frames, out.max_frames) == (min_frames, max_frames)
  assert out.max_pixels == (max_pixels or cfg.max_pixels) and out.segments == segments
  cfg.frames = "config"
  assert runner.apply_frame_rule(cfg, benchmarks.get_benchmark(name)) is cfg
  cfg.frames = "both"
  with pytest.raises(ValueError, match="config.frames"):
    runner.apply_frame_rule(cfg, benchmarks.get_benchmark(name))
