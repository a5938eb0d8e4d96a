"""The benchmark-neutral evaluation item and prompt.

Every loader turns its benchmark's released format into a list of `EvalItem`s, so
prompting, generation, extraction, scoring, resume and baselines share one code path.
The item carries everything scoring needs (`answer`, `options`, `meta`), which is
what lets a predictions file be re-scored without the data or a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# Answer formats. 'mcq': `answer` is an option letter. 'yes_no': 'yes' or 'no'.
# 'caption_matching': `answer` is the option label ("Sentence A", "Option 1"), the
# part of TempCompass's released option line before the colon.
FORMATS = ("mcq", "yes_no", "caption_matching")


@dataclasses.dataclass(frozen=True)
class EvalItem:
  """One video question of a benchmark.

  Attributes:
    id: unique within the benchmark file; the resume key.
    video: path of the video file (or frame folder), absolute or as released.
    question: question text as released (TimeBlind and TempCompass embed options).
    options: option texts without letters, in released order; empty when the
      question embeds them.
    answer: canonical ground truth (see FORMATS).
    fmt: one of FORMATS.
    start: clip start in seconds, or None for the whole video.
    end: clip end in seconds, or None.
    meta: benchmark fields the metrics group by (category, pair_id, route, task,
      duration, task_type, dim, ...). JSON-serialisable.
  """

  id: str
  video: str
  question: str
  options: tuple[str, ...]
  answer: str
  fmt: str
  start: float | None = None
  end: float | None = None
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.fmt not in FORMATS:
      raise ValueError(f"item {self.id!r}: unknown answer format {self.fmt!r}, expected {FORMATS}")

  def to_json(self) -> dict[str, Any]:
    """JSON-ready dict; `from_json` inverts it."""
    d = dataclasses.asdict(self)
    d["options"] = list(self.options)
    d["meta"] = dict(self.meta)
    return d

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> EvalItem:
    """Rebuilds an item from `to_json` output."""
    return cls(
      id=str(d["id"]),
      video=str(d["video"]),
      question=str(d["question"]),
      options=tuple(d.get("options") or ()),
      answer=str(d["answer"]),
      fmt=str(d["fmt"]),
      start=d.get("start"),
      end=d.get("end"),
      meta=dict(d.get("meta") or {}),
    )


@dataclasses.dataclass(frozen=True)
class Prompt:
  """A benchmark's chat prompt for one item.

  Attributes:
    user: the text of the user turn (the video comes first in the turn).
    system: the system turn, or None (Qwen3-VL's template then adds none).
    assistant_prefix: text the assistant turn starts with, before generation
      (MVBench's "Best option:("); the model continues it.
  """

  user: str
  system: str | None = None
  assistant_prefix: str = ""
