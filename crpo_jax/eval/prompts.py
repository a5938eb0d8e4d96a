"""Prompts, each as its benchmark's official evaluation writes it.

Sources, at the commits named in extraction.py (METHOD.md section 2 for ours):
  dybench     our training format (crpo_jax/data/prompts.py): question, "Options:",
              "X. text" lines (null option last), then the <think>/<answer> instruction.
  timeblind   `utils.add_question_suffix`: question + " Please output Yes or No." /
              " Please output A or B."; no system turn (`evaluate.py`).
  tempcompass `run_qwen2_vl.py`: question (options embedded as released) +
              `answer_prompt[task]`; no system turn.
  mvbench     `mvbench.ipynb` `infer_mvbench(system_llm=True)`: the system text
              (ending in a newline) is both the system turn and the start of the
              user text, then `qa_template`'s "Question: ...\\nOptions:\\n(A) ...",
              then "\\nOnly give the best option."; the assistant turn starts
              "Best option:(".
  videomme    BradyFU/Video-MME README "Prompt", without subtitles: instruction,
              question, "A. ..." option lines (as released), "The best answer is:".
"""

from __future__ import annotations

from crpo_jax.data import prompts as data_prompts
from crpo_jax.eval.items import EvalItem, Prompt

TIMEBLIND_SUFFIX = {"yes_no": " Please output Yes or No.", "mcq": " Please output A or B."}

TEMPCOMPASS_ANSWER_PROMPT = {
  "multi-choice": "\nPlease directly give the best option:",
  "yes_no": "\nPlease answer yes or no:",
  "caption_matching": "\nPlease directly give the best option:",
}

MVBENCH_SYSTEM = (
  "Carefully watch the video and pay attention to the cause and sequence of events, "
  "the detail and movement of objects, and the action and pose of persons. Based on "
  "your observations, select the best option that accurately addresses the question.\n"
)
MVBENCH_QUESTION_PROMPT = "\nOnly give the best option."
MVBENCH_ANSWER_PREFIX = "Best option:("

VIDEOMME_INSTRUCTION = (
  "Select the best answer to the following multiple-choice question based on the video. "
  "Respond with only the letter (A, B, C, or D) of the correct option."
)
VIDEOMME_POST = "The best answer is:"


def _letter(i: int) -> str:
  return chr(ord("A") + i)


def dybench_prompt(item: EvalItem, null_option: bool = True) -> Prompt:
  """The training prompt (data/prompts.py, METHOD.md section 2); `null_option` as in training."""
  return Prompt(
    user=data_prompts.question_text(item.question, item.options, add_null_option=null_option)
  )


def timeblind_prompt(item: EvalItem) -> Prompt:
  return Prompt(user=item.question + TIMEBLIND_SUFFIX[item.fmt])


def tempcompass_prompt(item: EvalItem) -> Prompt:
  return Prompt(user=item.question + TEMPCOMPASS_ANSWER_PROMPT[item.meta["task"]])


def mvbench_question(item: EvalItem) -> str:
  """VideoChat2's `qa_template` question block (trailing whitespace stripped)."""
  text = f"Question: {item.question}\nOptions:\n"
  text += "".join(f"({_letter(i)}) {c}\n" for i, c in enumerate(item.options))
  return text.rstrip()


def mvbench_prompt(item: EvalItem) -> Prompt:
  return Prompt(
    user=MVBENCH_SYSTEM + mvbench_question(item) + MVBENCH_QUESTION_PROMPT,
    system=MVBENCH_SYSTEM,
    assistant_prefix=MVBENCH_ANSWER_PREFIX,
  )


def videomme_prompt(item: EvalItem, subtitles: bool = False) -> Prompt:
  """Video-MME without subtitles.

  Raises:
    NotImplementedError: for `subtitles=True`; the w/-subs setting needs the
      subtitles aligned to the sampled frames, which the loader does not read.
  """
  if subtitles:
    raise NotImplementedError("Video-MME with subtitles is not supported; use subtitles=False")
  options = "\n".join(f"{_letter(i)}. {o}" for i, o in enumerate(item.options))
  return Prompt(user=f"{VIDEOMME_INSTRUCTION}\n{item.question}\n{options}\n{VIDEOMME_POST}")
