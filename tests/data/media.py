"""Small synthetic videos for tests, written with PyAV (no downloads).

`pattern_frames` draws frames whose content identifies the frame (a square that
moves with the frame index over a background whose level does too), so a test can
tell which frames a decoder returned. `write_video` encodes frames to a file;
`truncate_file` and `write_garbage` make broken inputs for bad-input tests.
"""

from __future__ import annotations

import fractions
import os

import av
import numpy as np


def pattern_frames(num_frames: int, height: int = 64, width: int = 96, seed: int = 0) -> np.ndarray:
  """Returns uint8 [T, H, W, 3] RGB frames, each visibly different from the others."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (3,), dtype=np.int64)
  t = np.arange(num_frames)[:, None, None, None]
  yy, xx = np.mgrid[0:height, 0:width]
  frames = (base + 7 * t + (xx // 8)[None, :, :, None] * 5 + (yy // 8)[None, :, :, None] * 3) % 200
  frames = np.broadcast_to(frames, (num_frames, height, width, 3)).astype(np.uint8).copy()
  side = max(4, min(height, width) // 4)
  for i in range(num_frames):  # a bright square that walks right and wraps
    x0 = (i * 3) % max(1, width - side)
    y0 = (i * 2) % max(1, height - side)
    frames[i, y0 : y0 + side, x0 : x0 + side] = (250, 240, 20)
  return frames


def write_video(
  path: str | os.PathLike,
  frames: np.ndarray,
  fps: float | fractions.Fraction = 4,
  *,
  codec: str = "libx264",
  gop: int = 12,
  crf: int = 18,
) -> str:
  """Encodes uint8 [T, H, W, 3] RGB frames (even H and W) into `path`.

  Args:
    path: output file; the container follows the extension (.mp4, .mkv, .avi).
    frames: the frames to write.
    fps: frame rate; a float like 29.97 becomes the exact NTSC fraction.
    codec: 'libx264' (B-frames, reordering: the realistic case) or 'mpeg4'.
    gop: keyframe interval, so seeking tests can control how far a seek lands.
    crf: x264 quality (lower is closer to the input).

  Returns:
    The path as a string.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  rate = fractions.Fraction(fps).limit_denominator(1001)
  path = str(path)
  with av.open(path, mode="w") as container:
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = gop
    if codec == "libx264":
      stream.options = {"crf": str(crf), "preset": "ultrafast", "bf": "2", "g": str(gop)}
    for f in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return path


def write_pattern_video(
  path: str | os.PathLike,
  num_frames: int = 16,
  height: int = 64,
  width: int = 96,
  fps: float = 4,
  **kwargs,
) -> str:
  """Writes `pattern_frames(num_frames, height, width)` to `path`."""
  return write_video(path, pattern_frames(num_frames, height, width), fps, **kwargs)


def decode_all(path: str | os.PathLike) -> np.ndarray:
  """Decodes every frame of the first video stream, no seeking: the ground truth."""
  with av.open(str(path)) as container:
    return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def truncate_file(src: str | os.PathLike, dst: str | os.PathLike, keep: float = 0.5) -> str:
  """Copies the first `keep` fraction of the bytes of `src` to `dst`."""
  with open(src, "rb") as f:
    data = f.read()
  with open(dst, "wb") as f:
    f.write(data[: int(len(data) * keep)])
  return str(dst)


def write_garbage(path: str | os.PathLike, size: int = 4096, seed: int = 0) -> str:
  """Writes random bytes under a video-looking name."""
  with open(path, "wb") as f:
    f.write(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
  return str(path)


def write_audio_only(path: str | os.PathLike, seconds: float = 0.5) -> str:
  """Writes a file with one audio stream and no video stream."""
  rate = 8000
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream("aac", rate=rate)
    n = int(rate * seconds)
    samples = np.zeros((1, n), dtype=np.float32)
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate = rate
    for packet in stream.encode(frame):
      container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return str(path)
