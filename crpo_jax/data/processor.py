"""Qwen3-VL vision preprocessing and prompt tokenisation on the host, numpy only.

Mirrors transformers' `Qwen3VLVideoProcessor` / `Qwen2VLImageProcessor` with the
hub settings (reference/qwen3vl.md section 5): `smart_resize` to multiples of 32
within the pixel budgets, bicubic antialiased resize of uint8 frames (torchvision's
uint8 fixed-point algorithm, re-done in numpy), `(x - 127.5) / 127.5`, and patches flattened
to rows of 1536 = C * 2 * 16 * 16 features in merge-block order.

Prompt layout: transformers 4.57 (the version the Qwen3-VL checkpoints shipped
with, and what vLLM emits). The template's `<|vision_start|><|video_pad|><|vision_end|>`
is replaced as a whole by, per temporal group g,
`<t_g seconds><|vision_start|>` + `<|video_pad|>` * (gh * gw / 4) + `<|vision_end|>`.
transformers 5.x instead keeps the template's outer start/end pair around that
(two more tokens per video; reference section 7.1).

The split lets the counterfactual branch reuse everything: decode once, transform
the uint8 frames, run `process_video_frames` on each branch with the same meta.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from crpo_jax.data import prompts
from crpo_jax.data.records import Example
from crpo_jax.data.video import VideoMeta, decode_video

IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"


@dataclasses.dataclass(frozen=True)
class ProcessorConfig:
  """Qwen3-VL processor settings; defaults are the hub preprocessor configs."""

  fps: float = 2.0  # frames sampled per second
  min_frames: int = 4
  max_frames: int = 768
  patch_size: int = 16
  temporal_patch_size: int = 2
  merge_size: int = 2
  video_min_pixels: int = 4096  # total T*H*W budget (video_preprocessor_config)
  video_max_pixels: int = 25165824
  # Cap on one frame's H*W after the budget rule (None: HF's rule alone). The rule
  # bounds T*H*W, so a short clip gets larger frames; training sets the cap so that
  # every temporal group fits the vision tower's per-segment bound (train/setup.py).
  video_frame_max_pixels: int | None = None
  image_min_pixels: int = 65536  # per image (preprocessor_config)
  image_max_pixels: int = 16777216
  resize_backend: str = "torch"  # 'torch': bit-exact with HF on x86; 'pil': Pillow, approximate.
  add_null_option: bool = True  # METHOD.md section 1
  instruction: str = prompts.INSTRUCTION

  @property
  def factor(self) -> int:
    return self.patch_size * self.merge_size


@dataclasses.dataclass
class VisionInputs:
  """Processed pixels of one video or image.

  Attributes:
    pixel_values: float32 [N, C * T * P * P]; N = grid_t * grid_h * grid_w.
    grid_thw: int64 [1, 3] = (grid_t, grid_h, grid_w) in patches.
    timestamps: per temporal group "<t seconds>" text (videos), else empty.
    kind: 'video' or 'image'.
    merge_size: spatial merge (2x2 patches make one LLM token).
  """

  pixel_values: np.ndarray
  grid_thw: np.ndarray
  timestamps: list[str]
  kind: str = "video"
  merge_size: int = 2

  @property
  def tokens_per_group(self) -> int:
    """LLM tokens per temporal group (per video group, or for the whole image)."""
    t, h, w = (int(x) for x in self.grid_thw[0])
    return (h * w // self.merge_size**2) * (t if self.kind == "image" else 1)

  @property
  def num_tokens(self) -> int:
    """Pad tokens this input expands to."""
    t, h, w = (int(x) for x in self.grid_thw[0])
    return t * h * w // self.merge_size**2


def smart_resize(
  height: int,
  width: int,
  *,
  factor: int = 32,
  min_pixels: int,
  max_pixels: int,
  num_frames: int | None = None,
  temporal_factor: int = 2,
) -> tuple[int, int]:
  """Target (height, width), multiples of `factor`, within the pixel budget.

  With `num_frames`, the video rule: the budget counts T * H * W with T rounded
  to `temporal_factor`, and sides under `factor` are first scaled up. Python's
  round (half to even) as in transformers.
  """
  if num_frames is not None:
    if num_frames < temporal_factor:
      raise ValueError(f"{num_frames} frames; at least {temporal_factor} are needed")
    if height < factor or width < factor:
      scale = max(factor / height, factor / width)
      height, width = int(height * scale), int(width * scale)
  if max(height, width) / min(height, width) > 200:
    raise ValueError(f"aspect ratio of {width}x{height} exceeds 200")
  t = 1 if num_frames is None else round(num_frames / temporal_factor) * temporal_factor
  n = 1 if num_frames is None else num_frames
  h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
  if t * h_bar * w_bar > max_pixels:
    beta = math.sqrt(n * height * width / max_pixels)
    h_bar = max(factor, math.floor(height / beta / factor) * factor)
    w_bar = max(factor, math.floor(width / beta / factor) * factor)
  elif t * h_bar * w_bar < min_pixels:
    beta = math.sqrt(min_pixels / (n * height * width))
    h_bar = math.ceil(height * beta / factor) * factor
    w_bar = math.ceil(width * beta / factor) * factor
  return h_bar, w_bar


@functools.lru_cache(maxsize=256)
def _resize_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Antialiased bicubic (a = -0.5) taps in torch's uint8 fixed point.

  Returns (source index [out, K], int32 weight [out, K], precision bits), as
  `_compute_index_ranges_int16_weights` in PyTorch's UpSampleKernel builds them.
  """
  scale = in_size / out_size
  support = 2.0 * max(scale, 1.0)
  inv = 1.0 / max(scale, 1.0)
  rows = []
  for i in range(out_size):
    center = scale * (i + 0.5)
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), in_size)
    x = np.abs((np.arange(lo, hi) - center + 0.5) * inv)
    w = np.where(
      x < 1.0,
      (1.5 * x - 2.5) * x * x + 1.0,
      np.where(x < 2.0, ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0, 0.0),
    )
    total = w.sum()
    rows.append((lo, w / total if total != 0 else w))
  k = max(len(w) for _, w in rows)
  w_max = max(w.max() for _, w in rows)
  precision = 0
  while precision < 22 and int(0.5 + w_max * (1 << (precision + 1))) < (1 << 15):
    precision += 1
  index = np.zeros((out_size, k), np.int64)
  weight = np.zeros((out_size, k), np.int32)
  for i, (lo, w) in enumerate(rows):
    v = w * (1 << precision)
    index[i, : len(w)] = np.arange(lo, lo + len(w))
    index[i, len(w) :] = lo  # padded taps carry weight 0
    weight[i, : len(w)] = np.where(v < 0, (v - 0.5).astype(np.int64), (v + 0.5).astype(np.int64))
  return index, weight, precision


