"""PyAV video decoding with Qwen3-VL's frame sampling rule.

Frames are chosen by the rule of transformers' `Qwen3VLVideoProcessor.sample_frames`
(reference/qwen3vl.md section 5.2.1): with `total` frames at `src_fps`,
`n = int(total / src_fps * fps)`, clamped to [min_frames, max_frames] and to
`total`, and `indices = round(linspace(0, total - 1, n))`. With a [start, end]
window the rule runs over the frames inside the window only, and the indices are
offset to the window's first frame (as qwen-vl-utils does with video_start).

`VideoMeta.frame_indices` are always indices into the whole file, so the
timestamps `index / fps` that Qwen3-VL puts into the prompt are times in the file.

Only the needed frames are converted to RGB, decoding stops after the last one,
and the decoder seeks (to the keyframe before the target) over any gap longer than
`seek_gap` frames, including the start of a window, so a few seconds out of a
long file never decode the whole file.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import av
import numpy as np


class VideoError(ValueError):
  """A video that cannot be used; the message names the file and the reason."""

  def __init__(self, path: str, reason: str):
    self.path, self.reason = str(path), reason
    super().__init__(f"{path}: {reason}")


@dataclasses.dataclass(frozen=True)
class VideoLimits:
  """Sanity limits: a frame outside them is treated as a broken file."""

  min_side: int = 8
  max_side: int = 8192
  max_aspect: float = 200.0  # smart_resize refuses more (reference section 5.1)


@dataclasses.dataclass
class VideoMeta:
  """What the processor needs to know about the decoded frames.

  Attributes:
    fps: the source frame rate.
    total_frames: frames in the whole file (from the container, not a decode).
    frame_indices: int64 [T], file frame index of each returned frame.
    duration: the file's duration in seconds.
  """

  fps: float
  total_frames: int
  frame_indices: np.ndarray
  duration: float


def sample_frame_indices(
  total_frames: int, src_fps: float, *, fps: float = 2.0, min_frames: int = 4, max_frames: int = 768
) -> np.ndarray:
  """HF Qwen3-VL `sample_frames`: indices into `total_frames` frames at `src_fps`."""
  n = int(total_frames / src_fps * fps)
  n = min(max(n, min_frames), max_frames, total_frames)
  return np.linspace(0, total_frames - 1, n).round().astype(np.int64)


def _frame_rate(stream) -> float | None:
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate and float(rate) > 0:
      return float(rate)
  return None


def _count_frames(container, stream, src_fps: float) -> int:
  """Frames in the stream from the container's headers; no decode."""
  if stream.frames:
    return int(stream.frames)
  if stream.duration and stream.time_base:  # e.g. Matroska stores no frame count
    return round(float(stream.duration * stream.time_base) * src_fps)
  if container.duration:
    return round(container.duration / av.time_base * src_fps)
  return 0


def _open(path: str):
  if not os.path.exists(path):
    raise VideoError(path, "file not found")
  if os.path.isdir(path):
    raise VideoError(path, "is a directory, not a video file")
  try:
    container = av.open(path)
  except (av.FFmpegError, UnicodeDecodeError) as e:
    raise VideoError(path, f"unreadable container ({type(e).__name__}: {e})") from None
  if not container.streams.video:
    container.close()
    raise VideoError(path, "no video stream")
  return container


def decode_video(
  path: str,
  *,
  fps: float = 2.0,
  min_frames: int = 4,
  max_frames: int = 768,
  start: float | None = None,
  end: float | None = None,
  limits: VideoLimits = VideoLimits(),
  seek_gap: int = 96,
  threads: int = 1,
  pick: Callable[[int, float], np.ndarray] | None = None,
) -> tuple[np.ndarray, VideoMeta]:
  """Decodes the Qwen3-VL frame sample of a video file.

  Args:
    path: video file.
    fps: frames per second to sample (Qwen3-VL: 2).
    min_frames, max_frames: clamp on the number of sampled frames.
    start, end: optional window in seconds; frames outside it are never decoded.
    limits: resolution sanity limits.
    seek_gap: seek instead of decoding through a gap of more frames than this.
    threads: decoder threads; 1 suits a pipeline that runs one decode per core.
    pick: optional (total_frames, src_fps) -> non-decreasing file frame indices,
      used instead of the window and the Qwen3-VL rule (for a benchmark whose
      official code picks its frames another way, like MVBench's).

  Returns:
    (frames uint8 [T, H, W, 3] RGB, VideoMeta).

  Raises:
    VideoError: missing, unreadable, corrupt or truncated file, no video stream,
      no frames, fewer than 2 frames in the window, or a resolution out of limits.
  """
  path = str(path)
  container = _open(path)
  try:
    return _decode(
      container, path, fps, min_frames, max_frames, start, end, limits, seek_gap, threads, pick
    )
  except av.FFmpegError as e:
    raise VideoError(path, f"corrupt video data ({type(e).__name__}: {e})") from None
  finally:
    container.close()


