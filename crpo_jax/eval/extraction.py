"""Answer extraction, each as its benchmark's official scorer does it.

Each function restates one official rule; `benchmarks.py` turns its result into a
`metrics.Scored` (extracted answer, correct, answered). The official sources, at
the commits followed (README, "Evaluation"):
  dybench     no official scorer; METHOD.md section 2, shared with the training
              reward (`rl.rewards.extract_letter`): the first <answer> span,
              stripped, must be an option letter (null option included).
  timeblind   Baiqi-Li/TimeBlind `utils.py` `extract_answer`
              @644fdf4c4ee64f74729efe2eea58f617f8bb93e2.
  tempcompass llyx97/TempCompass `eval_multi-choice.py`, `eval_yes_no.py`,
              `eval_caption_matching.py` with `--disable_llm` (rules only)
              @e1b463166400633e6061962d890a9ae85db29f70 (files last changed in
              c2ec41eddb344a15c07c941701a18d57d2bebbfe).
  mvbench     OpenGVLab/Ask-Anything `video_chat2/mvbench.ipynb` (`answer`,
              `infer_mvbench`, `check_ans`)
              @4dd8210b030374bb0c510a57dfbe916f70d3ef71 (file last changed in
              71ac7a28183a3d9610ad149f19ee2195cc31c65e).
  videomme    thanku-all/parse_answer `eval_your_results.py`
              `extract_characters_regex` @afd52cfe3dde5b3685e0d4f760c10c756860c758
              (linked from BradyFU/Video-MME's README @8889f313a4b9e9480611d65daa505aab2ef63808).

Where an official rule is a known bug, the official function reproduces it and a
`*_strict` one next to it gives the fixed reading (reported beside, never as the
headline). `strip_think` is ours: the official rules were written for direct
answers, so a reasoning block's letters would match; it feeds an extra, labelled
variant only.
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


def tempcompass_clean(text: str) -> str:
  """What every TempCompass rule reads: `prediction.replace('</s>', '').strip()`."""
  return text.replace("</s>", "").strip()


def tempcompass_mc(pred: str, answer_text: str) -> str:
  """`eval_multi-choice.py` rules: the letter they read, '' when none matches.

  `answer_text` is the released "A. ..." answer. The rules, in order: the whole
  answer; a bare capital A-D; a prefix "X." or "X)". Rating is then letter ==
  answer_text[0].
  """
  if pred == answer_text:
    return answer_text[:1]
  if pred in ("A", "B", "C", "D"):
    return pred
  if any(pred.startswith(f"{x}{s}") for s in ".)" for x in "ABCD"):
    return pred[0]
  return ""


def tempcompass_yes_no(pred: str) -> str:
  """`eval_yes_no.py` `extract_pred`: the lower-cased output starts with yes / no."""
  low = pred.lower()
  return "yes" if low.startswith("yes") else "no" if low.startswith("no") else ""


def _tempcompass_split(question: str) -> tuple[list[str], list[str], list[str]]:
  """Option lines, their sentences and their indices (labels, then bare labels)."""
  lines = question.split("\n")[1:]
  sents = [line.split(": ")[1] if ": " in line else "" for line in lines]
  labels = [line.split(": ")[0] for line in lines]
  bare = [
    lab.replace("Sentence ", "").replace("Option ", "").replace("Caption ", "") for lab in labels
  ]
  return lines, sents, labels + bare


def tempcompass_caption(pred: str, question: str) -> str:
  """`eval_caption_matching.py` `eval_rule`'s match: the option string read, '' if none.

  Three loops, each overwriting the last: a whole option line; an option sentence
  (also after a "x) " prefix); an option index, the label ("Sentence A") or the
  bare one ("A", "1"), also with '.' removed. The string is rated by
  `tempcompass_caption_correct`.
  """
  lines, sents, inds = _tempcompass_split(question)
  found = ""
  for line in lines:
    if line == pred:
      found = line
  for sent in sents:
    if sent == pred or (") " in pred and sent == pred.split(") ")[1]):
      found = sent
  for ind in inds:
    if ind == pred or ind == pred.replace(".", ""):
      found = ind
  return found


def tempcompass_caption_correct(found: str, answer_text: str) -> bool:
  """`eval_rule`'s rating of a match against the released answer "Label X: sentence"."""
  label = answer_text.split(":")[0]
  parts = answer_text.split(": ")
  sent = parts[1] if len(parts) > 1 else None
  words = parts[0].split()
  bare = words[1] if len(words) > 1 else None
  return bool(found) and found in (answer_text, label, sent, bare)


def caption_label(found: str, question: str) -> str:
  """The option label ("Sentence A") a `tempcompass_caption` match names, '' if none."""
  lines, sents, inds = _tempcompass_split(question)
  n = len(lines)
  for i in range(n):
    if found in (lines[i], sents[i], inds[i], inds[n + i]):
      return inds[i]
  return ""


def mvbench_pred(text: str) -> str:
  """VideoChat2's prediction string for a model output.

  `answer` keeps the text before any '###' and after the last 'Assistant:',
  stripped; `infer_mvbench` keeps its first line and prepends the "(" the
  assistant prefix "Best option:(" ended with.
  """
  text = text.split("###")[0].split("Assistant:")[-1].strip()
  return "(" + text.strip().split("\n")[0]


def mvbench_correct(pred: str, gt: str) -> bool:
  """VideoChat2 `check_ans`; `gt` is "(x) option text".

  The prediction's first space-separated token, lower-cased, with '.' removed,
  must lie inside the ground-truth token "(x)", or contain it. Known bugs, kept as
  official: an empty or dot-only output gives the token "(", which lies inside
  every "(x)", so it counts correct; a token naming several options ("(a)(b)")
  counts correct for each of them.
  """
  pred_option = pred.lower().split(" ")[0]
  gt_option = gt.lower().split(" ")[0]
  return pred_option.replace(".", "") in gt_option or gt_option in pred_option


_MVBENCH_STRICT = re.compile(r"\(([a-z])\)?")


def mvbench_strict(pred: str, num_options: int) -> str:
  """Our fixed reading of `check_ans`: the token, '.' removed, is exactly "(x" or
  "(x)" for one option letter x; the letter, else ''."""
  token = pred.lower().split(" ")[0].replace(".", "")
  m = _MVBENCH_STRICT.fullmatch(token)
  if not m or ord(m.group(1)) - ord("a") >= num_options:
    return ""
  return m.group(1).upper()


# As released: two missing commas join "The best option is" + "The correct option
# is" and "Best answer:" + "Best option:" into single prefixes.
_VIDEOMME_PREFIXES = (
  "The best answer is",
  "The correct answer is",
  "The answer is",
  "The answer",
  "The best option isThe correct option is",
  "Best answer:Best option:",
  "Answer:",
  "Option:",
  "The correct answer",
  "The correct option",
)


def videomme(text: str) -> str:
  """Video-MME `extract_characters_regex`: the first A-D after prefix removal, ''
  (unanswered) when none, or when over 10 words hold no A-D."""
  s = text.strip()
  for prefix in _VIDEOMME_PREFIXES:
    s = s.replace(prefix, "")
  if len(s.split()) > 10 and not re.search("[ABCD]", s):
    return ""
  m = re.search(r"[ABCD]", s)
  return m.group(0) if m else ""
