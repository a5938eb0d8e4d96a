"""Loaders: every released format into EvalItems, and clear errors."""

import json

import pytest

from crpo_jax.eval import loaders
from tests.eval import fixtures


def test_dybench(tmp_path):
  items = loaders.load_dybench(str(fixtures.write_dybench(tmp_path)))
  assert [it.id for it in items] == ["p0a", "p0b", "p1a", "p1b"]
  a = items[0]
  assert a.options == ("left", "right") and a.answer == "A" and a.fmt == "mcq"
  assert a.video == str(tmp_path / "v" / "p0a.mp4")
  assert a.meta == {
    "pair_id": "p0",
    "category": "direction",
    "route": "temporal",
    "answer_cf": "B",
    "pair_size": 2,
  }
  assert items[2].meta["route"] == "static" and items[2].answer == "C"


def test_dybench_missing_field_names_file_line_field(tmp_path):
  path = tmp_path / "d.jsonl"
  path.write_text(
    json.dumps({"id": "x", "video": "a.mp4", "options": ["a", "b"], "answer": "A"}) + "\n"
  )
  with pytest.raises(loaders.DataError, match=r"d\.jsonl.*1.*question"):
    loaders.load_dybench(str(path))


def test_timeblind_roles_and_hardcoded_answers(tmp_path):
  items = loaders.load_timeblind(str(fixtures.write_timeblind(tmp_path)))
  assert len(items) == 8
  assert [it.answer for it in items[:4]] == ["yes", "no", "no", "yes"]
  assert [it.answer for it in items[4:]] == ["A", "B", "B", "A"]
  assert [it.fmt for it in (items[0], items[4])] == ["yes_no", "mcq"]
  assert items[5].meta == {"type": "multiple_choice", "sample_id": 1, "role": 1}
  # video_path is relative to the folder that holds TimeBlind/.
  assert items[1].video == str(tmp_path / "TimeBlind/videos/vid_00000_1.mp4")
  # The folder works as well as the file.
  assert len(loaders.load_timeblind(str(tmp_path / "TimeBlind"))) == 8


def test_timeblind_bad_type(tmp_path):
  path = tmp_path / "data.jsonl"
  path.write_text(
    json.dumps({"index": 0, "video_path": "v.mp4", "question": "q", "type": "open"}) + "\n"
  )
  with pytest.raises(loaders.DataError, match="'type'"):
    loaders.load_timeblind(str(path))


def test_tempcompass_all_rule_scored_tasks(tmp_path):
  items = loaders.load_tempcompass(str(fixtures.write_tempcompass(tmp_path)))
  by_task = {}
  for it in items:
    by_task.setdefault(it.meta["task"], []).append(it)
  assert sorted(by_task) == ["caption_matching", "multi-choice", "yes_no"]
  mc = by_task["multi-choice"]
  assert [it.answer for it in mc] == ["B", "A", "A"]
  assert mc[1].meta["answer_text"] == "A. left" and mc[2].meta["dim"] == "speed"
  assert mc[0].video == str(tmp_path / "videos" / "1001.mp4")
  assert [it.answer for it in by_task["yes_no"]] == ["yes", "no"]
  cm = by_task["caption_matching"][0]
  assert cm.answer == "Sentence A" and len(cm.options) == 2


def test_tempcompass_single_file_and_captioning(tmp_path):
  root = fixtures.write_tempcompass(tmp_path)
  items = loaders.load_tempcompass(str(root / "questions" / "yes_no.json"))
  assert {it.fmt for it in items} == {"yes_no"}
  cap = root / "questions" / "captioning.json"
  cap.write_text("{}")
  with pytest.raises(NotImplementedError, match="captioning"):
    loaders.load_tempcompass(str(cap))


def test_tempcompass_missing_answer(tmp_path):
  (tmp_path / "questions").mkdir()
  (tmp_path / "questions" / "yes_no.json").write_text(
    json.dumps({"v": {"order": [{"question": "q"}]}})
  )
  with pytest.raises(loaders.DataError, match=r"yes_no\.json \[v\]\[order\]\[0\].*'answer'"):
    loaders.load_tempcompass(str(tmp_path))


def test_mvbench(tmp_path):
  items = loaders.load_mvbench(str(fixtures.write_mvbench(tmp_path)))
  assert [it.id for it in items] == [
    "action_sequence/0",
    "moving_direction/0",
    "moving_direction/1",
  ]
  seq, mov = items[0], items[1]
  assert seq.answer == "B" and (seq.start, seq.end) == (1.0, 5.5)
  assert seq.video == str(tmp_path / "video/star/Charades_v1_480/A1.mp4")
  assert mov.answer == "D" and mov.start is None and mov.meta["task"] == "Moving Direction"


def test_mvbench_answer_not_a_candidate(tmp_path):
  (tmp_path / "json").mkdir()
  bad = [{"video": "a.mp4", "question": "q", "candidates": ["x", "y"], "answer": "z"}]
  (tmp_path / "json" / "action_count.json").write_text(json.dumps(bad))
  with pytest.raises(loaders.DataError, match=r"action_count\.json \[0\].*'z'"):
    loaders.load_mvbench(str(tmp_path))


def test_videomme(tmp_path):
  path = fixtures.write_videomme(tmp_path)
  items = loaders.load_videomme(str(path))
  assert [it.answer for it in items] == ["C", "A", "D"]
  assert items[0].options == ("1", "2", "3", "4")
  assert items[2].meta == {
    "duration": "long",
    "domain": "Sports",
    "sub_category": "Football",
    "task_type": "Counting Problem",
  }
  assert items[0].video == str(tmp_path / "data" / "vidA.mp4")
  assert len(loaders.load_videomme(str(tmp_path / "videomme"))) == 3


def test_videomme_missing_column(tmp_path):
  path = fixtures.write_videomme(tmp_path, drop="task_type")
  with pytest.raises(loaders.DataError, match=r"\.parquet.*task_type"):
    loaders.load_videomme(str(path))


@pytest.mark.parametrize("name", sorted(loaders.LOADERS))
def test_missing_path_names_it(tmp_path, name):
  with pytest.raises(loaders.DataError, match="nope"):
    loaders.LOADERS[name](str(tmp_path / "nope"))


def test_video_dir_override(tmp_path):
  items = loaders.load_mvbench(str(fixtures.write_mvbench(tmp_path)), video_dir="/vids")
  assert items[1].video == "/vids/clevrer/video_validation/c1.mp4"
