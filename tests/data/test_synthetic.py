"""Synthetic world: ground truth recomputed from decoded frames, determinism, knobs."""

from __future__ import annotations

import json
import os
import pathlib

import av
import numpy as np
import pytest
from scipy import ndimage

from crpo_jax.data import records, synthetic, transforms


def _decode(path: str) -> np.ndarray:
  with av.open(path) as c:
    return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _masks(frames: np.ndarray) -> dict[str, np.ndarray]:
  """Per colour name, a [T, H, W] mask of pixels nearest to it (background included)."""
  names = [*synthetic.COLOURS, "bg"]
  bg = frames[:, 0, 0].astype(np.float32)  # corners are never drawn on
  palette = np.array(list(synthetic.COLOURS.values()), np.float32)
  d = np.linalg.norm(frames[..., None, :].astype(np.float32) - palette, axis=-1)
  d_bg = np.linalg.norm(frames.astype(np.float32) - bg[:, None, None], axis=-1)
  nearest = np.argmin(np.concatenate([d, d_bg[..., None]], axis=-1), axis=-1)
  close = np.minimum(d.min(-1), d_bg) < 60
  return {n: (nearest == i) & close for i, n in enumerate(names)}


def _centroid(mask: np.ndarray) -> np.ndarray:
  ys, xs = np.nonzero(mask)
  return np.array([xs.mean(), ys.mean()])


def _fill_ratio(mask: np.ndarray) -> float:
  ys, xs = np.nonzero(mask)
  return mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))


def _recompute(rec: dict, frames: np.ndarray) -> str:
  """The answer text, from object positions and areas in the decoded frames."""
  masks = _masks(frames)
  present = {c: m for c, m in masks.items() if c != "bg" and m.sum() > 30}
  q, cat = rec["question"], rec["category"]
  if cat == "moving_direction":
    (m,) = present.values()
    dx, dy = _centroid(m[-1]) - _centroid(m[0])
    if abs(dx) > abs(dy):
      return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"
  if cat == "reversible_dynamics":
    (m,) = present.values()
    area = m.sum(axis=(1, 2))
    grows = area[-1] > area[0]
    if "box" in q:
      return "it fills up" if grows else "it empties"
    if q.startswith("What does"):  # appear / disappear
      return "it appears" if area[0] < 10 else "it disappears"
    return "it grows" if grows else "it shrinks"
  if cat == "event_order":
    first = {c: int(np.argmax(m.sum(axis=(1, 2)) > 30)) for c, m in present.items()}
    c = min(first, key=first.get)
    return next(o for o in rec["options"] if o.startswith(f"the {c} "))
  if cat == "spatial_relation":
    a, b = q.split("the ")[1].split()[0], q.split("the ")[2].split()[0]
    left = _centroid(present[a][0])[0] < _centroid(present[b][0])[0]
    return "to the left of it" if left else "to the right of it"
  (c, m) = next(iter(present.items()))
  if "colour" in q:
    return c
  if "shape" in q and "many" not in q:
    r = _fill_ratio(m[0])
    return "square" if r > 0.9 else "circle" if r > 0.65 else "triangle"
  return str(ndimage.label(m[0])[1])


