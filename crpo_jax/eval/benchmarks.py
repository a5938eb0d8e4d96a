"""One `Benchmark` per supported benchmark: loader, prompt, judge, metrics, frames.

`get_benchmark(name, ...)` is the only entry point the runner and the CLI use, so
adding a benchmark means adding one entry here plus its pieces in loaders,
prompts, extraction and metrics. The default judge and metrics are the official
scorer's (commits in extraction.py); `variants` are extra judges reported beside
it: `strict` where an official rule is a known bug, `think` (ours) for outputs
with <think> blocks.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence

from crpo_jax.eval import extraction, loaders, metrics, prompts
from crpo_jax.eval.items import EvalItem, Prompt

NAMES = tuple(loaders.LOADERS)
THINK = "think"  # variant name: <think> blocks stripped first (ours)
STRICT = "strict"  # variant name: a known bug of the official rules fixed

Judge = Callable[[EvalItem, str], metrics.Scored]


@dataclasses.dataclass(frozen=True)
class FrameRule:
  """The frame sampling an official evaluation script uses.

  Attributes:
    fps, min_frames, max_frames: the Qwen3-VL sampling rule's parameters that
      reproduce it (n = fps * duration, clamped).
    max_pixels: pixels per frame, or None to keep the config's.
    source: where the rule is stated.
    segments: if not 0, VideoChat2's placement instead: the middle frame of each
      of `segments` equal parts of the clip (`frames.segment_middles`).
  """

  fps: float
  min_frames: int
  max_frames: int
  max_pixels: int | None
  source: str
  segments: int = 0


# VideoChat2 mvbench.ipynb: `num_segments = 16` frames per clip, whatever its length.
# VideoChat2: the middle frames of 16 equal segments of the clip, whatever its length
# (min = max = 16 states the count; `segments` the placement).
MVBENCH_FRAMES = FrameRule(
  fps=2.0,
  min_frames=16,
  max_frames=16,
  max_pixels=None,
  source="mvbench.ipynb num_frame=16, get_index",
  segments=16,
)
# TempCompass run_qwen2_vl.py: {"fps": 1.0, "max_pixels": 720 * 720}; qwen_vl_utils'
# frame bounds (FPS_MIN_FRAMES 4, FPS_MAX_FRAMES 768).
TEMPCOMPASS_FRAMES = FrameRule(
  fps=1.0, min_frames=4, max_frames=768, max_pixels=720 * 720, source="run_qwen2_vl.py"
)


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """Everything benchmark-specific.

  Attributes:
    name: one of NAMES.
    load: (path, video_dir) -> items.
    prompt: item -> Prompt.
    judge: (item, raw model output) -> Scored, the official rules.
    choices: item -> the canonical answers a policy can give, in option order
      (what the constant-answer baseline cycles through).
    metrics: scored items -> {name: value}, the official aggregates.
    primary: the headline metric name.
    variants: {name: judge} reported beside the official judge, same metrics.
    frames: the official frame rule, or None where the official code has none.
  """

  name: str
  load: Callable[[str, str | None], list[EvalItem]]
  prompt: Callable[[EvalItem], Prompt]
  judge: Judge
  choices: Callable[[EvalItem], list[str]]
  metrics: Callable[[Sequence[metrics.Scored]], dict[str, float]]
  primary: str
  variants: Mapping[str, Judge] = dataclasses.field(default_factory=dict)
  frames: FrameRule | None = None

  def score(self, item: EvalItem, raw_output: str) -> metrics.Scored:
    """The official judgement of one raw output."""
    return self.judge(item, raw_output)


def unanswerable(item: EvalItem) -> metrics.Scored:
  """An item the model never saw (unreadable video): wrong, and in every
  denominator, under every judge (ours: no official scorer meets this case)."""
  return metrics.Scored(item, "", False, True)


def _letters(n: int) -> list[str]:
  return [chr(ord("A") + i) for i in range(n)]


_LETTERED_LINE = re.compile(r"^([A-Z])\. ")


def _tempcompass_choices(item: EvalItem) -> list[str]:
  if item.fmt == "yes_no":
    return ["yes", "no"]
  if item.fmt == "caption_matching":
    return [line.split(": ")[0] for line in item.options]
  return [m.group(1) for line in item.question.split("\n") if (m := _LETTERED_LINE.match(line))]


def _exact(item: EvalItem, extracted: str) -> metrics.Scored:
  """Correct iff the extracted answer is the canonical one; answered iff any."""
  return metrics.Scored(
    item, extracted, bool(extracted) and extracted == item.answer, bool(extracted)
  )


def _timeblind(item: EvalItem, out: str) -> metrics.Scored:
  return _exact(item, extraction.timeblind(out, item.fmt))


def _tempcompass(item: EvalItem, out: str) -> metrics.Scored:
  pred = extraction.tempcompass_clean(out)
  if item.fmt == "yes_no":
    return _exact(item, extraction.tempcompass_yes_no(pred))
  if item.fmt == "caption_matching":
    found = extraction.tempcompass_caption(pred, item.question)
    correct = extraction.tempcompass_caption_correct(found, item.meta["answer_text"])
    return metrics.Scored(
      item, extraction.caption_label(found, item.question), correct, bool(found)
    )
  return _exact(item, extraction.tempcompass_mc(pred, item.meta["answer_text"]))


def _mvbench_gt(item: EvalItem) -> str:
  """VideoChat2 `qa_template`'s answer: "(X) option text"."""
  return f"({item.answer}) {item.options[ord(item.answer) - ord('A')]}"


