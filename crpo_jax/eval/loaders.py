"""Loaders for each benchmark's released format, all returning `EvalItem`s.

Formats (reference/video_rl.md section 5):
  dybench     our JSONL schema (crpo_jax/data/records.py): id, video, question,
              options, answer (letter), pair_id, category, route, answer_cf, ...
  timeblind   TimeBlind/data.jsonl: index, video_path, question, type.
  tempcompass questions/<task>.json: {video_id: {dim: [{question, answer}]}}.
  mvbench     json/<task>.json: [{video, question, candidates, answer, start?, end?}].
  videomme    parquet: video_id, duration, domain, sub_category, videoID,
              question_id, task_type, question, options, answer.

Every missing file or field raises `DataError` naming the file, record and field.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
from collections.abc import Mapping
from typing import Any

from crpo_jax.data import records
from crpo_jax.eval import mvbench_tasks
from crpo_jax.eval.items import EvalItem

TEMPCOMPASS_TASKS = ("multi-choice", "yes_no", "caption_matching")


class DataError(ValueError):
  """A benchmark file is missing, malformed or lacks a field."""


def _existing(path: str | pathlib.Path, what: str) -> pathlib.Path:
  p = pathlib.Path(path).expanduser()
  if not p.exists():
    raise DataError(f"{what} not found: {p}")
  return p


def _field(record: Mapping[str, Any], name: str, where: str) -> Any:
  if not isinstance(record, Mapping):
    raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
  if name not in record or record[name] is None:
    raise DataError(f"{where}: missing field {name!r}")
  return record[name]


def _read_jsonl(path: pathlib.Path) -> list[tuple[str, dict]]:
  """(location, record) per non-empty line, location = 'file:line'."""
  out = []
  with path.open(encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        out.append((f"{path}:{n}", json.loads(line)))
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{n}: invalid JSON ({e})") from e
  return out


def _read_json(path: pathlib.Path) -> Any:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: invalid JSON ({e})") from e


def _video_path(video: str, base: pathlib.Path, video_dir: str | None) -> str:
  p = pathlib.Path(video)
  if p.is_absolute():
    return str(p)
  return str((pathlib.Path(video_dir) if video_dir else base) / p)


def _letter_answer(answer: Any, options: list[str], where: str) -> str:
  """Canonical letter from a letter, a 0-based index or the option text."""
  if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(options):
    return chr(ord("A") + answer)
  a = str(answer).strip()
  if len(a) == 1 and "A" <= a.upper() < chr(ord("A") + len(options)):
    return a.upper()
  if a in options:
    return chr(ord("A") + options.index(a))
  raise DataError(f"{where}: answer {answer!r} names none of the {len(options)} options")


def load_dybench(path: str, video_dir: str | None = None) -> list[EvalItem]:
  """DyBench-style paired MCQs in crpo_jax's JSONL schema, read by `data.records`.

  An item without `pair_id` is a pair of one (it still counts in P-Acc).
  `meta['pair_size']` is the pair's size in the file, so the metrics can tell a
  pair whose member was never scored (README, "DyBench").
  """
  p = _existing(path, "DyBench JSONL")
  try:
    examples = records.read_records(str(p), fmt="crpo", video_root=video_dir)
  except records.RecordError as e:
    raise DataError(str(e)) from e
  items = [
    EvalItem(
      id=ex.id,
      video=ex.video,
      question=ex.question,
      options=ex.options,
      answer=ex.answer,
      fmt="mcq",
      start=ex.start,
      end=ex.end,
      meta={
        "pair_id": ex.pair_id if ex.pair_id is not None else ex.id,
        "category": ex.category or "all",
        "route": ex.route or "",
        "answer_cf": ex.answer_cf,
      },
    )
    for ex in examples
  ]
  sizes = collections.Counter(it.meta["pair_id"] for it in items)
  items = [
    dataclasses.replace(it, meta={**it.meta, "pair_size": sizes[it.meta["pair_id"]]})
    for it in items
  ]
  return _unique(items, p)


def load_timeblind(path: str, video_dir: str | None = None) -> list[EvalItem]:
  """TimeBlind data.jsonl (or its folder).

  The official scorer ignores `answer`: with role = index % 4, the expected answer
  is Yes/A for roles 0 and 3 and No/B for roles 1 and 2 (reference 5.1).
  `video_path` is relative to the folder holding the TimeBlind/ folder.
  """
  p = _existing(path, "TimeBlind data")
  if p.is_dir():
    p = _existing(p / "data.jsonl", "TimeBlind data.jsonl")
  items = []
  for where, r in _read_jsonl(p):
    index = int(_field(r, "index", where))
    kind = str(_field(r, "type", where))
    if kind not in ("yes_no", "multiple_choice"):
      raise DataError(f"{where}: field 'type' is {kind!r}, expected yes_no or multiple_choice")
    role = index % 4
    positive = role in (0, 3)
    video = str(_field(r, "video_path", where))
    base = p.parent.parent if video.startswith(p.parent.name + "/") else p.parent
    items.append(
      EvalItem(
        id=str(index),
        video=_video_path(video, base, video_dir),
        question=str(_field(r, "question", where)),
        options=(),
        answer=("yes" if positive else "no") if kind == "yes_no" else ("A" if positive else "B"),
        fmt="yes_no" if kind == "yes_no" else "mcq",
        meta={"type": kind, "sample_id": index // 4, "role": role},
      )
    )
  return _unique(items, p)


def _tempcompass_files(p: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
  if p.is_file():
    task = p.stem
    if task == "captioning":
      raise NotImplementedError(
        f"{p}: TempCompass captioning is scored by an LLM judge, which crpo_jax does not run"
      )
    if task not in TEMPCOMPASS_TASKS:
      raise DataError(f"{p}: file name must be one of {TEMPCOMPASS_TASKS} (.json)")
    return [(task, p)]
  # A root folder: every rule-scored task file present under questions/.
  qdir = p / "questions" if (p / "questions").is_dir() else p
  files = [(t, qdir / f"{t}.json") for t in TEMPCOMPASS_TASKS if (qdir / f"{t}.json").exists()]
  if not files:
    raise DataError(f"{qdir}: no TempCompass question file ({', '.join(TEMPCOMPASS_TASKS)})")
  return files


def _tempcompass_fine_dims(meta_file: pathlib.Path) -> dict[tuple[str, str], str]:
  """{(video_id, dim): fine-grained aspect} from meta_info.json, as `print_result`
  reads it: `eval_dim[dim]["type"]`, and "order" for the order aspect."""
  if not meta_file.exists():
    return {}
  info = _read_json(meta_file)
  out = {}
  for vid, rec in info.items():
    for dim, spec in (_field(rec, "eval_dim", f"{meta_file} [{vid}]") or {}).items():
      if dim == "order":
        out[(vid, dim)] = "order"
      elif spec:
        out[(vid, dim)] = str(_field(spec, "type", f"{meta_file} [{vid}][eval_dim][{dim}]"))
  return out


def load_tempcompass(path: str, video_dir: str | None = None) -> list[EvalItem]:
  """TempCompass question files; videos at <root>/videos/<video_id>.mp4.

  With <root>/meta_info.json present (the GitHub release ships it), items carry
  their fine-grained aspect as `meta['fine_dim']`.
  """
  p = _existing(path, "TempCompass questions")
  items = []
  for task, f in _tempcompass_files(p):
    root = f.parent.parent
    fine = _tempcompass_fine_dims(root / "meta_info.json")
    videos = pathlib.Path(video_dir) if video_dir else root / "videos"
    data = _read_json(f)
    if not isinstance(data, Mapping):
      raise DataError(f"{f}: expected {{video_id: {{dim: [questions]}}}}")
    for vid, dims in data.items():
      for dim, qs in dims.items():
        for i, q in enumerate(qs):
          where = f"{f} [{vid}][{dim}][{i}]"
          question = str(_field(q, "question", where))
          answer = str(_field(q, "answer", where)).strip()
          lines = question.split("\n")[1:]
          if task == "caption_matching" and not all(": " in line for line in lines):
            raise DataError(f"{where}: caption-matching options must read 'Label: sentence'")
          if task == "multi-choice":
            fmt, options, canon = "mcq", (), answer[:1]
          elif task == "yes_no":
            fmt, options, canon = "yes_no", (), answer.lower()
          else:
            fmt, options, canon = "caption_matching", tuple(lines), answer.split(":")[0]
          items.append(
            EvalItem(
              id=f"{task}/{vid}/{dim}/{i}",
              video=str(videos / f"{vid}.mp4"),
              question=question,
              options=options,
              answer=canon,
              fmt=fmt,
              meta={"task": task, "dim": dim, "answer_text": answer}
              | ({"fine_dim": fine[(vid, dim)]} if (vid, dim) in fine else {}),
            )
          )
  return _unique(items, p)


def load_mvbench(path: str, video_dir: str | None = None) -> list[EvalItem]:
  """MVBench: the release root (json/, video/), its json/ folder, or one task file."""
  p = _existing(path, "MVBench data")
  if p.is_file():
    files = [p]
  else:
    jdir = p / "json" if (p / "json").is_dir() else p
    files = [jdir / t.file for t in mvbench_tasks.TASKS if (jdir / t.file).exists()]
    if not files:
      raise DataError(f"{jdir}: no MVBench task file (e.g. {mvbench_tasks.TASKS[0].file})")
  items = []
  for f in files:
    task = mvbench_tasks.by_file(f.name)
    root = pathlib.Path(video_dir) if video_dir else f.parent.parent / "video"
    records = _read_json(f)
    if not isinstance(records, list):
      raise DataError(f"{f}: expected a JSON list of questions")
    for i, r in enumerate(records):
      where = f"{f} [{i}]"
      candidates = [str(c) for c in _field(r, "candidates", where)]
      answer = str(_field(r, "answer", where))
      if answer not in candidates:
        raise DataError(f"{where}: answer {answer!r} is not among candidates {candidates}")
      bounded = task.bounded and "start" in r and "end" in r
      items.append(
        EvalItem(
          id=f"{f.stem}/{i}",
          video=str(root / task.prefix / str(_field(r, "video", where))),
          question=str(_field(r, "question", where)),
          options=tuple(candidates),
          answer=chr(ord("A") + candidates.index(answer)),
          fmt="mcq",
          start=float(r["start"]) if bounded else None,
          end=float(r["end"]) if bounded else None,
          meta={"task": task.name}
          | ({"frames_fps": mvbench_tasks.FRAME_FPS} if task.kind == "frame" else {}),
        )
      )
  return _unique(items, p)


VIDEOMME_FIELDS = ("video_id", "duration", "domain", "sub_category", "videoID")
VIDEOMME_FIELDS += ("question_id", "task_type", "question", "options", "answer")


def load_videomme(path: str, video_dir: str | None = None) -> list[EvalItem]:
  """Video-MME parquet file(s); videos at <root>/data/<videoID>.mp4 (HF layout)."""
  import pyarrow.parquet as pq

  p = _existing(path, "Video-MME parquet")
  files = sorted(p.rglob("*.parquet")) if p.is_dir() else [p]
  if not files:
    raise DataError(f"{p}: no .parquet file")
  items = []
  for f in files:
    table = pq.read_table(f)
    missing = [c for c in VIDEOMME_FIELDS if c not in table.column_names]
    if missing:
      raise DataError(f"{f}: missing column(s) {missing}")
    root = pathlib.Path(video_dir) if video_dir else f.parent.parent / "data"
    for i, r in enumerate(table.to_pylist()):
      where = f"{f} [row {i}]"
      lines = [str(o) for o in _field(r, "options", where)]
      # Options are released as "A. text"; keep the text, the prompt re-letters it.
      options = [o[3:] if o[1:3] == ". " else o for o in lines]
      items.append(
        EvalItem(
          id=str(_field(r, "question_id", where)),
          video=str(root / f"{_field(r, 'videoID', where)}.mp4"),
          question=str(_field(r, "question", where)),
          options=tuple(options),
          answer=_letter_answer(_field(r, "answer", where), options, where),
          fmt="mcq",
          meta={k: str(_field(r, k, where)) for k in ("duration", "domain", "sub_category")}
          | {"task_type": str(_field(r, "task_type", where))},
        )
      )
  return _unique(items, p)


def _unique(items: list[EvalItem], source: pathlib.Path) -> list[EvalItem]:
  if not items:
    raise DataError(f"{source}: no items")
  seen: set[str] = set()
  for it in items:
    if it.id in seen:
      raise DataError(f"{source}: duplicate item id {it.id!r}")
    seen.add(it.id)
  return items


LOADERS = {
  "dybench": load_dybench,
  "timeblind": load_timeblind,
  "tempcompass": load_tempcompass,
  "mvbench": load_mvbench,
  "videomme": load_videomme,
}
