"""Bad input never kills a run: each kind is skipped, counted and logged by file name.

Every test runs one epoch over two good synthetic clips plus one bad item, and
checks that both good clips still come out, that the bad one is counted under its
reason, and that the warning names the bad file. Odd pixel formats and odd (but
sane) sizes are not bad: they are converted and used, which is checked too.
"""

from __future__ import annotations

import json
import logging
import os

import av
import grain
import numpy as np
import pytest

from crpo_jax.data import pipeline
from tests.data import media
from tests.data.test_pipeline import make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  out = tmp_path_factory.mktemp("bad")
  path, tok = make_world(out, num=2, seed=11)
  with open(path) as f:
    good = [json.loads(line) for line in f]
  for rec in good:  # absolute paths: the test JSONL files live elsewhere
    rec["video"] = os.path.join(out, rec["video"])
  return good, tok


def _write(path, frames, codec="libx264", pix="yuv420p", container_options=None):
  """Encodes RGB frames with any codec / pixel format (media.write_video is yuv420p only)."""
  with av.open(str(path), "w", options=container_options or {}) as c:
    s = c.add_stream(codec, rate=4)
    s.height, s.width = frames.shape[1:3]
    s.pix_fmt = pix
    if not len(frames):
      c.start_encoding()  # a header with a video stream and no frames
    for f in frames:
      c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
    c.mux(s.encode())
  return str(path)


def _frames(t, h, w):
  return np.random.default_rng(0).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _run(world, tmp_path, bad_video=None, bad_line=None, **cfg_kw):
  """One epoch over the good records plus a bad one; returns (loader, batches)."""
  good, tok = world
  lines = [json.dumps(r) for r in good]
  if bad_video is not None:
    lines.insert(1, json.dumps(dict(good[0], id="bad", video=str(bad_video))))
  if bad_line is not None:
    lines.insert(1, bad_line)
  data = tmp_path / "data.jsonl"
  data.write_text("\n".join(lines) + "\n")
  cfg = pipeline.PipelineConfig(
    batch_size=1, num_epochs=1, drop_remainder=False, pad_id=tok.pad_token_id, **cfg_kw
  )
  loader = pipeline.make_loader(
    str(data), cfg, pipeline.QwenProcessor(tok), shard_options=grain.sharding.ShardOptions(0, 1)
  )
  return loader, list(loader)


def _check_skipped(world, tmp_path, caplog, bad_video, reason):
  with caplog.at_level(logging.WARNING):
    loader, batches = _run(world, tmp_path, bad_video=bad_video)
  assert sorted(b["id"][0] for b in batches) == sorted(r["id"] for r in world[0])
  assert loader.stats.used == 2 and dict(loader.stats.skipped) == {reason: 1}
  assert os.path.basename(str(bad_video)) in caplog.text and reason in caplog.text


def _check_used(world, tmp_path, video):
  loader, batches = _run(world, tmp_path, bad_video=video)
  assert loader.stats.used == 3 and not loader.stats.skipped
  (b,) = [b for b in batches if b["id"][0] == "bad"]
  assert np.isfinite(b["orig"]["pixel_values_videos"]).all()
  assert b["orig"]["pixel_values_videos"].shape == b["cf"]["pixel_values_videos"].shape


def test_missing_file(world, tmp_path, caplog):
  _check_skipped(world, tmp_path, caplog, tmp_path / "nowhere.mp4", "missing_file")


def test_truncated_mp4_without_index(world, tmp_path, caplog):
  full = media.write_pattern_video(tmp_path / "full.mp4", 32)  # moov atom at the end
  cut = media.truncate_file(full, tmp_path / "cut.mp4", 0.5)
  _check_skipped(world, tmp_path, caplog, cut, "unreadable_container")


def test_truncated_stream(world, tmp_path, caplog):
  full = _write(tmp_path / "full.mkv", _frames(32, 64, 64))  # index up front: frames end early
  cut = media.truncate_file(full, tmp_path / "cut.mkv", 0.5)
  _check_skipped(world, tmp_path, caplog, cut, "truncated")


def test_truncated_faststart_mp4_is_corrupt_data(world, tmp_path, caplog):
  opts = {"movflags": "faststart"}
  full = _write(tmp_path / "fs.mp4", _frames(32, 64, 64), container_options=opts)
  cut = media.truncate_file(full, tmp_path / "fs_cut.mp4", 0.5)
  _check_skipped(world, tmp_path, caplog, cut, "corrupt_video")


