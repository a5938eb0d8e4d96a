"""Videos released as folders of frames (MVBench Episodic Reasoning: TVQA at 3 fps).

The folder is read as a video at `src_fps`: the clip window picks frame numbers as
VideoChat2 does for frame tasks (round(start * fps) .. round(end * fps), clamped to
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
) -> tuple[np.ndarray, VideoMeta]:
  """Reads the Qwen3-VL frame sample of a frame folder.

  Returns:
    (frames uint8 [T, H, W, 3] RGB, VideoMeta with folder-wide frame indices).

  Raises:
    VideoError: missing folder, fewer than 2 images, unreadable or differently
      sized images.
  """
  files = list_frames(path)
  n = len(files)
  lo, hi = 0, n - 1
  if start is not None and end is not None:
    lo, hi = max(0, round(start * src_fps)), min(n - 1, round(end * src_fps))
    if hi <= lo:
      lo, hi = 0, n - 1
  window = hi - lo + 1
  idx = lo + sample_frame_indices(
    window, src_fps, fps=fps, min_frames=min_frames, max_frames=max_frames
  )
  frames = []
  for i in idx:
    try:
      with Image.open(files[i]) as im:
        frames.append(np.asarray(im.convert("RGB")))
    except OSError as e:
      raise VideoError(files[i], f"unreadable image ({e})") from None
  if len({f.shape for f in frames}) != 1:
    raise VideoError(path, f"frames differ in size: {sorted({f.shape for f in frames})}")
  meta = VideoMeta(fps=src_fps, total_frames=n, frame_indices=idx, duration=n / src_fps)
  return np.stack(frames), meta
