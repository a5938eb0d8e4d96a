"""Record loaders: our JSONL schema and Video-R1 JSON, with errors naming file/line/field."""

import json
import os

import pytest

from crpo_jax.data.records import (
  Example,
  RecordError,
  RecordSkipped,
  iter_records,
  read_records,
)

GOOD = {
  "id": "q1",
  "video": "clips/a.mp4",
  "question": "Which way does the ball move?",
  "options": ["left", "right", "up"],
  "answer": "B",
  "answer_cf": "A",
  "pair_id": 7,
  "category": "direction",
  "route": "Spatial",
  "start": 0.5,
  "end": 2,
}


def _write_jsonl(tmp_path, records, name="data.jsonl"):
  path = tmp_path / name
  lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_crpo_good_record(tmp_path):
  path = _write_jsonl(tmp_path, [GOOD])
  (ex,) = read_records(path)
  assert ex == Example(
    id="q1",
    video=os.path.join(str(tmp_path), "clips", "a.mp4"),
    question="Which way does the ball move?",
    options=("left", "right", "up"),
    answer="B",
    answer_cf="A",
    pair_id="7",
    category="direction",
    route="spatial",
    start=0.5,
    end=2.0,
    source="data.jsonl:1",
  )


def test_crpo_lettered_options_video_root_and_defaults(tmp_path):
  rec = {"video": "a.mp4", "question": "Q?", "options": ["A. red", "B) blue"], "answer": "b"}
  path = _write_jsonl(tmp_path, ["", rec])
  (ex,) = read_records(path, video_root="/data/videos")
  assert ex.options == ("red", "blue")
  assert ex.answer == "B"
  assert ex.video == "/data/videos/a.mp4"
  assert ex.id == "data.jsonl:2" and ex.source == "data.jsonl:2"  # blank line 1 skipped
  assert ex.answer_cf is None and ex.route is None and ex.start is None


def test_answer_cf_may_name_the_null_option(tmp_path):
  path = _write_jsonl(tmp_path, [dict(GOOD, answer_cf="D")])
  assert read_records(path)[0].answer_cf == "D"


BAD_CASES = [
  ("video", {"video": ""}),
  ("question", {"question": None}),
  ("options", {"options": ["only one"]}),
  ("options", {"options": ["A. red", "blue"]}),
  ("options", {"options": "red, blue"}),
  ("answer", {"answer": "E"}),
  ("answer", {"answer": "D"}),  # the null option is never the original answer
  ("answer", {"answer": 1}),
  ("answer_cf", {"answer_cf": "E"}),
  ("route", {"route": "diagonal"}),
  ("start", {"start": -1}),
  ("end", {"end": 0.1}),
  ("pair_id", {"pair_id": [1]}),
]


@pytest.mark.parametrize("field,patch", BAD_CASES)
def test_crpo_malformed_record_names_file_line_field(tmp_path, field, patch):
  path = _write_jsonl(tmp_path, [GOOD, GOOD, dict(GOOD, **patch)])
  results = list(iter_records(path))
  assert isinstance(results[0], Example) and isinstance(results[1], Example)
  err = results[2]
  assert isinstance(err, RecordError) and not isinstance(err, RecordSkipped)
  assert (err.file, err.line, err.field) == (path, 3, field)
  assert path in str(err) and ":3:" in str(err) and f"'{field}'" in str(err)
  with pytest.raises(RecordError, match=f"{path}:3: field '{field}'"):
    read_records(path)


def test_invalid_json_line_and_non_object(tmp_path):
  path = _write_jsonl(tmp_path, [GOOD, "{not json", "[1, 2]"])
  _, e2, e3 = list(iter_records(path))
  assert (e2.line, e2.field) == (2, "<json>")
  assert (e3.line, e3.field) == (3, "<record>")