def _move_axis(x: np.ndarray, src: int, dst: int) -> np.ndarray:
  """Contiguous uint8 [..., C] copy with axis `src` moved to `dst`.

  Moves whole pixels (C bytes) at a time, twice as fast as moving uint8s.
  """
  pixel = np.dtype((np.void, x.shape[-1]))
  moved = np.moveaxis(np.ascontiguousarray(x).view(pixel)[..., 0], src, dst)
  return np.ascontiguousarray(moved).view(np.uint8).reshape(*moved.shape, x.shape[-1])


def _resize_axis(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
  """One pass along `axis` (not the channel axis) of uint8 [..., C].

  out = clip((sum_k w_k * x_k + half) >> precision, 0, 255), computed for a few
  output lines at a time with the resized axis first, so every tap reads
  contiguous slabs and the int32 temporaries (about 256 KiB) stay in cache.
  """
  index, weight, precision = _resize_taps(x.shape[axis], out_size)
  lines = _move_axis(x, axis, 0)
  flat = lines.reshape(len(lines), -1)
  rows = max(1, min(16, (1 << 16) // flat.shape[1]))
  out = np.empty((out_size, flat.shape[1]), np.uint8)
  acc = np.empty((rows, flat.shape[1]), np.int32)
  tmp = np.empty_like(acc)
  for j0 in range(0, out_size, rows):
    j1 = min(j0 + rows, out_size)
    a, t = acc[: j1 - j0], tmp[: j1 - j0]
    a.fill(1 << (precision - 1))  # rounds the final shift
    for k in range(index.shape[1]):
      np.multiply(flat[index[j0:j1, k]], weight[j0:j1, k, None], out=t, dtype=np.int32)
      a += t
    a >>= precision
    np.clip(a, 0, 255, out=a)
    out[j0:j1] = a
  return _move_axis(out.reshape(out_size, *lines.shape[1:]), 0, axis)


def resize_frames(
  frames: np.ndarray, height: int, width: int, backend: str = "torch"
) -> np.ndarray:
  """Antialiased bicubic resize of uint8 [T, H, W, C] frames (no-op if same size).

  backend 'torch' reproduces torchvision's uint8 CPU path bit for bit (what HF's
  Qwen3-VL processors run on x86): int16 fixed-point taps, horizontal pass first
  with a uint8 result, then the vertical pass. backend 'pil' (Pillow, per frame)
  runs at about the same speed; it is the same filter, but single pixels at saturated
  edges can be 10+ levels off (mean error below half a level in our tests).
  """
  if frames.shape[1:3] == (height, width):
    return frames
  if backend == "pil":
    out = np.empty((len(frames), height, width, frames.shape[3]), np.uint8)
    for i, f in enumerate(frames):
      out[i] = np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC))
    return out
  if backend != "torch":
    raise ValueError(f"resize backend must be 'torch' or 'pil', got {backend!r}")
  if frames.shape[2] != width:
    frames = _resize_axis(frames, 2, width)
  if frames.shape[1] != height:
    frames = _resize_axis(frames, 1, height)
  return frames


def patchify(frames: np.ndarray, cfg: ProcessorConfig) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [T, H, W, C] (T even, H, W multiples of factor) -> normalised rows and grid.

  Rows are in (t group, block row, block col, row in block, col in block) order,
  features in (C, T, P, P) order, as Qwen3VLVideoProcessor.patchify makes them.
  """
  t, h, w, c = frames.shape
  tp, p, m = cfg.temporal_patch_size, cfg.patch_size, cfg.merge_size
  gt, gh, gw = t // tp, h // p, w // p
  x = frames.reshape(gt, tp, gh // m, m, p, gw // m, m, p, c)
  x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7).reshape(gt * gh * gw, c * tp * p * p)
  # Transposing uint8 first moves 4x fewer bytes; the float maths is HF's, bit for bit.
  pixel_values = x.astype(np.float32)
  pixel_values -= np.float32(127.5)  # in place: these arrays reach hundreds of MB
  pixel_values /= np.float32(127.5)
  return pixel_values, np.array([[gt, gh, gw]], np.int64)


def group_timestamps(
  frame_indices: np.ndarray, fps: float, temporal_patch_size: int = 2
) -> list[str]:
  """ "<t seconds>" per temporal group: mean time of the group's first and last frame."""
  idx = [int(i) for i in frame_indices]
  idx += [idx[-1]] * (-len(idx) % temporal_patch_size)
  ts = [i / fps for i in idx]
  groups = range(0, len(ts), temporal_patch_size)
  return [f"<{(ts[g] + ts[g + temporal_patch_size - 1]) / 2:.1f} seconds>" for g in groups]


def process_video_frames(
  frames: np.ndarray, meta: VideoMeta, cfg: ProcessorConfig = ProcessorConfig()
) -> VisionInputs:
  """Resizes, normalises and patchifies uint8 [T, H, W, 3] frames of one video.

  `meta.frame_indices` and `meta.fps` give the timestamps; a reversed clip keeps
  the original meta, so its timestamps still increase (METHOD.md section 4).
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  if len(meta.frame_indices) != len(frames):
    raise ValueError(f"{len(frames)} frames but {len(meta.frame_indices)} frame indices")
  h, w = smart_resize(
    frames.shape[1],
    frames.shape[2],
    factor=cfg.factor,
    min_pixels=cfg.video_min_pixels,
    max_pixels=cfg.video_max_pixels,
    num_frames=len(frames),
    temporal_factor=cfg.temporal_patch_size,
  )
  if cfg.video_frame_max_pixels is not None and h * w > cfg.video_frame_max_pixels:
    h, w = smart_resize(
      h, w, factor=cfg.factor, min_pixels=0, max_pixels=cfg.video_frame_max_pixels
    )
  frames = resize_frames(frames, h, w, cfg.resize_backend)
  if pad := -len(frames) % cfg.temporal_patch_size:  # repeat the last frame
    frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
  pixel_values, grid = patchify(frames, cfg)
  timestamps = group_timestamps(meta.frame_indices, meta.fps, cfg.temporal_patch_size)
  return VisionInputs(pixel_values, grid, timestamps, "video", cfg.merge_size)


def process_image(image: np.ndarray, cfg: ProcessorConfig = ProcessorConfig()) -> VisionInputs:
  """Processes one uint8 [H, W, 3] image: the frame is duplicated to fill T = 2."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  h, w = smart_resize(
    image.shape[0],
    image.shape[1],
    factor=cfg.factor,
    min_pixels=cfg.image_min_pixels,
    max_pixels=cfg.image_max_pixels,
  )
  frame = resize_frames(image[None], h, w, cfg.resize_backend)
  pixel_values, grid = patchify(np.repeat(frame, cfg.temporal_patch_size, axis=0), cfg)
  return VisionInputs(pixel_values, grid, [], "image", cfg.merge_size)