def _load(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_ground_truth_recomputed_from_frames(tmp_path):
  path = synthetic.generate(str(tmp_path), 40, seed=3)
  recs = _load(path)
  assert {r["category"] for r in recs} == set(synthetic.FAMILIES)
  for rec in recs:
    frames = _decode(os.path.join(tmp_path, rec["video"]))
    assert frames.shape == (synthetic.NUM_FRAMES, synthetic.SIZE, synthetic.SIZE, 3)
    truth = rec["options"][transforms.letter_index(rec["answer"])]
    assert _recompute(rec, frames) == truth, rec
    # Counterfactual truth: recomputed on every transform the route may draw.
    for t in transforms.DEFAULT_ROUTE_TABLE[rec["route"]]:
      cf = _recompute(rec, transforms.apply_transform(frames, t))
      assert cf == rec["options"][transforms.letter_index(rec["answer_cf"])], (rec, t)
  # The schema is the records module's: every record parses.
  assert len(records.read_records(path)) == 40


def test_deterministic_by_seed(tmp_path):
  a = synthetic.generate(str(tmp_path / "a"), 6, seed=5, shortcut=0.5, null_cf=0.5)
  b = synthetic.generate(str(tmp_path / "b"), 6, seed=5, shortcut=0.5, null_cf=0.5)
  c = synthetic.generate(str(tmp_path / "c"), 6, seed=6, shortcut=0.5, null_cf=0.5)
  text = [pathlib.Path(p).read_text() for p in (a, b, c)]
  assert text[0] == text[1] != text[2]
  for rec in _load(a):
    va, vb = (pathlib.Path(tmp_path / d / rec["video"]).read_bytes() for d in "ab")
    assert va == vb  # the encoder is single-threaded, so even the bytes agree


def test_shortcut_background_encodes_answer_only_in_train(tmp_path):
  path = synthetic.generate(str(tmp_path), 12, seed=0, shortcut=1.0)
  for rec in _load(path):
    corner = _decode(os.path.join(tmp_path, rec["video"]))[0, 0, 0].astype(int)
    want = synthetic.SHORTCUT_BACKGROUNDS[transforms.letter_index(rec["answer"])]
    assert np.abs(corner - want).max() < 12, (corner, want)
  with pytest.raises(ValueError, match="training split only"):
    synthetic.generate(str(tmp_path), 1, seed=0, split="eval", shortcut=0.5)
  plain = synthetic.generate(str(tmp_path / "p"), 4, seed=0)
  for rec in _load(plain):
    corner = _decode(os.path.join(tmp_path / "p", rec["video"]))[0, 0, 0].astype(int)
    assert np.abs(corner - synthetic.BACKGROUND).max() < 12


def test_null_cf_points_at_null_option(tmp_path):
  recs = _load(synthetic.generate(str(tmp_path), 30, seed=1, null_cf=1.0))
  dynamic = [r for r in recs if r["route"] != "static" and len(r["options"]) >= 2]
  nulls = [r for r in dynamic if transforms.letter_index(r["answer_cf"]) == len(r["options"])]
  assert nulls and all(r["category"] != "spatial_relation" for r in nulls)
  assert all(r["answer_cf"] == r["answer"] for r in recs if r["route"] == "static")


def test_pairs_mode_writes_transformed_twin(tmp_path):
  path = synthetic.generate(str(tmp_path), 5, seed=2, split="eval", pairs=True)
  recs = _load(path)
  assert len(recs) == 10
  for orig, twin in zip(recs[::2], recs[1::2]):
    assert orig["pair_id"] == twin["pair_id"] and orig["id"] != twin["id"]
    assert (twin["answer"], twin["answer_cf"]) == (orig["answer"], orig["answer_cf"])[::-1]
    t = twin["id"].rsplit("-", 1)[1]
    assert t == transforms.choose_transform(orig["route"], 2, orig["pair_id"])
    a = _decode(os.path.join(tmp_path, orig["video"]))
    b = _decode(os.path.join(tmp_path, twin["video"]))
    assert _recompute(twin, b) == twin["options"][transforms.letter_index(twin["answer"])]
    assert np.abs(transforms.apply_transform(a, t).astype(int) - b).mean() < 3


def test_cli(tmp_path):
  assert synthetic.main(["--out", str(tmp_path), "--num", "2", "--seed", "4"]) == 0
  assert len(_load(tmp_path / "train.jsonl")) == 2
  with pytest.raises(SystemExit):
    synthetic.main(["--out", str(tmp_path), "--num", "1", "--split", "val", "--shortcut", "1"])


def test_family_and_option_order_knobs(tmp_path):
  recs = _load(
    synthetic.generate(str(tmp_path), 12, seed=3, families=["static"], shuffle_options=False)
  )
  assert {r["category"] for r in recs} == {"static"}
  # A fixed order: each question kind lists its options in one order, whatever the clip.
  by_kind = {}
  for r in recs:
    by_kind.setdefault(r["question"].split()[1], set()).add(tuple(r["options"]))
  assert all(len(orders) == 1 for orders in by_kind.values()), by_kind
  # The default keeps the full world, clip for clip.
  full = _load(synthetic.generate(str(tmp_path / "all"), 6, seed=3))
  assert full == _load(synthetic.generate(str(tmp_path / "all2"), 6, seed=3))
  assert full[0]["category"] == synthetic.make_clip(0, 3, split="train")[1]["category"]
  with pytest.raises(ValueError, match="unknown \\['colour'\\]"):
    synthetic.generate(str(tmp_path / "x"), 1, seed=0, families=["colour"])


def test_cue_conflict_paints_a_wrong_letters_background(tmp_path):
  path = synthetic.generate(str(tmp_path), 10, seed=7, split="cue", pairs=True, cue_conflict=True)
  recs = _load(path)
  for rec in recs:
    cue = transforms.letter_index(rec["cue"])
    if len(rec["options"]) > 2:  # two options: the only wrong letter is the cf answer
      assert rec["cue"] not in (rec["answer"], rec["answer_cf"])
    corner = _decode(os.path.join(tmp_path, rec["video"]))[0, 0, 0].astype(int)
    assert np.abs(corner - synthetic.SHORTCUT_BACKGROUNDS[cue]).max() < 12
  with pytest.raises(ValueError, match="cue-conflict"):
    synthetic.generate(str(tmp_path), 1, seed=0, split="train", cue_conflict=True)
