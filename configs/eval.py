"""Benchmark evaluation of a Qwen3-VL policy (crpo_jax/eval).

Launch (greedy generation, resumable; writes predictions.jsonl, results.json and
results.md under output_dir):

  python -m crpo_jax.evaluate --config=configs/eval.py \
    --config.benchmark=timeblind --config.data=/data/TimeBlind/data.jsonl \
    --config.model=/ckpt/Qwen3-VL-2B-Instruct

Re-score an existing predictions file without a model (after an extraction fix):

  python -m crpo_jax.evaluate --config=configs/eval.py \
    --config.benchmark=timeblind --config.predictions=eval_results/timeblind/x/predictions.jsonl

`get_config("cpu")` is the small variant for a CPU smoke run (few items, short
answers, float32).
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Eval defaults; `arg="cpu"` gives the small CPU variant."""
  c = ml_collections.ConfigDict()
  c.benchmark = "dybench"  # dybench | timeblind | tempcompass | mvbench | videomme
  c.data = ""  # benchmark file or folder in its released format (eval/loaders.py)
  c.video_dir = ""  # where the videos live, if not where the release puts them
  c.model = ""  # HF checkpoint dir, or a training workdir holding an HF export
  c.predictions = ""  # re-score this predictions.jsonl instead of generating
  c.output_dir = ""  # "" = next to `predictions`, else eval_results/<benchmark>/<model>
  c.limit = 0  # evaluate only the first N items (0 = all); for smoke runs
  c.baselines = "constant,blind"  # sanity baselines: constant answers, blank video

  # Prompt and extraction.
  c.null_option = True  # DyBench: show "None of the above" last, as in training
  c.lenient = False  # DyBench: with no <answer> tag, read the whole output (Video-R1)
  c.strip_think = True  # official benchmarks: also report a <think>-stripped column (ours)

  # Generation: greedy through crpo_jax's sampler.
  c.batch_size = 8  # prompts per generate call, all devices together
  c.max_new_tokens = 1024  # answer budget (Video-R1 eval: 1024)
  c.dtype = "bfloat16"  # compute and KV-cache dtype

  # Video frames (Qwen3-VL defaults, capped like training; reference 5.7).
  # "official": MVBench and TempCompass use their official frame rule instead of
  # fps/min_frames/max_frames (and TempCompass its max_pixels); "config": these.
  c.frames = "official"
  c.segments = 0  # if > 0, VideoChat2's placement: middles of this many equal parts
  c.fps = 2.0  # sampling rate before the frame cap
  c.min_frames = 4  # fewest frames per clip
  c.max_frames = 16  # most frames per clip (Video-R1 / MVBench official: 16)
  c.max_pixels = 128 * 32 * 32  # pixels per frame (~128 merged tokens)

  # Device mesh for generation; rows shard over data x fsdp.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1 takes every device: evaluation is data-parallel
  c.mesh.fsdp = 1  # parameter sharding, for models too big for one device
  c.mesh.tensor = 1  # tensor parallelism

  if arg == "cpu":
    c.limit = 8
    c.batch_size = 2
    c.max_new_tokens = 32
    c.dtype = "float32"
    c.frames = "config"
    c.max_frames = 4
    c.max_pixels = 64 * 32 * 32
  elif arg:
    raise ValueError(f"configs/eval.py: unknown variant {arg!r}; expected 'cpu' or none")
  return c
