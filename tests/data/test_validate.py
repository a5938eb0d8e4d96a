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
  assert "(1 malformed records skipped)" in capsys.readouterr().out  # never reaches the file
  ds_dir = os.path.join(out, "crpo_records", "1.0.0")
  assert validate.main([ds_dir, "--report", str(tmp_path / "r.jsonl")]) == 0
  assert "3 of 5 records usable" in capsys.readouterr().out
  with pytest.raises(ValueError, match="no split 'test'"):
    validate.validate(ds_dir, split="test")
