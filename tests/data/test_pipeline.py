"""Grain pipeline: batch format, branches, sharding, epochs, ArrayRecord, resumption."""

from __future__ import annotations

import json
import os

import grain
import numpy as np
import pytest

from crpo_jax import bucketing
from crpo_jax.data import (
  arrayrecord,
  pipeline,
  processor,
  records,
  synthetic,
  tokenizer,
  transforms,
  video,
)

NUM_CLIPS = 7


def make_world(out_dir: str, num: int = NUM_CLIPS, seed: int = 0) -> tuple[str, object]:
  """Synthetic clips plus a word tokenizer covering their text: (jsonl path, tokenizer)."""
  path = synthetic.generate(str(out_dir), num, seed=seed)
  words = []
  for ex in records.read_records(path):
    words += [ex.question, *ex.options]
  tok_dir = tokenizer.build_word_tokenizer(words, os.path.join(out_dir, "tokenizer"))
  return path, tokenizer.load_tokenizer(tok_dir)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  return make_world(tmp_path_factory.mktemp("world"))


def _cfg(**kw) -> pipeline.PipelineConfig:
  return pipeline.PipelineConfig(**{"batch_size": 2, "seed": 3, "num_epochs": 1, **kw})


def _loader(world, shard=None, **kw) -> pipeline.Loader:
  path, tok = world
  cfg = _cfg(pad_id=tok.pad_token_id, **kw)
  shard = shard or grain.sharding.ShardOptions(0, 1)
  return pipeline.make_loader(path, cfg, pipeline.QwenProcessor(tok), shard_options=shard)


def _ids(batches) -> list[str]:
  return [i for b in batches for i, v in zip(b["id"], b["valid"]) if v]


def test_batch_format_labels_and_branches(world):
  path, tok = world
  by_id = {ex.id: ex for ex in records.read_records(path)}
  batches = list(_loader(world, drop_remainder=False))
  assert sorted(_ids(batches)) == sorted(by_id)  # one epoch, every clip once
  for b in batches:
    o, c = b["orig"], b["cf"]
    assert {k: v.shape for k, v in o.items()} == {k: v.shape for k, v in c.items()}
    bsz, length = o["input_ids"].shape
    assert bsz == 2 and length == bucketing.bucket_size(length)
    assert o["pixel_values_videos"].shape[1] == 1536
    assert o["video_grid_thw"].shape == (3, 3)  # B rows + bucketing's padding row
    # Left padding: real tokens at the right end, pad ids elsewhere.
    m = o["attention_mask"].astype(bool)
    assert m[:, -1].all() and (o["input_ids"][~m] == tok.pad_token_id).all()
    np.testing.assert_array_equal(o["input_ids"], c["input_ids"])  # same prompt text
    for i, ex_id in enumerate(b["id"]):
      ex = by_id[ex_id]
      t = transforms.choose_transform(ex.route, 3, ex_id)
      assert b["transform"][i] == t and b["answer_letter"][i] == ex.answer
      assert b["answer"][i] == transforms.letter_index(ex.answer)
      assert b["answer_cf_letter"][i] == transforms.counterfactual_answer(ex, t)
      assert b["route"][i] == transforms.ROUTES.index(ex.route)
      assert b["num_options"][i] == len(ex.options) + 1
      assert b["pair_id"][i] == ex.pair_id


def test_cf_branch_is_the_transformed_video(world):
  path, tok = world
  b = next(iter(_loader(world)))
  ex = {e.id: e for e in records.read_records(path)}[b["id"][0]]
  frames, meta = video.decode_video(ex.video, max_frames=16)
  want_o = processor.process_example(ex, tok, frames=frames, meta=meta)
  cf_frames = transforms.apply_transform(frames, b["transform"][0])
  want_c = processor.process_example(ex, tok, frames=cf_frames, meta=meta)
  n = want_o["pixel_values_videos"].shape[0]
  np.testing.assert_array_equal(b["orig"]["pixel_values_videos"][:n], want_o["pixel_values_videos"])
  np.testing.assert_array_equal(b["cf"]["pixel_values_videos"][:n], want_c["pixel_values_videos"])
  assert not np.array_equal(want_o["pixel_values_videos"], want_c["pixel_values_videos"])
  np.testing.assert_array_equal(b["orig"]["video_grid_thw"][0], want_o["video_grid_thw"][0])


