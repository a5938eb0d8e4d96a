"""`python -m crpo_jax.data.arrayrecord`: every split asked for, no stale output kept."""

from __future__ import annotations

import json
import os

import pytest

from crpo_jax.data import arrayrecord


def _records(path, ids):
  rows = [
    {"id": i, "video": f"{i}.mp4", "question": "q?", "options": ["a", "b"], "answer": "A"}
    for i in ids
  ]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _ids(ds_dir, split):
  src = arrayrecord.open_arrayrecord(ds_dir, split)
  return sorted(arrayrecord.to_example(src[i]).id for i in range(len(src)))


def test_every_split_and_no_stale_output(tmp_path, capsys):
  train = _records(tmp_path / "train.jsonl", ["t1", "t2"])
  evl = _records(tmp_path / "eval.jsonl", ["e1"])
  out = str(tmp_path / "out")
  assert arrayrecord.main([f"train={train}", f"eval={evl}", out]) == 0
  assert "train: 2, eval: 1 records" in capsys.readouterr().out
  ds_dir = os.path.join(out, "crpo_records", "1.0.0")
  assert _ids(ds_dir, "train") == ["t1", "t2"] and _ids(ds_dir, "eval") == ["e1"]
  # A rerun into the used folder is refused, not silently a no-op ...
  new_train = _records(tmp_path / "new.jsonl", ["n1", "n2", "n3"])
  with pytest.raises(SystemExit):
    arrayrecord.main([new_train, out])
  assert "not empty" in capsys.readouterr().err and _ids(ds_dir, "train") == ["t1", "t2"]
  # ... and --overwrite rewrites it completely: the old eval split is gone.
  assert arrayrecord.main([new_train, out, "--overwrite"]) == 0
  assert _ids(ds_dir, "train") == ["n1", "n2", "n3"]
  with pytest.raises(ValueError, match="no split 'eval'"):
    arrayrecord.open_arrayrecord(ds_dir, "eval")


def test_refuses_to_delete_foreign_files_and_missing_inputs(tmp_path, capsys):
  train = _records(tmp_path / "train.jsonl", ["t1"])
  out = tmp_path / "out"
  out.mkdir()
  (out / "notes.txt").write_text("mine")
  with pytest.raises(SystemExit):
    arrayrecord.main([train, str(out), "--overwrite"])
  assert "did not write (notes.txt)" in capsys.readouterr().err
  assert (out / "notes.txt").read_text() == "mine"
  with pytest.raises(SystemExit):
    arrayrecord.main([str(tmp_path / "nope.jsonl"), str(tmp_path / "o2")])
  assert "nope.jsonl: no such record file" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    arrayrecord.main([train, f"train={train}", str(tmp_path / "o3")])
  assert "given twice" in capsys.readouterr().err