def test_corrupt_bytes(world, tmp_path, caplog):
  junk = media.write_garbage(tmp_path / "junk.mp4")
  _check_skipped(world, tmp_path, caplog, junk, "unreadable_container")


def test_zero_frames(world, tmp_path, caplog):
  empty = _write(tmp_path / "empty.avi", _frames(0, 64, 64), codec="mpeg4")
  _check_skipped(world, tmp_path, caplog, empty, "zero_frames")


def test_zero_frames_mp4_has_no_stream(world, tmp_path, caplog):
  empty = _write(tmp_path / "empty.mp4", _frames(0, 64, 64))
  _check_skipped(world, tmp_path, caplog, empty, "no_video_stream")


def test_one_frame(world, tmp_path, caplog):
  one = _write(tmp_path / "one.mp4", _frames(1, 64, 64))
  _check_skipped(world, tmp_path, caplog, one, "too_few_frames")


def test_audio_only(world, tmp_path, caplog):
  audio = media.write_audio_only(tmp_path / "audio.mp4")
  _check_skipped(world, tmp_path, caplog, audio, "no_video_stream")


@pytest.mark.parametrize("pix", ["yuv444p", "gray"])
def test_odd_pixel_format_is_converted_and_used(world, tmp_path, pix):
  _check_used(world, tmp_path, _write(tmp_path / f"{pix}.mp4", _frames(16, 64, 64), pix=pix))


@pytest.mark.parametrize("hw", [(17, 33), (8, 8)])
def test_odd_size_is_resized_and_used(world, tmp_path, hw):
  # yuv444p: x264 refuses odd sides in 4:2:0.
  _check_used(world, tmp_path, _write(tmp_path / "odd.mp4", _frames(16, *hw), pix="yuv444p"))


@pytest.mark.parametrize("hw", [(2, 4000), (4, 6)])
def test_absurd_resolution(world, tmp_path, caplog, hw):
  video = _write(tmp_path / f"absurd_{hw[0]}x{hw[1]}.mp4", _frames(4, *hw), pix="yuv444p")
  _check_skipped(world, tmp_path, caplog, video, "bad_resolution")


@pytest.mark.parametrize(
  "line",
  ['{"id": "x", "video": "a.mp4", "question": "q?"', '{"id": "x", "video": "a.mp4"}', "[1, 2]"],
)
def test_malformed_record(world, tmp_path, caplog, line):
  with caplog.at_level(logging.WARNING):
    loader, batches = _run(world, tmp_path, bad_line=line)
  assert len(batches) == 2 and loader.stats.used == 2
  assert dict(loader.stats.skipped) == {"malformed_record": 1}
  assert "data.jsonl:2" in caplog.text  # file and line of the bad record


def test_example_beyond_the_largest_bucket(world, tmp_path, caplog):
  # The synthetic clips need 64 pixel rows; a 32-row cap makes every one too long,
  # so each is skipped per example rather than failing in the batcher.
  with caplog.at_level(logging.WARNING):
    loader, batches = _run(world, tmp_path, patch_buckets=(32,))
  assert batches == [] and dict(loader.stats.skipped) == {"too_long": 2}
  assert "pixel rows exceed the largest bucket 32" in caplog.text


# Real footage (tests/data/real_clips.py): the same failures on camera and animation
# clips with real H.264 streams, and a good real clip is used.


def _corrupt_copy(src, dst, lo=0.3, hi=0.7, seed=0):
  """`src` with the bytes between fractions lo and hi of its length overwritten."""
  with open(src, "rb") as f:
    data = bytearray(f.read())
  a, b = int(len(data) * lo), int(len(data) * hi)
  data[a:b] = np.random.default_rng(seed).integers(0, 256, b - a, dtype=np.uint8).tobytes()
  with open(dst, "wb") as f:
    f.write(bytes(data))
  return str(dst)


def test_truncated_real_clip(world, tmp_path, caplog):
  from tests.data import real_clips

  cut = media.truncate_file(real_clips.path("bikes.mp4"), tmp_path / "bikes_cut.mp4", 0.5)
  _check_skipped(world, tmp_path, caplog, cut, "unreadable_container")  # moov is at the end


def test_corrupted_real_clip(world, tmp_path, caplog):
  from tests.data import real_clips

  bad = _corrupt_copy(real_clips.path("carphone_pristine.mp4"), tmp_path / "carphone_bad.mp4")
  _check_skipped(world, tmp_path, caplog, bad, "corrupt_video")


def test_real_clip_is_used(world, tmp_path):
  from tests.data import real_clips

  _check_used(world, tmp_path, real_clips.path("carphone_pristine.mp4"))