def test_partial_final_batch_keeps_static_batch_size(world):
  batches = list(_loader(world, drop_remainder=False))
  assert len(batches) == 4 and batches[-1]["valid"].tolist() == [True, False]
  assert all(b["orig"]["input_ids"].shape[0] == 2 for b in batches)
  assert len(list(_loader(world))) == 3  # drop_remainder drops the odd one out


def test_epochs_reshuffle_and_cover_everything(world):
  ids = _ids(_loader(world, num_epochs=2, batch_size=1))
  first, second = ids[:NUM_CLIPS], ids[NUM_CLIPS:]
  assert sorted(first) == sorted(second) and len(set(first)) == NUM_CLIPS
  assert first != second
  assert ids == _ids(_loader(world, num_epochs=2, batch_size=1))  # seeded


def test_per_host_shards_are_disjoint_and_even(world):
  shards = [
    _ids(_loader(world, batch_size=1, shard=grain.sharding.ShardOptions(i, 2, True)))
    for i in range(2)
  ]
  assert len(shards[0]) == len(shards[1]) == NUM_CLIPS // 2
  assert not set(shards[0]) & set(shards[1])


def test_default_shard_is_this_jax_process(world):
  path, tok = world
  cfg = _cfg(pad_id=tok.pad_token_id, batch_size=1)
  loader = pipeline.make_loader(path, cfg, pipeline.QwenProcessor(tok))  # ShardByJaxProcess
  assert _ids(loader) == _ids(_loader(world, batch_size=1))  # one process: everything


def _take(loader, n):
  return [next(loader) for _ in range(n)]


def _same(a, b):
  assert a["id"].tolist() == b["id"].tolist() and a["transform"].tolist() == b["transform"].tolist()
  for branch in ("orig", "cf"):
    for k in a[branch]:
      np.testing.assert_array_equal(a[branch][k], b[branch][k])


@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_resume_sees_the_batches_of_an_uninterrupted_run(world, workers):
  kw = {"num_epochs": None, "worker_count": workers}
  full = _loader(world, **kw)
  want = _take(full, 6)  # past the first epoch boundary (7 clips, batches of 2)
  full.close()
  first = _loader(world, **kw)
  got = _take(first, 2)
  state = json.loads(json.dumps(first.get_state()))  # what a checkpoint stores
  first.close()
  resumed = _loader(world, **kw)
  resumed.set_state(state)
  got += _take(resumed, 4)
  resumed.close()
  for a, b in zip(want, got):
    _same(a, b)
  assert resumed.stats.used == 12


def test_arrayrecord_source_gives_the_same_examples(world, tmp_path):
  path, tok = world
  ds_dir, bad = arrayrecord.build_arrayrecord({"train": path}, str(tmp_path))
  assert bad == []
  src = arrayrecord.open_arrayrecord(ds_dir, "train")
  from_jsonl = {e.id: e for e in records.read_records(path)}
  from_ar = [arrayrecord.to_example(src[i]) for i in range(len(src))]
  assert {e.id: e for e in from_ar} == from_jsonl  # every field round-trips
  cfg = _cfg(pad_id=tok.pad_token_id, drop_remainder=False)
  loader = pipeline.make_loader(
    ds_dir, cfg, pipeline.QwenProcessor(tok), shard_options=grain.sharding.ShardOptions(0, 1)
  )
  batches = list(loader)
  assert sorted(_ids(batches)) == sorted(from_jsonl)
  for b in batches:
    for i, ex_id in enumerate(b["id"]):
      assert b["answer_letter"][i] == from_jsonl[ex_id].answer


