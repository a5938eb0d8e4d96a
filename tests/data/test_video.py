"""PyAV decoding: HF frame-sampling rule, start/end windows, seeking, clear errors."""

import av
import numpy as np
import pytest

from crpo_jax.data import video as video_lib
from crpo_jax.data.video import VideoError, VideoLimits, decode_video, sample_frame_indices
from tests.data import media


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
  """20 s at 30 fps, keyframe every 30 frames, and its full no-seek decode."""
  path = media.write_pattern_video(
    tmp_path_factory.mktemp("long") / "long.mp4", 600, 32, 64, fps=30, gop=30
  )
  return path, media.decode_all(path)


class _CountingContainer:
  """Wraps a PyAV container and counts the frames its decoder produces."""

  def __init__(self, container):
    self._c, self.decoded = container, 0

  def decode(self, *args, **kwargs):
    for frame in self._c.decode(*args, **kwargs):
      self.decoded += 1
      yield frame

  def __getattr__(self, name):
    return getattr(self._c, name)


@pytest.fixture
def counting_open(monkeypatch):
  opened = []
  real_open = av.open

  def fake_open(*args, **kwargs):
    opened.append(_CountingContainer(real_open(*args, **kwargs)))
    return opened[-1]

  monkeypatch.setattr(video_lib.av, "open", fake_open)
  return opened


def test_sample_frame_indices_match_hf_rule():
  from transformers import Qwen3VLVideoProcessor
  from transformers.video_utils import VideoMetadata

  hf = Qwen3VLVideoProcessor(fps=2, min_frames=4, max_frames=768)
  cases = [(16, 4.0), (8, 4.0), (3, 30.0), (301, 29.97), (90, 24.0), (5000, 30.0), (17, 1.0)]
  for total, src_fps in cases:
    meta = VideoMetadata(total_num_frames=total, fps=src_fps)
    expected = hf.sample_frames(meta)
    np.testing.assert_array_equal(sample_frame_indices(total, src_fps), expected)
  hf16 = Qwen3VLVideoProcessor(fps=2, min_frames=4, max_frames=16)
  meta = VideoMetadata(total_num_frames=5000, fps=30.0)
  np.testing.assert_array_equal(
    sample_frame_indices(5000, 30.0, max_frames=16), hf16.sample_frames(meta)
  )


def test_decode_whole_clip_returns_the_sampled_frames(tmp_path):
  path = media.write_pattern_video(tmp_path / "a.mp4", 16, 64, 96, fps=4)
  frames, meta = decode_video(path)
  want = np.linspace(0, 15, 8).round().astype(int)  # int(16 / 4 * 2) = 8 frames
  np.testing.assert_array_equal(meta.frame_indices, want)
  assert frames.dtype == np.uint8 and frames.shape == (8, 64, 96, 3)
  np.testing.assert_array_equal(frames, media.decode_all(path)[want])
  assert (meta.fps, meta.total_frames, meta.duration) == (4.0, 16, 4.0)


def test_min_frames_when_clip_is_short(tmp_path):
  path = media.write_pattern_video(tmp_path / "a.mp4", 6, 32, 32, fps=24)
  frames, meta = decode_video(path)  # int(6 / 24 * 2) = 0 -> clamped to 4
  np.testing.assert_array_equal(meta.frame_indices, [0, 2, 3, 5])
  np.testing.assert_array_equal(frames, media.decode_all(path)[[0, 2, 3, 5]])


def test_start_end_window(long_clip):
  path, full = long_clip
  frames, meta = decode_video(path, start=1.0, end=3.0)
  # Window frames 30..90 (61 frames) -> int(61 / 30 * 2) = 4 samples.
  want = 30 + np.linspace(0, 60, 4).round().astype(int)
  np.testing.assert_array_equal(meta.frame_indices, want)
  np.testing.assert_array_equal(frames, full[want])
  frames, meta = decode_video(path, end=0.5)  # frames 0..15 -> int(16 / 30 * 2) = 1 -> 4
  np.testing.assert_array_equal(meta.frame_indices, [0, 5, 10, 15])
  np.testing.assert_array_equal(frames, full[[0, 5, 10, 15]])


def test_window_late_in_a_long_file_seeks(long_clip, counting_open):
  path, full = long_clip
  frames, meta = decode_video(path, start=15.0, end=17.0)
  want = 450 + np.linspace(0, 60, 4).round().astype(int)
  np.testing.assert_array_equal(meta.frame_indices, want)
  np.testing.assert_array_equal(frames, full[want])
  # Seeks to the keyframe before 15 s: at most one GOP before the 61 window frames.
  assert counting_open[0].decoded <= 61 + 30


def test_sparse_sampling_seeks_between_frames(long_clip, counting_open):
  path, full = long_clip
  frames, meta = decode_video(path, fps=0.25, min_frames=4, seek_gap=40)
  want = np.linspace(0, 599, 5).round().astype(int)  # int(600 / 30 * 0.25) = 5
  np.testing.assert_array_equal(meta.frame_indices, want)
  np.testing.assert_array_equal(frames, full[want])
  assert counting_open[0].decoded < 300


def test_matroska_without_frame_count_and_ntsc_rate(tmp_path):
  path = media.write_pattern_video(tmp_path / "a.mkv", 40, 32, 48, fps=29.97)
  with av.open(path) as c:
    assert c.streams.video[0].frames == 0  # the count comes from the duration instead
  frames, meta = decode_video(path)
  assert meta.total_frames == 40 and abs(meta.fps - 29.97) < 1e-6
  want = sample_frame_indices(40, 29.97)
  np.testing.assert_array_equal(meta.frame_indices, want)
  np.testing.assert_array_equal(frames, media.decode_all(path)[want])


def test_errors_are_clear(tmp_path, long_clip):
  good = media.write_pattern_video(tmp_path / "a.mp4", 16, 32, 96, fps=4)
  cases = {
    str(tmp_path / "missing.mp4"): "file not found",
    str(tmp_path): "is a directory",
    media.write_garbage(tmp_path / "garbage.mp4"): "unreadable container",
    media.write_audio_only(tmp_path / "audio.mp4"): "no video stream",
    media.truncate_file(good, tmp_path / "cut.mp4", 0.6): "unreadable container",
  }
  for path, reason in cases.items():
    with pytest.raises(VideoError, match=reason) as info:
      decode_video(path)
    assert info.value.path == path and str(info.value).startswith(path)
  with pytest.raises(VideoError, match="fewer than 2 usable frames"):
    decode_video(good, start=10.0)
  with pytest.raises(VideoError, match="resolution 96x32 outside"):
    decode_video(good, limits=VideoLimits(max_side=64))
  with pytest.raises(VideoError, match="aspect ratio"):
    decode_video(good, limits=VideoLimits(max_aspect=2.0))


def test_truncated_stream_is_reported(tmp_path):
  # Matroska keeps its headers in front, so a cut file opens and then runs dry.
  good = media.write_pattern_video(tmp_path / "a.mkv", 120, 32, 32, fps=10, gop=10)
  cut = media.truncate_file(good, tmp_path / "cut.mkv", 0.4)
  with pytest.raises(VideoError, match="truncated"):
    decode_video(cut)
