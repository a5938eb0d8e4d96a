"""Tiny benchmark files in every released format, written under a test folder.

Each writer returns the path to hand to its loader. Video files are not written
here (loaders do not open them); the end-to-end test writes real mp4s.
"""

from __future__ import annotations

import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq


def write_dybench(root: pathlib.Path) -> pathlib.Path:
  """Two pairs: a dynamic one (answers differ across members) and a static one."""
  rows = [
    {
      "id": "p0a",
      "video": "v/p0a.mp4",
      "question": "Which way does the ball move?",
      "options": ["left", "right"],
      "answer": "A",
      "answer_cf": "B",
      "pair_id": "p0",
      "category": "direction",
      "route": "temporal",
    },
    {
      "id": "p0b",
      "video": "v/p0b.mp4",
      "question": "Which way does the ball move?",
      "options": ["left", "right"],
      "answer": "B",
      "answer_cf": "A",
      "pair_id": "p0",
      "category": "direction",
      "route": "temporal",
    },
    {
      "id": "p1a",
      "video": "v/p1a.mp4",
      "question": "What colour is the ball?",
      "options": ["red", "blue", "green"],
      "answer": "C",
      "pair_id": "p1",
      "category": "colour",
      "route": "static",
    },
    {
      "id": "p1b",
      "video": "v/p1b.mp4",
      "question": "What colour is the ball?",
      "options": ["red", "blue", "green"],
      "answer": "C",
      "pair_id": "p1",
      "category": "colour",
      "route": "static",
    },
  ]
  path = root / "dybench.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def write_timeblind(root: pathlib.Path, n_instances: int = 2) -> pathlib.Path:
  """TimeBlind/data.jsonl: instance 0 yes/no, instance 1 multiple choice."""
  tb = root / "TimeBlind"
  tb.mkdir(parents=True, exist_ok=True)
  rows = []
  for s in range(n_instances):
    kind = "yes_no" if s % 2 == 0 else "multiple_choice"
    for role in range(4):
      q = f"Does the cup fall before the ball ({s}, q{role // 2})?"
      if kind == "multiple_choice":
        q = f"Which happens first ({s}, q{role // 2})? A. the cup falls B. the ball rolls"
      rows.append(
        {
          "index": 4 * s + role,
          "video_path": f"TimeBlind/videos/vid_{s:05d}_{role % 2}.mp4",
          "question": q,
          "answer": "unused",
          "type": kind,
        }
      )
  path = tb / "data.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def write_tempcompass(root: pathlib.Path) -> pathlib.Path:
  """questions/{multi-choice,yes_no,caption_matching}.json for two videos."""
  q = root / "questions"
  q.mkdir(parents=True, exist_ok=True)
  mc = {
    "1001": {
      "direction": [
        {
          "question": "Which way is the car going?\nA. left\nB. right\nC. up\nD. down",
          "answer": "B. right",
        }
      ]
    },
    "1001_reverse": {
      "direction": [
        {
          "question": "Which way is the car going?\nA. left\nB. right\nC. up\nD. down",
          "answer": "A. left",
        }
      ],
      "speed": [{"question": "How fast is it?\nA. slow\nB. fast\nC. still", "answer": "A. slow"}],
    },
  }
  yn = {
    "1001": {"direction": [{"question": "Is the car going right?", "answer": "yes"}]},
    "1001_reverse": {"direction": [{"question": "Is the car going right?", "answer": "no"}]},
  }
  cm = {
    "1001": {
      "order": [
        {
          "question": "Which caption matches the video?\nSentence A: the car goes right\n"
          "Sentence B: the car goes left",
          "answer": "Sentence A: the car goes right",
        }
      ]
    },
  }
  for name, data in (("multi-choice", mc), ("yes_no", yn), ("caption_matching", cm)):
    (q / f"{name}.json").write_text(json.dumps(data))
  return root


def write_mvbench(root: pathlib.Path) -> pathlib.Path:
  """json/action_sequence.json (bounded) and json/moving_direction.json."""
  j = root / "json"
  j.mkdir(parents=True, exist_ok=True)
  seq = [
    {
      "video": "A1.mp4",
      "question": "What did the person do first?",
      "candidates": ["Sat on the bed.", "Opened the door.", "Took a cup."],
      "answer": "Opened the door.",
      "start": 1.0,
      "end": 5.5,
    },
  ]
  mov = [
    {
      "video": "c1.mp4",
      "question": "Which way does the cube move?",
      "candidates": ["left", "right", "up", "down"],
      "answer": "down",
    },
    {
      "video": "c2.mp4",
      "question": "Which way does the sphere move?",
      "candidates": ["left", "right", "up", "down"],
      "answer": "left",
    },
  ]
  (j / "action_sequence.json").write_text(json.dumps(seq))
  (j / "moving_direction.json").write_text(json.dumps(mov))
  return root


def write_videomme(root: pathlib.Path, drop: str | None = None) -> pathlib.Path:
  """videomme/test.parquet with three questions over two durations."""
  rows = [
    {
      "video_id": "001",
      "duration": "short",
      "domain": "Knowledge",
      "sub_category": "Humanity",
      "url": "u",
      "videoID": "vidA",
      "question_id": "001-1",
      "task_type": "Counting Problem",
      "question": "How many cats?",
      "options": ["A. 1", "B. 2", "C. 3", "D. 4"],
      "answer": "C",
    },
    {
      "video_id": "001",
      "duration": "short",
      "domain": "Knowledge",
      "sub_category": "Humanity",
      "url": "u",
      "videoID": "vidA",
      "question_id": "001-2",
      "task_type": "OCR Problems",
      "question": "What is written?",
      "options": ["A. hi", "B. yo", "C. ok", "D. no"],
      "answer": "A",
    },
    {
      "video_id": "301",
      "duration": "long",
      "domain": "Sports",
      "sub_category": "Football",
      "url": "u",
      "videoID": "vidB",
      "question_id": "301-1",
      "task_type": "Counting Problem",
      "question": "How many goals?",
      "options": ["A. 0", "B. 1", "C. 2", "D. 3"],
      "answer": "D",
    },
  ]
  if drop:
    for r in rows:
      r.pop(drop)
  d = root / "videomme"
  d.mkdir(parents=True, exist_ok=True)
  path = d / "test-00000-of-00001.parquet"
  pq.write_table(pa.Table.from_pylist(rows), path)
  return path
