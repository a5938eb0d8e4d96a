"""Per-item predictions as JSONL: writing, resuming and re-scoring.

One line per scored item: id, prompt, raw_output, extracted, correct, answered
(under the official judge), and the item itself, so a file can be re-scored (after an extraction fix, say) with neither the
data nor a model. Lines are appended and flushed per batch; an interrupted run
leaves at most one partial last line, which `read` drops, so a resumed run redoes
only the items it never finished.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

from crpo_jax.eval.benchmarks import Benchmark, Judge, unanswerable
from crpo_jax.eval.items import EvalItem, Prompt
from crpo_jax.eval.metrics import Scored

_LOG = logging.getLogger(__name__)
FIELDS = ("id", "prompt", "raw_output", "extracted", "correct", "item")


class PredictionsError(ValueError):
  """A predictions file is unreadable or lacks a field."""


def to_record(scored: Scored, prompt: Prompt, raw_output: str) -> dict[str, Any]:
  """The JSONL record of one scored item."""
  return {
    "id": scored.item.id,
    "prompt": prompt.user,
    "raw_output": raw_output,
    "extracted": scored.extracted,
    "correct": scored.correct,
    "answered": scored.answered,
    "item": scored.item.to_json(),
  }


def read(path: str | os.PathLike) -> list[dict[str, Any]]:
  """All complete records of a predictions file ([] if it does not exist).

  Raises:
    PredictionsError: on a malformed line other than a partial last one, or a
      record missing one of FIELDS.
  """
  p = pathlib.Path(path)
  if not p.exists():
    return []
  lines = p.read_text(encoding="utf-8").split("\n")
  out = []
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      rec = json.loads(line)
    except json.JSONDecodeError as e:
      if n == len(lines):  # no trailing newline: the write was cut short
        _LOG.warning("%s:%d: dropping a partial last line (interrupted run)", p, n)
        continue
      raise PredictionsError(f"{p}:{n}: invalid JSON ({e})") from e
    missing = [f for f in FIELDS if f not in rec]
    if missing:
      raise PredictionsError(f"{p}:{n}: missing field(s) {missing}")
    out.append(rec)
  return out


def repair(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Reads a file for resuming and rewrites it without a partial last line."""
  records = read(path)
  p = pathlib.Path(path)
  if p.exists() and not p.read_text(encoding="utf-8").endswith("\n") and p.stat().st_size:
    write_all(path, records)
  return records


def write_all(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
  """Writes records atomically (temp file, then rename)."""
  p = pathlib.Path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
  tmp = p.with_name(p.name + ".tmp")
  with tmp.open("w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  os.replace(tmp, p)


def append(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> None:
  """Appends records and forces them to disk, so a crash loses no scored item."""
  p = pathlib.Path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
  with p.open("a", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def judge_record(record: dict[str, Any], judge: Judge) -> Scored:
  """`judge` on a record's raw output; a record with an error (the model never saw
  the item) is `unanswerable` under every judge."""
  item = EvalItem.from_json(record["item"])
  return unanswerable(item) if "error" in record else judge(item, record["raw_output"])


def rescore(records: Sequence[dict[str, Any]], benchmark: Benchmark) -> list[dict[str, Any]]:
  """Re-extracts and re-judges every record from its raw output (official judge)."""
  out = []
  for r in records:
    s = judge_record(r, benchmark.judge)
    out.append(r | {"extracted": s.extracted, "correct": s.correct, "answered": s.answered})
  return out


def to_scored(records: Sequence[dict[str, Any]]) -> list[Scored]:
  """Records as `Scored` items for the metrics (files written before `answered`
  existed read it as "an answer was extracted")."""
  return [
    Scored(
      EvalItem.from_json(r["item"]),
      r["extracted"],
      bool(r["correct"]),
      bool(r.get("answered", bool(r["extracted"]))),
    )
    for r in records
  ]
