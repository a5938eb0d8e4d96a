"""Forward throughput of crpo_jax's Qwen3-VL, side by side with transformers.

CPU mode (default): a small config (text hidden 512, 4 layers; vision hidden 256,
4 blocks) with a video in every prompt. transformers builds and saves a random
model, crpo_jax loads that directory with `load_hf`, so both run the same weights
on the same inputs; logits are compared, then each is timed (jit float32 against
torch float32, no KV cache, full logits).

  .venv/bin/python benchmarks/model_forward.py --batch 2 --frames 8 --iters 5

GPU mode: bf16 forward MFU of the 4B and 8B configs with random weights (no
transformers), model FLOPs counted analytically from the config (`forward_flops`).

  python benchmarks/model_forward.py --gpu --batch 8 --frames 16

Results are recorded in benchmarks/RESULTS.md ('## Model forward').
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import types

import numpy as np

# Peak dense bf16 FLOP/s per chip, by jax `device_kind` substring (vendor data sheets).
PEAK_BF16 = {
  "H100": 989e12,
  "H200": 989e12,
  "A100": 312e12,
  "TPU v5p": 459e12,
  "TPU v5 lite": 197e12,
}


def small_config():
  from crpo_jax.model.config import Qwen3VLConfig, TextConfig, VisionConfig

  text = TextConfig(
    hidden_size=512,
    intermediate_size=1536,
    num_layers=4,
    num_heads=8,
    num_kv_heads=4,
    head_dim=64,
    mrope_section=(16, 8, 8),
    max_position_embeddings=32768,
  )
  vision = VisionConfig(
    depth=4,
    hidden_size=256,
    intermediate_size=1024,
    num_heads=4,
    out_hidden_size=512,
    deepstack_visual_indexes=(0, 1, 2),
  )
  return Qwen3VLConfig(text=text, vision=vision)


def video_batch(cfg, batch: int, frames: int, height: int, width: int, seed: int = 0) -> dict:
  """Processor-style inputs: per row, a prompt with one video (4.57 timestamp layout).

  `frames` counts sampled frames (two per temporal group); height/width in patches.
  """
  rng = np.random.default_rng(seed)
  m = cfg.vision.spatial_merge_size
  grid = (frames // cfg.vision.temporal_patch_size, height, width)
  per_group = height * width // (m * m)
  rows = []
  for _ in range(batch):
    ids = [151644, 872, 198]  # <|im_start|> user \n
    for _ in range(grid[0]):
      ids += rng.integers(10, 5000, size=5).tolist()  # "<1.5 seconds>"
      ids += (
        [cfg.vision_start_token_id] + [cfg.video_token_id] * per_group + [cfg.vision_end_token_id]
      )
    ids += rng.integers(10, 5000, size=24).tolist() + [151645, 198, 151644, 77091, 198]
    rows.append(ids)
  ids = np.asarray(rows, np.int64)
  n = batch * grid[0] * height * width
  return {
    "input_ids": ids,
    "attention_mask": np.ones_like(ids),
    "mm_token_type_ids": np.where(ids == cfg.video_token_id, 2, 0).astype(np.int64),
    "pixel_values_videos": rng.uniform(-1, 1, size=(n, cfg.vision.patch_dim)).astype(np.float32),
    "video_grid_thw": np.asarray([grid] * batch, np.int64),
  }


def forward_flops(cfg, inputs: dict) -> float:
  """Model FLOPs of one forward (2 per multiply-add; attention counted causal/segment)."""
  t, v = cfg.text, cfg.vision
  b, length = inputs["input_ids"].shape
  h, hd = t.hidden_size, t.head_dim
  layer = h * t.num_heads * hd * 2 + 2 * h * t.num_kv_heads * hd + 3 * h * t.intermediate_size
  text = 2 * b * length * (t.num_layers * layer + h * t.vocab_size)
  text += 2 * 2 * t.num_layers * b * t.num_heads * hd * length * (length + 1) / 2
  grid = np.asarray(inputs.get("video_grid_thw", np.zeros((0, 3))))
  patches = int(grid.prod(-1).sum())
  d, mw = v.hidden_size, v.hidden_size * v.spatial_merge_size**2
  block = 4 * d * d + 2 * d * v.intermediate_size
  vision = 2 * patches * (v.patch_dim * d + v.depth * block)
  vision += 2 * 2 * v.depth * d * sum(int(g[0]) * int(g[1] * g[2]) ** 2 for g in grid)
  merged = patches // v.spatial_merge_size**2
  vision += 2 * merged * (1 + len(v.deepstack_visual_indexes)) * (mw * mw + mw * v.out_hidden_size)
  return float(text + vision)


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def _time(fn, iters: int) -> list[float]:
  out = []
  for _ in range(iters):
    t0 = time.perf_counter()
    fn()
    out.append(time.perf_counter() - t0)
  return out


def jax_forward(model, inputs):
  """A jitted pure function of (state, batch), as training and sampling use it."""
  import jax
  from flax import nnx

  graphdef, state = nnx.split(model)
  fwd = jax.jit(lambda state, batch: nnx.merge(graphdef, state)(**batch))
  batch = {k: jax.numpy.asarray(v) for k, v in inputs.items() if k != "mm_token_type_ids"}
  t0 = time.perf_counter()
  logits = jax.block_until_ready(fwd(state, batch))
  compile_s = time.perf_counter() - t0
  return (lambda: jax.block_until_ready(fwd(state, batch))), logits, compile_s


def run_cpu(args) -> None:
  import jax.numpy as jnp
  import torch

  if torch.version.cuda is None:  # CPU torch + CUDA-linked torchvision: see tests/conftest.py
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
      sys.modules.setdefault(name, types.ModuleType(name))
  import transformers

  from crpo_jax.model.hf_io import load_hf
  from tests.model.hf_reference import build_hf_model, to_torch

  cfg = small_config()
  with tempfile.TemporaryDirectory() as d:
    build_hf_model(cfg, seed=0).save_pretrained(d)
    ours = load_hf(d, dtype=jnp.float32)
    hf = transformers.Qwen3VLForConditionalGeneration.from_pretrained(
      d, dtype=torch.float32, attn_implementation=args.hf_attn
    ).eval()
  inputs = video_batch(cfg, args.batch, args.frames, args.height, args.width)
  tokens = inputs["input_ids"].size
  patches = int(inputs["video_grid_thw"].prod(-1).sum())

  run_ours, logits, compile_s = jax_forward(ours, inputs)
  t_inputs = to_torch(inputs)
  with torch.no_grad():
    want = hf(**t_inputs, use_cache=False).logits.float().numpy()
    diff = float(np.abs(np.asarray(logits) - want).max())
    torch_times = _time(lambda: hf(**t_inputs, use_cache=False), args.iters)
  jax_times = _time(run_ours, args.iters)

  n_params = sum(p.numel() for p in hf.parameters())
  print(
    f"config: text {cfg.text.hidden_size}x{cfg.text.num_layers} layers, vision "
    f"{cfg.vision.hidden_size}x{cfg.vision.depth}, {n_params / 1e6:.1f} M params (vocab {cfg.text.vocab_size})"
  )
  print(
    f"inputs: batch {args.batch}, {tokens // args.batch} tokens/row, video grid "
    f"{tuple(int(x) for x in inputs['video_grid_thw'][0])} ({patches} patches in all); float32; {args.iters} timed iters"
  )
  print(
    f"machine: {_cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
    f"torch {torch.__version__} threads {torch.get_num_threads()}; max |logit diff| {diff:.2e}"
  )
  print("\n| implementation | median forward (s) | tokens/s | patches/s | compile (s) |")
  print("|---|---|---|---|---|")
  for name, times, comp in (
    ("crpo_jax (jit)", jax_times, f"{compile_s:.1f}"),
    (f"transformers ({args.hf_attn})", torch_times, "-"),
  ):
    med = statistics.median(times)
    print(f"| {name} | {med:.3f} | {tokens / med:,.0f} | {patches / med:,.0f} | {comp} |")


def run_gpu(args) -> None:
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from crpo_jax.model.config import get_preset
  from crpo_jax.model.vlm import Qwen3VL

  kind = jax.devices()[0].device_kind
  peak = (
    args.peak_tflops * 1e12
    if args.peak_tflops
    else next((v for k, v in PEAK_BF16.items() if k in kind), None)
  )
  if peak is None:
    raise SystemExit(
      f"model_forward.py: unknown peak bf16 FLOP/s for device {kind!r}; pass --peak-tflops"
    )
  print(
    f"device: {kind} x{jax.device_count()} (peak {peak / 1e12:.0f} TFLOP/s bf16 per chip); "
    f"batch {args.batch}, {args.frames} frames {args.height}x{args.width} patches"
  )
  print("\n| config | params (B) | tokens | median forward (s) | tokens/s | TFLOP/s | MFU |")
  print("|---|---|---|---|---|---|---|")
  for name in args.presets.split(","):
    cfg = get_preset(name)
    inputs = video_batch(cfg, args.batch, args.frames, args.height, args.width)

    @nnx.jit
    def init(cfg=cfg):
      return Qwen3VL(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))

    model = init()
    if args.vision_window:
      # Static module attribute: each query chunk then scores only the keys of its own
      # frame instead of all P rows (exact; see vision.segment_attention).
      model.visual.blocks.attention_window = args.height * args.width
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    run, _, _ = jax_forward(model, inputs)
    med = statistics.median(_time(run, args.iters))
    flops = forward_flops(cfg, inputs)
    tokens = inputs["input_ids"].size
    mfu = flops / med / (peak * jax.device_count())
    print(
      f"| {name} | {n_params / 1e9:.3f} | {tokens} | {med:.4f} | {tokens / med:,.0f} | "
      f"{flops / med / 1e12:.1f} | {100 * mfu:.1f}% |"
    )
    del model, run


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "--gpu", action="store_true", help="bf16 MFU of --presets with random weights"
  )
  parser.add_argument("--presets", default="qwen3vl_4b,qwen3vl_8b", help="--gpu mode configs")
  parser.add_argument(
    "--peak-tflops", type=float, default=None, help="override peak bf16 TFLOP/s per chip"
  )
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--frames", type=int, default=8, help="sampled video frames per row")
  parser.add_argument("--height", type=int, default=16, help="video height in patches")
  parser.add_argument("--width", type=int, default=16, help="video width in patches")
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument(
    "--vision-window", action="store_true", help="--gpu: vision attention keys windowed to h*w"
  )
  parser.add_argument("--hf-attn", default="sdpa", choices=("sdpa", "eager"))
  args = parser.parse_args(argv)
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # repo root
  if args.gpu:
    run_gpu(args)
  else:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    run_cpu(args)


if __name__ == "__main__":
  main()
