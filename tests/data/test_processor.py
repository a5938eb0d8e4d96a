"""Parity of the numpy Qwen3-VL processor with transformers 5.23's Qwen3VLProcessor.

The reference processor is built as in reference/qwen3vl.md Appendix A (hub
settings) around our word tokenizer. Both sides get the same decoded frames and
metadata (do_sample_frames=False), so only the processing is compared.
"""

import numpy as np
import pytest

from crpo_jax.data import prompts
from crpo_jax.data.processor import (
  ProcessorConfig,
  group_timestamps,
  process_example,
  process_image,
  process_video_frames,
  resize_frames,
  smart_resize,
  tokenize_prompt,
)
from crpo_jax.data.records import Example
from crpo_jax.data.tokenizer import build_word_tokenizer, load_tokenizer
from crpo_jax.data.video import VideoMeta, decode_video
from tests.data import hf_reference, media

QUESTION = "Which way does the square move?"
OPTIONS = ("left", "right", "up", "down")
ONE_LEVEL = 1 / 127.5 + 1e-6


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  out = tmp_path_factory.mktemp("tok")
  return load_tokenizer(build_word_tokenizer([QUESTION, *OPTIONS], out))


def _torch_uint8_fast_path() -> bool:
  """Our resize copies torchvision's x86 uint8 kernel exactly; elsewhere (no AVX2)
  torch takes another code path and the contract is one uint8 level."""
  import torch

  return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _hf_layout_as_ours(
  ids: np.ndarray, mm: np.ndarray, start_id: int, end_id: int, n_ours: int
) -> tuple[np.ndarray, np.ndarray]:
  """HF's input_ids and mm_token_type_ids in the layout we produce.

  transformers 5.0-5.24 keep the template's vision_start ... vision_end around
  the per-group expansion (reference section 7.1): two ids more than ours, and
  dropping the first start and the last end of a one-video prompt gives the 4.57
  layout that we produce. From 5.25 the expansion replaces the wrapper, so the
  ids are compared as they come. Any other length difference is a mismatch.
  """
  if len(ids) == n_ours:
    return ids, mm
  assert len(ids) == n_ours + 2, (len(ids), n_ours)
  first_start = int(np.argmax(ids == start_id))
  last_end = len(ids) - 1 - int(np.argmax(ids[::-1] == end_id))
  assert ids[first_start + 1] != start_id  # next comes the first timestamp text
  assert ids[last_end - 1] == end_id  # the last group's own vision_end
  return np.delete(ids, [first_start, last_end]), np.delete(mm, [first_start, last_end])


def _compare_video(tokenizer, frames, meta, cfg, *, expect_exact: bool):
  hf = hf_reference.hf_processor(tokenizer, cfg)
  text = prompts.prompt_text(QUESTION, OPTIONS, add_null_option=True)
  ref = hf(
    text=[text],
    videos=[frames],
    video_metadata=[
      {
        "total_num_frames": meta.total_frames,
        "fps": meta.fps,
        "frames_indices": meta.frame_indices.tolist(),
        "duration": meta.duration,
      }
    ],
    do_sample_frames=False,
    cap_pixels_per_frame=False,
    return_tensors="np",
  )
  vision = process_video_frames(frames, meta, cfg)
  ours = tokenize_prompt(text, vision, tokenizer)
  np.testing.assert_array_equal(vision.grid_thw, ref["video_grid_thw"])
  ref_pv = np.asarray(ref["pixel_values_videos"], np.float32)
  assert vision.pixel_values.shape == ref_pv.shape and vision.pixel_values.dtype == np.float32
  if expect_exact or _torch_uint8_fast_path():
    np.testing.assert_array_equal(vision.pixel_values, ref_pv)
  else:
    assert np.abs(vision.pixel_values - ref_pv).max() <= ONE_LEVEL
  start_id, end_id = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"])
  ref_ids, ref_mm = _hf_layout_as_ours(
    np.asarray(ref["input_ids"][0]),
    np.asarray(ref["mm_token_type_ids"][0]),
    start_id,
    end_id,
    len(ours["input_ids"]),
  )
  np.testing.assert_array_equal(ours["input_ids"], ref_ids)
  np.testing.assert_array_equal(ours["mm_token_type_ids"], ref_mm)
  np.testing.assert_array_equal(ours["attention_mask"], np.ones(len(ours["input_ids"])))
  assert (ours["input_ids"] == 151656).sum() == len(ref_pv) // 4
  return vision, ours