def _decode(
  container, path, fps, min_frames, max_frames, start, end, limits, seek_gap, threads, pick
):
  stream = container.streams.video[0]
  stream.codec_context.thread_count = threads
  src_fps = _frame_rate(stream)
  if src_fps is None:
    raise VideoError(path, "unknown frame rate")
  h, w = stream.codec_context.height, stream.codec_context.width
  if min(h, w) < limits.min_side or max(h, w) > limits.max_side:
    raise VideoError(path, f"resolution {w}x{h} outside [{limits.min_side}, {limits.max_side}]")
  if max(h, w) / min(h, w) > limits.max_aspect:
    raise VideoError(path, f"aspect ratio of {w}x{h} exceeds {limits.max_aspect}")
  total = _count_frames(container, stream, src_fps)
  if total <= 0:
    raise VideoError(path, "zero frames")
  if pick is not None:
    want = _picked(pick(total, src_fps), total, path)
  else:
    first = 0 if start is None else math.ceil(start * src_fps - 1e-6)
    last = total - 1 if end is None else min(total - 1, math.floor(end * src_fps + 1e-6))
    if last - first + 1 < 2:
      raise VideoError(
        path, f"fewer than 2 usable frames in window [{start}, {end}] s of {total / src_fps:.2f} s"
      )
    want = first + sample_frame_indices(
      last - first + 1, src_fps, fps=fps, min_frames=min_frames, max_frames=max_frames
    )
  got = _decode_indices(container, stream, path, src_fps, want, seek_gap)
  if len(got) < 2:
    raise VideoError(path, f"fewer than 2 usable frames (decoded {len(got)})")
  indices, frames = zip(*got)
  meta = VideoMeta(
    fps=src_fps,
    total_frames=total,
    frame_indices=np.asarray(indices, np.int64),
    duration=total / src_fps,
  )
  return np.stack(frames), meta


def _picked(indices, total: int, path: str) -> np.ndarray:
  """A `pick` result checked: at least 2, non-decreasing, inside the file."""
  want = np.asarray(indices, np.int64)
  if want.ndim != 1 or len(want) < 2 or (np.diff(want) < 0).any():
    raise VideoError(path, f"picked frames {want.tolist()} are not 2+ non-decreasing indices")
  if want[0] < 0 or want[-1] >= total:
    raise VideoError(path, f"picked frames {want[0]}..{want[-1]} outside the {total} frames")
  return want


def _decode_indices(container, stream, path, src_fps, want, seek_gap):
  """Returns [(file index, rgb frame)] for each wanted index, in order.

  A wanted frame that the stream lacks (variable frame rate) is replaced by the
  next frame present. Frames missing at the very end within a small tolerance
  (container frame counts are often off by one or two) repeat the last frame.
  """
  tb = float(stream.time_base)
  t0 = stream.start_time or 0
  out, k, allow_seek = [], 0, True

  def seek_to(index):
    container.seek(t0 + int(index / src_fps / tb), backward=True, any_frame=False, stream=stream)
    return container.decode(stream)

  frames = seek_to(want[0]) if want[0] > seek_gap else container.decode(stream)
  just_sought = want[0] > seek_gap
  last_idx, last_rgb = -1, None
  while k < len(want):
    try:
      frame = next(frames)
    except StopIteration:
      break
    idx = last_idx + 1 if frame.pts is None else round((frame.pts - t0) * tb * src_fps)
    if just_sought and idx > want[k]:  # landed past the target: decode from the top
      just_sought, allow_seek = False, False
      container.seek(t0, backward=True, any_frame=False, stream=stream)
      frames, last_idx = container.decode(stream), -1
      continue
    just_sought = False
    last_idx = idx
    if idx < want[k]:
      continue
    last_rgb = frame.to_ndarray(format="rgb24")
    while k < len(want) and want[k] <= idx:
      out.append((idx, last_rgb))
      k += 1
    if allow_seek and k < len(want) and want[k] - idx > seek_gap:
      frames, just_sought = seek_to(want[k]), True
  if k < len(want):
    missing = int(want[-1]) - max(last_idx, 0)
    if last_rgb is None or missing > max(2, round(0.02 * (int(want[-1]) + 1))):
      raise VideoError(
        path,
        f"truncated or corrupt: stream ended at frame {last_idx} but frame {int(want[k])} "
        f"of {int(want[-1]) + 1}+ is needed",
      )
    out.extend((last_idx, last_rgb) for _ in range(len(want) - k))
  return out
