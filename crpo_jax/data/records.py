"""Dataset records: our JSONL schema and Video-R1 JSON, loaded into `Example`s.

Our JSONL schema (one JSON object per line; blank lines are skipped):

  id          str, optional. Defaults to "<file name>:<line>".
  video       str, required. A relative path resolves against `video_root` when
              given, else against the JSONL file's own directory.
  question    str, required, non-empty.
  options     list of >= 2 option texts, required. Either bare texts ("a red ball")
              or lettered strings ("A. a red ball" / "A) a red ball") with letters
              in order A, B, C, ...; the letters are stripped. No mixing.
              A last "None of the above" is dropped here, since the pipeline
              appends the null option itself (same letter); the answer may name
              it then. Anywhere else in the list it is an error.
  answer      str, required: the ground-truth letter, naming one of the options.
  answer_cf   str, optional: the counterfactual ground-truth letter. It may also be
              the letter right after the last option, which names the null option
              "None of the above" that the pipeline appends (METHOD.md section 1).
  pair_id     str or int, optional: items sharing it form a pair (P-Acc).
  category    str, optional, free text (e.g. "direction", "colour").
  route       str, optional: spatial | temporal | spatiotemporal | static.
  start, end  number, optional: a clip window in seconds, 0 <= start < end.

Video-R1 JSON (tulerfeng/Video-R1): a JSON list of objects with `problem`,
`options` ("A. ..."), `solution` ("<answer>X</answer>"), `problem_type`,
`data_type` and `path` ("./sub/x.mp4", resolved as root + path[1:], where root is
`video_root` or the JSON file's directory). Only `data_type == "video"` and
`problem_type == "multiple choice"` records become Examples; the others are
yielded as `RecordSkipped` with the reason. With fmt='auto', any object that has
one of Video-R1's fields and neither `question` nor `video` is read as Video-R1,
in a JSON list or a JSONL file.

`iter_records` yields a `RecordError` in place of each bad record so a pipeline
can skip and count them; `read_records` raises the first one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from typing import Any

from crpo_jax.data import prompts

ROUTES = ("spatial", "temporal", "spatiotemporal", "static")
_LETTERED = re.compile(r"^\s*([A-Z])\s*[.)]\s*(.*)$", re.DOTALL)
_ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Example:
  """One multiple-choice video question (METHOD.md section 1)."""

  id: str
  video: str  # resolved path
  question: str
  options: tuple[str, ...]  # option texts without letters; no null option
  answer: str  # letter
  answer_cf: str | None = None
  pair_id: str | None = None
  category: str | None = None
  route: str | None = None  # one of ROUTES
  start: float | None = None
  end: float | None = None
  source: str = ""  # "file:line"


class RecordError(ValueError):
  """A malformed record; the message names the file, the line and the field."""

  def __init__(self, file: str, line: int, field: str, reason: str):
    self.file, self.line, self.field, self.reason = file, line, field, reason
    super().__init__(f"{file}:{line}: field '{field}': {reason}")


class RecordSkipped(RecordError):
  """A well-formed record that is not a multiple-choice video question."""


def letter(i: int) -> str:
  """Option letter for a 0-based option index (0 -> 'A')."""
  return chr(ord("A") + i)


def _check_letter(value: Any, n_options: int, field: str, err) -> str:
  if not isinstance(value, str) or not value.strip():
    raise err(field, f"expected an option letter, got {value!r}")
  v = value.strip().upper()
  if len(v) != 1 or not "A" <= v < letter(n_options):
    raise err(field, f"{value!r} names no option (options are A..{letter(n_options - 1)})")
  return v


def _parse_options(raw: Any, err, *, require_letters: bool = False) -> tuple[tuple[str, ...], bool]:
  """Option texts without letters, and whether the data listed the null option last.

  A trailing "None of the above" is dropped (the pipeline appends it, with the same
  letter), so it is never offered twice; anywhere else it is an error.
  """
  if not isinstance(raw, list) or not all(isinstance(o, str) for o in raw):
    raise err("options", f"expected a list of at least 2 strings, got {raw!r}")
  if len(raw) < 2:
    raise err("options", f"expected a list of at least 2 strings, got {raw!r}")
  if len(raw) > 25:  # 'Z' is kept free for a null option after 25 real ones
    raise err("options", f"at most 25 options are supported, got {len(raw)}")
  matches = [_LETTERED.match(o) for o in raw]
  lettered = [m is not None and m.group(1) == letter(i) for i, m in enumerate(matches)]
  if all(lettered):
    texts = [m.group(2).strip() for m in matches]
  elif require_letters or any(lettered):
    bad = lettered.index(False)
    raise err("options", f"option {bad + 1} {raw[bad]!r} lacks the letter {letter(bad)}.")
  else:
    texts = [o.strip() for o in raw]
  if not all(texts):
    raise err("options", "an option text is empty")
  try:
    with_null = prompts.with_null_option(texts)
  except ValueError as e:
    raise err("options", str(e)) from None
  had_null = len(with_null) == len(texts)
  if had_null:
    texts = texts[:-1]
  if len(texts) < 2:
    raise err("options", f"expected at least 2 options besides the null option, got {raw!r}")
  return tuple(texts), had_null


def _opt_str(rec: dict, field: str, err) -> str | None:
  value = rec.get(field)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise err(field, f"expected a string, got {value!r}")
  return str(value)


def _opt_seconds(rec: dict, field: str, err) -> float | None:
  value = rec.get(field)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
    raise err(field, f"expected a number of seconds >= 0, got {value!r}")
  return float(value)


def _resolve(path: str, root: str) -> str:
  return os.path.normpath(path if os.path.isabs(path) else os.path.join(root, path))


def _route(rec: dict, err) -> str | None:
  """The optional route label (the router may write it into either format), lower case."""
  route = _opt_str(rec, "route", err)
  if route is None:
    return None
  route = route.strip().lower()
  if route not in ROUTES:
    raise err("route", f"{rec['route']!r} is not one of {', '.join(ROUTES)}")
  return route


def _crpo_example(rec: dict, root: str, source: str, err) -> Example:
  for field in ("video", "question"):
    if not isinstance(rec.get(field), str) or not rec[field].strip():
      raise err(field, f"required non-empty string, got {rec.get(field)!r}")
  options, had_null = _parse_options(rec.get("options"), err)
  answer = _check_letter(rec.get("answer"), len(options) + had_null, "answer", err)
  answer_cf = None
  if rec.get("answer_cf") is not None:  # may name the appended null option
    answer_cf = _check_letter(rec["answer_cf"], len(options) + 1, "answer_cf", err)
  route = _route(rec, err)
  start, end = _opt_seconds(rec, "start", err), _opt_seconds(rec, "end", err)
  if start is not None and end is not None and end <= start:
    raise err("end", f"end {end} must be after start {start}")
  return Example(
    id=_opt_str(rec, "id", err) or source,
    video=_resolve(rec["video"], root),
    question=rec["question"].strip(),
    options=options,
    answer=answer,
    answer_cf=answer_cf,
    pair_id=_opt_str(rec, "pair_id", err),
    category=_opt_str(rec, "category", err),
    route=route,
    start=start,
    end=end,
    source=source,
  )


def _video_r1_example(rec: dict, root: str, source: str, err, skip) -> Example:
  if rec.get("data_type") != "video":
    raise skip("data_type", f"not a video record (data_type={rec.get('data_type')!r})")
  if rec.get("problem_type") != "multiple choice":
    raise skip("problem_type", f"not multiple choice (problem_type={rec.get('problem_type')!r})")
  for field in ("problem", "path", "solution"):
    if not isinstance(rec.get(field), str) or not rec[field].strip():
      raise err(field, f"required non-empty string, got {rec.get(field)!r}")
  options, had_null = _parse_options(rec.get("options"), err, require_letters=True)
  m = _ANSWER_TAG.search(rec["solution"])
  if m is None:
    raise err("solution", f"expected '<answer>X</answer>', got {rec['solution']!r}")
  answer = _check_letter(m.group(1), len(options) + had_null, "solution", err)
  path = rec["path"]
  path = path.removeprefix("./")  # Video-R1 does root + path[1:]
  pid = rec.get("problem_id")
  return Example(
    id=str(pid) if pid is not None else source,
    video=_resolve(path, root),
    question=rec["problem"].strip(),
    options=options,
    answer=answer,
    category=_opt_str(rec, "data_source", err),
    route=_route(rec, err),
    source=source,
  )


_VIDEO_R1_ONLY = ("problem", "solution", "problem_type", "data_type", "path")


def _looks_video_r1(item: dict) -> bool:
  """A Video-R1 object: any field of that format and neither `question` nor `video`.

  So a Video-R1 record missing `problem` is still read as one, and its error names
  `problem`, not our schema's `video`.
  """
  return "question" not in item and "video" not in item and any(k in item for k in _VIDEO_R1_ONLY)


def _json_list_items(text: str, file: str) -> Iterator[tuple[int, Any]]:
  """Yields (line, item) for each item of a top-level JSON list, with its line."""
  decoder = json.JSONDecoder()
  i, line, n = text.index("[") + 1, text.count("\n", 0, text.index("[")) + 1, len(text)
  while True:
    while i < n and text[i] in " \t\r\n,":
      line += text[i] == "\n"
      i += 1
    if i >= n:
      raise RecordError(file, line, "<json>", "unterminated JSON list")
    if text[i] == "]":
      return
    try:
      item, j = decoder.raw_decode(text, i)
    except json.JSONDecodeError as e:
      raise RecordError(file, line + text.count("\n", i, e.pos), "<json>", e.msg) from None
    yield line, item
    line += text.count("\n", i, j)
    i = j


def iter_records(
  path: str, *, fmt: str = "auto", video_root: str | None = None
) -> Iterator[Example | RecordError]:
  """Reads a record file lazily.

  Args:
    path: a JSONL file (our schema or Video-R1 objects) or a Video-R1 JSON list.
    fmt: 'auto' (by content), 'crpo' or 'video_r1'.
    video_root: directory relative video paths resolve against; defaults to the
      record file's directory.

  Yields:
    An `Example` per good record, a `RecordError` (or `RecordSkipped`) per bad or
    unsupported one. A syntax error in a JSON list ends the file with one error.

  Raises:
    OSError: the file cannot be read (e.g. FileNotFoundError).
    ValueError: an unknown `fmt`.
  """
  if fmt not in ("auto", "crpo", "video_r1"):
    raise ValueError(f"fmt must be 'auto', 'crpo' or 'video_r1', got {fmt!r}")
  root = video_root if video_root is not None else os.path.dirname(os.path.abspath(path))
  with open(path, encoding="utf-8") as f:
    text = f.read()
  name = os.path.basename(path)
  if text.lstrip().startswith("["):
    items: Iterator[tuple[int, Any]] = _json_list_items(text, path)
  else:
    items = ((i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip())
  try:
    for line, item in items:

      def err(field, reason, line=line):
        return RecordError(path, line, field, reason)

      def skip(field, reason, line=line):
        return RecordSkipped(path, line, field, reason)

      try:
        if isinstance(item, str):
          try:
            item = json.loads(item)
          except json.JSONDecodeError as e:
            raise err("<json>", f"invalid JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(item, dict):
          raise err("<record>", f"expected a JSON object, got {type(item).__name__}")
        is_r1 = fmt == "video_r1" or (fmt == "auto" and _looks_video_r1(item))
        source = f"{name}:{line}"
        if is_r1:
          yield _video_r1_example(item, root, source, err, skip)
        else:
          yield _crpo_example(item, root, source, err)
      except RecordError as e:
        yield e
  except RecordError as e:  # JSON list syntax error: nothing after it can be read
    yield e


def read_records(
  path: str, *, fmt: str = "auto", video_root: str | None = None, skip_unsupported: bool = True
) -> list[Example]:
  """Reads all records, raising the first `RecordError`.

  `RecordSkipped` records (Video-R1 non-video or non-MCQ) are dropped silently
  when `skip_unsupported`, else raised too.
  """
  out = []
  for r in iter_records(path, fmt=fmt, video_root=video_root):
    if isinstance(r, RecordSkipped) and skip_unsupported:
      continue
    if isinstance(r, RecordError):
      raise r
    out.append(r)
  return out