def test_null_option_is_added_exactly_once_on_every_path(world, tmp_path):
  """Data that already lists "None of the above" last gets no second one (issue 15 item 10)."""
  from crpo_jax.data import prompts
  from crpo_jax.eval import items as eval_items
  from crpo_jax.eval import prompts as eval_prompts

  path, tok = world
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  with_null = tmp_path / "with_null.jsonl"
  with open(with_null, "w", encoding="utf-8") as f:
    for r in rows:
      video = os.path.join(os.path.dirname(path), r["video"])
      f.write(json.dumps(dict(r, options=[*r["options"], "None of the above"], video=video)))
      f.write("\n")
  plain = {ex.id: ex for ex in records.read_records(path)}
  loaded = {ex.id: ex for ex in records.read_records(str(with_null))}
  assert {i: e.options for i, e in loaded.items()} == {i: e.options for i, e in plain.items()}
  for ex in loaded.values():
    text = prompts.prompt_text(ex.question, ex.options, add_null_option=True)
    assert text.count(prompts.NULL_OPTION) == 1
    item = eval_items.EvalItem(
      id=ex.id,
      video=ex.video,
      question=ex.question,
      options=[*ex.options, prompts.NULL_OPTION],
      answer=ex.answer,
      fmt="mcq",
    )
    assert eval_prompts.dybench_prompt(item).user.count(prompts.NULL_OPTION) == 1
  cfg = _cfg(pad_id=tok.pad_token_id, drop_remainder=False)
  loader = pipeline.make_loader(str(with_null), cfg, pipeline.QwenProcessor(tok))
  for b in loader:
    for i, ex_id in enumerate(b["id"]):
      if b["valid"][i]:
        assert b["num_options"][i] == len(plain[ex_id].options) + 1


def _rewrite(world, tmp_path, name, edit) -> str:
  """A copy of the world's records with `edit(record) -> record | None` applied."""
  path, _ = world
  out = []
  with open(path) as f:
    for line in f:
      rec = edit(json.loads(line))
      if rec is not None:
        rec["video"] = os.path.join(os.path.dirname(path), rec["video"])
        out.append(json.dumps(rec))
  new = str(tmp_path / name)
  with open(new, "w") as f:
    f.write("\n".join(out) + "\n")
  return new


def _forever(world, path, **kw) -> pipeline.Loader:
  _, tok = world
  cfg = _cfg(pad_id=tok.pad_token_id, num_epochs=None, **kw)
  shard = grain.sharding.ShardOptions(0, 1)
  return pipeline.make_loader(path, cfg, pipeline.QwenProcessor(tok), shard_options=shard)


def _without_route(rec):
  rec.pop("route", None)
  return rec


def test_routeless_records_fail_fast_with_counts_and_names(world, tmp_path, caplog):
  path = _rewrite(world, tmp_path, "noroute.jsonl", _without_route)
  loader = _forever(world, path, max_consecutive_skips=50, skip_report_every=4)
  with caplog.at_level("WARNING"), pytest.raises(pipeline.BadDataError) as err:
    next(loader)
  msg = str(err.value)
  assert msg.startswith(f"{path}: 52 records in a row were skipped")  # 13 reports of 4
  assert "'no_route': 52" in msg and "noroute.jsonl:1" in msg
  assert f"python -m crpo_jax.data.validate {path}" in msg
  # Logged as they happened, the first 20 in full, then rate-limited summaries.
  full = [r for r in caplog.records if r.getMessage().startswith("skipped noroute.jsonl:")]
  assert len(full) == 20
  assert len(caplog.records) < 30


def test_wrong_video_root_fails_fast(world, tmp_path):
  path, tok = world
  cfg = _cfg(pad_id=tok.pad_token_id, num_epochs=None, max_consecutive_skips=20)
  loader = pipeline.make_loader(
    path, cfg, pipeline.QwenProcessor(tok), shard_options=grain.sharding.ShardOptions(0, 1),
    video_root=str(tmp_path / "nowhere"),
  )  # fmt: skip
  with pytest.raises(pipeline.BadDataError, match=r"'missing_file': 32.*nowhere"):
    next(loader)


def test_sparse_good_records_still_batch_and_resume_exactly(world, tmp_path):
  """Skips reported mid-batch keep the good items gathered so far, and a checkpoint
  taken after such a batch resumes on the same batches."""
  keep = iter(range(10**6))
  path = _rewrite(world, tmp_path, "sparse.jsonl",
                  lambda r: r if next(keep) % 3 == 0 else _without_route(r))  # fmt: skip
  kw = {"max_consecutive_skips": 5, "skip_report_every": 1, "shuffle": False}  # 2 bad in a row
  want = _take(_forever(world, path, **kw), 5)
  first = _forever(world, path, **kw)
  got = _take(first, 2)
  state = json.loads(json.dumps(first.get_state()))
  resumed = _forever(world, path, **kw)
  resumed.set_state(state)
  got += _take(resumed, 3)
  for a, b in zip(want, got):
    _same(a, b)
  assert resumed.stats.skipped["no_route"] > 0
