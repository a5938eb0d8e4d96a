"""One `Benchmark` per supported benchmark: loader, prompt, extraction, metrics.

`get_benchmark(name, ...)` is the only entry point the runner and the CLI use, so
adding a benchmark means adding one entry here plus its pieces in loaders,
prompts, extraction and metrics.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

from crpo_jax.eval import extraction, loaders, metrics, prompts
from crpo_jax.eval.items import EvalItem, Prompt

NAMES = tuple(loaders.LOADERS)


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """Everything benchmark-specific.

  Attributes:
    name: one of NAMES.
    load: (path, video_dir) -> items.
    prompt: item -> Prompt.
    extract: (item, raw model output) -> canonical answer, '' if none.
    choices: item -> the canonical answers a policy can give, in option order
      (what the constant-answer baseline cycles through).
    metrics: scored items -> {name: value}.
    primary: the headline metric name.
  """

  name: str
  load: Callable[[str, str | None], list[EvalItem]]
  prompt: Callable[[EvalItem], Prompt]
  extract: Callable[[EvalItem, str], str]
  choices: Callable[[EvalItem], list[str]]
  metrics: Callable[[Sequence[metrics.Scored]], dict[str, float]]
  primary: str

  def score(self, item: EvalItem, raw_output: str) -> metrics.Scored:
    """Extracts the answer from a raw output and compares it with the truth."""
    answer = self.extract(item, raw_output)
    return metrics.Scored(item, answer, bool(answer) and answer == item.answer)


def _letters(n: int) -> list[str]:
  return [chr(ord("A") + i) for i in range(n)]


_LETTERED_LINE = re.compile(r"^([A-Z])\. ")


def _tempcompass_choices(item: EvalItem) -> list[str]:
  if item.fmt == "yes_no":
    return ["yes", "no"]
  if item.fmt == "caption_matching":
    return [line.split(": ")[0] for line in item.options]
  return [m.group(1) for line in item.question.split("\n") if (m := _LETTERED_LINE.match(line))]


def get_benchmark(
  name: str, *, null_option: bool = True, lenient: bool = False, strip_think: bool = True
) -> Benchmark:
  """The benchmark called `name`.

  Args:
    name: one of NAMES.
    null_option: DyBench only: show the null option last, as in training.
    lenient: DyBench only: with no <answer> tag, read the whole output.
    strip_think: official benchmarks only: drop <think> blocks before extraction
      (ours; their rules were written for direct answers).
  """
  pre = extraction.strip_think if strip_think else str.strip
  if name == "dybench":
    n_shown = lambda it: len(it.options) + int(null_option)
    return Benchmark(
      name,
      loaders.load_dybench,
      lambda it: prompts.dybench_prompt(it, null_option),
      lambda it, out: extraction.dybench(out, n_shown(it), lenient),
      lambda it: _letters(n_shown(it)),
      metrics.dybench,
      "p_acc",
    )
  if name == "timeblind":
    return Benchmark(
      name,
      loaders.load_timeblind,
      prompts.timeblind_prompt,
      lambda it, out: extraction.timeblind(pre(out), it.fmt),
      lambda it: ["yes", "no"] if it.fmt == "yes_no" else ["A", "B"],
      metrics.timeblind,
      "i_acc",
    )
  if name == "tempcompass":

    def extract(it: EvalItem, out: str) -> str:
      pred = pre(out)
      if it.fmt == "yes_no":
        return extraction.tempcompass_yes_no(pred)
      if it.fmt == "caption_matching":
        return extraction.tempcompass_caption(pred, it.question)
      return extraction.tempcompass_mc(pred, it.meta["answer_text"])

    return Benchmark(
      name,
      loaders.load_tempcompass,
      prompts.tempcompass_prompt,
      extract,
      _tempcompass_choices,
      metrics.tempcompass,
      "acc",
    )
  if name == "mvbench":
    return Benchmark(
      name,
      loaders.load_mvbench,
      prompts.mvbench_prompt,
      lambda it, out: extraction.mvbench(pre(out), len(it.options)),
      lambda it: _letters(len(it.options)),
      metrics.mvbench,
      "acc",
    )
  if name == "videomme":
    return Benchmark(
      name,
      loaders.load_videomme,
      prompts.videomme_prompt,
      lambda it, out: extraction.videomme(pre(out)),
      lambda it: _letters(len(it.options)),
      metrics.videomme,
      "acc",
    )
  raise ValueError(f"unknown benchmark {name!r}; expected one of {NAMES}")