def _meta(n, fps=4.0, step=2):
  idx = np.arange(n) * step
  return VideoMeta(fps=fps, total_frames=n * step, frame_indices=idx, duration=n * step / fps)


def test_parity_decoded_video_no_resize(tokenizer, tmp_path):
  path = media.write_pattern_video(tmp_path / "a.mp4", 16, 64, 96, fps=4)
  frames, meta = decode_video(path)
  vision, _ours = _compare_video(tokenizer, frames, meta, ProcessorConfig(), expect_exact=True)
  assert vision.timestamps == ["<0.2 seconds>", "<1.2 seconds>", "<2.5 seconds>", "<3.5 seconds>"]
  assert vision.grid_thw.tolist() == [[4, 4, 6]]


@pytest.mark.parametrize(
  "shape,max_pixels",
  [
    ((8, 50, 70), 25165824),  # rounded up to 64x64: upsampling
    ((7, 90, 128), 25165824),  # odd T: the last frame is repeated
    ((6, 20, 40), 25165824),  # a side under 32 is scaled up first
    ((8, 128, 160), 8 * 64 * 96),  # total-pixel budget forces a downscale
  ],
)
def test_parity_with_resize(tokenizer, shape, max_pixels):
  frames = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
  cfg = ProcessorConfig(video_max_pixels=max_pixels)
  vision, _ = _compare_video(tokenizer, frames, _meta(shape[0]), cfg, expect_exact=False)
  h, w = smart_resize(
    shape[1], shape[2], min_pixels=4096, max_pixels=max_pixels, num_frames=shape[0]
  )
  assert (h, w) != shape[1:] and vision.grid_thw.tolist() == [
    [(shape[0] + 1) // 2, h // 16, w // 16]
  ]


def test_image_parity(tokenizer):
  from transformers import Qwen2VLImageProcessor

  cfg = ProcessorConfig()
  image = np.random.default_rng(1).integers(0, 256, (80, 120, 3), dtype=np.uint8)
  ref = Qwen2VLImageProcessor(
    patch_size=16,
    temporal_patch_size=2,
    merge_size=2,
    image_mean=[0.5] * 3,
    image_std=[0.5] * 3,
    size={"shortest_edge": cfg.image_min_pixels, "longest_edge": cfg.image_max_pixels},
  )(images=[image], return_tensors="np")
  ours = process_image(image, cfg)
  np.testing.assert_array_equal(ours.grid_thw, ref["image_grid_thw"])
  assert np.abs(ours.pixel_values - ref["pixel_values"]).max() <= ONE_LEVEL
  if _torch_uint8_fast_path():
    np.testing.assert_array_equal(ours.pixel_values, ref["pixel_values"])
  text = prompts.prompt_text("What colour?", ["red", "blue"], media="image")
  ids = tokenize_prompt(text, ours, tokenizer)
  assert (ids["input_ids"] == 151655).sum() == ours.num_tokens == len(ref["pixel_values"]) // 4
  assert (ids["mm_token_type_ids"] == 1).sum() == ours.num_tokens


@pytest.mark.parametrize("noise", [True, False])
def test_resize_backends_against_torchvision(noise):
  import torch
  from torchvision.transforms.v2 import functional as tvF

  if noise:
    frames = np.random.default_rng(3).integers(0, 256, (3, 37, 54, 3), dtype=np.uint8)
  else:
    frames = media.pattern_frames(3, 37, 54)
  for h, w in [(64, 32), (32, 96), (20, 30)]:
    ref = tvF.resize(  # contiguous NCHW, as HF passes it (channels-last takes another path)
      torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(),
      [h, w],
      interpolation=tvF.InterpolationMode.BICUBIC,
      antialias=True,
    )
    ref = ref.permute(0, 2, 3, 1).numpy().astype(int)
    # Pillow is the same filter but may run the passes in the other order, so
    # single pixels at clipped edges can be 10+ levels off: only the mean is close.
    pil = resize_frames(frames, h, w, "pil").astype(int)
    assert np.abs(pil - ref).mean() < 0.5
    ours = resize_frames(frames, h, w).astype(int)
    if _torch_uint8_fast_path():
      np.testing.assert_array_equal(ours, ref)
    else:
      assert np.abs(ours - ref).max() <= 1


def test_timestamps_and_smart_resize_rules():
  # Reference section 5.2.6: 8 frames at 4 fps -> indices [0, 2, 5, 7].
  assert group_timestamps(np.array([0, 2, 5, 7]), 4.0) == ["<0.2 seconds>", "<1.5 seconds>"]
  assert group_timestamps(np.array([0, 4, 8]), 2.0) == ["<1.0 seconds>", "<4.0 seconds>"]
  assert smart_resize(80, 120, min_pixels=65536, max_pixels=16777216) == (224, 320)
  assert smart_resize(80, 96, min_pixels=0, max_pixels=1 << 30) == (64, 96)  # 2.5 -> 2
  with pytest.raises(ValueError, match="at least 2"):
    smart_resize(64, 64, min_pixels=4096, max_pixels=1 << 30, num_frames=1)


def test_tokenize_prompt_errors(tokenizer):
  frames = np.zeros((4, 64, 64, 3), np.uint8)
  vision = process_video_frames(frames, _meta(4))
  with pytest.raises(ValueError, match="fewer video placeholders"):
    tokenize_prompt("<|im_start|>user\nhi<|im_end|>\n", vision, tokenizer)
  text = prompts.prompt_text("q", ["a", "b"])
  with pytest.raises(ValueError, match="more vision placeholders"):
    tokenize_prompt(text + text, vision, tokenizer)
  with pytest.raises(ValueError, match="frame indices"):
    process_video_frames(frames, _meta(3))


def test_process_example_decodes_and_appends_null_option(tokenizer, tmp_path):
  path = media.write_pattern_video(tmp_path / "a.mp4", 16, 64, 96, fps=4)
  ex = Example("e1", path, QUESTION, OPTIONS, "B", start=1.0, end=3.0)
  out = process_example(ex, tokenizer)
  assert set(out) == {
    "input_ids",
    "attention_mask",
    "mm_token_type_ids",
    "pixel_values_videos",
    "video_grid_thw",
  }
  assert out["video_grid_thw"].tolist() == [[2, 4, 6]]  # window frames 4..12 -> 4 samples
  assert out["pixel_values_videos"].shape == (48, 1536)
  text = tokenizer.decode(out["input_ids"][out["mm_token_type_ids"] == 0])
  assert "E. None of the above" in text and "<1.4 seconds>" in text
  assert text.endswith("<|im_start|>assistant\n")
  frames, meta = decode_video(path, start=1.0, end=3.0)
  again = process_example(ex, tokenizer, frames=frames[::-1].copy(), meta=meta)
  np.testing.assert_array_equal(again["input_ids"], out["input_ids"])  # reversal: same prompt


def test_frame_cap_bounds_short_clips_and_leaves_full_clips_alone():
  """The budget rule bounds T*H*W, so a 4-frame clip of a 16-frame budget gets frames
  4x as large; `video_frame_max_pixels` caps one frame (what per-segment vision
  attention relies on). A full-length clip is resized by HF's rule alone."""
  budget = 16 * 64 * 64  # 16 frames of 64x64
  rng = np.random.default_rng(0)
  short = rng.integers(0, 256, (4, 240, 320, 3), dtype=np.uint8)
  free = process_video_frames(short, _meta(4), ProcessorConfig(video_max_pixels=budget))
  t, h, w = free.grid_thw.tolist()[0]
  assert h * w * 16 * 16 > 64 * 64  # the rule alone gives a frame over the cap
  capped_cfg = ProcessorConfig(video_max_pixels=budget, video_frame_max_pixels=64 * 64)
  t, h, w = process_video_frames(short, _meta(4), capped_cfg).grid_thw.tolist()[0]
  assert t == 2 and h * w * 16 * 16 <= 64 * 64 and h % 2 == 0 and w % 2 == 0
  full = rng.integers(0, 256, (16, 240, 320, 3), dtype=np.uint8)
  a = process_video_frames(full, _meta(16), ProcessorConfig(video_max_pixels=budget))
  b = process_video_frames(full, _meta(16), capped_cfg)
  assert a.grid_thw.tolist() == b.grid_thw.tolist()
  np.testing.assert_array_equal(a.pixel_values, b.pixel_values)
