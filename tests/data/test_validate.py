"""`python -m crpo_jax.data.validate`: counts, reasons, report file, exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from crpo_jax.data import arrayrecord, synthetic, validate
from tests.data import media


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
  """Three good synthetic clips, then a missing video, a corrupt one, a bad record."""
  out = tmp_path_factory.mktemp("validate")
  path = synthetic.generate(str(out), 3, seed=21)
  with open(path) as f:
    lines = f.read().splitlines()
  rec = json.loads(lines[0])
  media.write_garbage(out / "videos" / "junk.mp4")
  lines += [
    json.dumps(dict(rec, id="gone", video="videos/gone.mp4")),
    json.dumps(dict(rec, id="junk", video="videos/junk.mp4")),
    json.dumps(dict(rec, id="noopt", options=["only one"])),
  ]
  data = out / "mixed.jsonl"
  data.write_text("\n".join(lines) + "\n")
  return data


def test_counts_reasons_and_report(mixed, tmp_path, capsys):
  report_path = tmp_path / "bad.jsonl"
  assert validate.main([str(mixed), "--report", str(report_path)]) == 0
  out = capsys.readouterr().out
  assert "3 of 6 records usable, 3 not" in out
  for reason in ("missing_file: 1", "unreadable_container: 1", "malformed_record: 1"):
    assert reason in out
  with open(report_path) as f:
    bad = [json.loads(line) for line in f]
  assert sorted(b["reason"] for b in bad) == [
    "malformed_record",
    "missing_file",
    "unreadable_container",
  ]
  by_reason = {b["reason"]: b for b in bad}
  assert by_reason["missing_file"]["video"].endswith("gone.mp4")
  assert by_reason["missing_file"]["source"] == "mixed.jsonl:4"
  assert by_reason["malformed_record"]["source"].endswith("mixed.jsonl:6")
  assert "options" in by_reason["malformed_record"]["detail"]


def test_default_report_path_and_workers(mixed):
  report = validate.validate(str(mixed), workers=2)
  assert report.usable == 3 and sum(report.reasons.values()) == 3
  assert validate.main([str(mixed)]) == 0
  assert os.path.exists(str(mixed) + ".bad.jsonl")


def test_no_usable_record_exits_nonzero_in_a_subprocess(tmp_path):
  data = tmp_path / "none.jsonl"
  rec = {"id": "a", "video": "missing.mp4", "question": "q?", "options": ["x", "y"], "answer": "A"}
  data.write_text(json.dumps(rec) + "\n{not json\n")
  proc = subprocess.run(
    [sys.executable, "-m", "crpo_jax.data.validate", str(data), "--report", str(tmp_path / "r")],
    capture_output=True,
    text=True,
    check=False,  # the exit status is what is tested
    cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
  )
  assert proc.returncode == 1, proc.stderr
  assert "0 of 2 records usable" in proc.stdout and "no usable record" in proc.stderr


def test_records_without_route(tmp_path, capsys):
  path = synthetic.generate(str(tmp_path), 2, seed=4)
  with open(path) as f:
    recs = [dict(json.loads(line), route=None) for line in f]
  data = tmp_path / "noroute.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in recs))
  assert validate.main([str(data)]) == 1
  out = capsys.readouterr().out
  assert "no_route: 2" in out and "--default-route" in out
  assert validate.main([str(data), "--default-route", "static"]) == 0


def test_arrayrecord_dataset(mixed, tmp_path, capsys):
  out = str(tmp_path / "ar")
  assert arrayrecord.main([str(mixed), out, "--video-root", os.path.dirname(mixed)]) == 0
  assert (
    "(train: 5 records; 1 malformed records skipped" in capsys.readouterr().out
  )  # never written
  ds_dir = os.path.join(out, "crpo_records", "1.0.0")
  assert validate.main([ds_dir, "--report", str(tmp_path / "r.jsonl")]) == 0
  assert "3 of 5 records usable" in capsys.readouterr().out
  with pytest.raises(ValueError, match="no split 'test'"):
    validate.validate(ds_dir, split="test")


def test_every_problem_of_every_record_in_one_pass(tmp_path, capsys):
  """No route and a broken clip of one record both appear; the console names files."""
  path = synthetic.generate(str(tmp_path), 2, seed=5)
  with open(path) as f:
    recs = [json.loads(line) for line in f]
  media.write_garbage(tmp_path / "videos" / "broken.mp4")
  rows = [
    {k: v for k, v in recs[0].items() if k != "route"},  # no route, good clip
    dict({k: v for k, v in recs[1].items() if k != "route"}, id="b", video="videos/broken.mp4"),
    dict(recs[1], id="gone", video="videos/gone.mp4"),  # routed, missing clip
  ]
  data = tmp_path / "mixed.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in rows))
  report = validate.validate(str(data))
  problems = sorted((s.source, s.reason) for s in report.bad)
  assert problems == [
    ("mixed.jsonl:1", "no_route"),
    ("mixed.jsonl:2", "no_route"),
    ("mixed.jsonl:2", "unreadable_container"),
    ("mixed.jsonl:3", "missing_file"),
  ]
  assert report.usable == 0 and report.unusable == 3
  assert validate.main([str(data), "--report", str(tmp_path / "r.jsonl")]) == 1
  out = capsys.readouterr().out
  assert "0 of 3 records usable, 3 not" in out
  assert f"no_route: 2 (e.g. {os.path.basename(recs[0]['video'])}, broken.mp4)" in out
  assert "unreadable_container: 1 (e.g. broken.mp4)" in out
  assert "missing_file: 1 (e.g. gone.mp4)" in out


def test_video_r1_unsupported_types_and_missing_problem(tmp_path, capsys, caplog):
  """Image-only and numerical records are unsupported_type (logged once), not malformed;
  a record missing `problem` is named by that field."""
  import logging

  from crpo_jax.data import pipeline

  media_dir = tmp_path / "clips"
  media_dir.mkdir()
  media.write_garbage(media_dir / "v.mp4")
  base = {
    "problem": "Which way?",
    "data_type": "video",
    "problem_type": "multiple choice",
    "options": ["A. left", "B. right"],
    "solution": "<answer>A</answer>",
    "path": "./clips/v.mp4",
  }
  items = [
    dict(base, problem_id=1),
    dict(base, problem_id=2, data_type="image"),
    dict(base, problem_id=3, problem_type="numerical", solution="<answer>3</answer>"),
    {k: v for k, v in dict(base, problem_id=4).items() if k != "problem"},
  ]
  data = tmp_path / "r1.json"
  data.write_text(json.dumps(items, indent=1))
  report = validate.validate(str(data))
  assert report.reasons == {
    "unsupported_type": 2,
    "malformed_record": 1,
    "no_route": 1,
    "unreadable_container": 1,
  }
  (malformed,) = [s for s in report.bad if s.reason == "malformed_record"]
  assert "field 'problem'" in malformed.detail and "'video'" not in malformed.detail
  with caplog.at_level(logging.WARNING):
    loader = pipeline.make_loader(
      str(data), pipeline.PipelineConfig(default_route="static"), validate.VisionOnly()
    )
  assert dict(loader.stats.skipped) == {"unsupported_type": 2, "malformed_record": 1}
  starts = [i + 1 for i, s in enumerate(data.read_text().splitlines()) if s.strip() == "{"]
  for line in starts[1:]:  # items 2..4: one warning each
    assert sum(f"r1.json:{line}:" in r.getMessage() for r in caplog.records) == 1, caplog.text