R1 = [
  {
    "problem_id": 11,
    "problem": "What happens first?",
    "data_type": "video",
    "problem_type": "multiple choice",
    "options": ["A. the cube falls", "B. the ball rolls"],
    "solution": "<answer>B</answer>",
    "path": "./CLEVRER/video_1.mp4",
    "data_source": "CLEVRER",
  },
  {
    "problem_id": 12,
    "problem": "How many?",
    "data_type": "video",
    "problem_type": "numerical",
    "options": [],
    "solution": "<answer>3</answer>",
    "path": "./STAR/v.mp4",
  },
  {"problem_id": 13, "problem": "x", "data_type": "image", "problem_type": "multiple choice"},
  {
    "problem_id": 14,
    "problem": "Which?",
    "data_type": "video",
    "problem_type": "multiple choice",
    "options": ["A. a", "B. b"],
    "solution": "B",
    "path": "./x.mp4",
  },
]


def test_video_r1_json_list(tmp_path):
  path = tmp_path / "r1.json"
  path.write_text(json.dumps(R1, indent=1))
  results = list(iter_records(str(path), video_root="/root/Video-R1-data"))
  ex = results[0]
  assert isinstance(ex, Example)
  assert ex.id == "11" and ex.answer == "B" and ex.category == "CLEVRER"
  assert ex.options == ("the cube falls", "the ball rolls")
  assert ex.video == "/root/Video-R1-data/CLEVRER/video_1.mp4"
  assert isinstance(results[1], RecordSkipped) and results[1].field == "problem_type"
  assert isinstance(results[2], RecordSkipped) and results[2].field == "data_type"
  err = results[3]
  assert type(err) is RecordError and err.field == "solution"
  # Line numbers are where each object starts in the (indented) JSON text.
  text_lines = path.read_text().splitlines()
  lines = [int(ex.source.split(":")[1])] + [r.line for r in results[1:]]
  assert lines == [i + 1 for i, s in enumerate(text_lines) if s.strip() == "{"]
  assert text_lines[err.line].strip().startswith('"problem_id": 14')


def test_video_r1_read_records_raises_on_malformed(tmp_path):
  path = tmp_path / "r1.json"
  path.write_text(json.dumps(R1, indent=1))
  with pytest.raises(RecordError, match="field 'solution'"):
    read_records(str(path))
  good = [r for r in iter_records(str(path), fmt="video_r1") if isinstance(r, Example)]
  assert [e.id for e in good] == ["11"]


def test_video_r1_jsonl_lines_and_syntax_error(tmp_path):
  path = _write_jsonl(tmp_path, [R1[0], R1[1]], name="r1.jsonl")
  (ex,) = read_records(path)
  assert ex.video == os.path.join(str(tmp_path), "CLEVRER", "video_1.mp4")
  with pytest.raises(RecordSkipped, match="problem_type"):
    read_records(path, skip_unsupported=False)
  bad = tmp_path / "broken.json"
  bad.write_text('[\n {"problem": "a",\n  "solution": }\n]')
  (err,) = list(iter_records(str(bad)))
  assert (err.line, err.field) == (3, "<json>")


def test_video_r1_reads_the_route_the_router_wrote(tmp_path):
  path = tmp_path / "r1.json"
  path.write_text(json.dumps([dict(R1[0], route="Temporal"), dict(R1[0], route="sideways")]))
  good, bad = list(iter_records(str(path)))
  assert isinstance(good, Example) and good.route == "temporal"
  assert type(bad) is RecordError and bad.field == "route"


def test_null_option_in_the_data_is_dropped_once_or_refused(tmp_path):
  last = dict(GOOD, options=["left", "right", "None of the above"], answer="C")
  (ex,) = read_records(_write_jsonl(tmp_path, [last]))
  assert ex.options == ("left", "right") and ex.answer == "C"  # C names the appended null option
  middle = dict(GOOD, options=["left", "None of the above", "right"])
  (err,) = list(iter_records(_write_jsonl(tmp_path, [middle], "m.jsonl")))
  assert isinstance(err, RecordError) and err.field == "options" and "last option" in str(err)
  only_null = dict(GOOD, options=["left", "None of the above"], answer="A")
  (err,) = list(iter_records(_write_jsonl(tmp_path, [only_null], "o.jsonl")))
  assert err.field == "options" and "besides the null option" in str(err)