def _mvbench(item: EvalItem, out: str) -> metrics.Scored:
  pred = extraction.mvbench_pred(out)
  token = pred.lower().split(" ")[0]
  return metrics.Scored(item, token, extraction.mvbench_correct(pred, _mvbench_gt(item)))


def _mvbench_strict(item: EvalItem, out: str) -> metrics.Scored:
  return _exact(item, extraction.mvbench_strict(extraction.mvbench_pred(out), len(item.options)))


def _videomme(item: EvalItem, out: str) -> metrics.Scored:
  return _exact(item, extraction.videomme(out))


def _videomme_strict(item: EvalItem, out: str) -> metrics.Scored:
  """Every item in the denominator: an output with no A-D is wrong, not skipped."""
  return _videomme(item, out)._replace(answered=True)


def _think(judge: Judge) -> Judge:
  return lambda item, out: judge(item, extraction.strip_think(out))


def get_benchmark(
  name: str, *, null_option: bool = True, lenient: bool = False, strip_think: bool = True
) -> Benchmark:
  """The benchmark called `name`.

  Args:
    name: one of NAMES.
    null_option: DyBench only: show the null option last, as in training.
    lenient: DyBench only: with no <answer> tag, read the whole output.
    strip_think: official benchmarks only: add the `think` variant (ours), the
      official rules after dropping <think> blocks. The official judge itself
      always reads the raw output.
  """
  if name == "dybench":
    n_shown = lambda it: len(it.options) + int(null_option)
    return Benchmark(
      name,
      loaders.load_dybench,
      lambda it: prompts.dybench_prompt(it, null_option),
      lambda it, out: _exact(it, extraction.dybench(out, n_shown(it), lenient)),
      lambda it: _letters(n_shown(it)),
      metrics.dybench,
      "p_acc",
    )
  official: dict[str, tuple] = {
    "timeblind": (_timeblind, {}, None, metrics.timeblind, "i_acc"),
    "tempcompass": (
      _tempcompass,
      {},
      TEMPCOMPASS_FRAMES,
      metrics.tempcompass,
      "acc/task=multi-choice",
    ),
    "mvbench": (_mvbench, {STRICT: _mvbench_strict}, MVBENCH_FRAMES, metrics.mvbench, "acc"),
    "videomme": (_videomme, {STRICT: _videomme_strict}, None, metrics.videomme, "acc"),
  }
  if name not in official:
    raise ValueError(f"unknown benchmark {name!r}; expected one of {NAMES}")
  judge, variants, frames, metric_fn, primary = official[name]
  if strip_think:
    variants = variants | {THINK: _think(judge)}
  choices = {
    "timeblind": lambda it: ["yes", "no"] if it.fmt == "yes_no" else ["A", "B"],
    "tempcompass": _tempcompass_choices,
  }.get(name, lambda it: _letters(len(it.options)))
  return Benchmark(
    name,
    loaders.LOADERS[name],
    getattr(prompts, f"{name}_prompt"),
    judge,
    choices,
    metric_fn,
    primary,
    variants,
    frames,
  )
