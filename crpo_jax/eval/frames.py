"""Frame picking for benchmarks with their own rule, and videos released as frame folders.

`segment_middles` is VideoChat2's `MVBench_dataset.get_index` (mvbench.ipynb, commit
in extraction.py): the clip [round(start * fps), round(end * fps)] clamped to
[first_idx, max_frame] (the whole file when unbounded) is cut into `segments`
equal parts and the middle frame of each is taken.

A frame folder (MVBench Episodic Reasoning: TVQA at 3 fps) is read as a video at
`src_fps`. With `segments`, exactly as VideoChat2's `read_frame`: files are
numbered from 1 ("00001.jpg"), max_frame is the number of entries in the folder.
Without, ours: the clip window picks frame numbers as VideoChat2 does (clamped to
the folder; an empty or inverted window falls back to the whole folder, since some
released bounds are invalid), then the Qwen3-VL sampling rule of `data/video.py`
picks frames inside the window, so the processor sees the same kind of input as
from `decode_video`.
"""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image

from crpo_jax.data.video import VideoError, VideoMeta, sample_frame_indices

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _natural_key(name: str) -> tuple:
  """'frame_10.jpg' after 'frame_9.jpg': digit runs compare as numbers."""
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def segment_middles(
  segments: int,
  start: float | None,
  end: float | None,
  fps: float,
  max_frame: int,
  first_idx: int = 0,
) -> np.ndarray:
  """VideoChat2 `get_index`: the middle frame of each of `segments` equal parts.

  Args:
    segments: frames to take (MVBench: 16).
    start, end: clip bounds in seconds, or None for the whole file.
    fps: the frame rate the bounds are converted at.
    max_frame: the last usable index (a video: frames - 1; a frame folder: its
      entry count, as released).
    first_idx: the first usable index (a video: 0; a frame folder: 1).
  """
  if start is None or end is None:
    start, end = -100000, 100000
  start_idx = max(first_idx, round(start * fps))
  end_idx = min(round(end * fps), max_frame)
  seg_size = float(end_idx - start_idx) / segments
  return np.array(
    [int(start_idx + seg_size / 2 + np.round(seg_size * i)) for i in range(segments)], np.int64
  )


def list_frames(path: str) -> list[str]:
  """Image files of a frame folder in playback order."""
  if not os.path.isdir(path):
    raise VideoError(path, "frame folder not found")
  names = [n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES)]
  if len(names) < 2:
    raise VideoError(path, f"frame folder holds {len(names)} image(s); need at least 2")
  return [os.path.join(path, n) for n in sorted(names, key=_natural_key)]


def decode_frame_folder(
  path: str,
  *,
  src_fps: float,
  fps: float = 2.0,
  min_frames: int = 4,
  max_frames: int = 768,
  start: float | None = None,
  end: float | None = None,
  segments: int = 0,
) -> tuple[np.ndarray, VideoMeta]:
  """Reads the frame sample of a frame folder: VideoChat2's with `segments`, else
  the Qwen3-VL rule.

  Returns:
    (frames uint8 [T, H, W, 3] RGB, VideoMeta with folder-wide 0-based indices).

  Raises:
    VideoError: missing folder, fewer than 2 images, a picked file that does not
      exist, unreadable or differently sized images.
  """
  files = list_frames(path)
  n = len(files)
  if segments:
    numbers = segment_middles(segments, start, end, src_fps, len(os.listdir(path)), first_idx=1)
    files = [os.path.join(path, f"{k:05d}.jpg") for k in numbers]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
      raise VideoError(path, f"picked frame file {missing[0]} does not exist")
    idx = numbers - 1
    return _read(path, files, idx, n, src_fps)
  lo, hi = 0, n - 1
  if start is not None and end is not None:
    lo, hi = max(0, round(start * src_fps)), min(n - 1, round(end * src_fps))
    if hi <= lo:
      lo, hi = 0, n - 1
  window = hi - lo + 1
  idx = lo + sample_frame_indices(
    window, src_fps, fps=fps, min_frames=min_frames, max_frames=max_frames
  )
  return _read(path, [files[i] for i in idx], idx, n, src_fps)


def _read(
  path: str, files: list[str], idx: np.ndarray, n: int, src_fps: float
) -> tuple[np.ndarray, VideoMeta]:
  frames = []
  for file in files:
    try:
      with Image.open(file) as im:
        frames.append(np.asarray(im.convert("RGB")))
    except OSError as e:
      raise VideoError(file, f"unreadable image ({e})") from None
  if len({f.shape for f in frames}) != 1:
    raise VideoError(path, f"frames differ in size: {sorted({f.shape for f in frames})}")
  meta = VideoMeta(fps=src_fps, total_frames=n, frame_indices=idx, duration=n / src_fps)
  return np.stack(frames), meta