def _placeholder_text(vision: VisionInputs) -> str:
  """The 4.57 expansion with ONE pad per group; pads are multiplied after tokenising."""
  if vision.kind == "image":
    return VISION_START + IMAGE_PAD + VISION_END
  return "".join(f"{ts}{VISION_START}{VIDEO_PAD}{VISION_END}" for ts in vision.timestamps)


def tokenize_prompt(
  prompt_text: str, vision_inputs: VisionInputs | Sequence[VisionInputs], tokenizer
) -> dict[str, np.ndarray]:
  """Expands the vision placeholders (4.57 layout) and tokenises the prompt.

  Each template wrapper `<|vision_start|><|video_pad|><|vision_end|>` (or image)
  in `prompt_text` is matched, in order, with one entry of `vision_inputs`. The
  text is tokenised with one pad per group and the pad ids are then repeated:
  pads are special tokens, so this equals tokenising the fully expanded text.

  Returns:
    input_ids, attention_mask, mm_token_type_ids (1 image pad, 2 video pad,
    else 0): int32 [L].
  """
  visions = [vision_inputs] if isinstance(vision_inputs, VisionInputs) else list(vision_inputs)
  pieces, rest, counts = [], prompt_text, []
  for v in visions:
    wrapper = prompts.VISION_WRAPPERS[v.kind]
    head, sep, rest = rest.partition(wrapper)
    if not sep:
      raise ValueError(f"prompt has fewer {v.kind} placeholders {wrapper!r} than vision inputs")
    pieces += [head, _placeholder_text(v)]
    n_groups = 1 if v.kind == "image" else int(v.grid_thw[0, 0])
    counts += [v.tokens_per_group] * n_groups
  if any(w in rest for w in prompts.VISION_WRAPPERS.values()):
    raise ValueError("prompt has more vision placeholders than vision inputs")
  ids = np.asarray(tokenizer("".join(pieces) + rest, add_special_tokens=False)["input_ids"])
  image_id, video_id = tokenizer.convert_tokens_to_ids([IMAGE_PAD, VIDEO_PAD])
  is_pad = (ids == image_id) | (ids == video_id)
  if is_pad.sum() != len(counts):
    raise ValueError(f"prompt text holds {is_pad.sum() - len(counts)} stray pad tokens")
  repeats = np.ones(len(ids), np.int64)
  repeats[is_pad] = counts
  ids = np.repeat(ids, repeats).astype(np.int32)
  mm = np.where(ids == image_id, 1, np.where(ids == video_id, 2, 0)).astype(np.int32)
  return {"input_ids": ids, "attention_mask": np.ones_like(ids), "mm_token_type_ids": mm}


def process_example(
  example: Example,
  tokenizer,
  cfg: ProcessorConfig = ProcessorConfig(),
  frames: np.ndarray | None = None,
  meta: VideoMeta | None = None,
) -> dict[str, np.ndarray]:
  """Model inputs for one example; decodes its video unless frames are given.

  Returns:
    input_ids, attention_mask, mm_token_type_ids (int32 [L]),
    pixel_values_videos (float32 [N, 1536]), video_grid_thw (int64 [1, 3]).
  """
  if frames is None:
    frames, meta = decode_video(
      example.video,
      fps=cfg.fps,
      min_frames=cfg.min_frames,
      max_frames=cfg.max_frames,
      start=example.start,
      end=example.end,
    )
  elif meta is None:
    raise ValueError("frames given without their VideoMeta")
  vision = process_video_frames(frames, meta, cfg)
  text = prompts.prompt_text(
    example.question,
    example.options,
    add_null_option=cfg.add_null_option,
    instruction=cfg.instruction,
  )
  out = tokenize_prompt(text, vision, tokenizer)
  out["pixel_values_videos"] = vision.pixel_values
  out["video_grid_thw"] = vision.grid_thw
  return out
