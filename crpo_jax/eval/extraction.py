"""Answer extraction, each as its benchmark's official scorer does it.

Every extractor maps a model output to the canonical answer form of `EvalItem`
(an option letter, 'yes'/'no', or a caption-matching option label), or '' when the
official rules find no answer, which scores as wrong. Rules (reference/video_rl.md
section 5):
  dybench     METHOD.md section 2, shared with the training reward
              (`rl.rewards.extract_letter`): the first <answer> span, stripped, must
              be an option letter (null option included).
  timeblind   `utils.extract_answer` regex cascade.
  tempcompass `eval_*.py` hand-crafted rules with `--disable_llm`.
  mvbench     VideoChat2: "(" + first output line; `check_ans` token containment.
  videomme    `eval_your_results.py` `extract_characters_regex`.

`strip_think` (ours) removes a reasoning block before the official rules run: they
were written for direct answers, and letters inside a <think> block would match.
"""

from __future__ import annotations

import re
import unicodedata

from crpo_jax.rl import rewards

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_think(text: str) -> str:
  """Drops complete <think>...</think> blocks, and an unfinished one to the end."""
  text = _THINK_RE.sub("", text)
  cut = text.find("<think>")
  return (text if cut < 0 else text[:cut]).strip()


def dybench(text: str, num_options: int, lenient: bool = False) -> str:
  """Letter from the first <answer> span (METHOD.md section 2).

  Args:
    text: the raw model output.
    num_options: options shown, null option included.
    lenient: when there is no <answer> tag, use the whole stripped output (as
      Video-R1's evaluation does); off by default, as in training.
  """
  letters = rewards.option_letters(num_options)
  answer = rewards.extract_answer(text)
  if answer is None and lenient:
    answer = strip_think(text)
  # One letter only: `in letters` alone would also accept '' and runs like 'AB'.
  return answer if answer is not None and len(answer) == 1 and answer in letters else ""


_TB_KEY = r"(?:final(?: answer)?|answer|prediction)"
_TB_YES_NO = (
  re.compile(rf"(?i){_TB_KEY}\s*[:：]\s*(yes|no)\b"),
  re.compile(r"(?i)\b(yes|no)\b(?=[\s\.\,\!\?\)]|$)"),
)
_TB_MC = (
  re.compile(rf"(?i){_TB_KEY}\s*[:：]\s*([AB])\b"),
  re.compile(r"(?i)(?:option|choice)\s*[:：]?\s*([AB])\b"),
  re.compile(r"(?i)[\(\[\{]\s*([AB])\s*[\)\]\}]"),
  re.compile(r"(?i)\b([AB])\s*[\.\)]\b"),
)
_TB_BARE = re.compile(r"(?i)(?<![A-Za-z0-9/])([AB])(?![A-Za-z0-9/])")
_TB_KEYWORD = re.compile(rf"(?i)\b({_TB_KEY})\b")


def timeblind(text: str, fmt: str) -> str:
  """TimeBlind's `extract_answer`: 'yes'/'no' or 'A'/'B', '' for its -1."""
  text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text or "")).strip()
  if not text:
    return ""
  if fmt == "yes_no":
    for pat in _TB_YES_NO:
      if m := pat.search(text):
        return m.group(1).lower()
    return ""
  for pat in _TB_MC:
    if m := pat.search(text):
      return m.group(1).upper()
  # A bare isolated A/B: before the first answer keyword, then after it, then anywhere.
  if kw := _TB_KEYWORD.search(text):
    for region in (text[: kw.start()], text[kw.end() :]):
      if m := _TB_BARE.search(region):
        return m.group(1).upper()
  m = _TB_BARE.search(text)
  return m.group(1).upper() if m else ""


def tempcompass_mc(pred: str, answer_text: str) -> str:
  """TempCompass multi-choice rules; `answer_text` is the released "A. ..." answer."""
  if pred == answer_text:
    return answer_text[:1]
  if pred in ("A", "B", "C", "D"):
    return pred
  if any(pred.startswith(f"{x}{s}") for x in "ABCD" for s in ".)"):
    return pred[0]
  return ""


def tempcompass_yes_no(pred: str) -> str:
  """TempCompass yes/no: the lower-cased output starts with 'yes' or 'no'."""
  low = pred.lower()
  return "yes" if low.startswith("yes") else "no" if low.startswith("no") else ""


def tempcompass_caption(pred: str, question: str) -> str:
  """TempCompass caption matching `eval_rule`: the matched option's label.

  As officially, a label match beats a sentence match, which beats a full-line match
  (later loops overwrite earlier ones).
  """
  lines = question.split("\n")[1:]
  labels = [line.split(": ")[0] for line in lines]
  sents = [line.split(": ")[1] if ": " in line else "" for line in lines]
  found = ""
  for line, label in zip(lines, labels):
    if line == pred:
      found = label
  for sent, label in zip(sents, labels):
    if sent == pred or (") " in pred and sent == pred.split(") ")[1]):
      found = label
  for label in labels:
    if label == pred or label == pred.replace(".", ""):
      found = label
  return found


def mvbench(text: str, num_options: int) -> str:
  """VideoChat2 `check_ans`, as the letter it accepts.

  The prediction is the assistant prefix's "(" plus the first line of the output;
  its first space-separated token, lower-cased with '.' removed, must lie inside the
  ground truth token "(x)" or contain it. A token without any letter never matches
  (the official bare "(" would otherwise match every option).
  """
  lines = text.strip().split("\n")
  token = ("(" + lines[0]).lower().split(" ")[0]
  if not re.search(r"[a-z]", token):
    return ""
  for i in range(num_options):
    gt = f"({chr(ord('a') + i)})"
    if token.replace(".", "") in gt or gt in token:
      return chr(ord("A") + i)
  return ""


# The official list misses two commas, so two pairs of prefixes are joined; kept as
# released because the scores it gives are the published ones.
_VIDEOMME_PREFIXES = (
  "The best answer is",
  "The correct answer is",
  "The answer is",
  "The answer",
  "The best option isThe correct option is",
  "Best answer:Best option:",
  "Answer:",
  "Option:",
)


def videomme(text: str) -> str:
  """Video-MME `extract_characters_regex`: the first A-D after prefix removal."""
  s = text.strip()
  for prefix in _VIDEOMME_PREFIXES:
    s = s.replace(prefix, "")
  if len(s.split()) > 10 and not re.search("[ABCD]", s):
    return ""
  m = re.search(r"[ABCD]", s)
  return m.group(0) if m else ""
