"""Decode throughput of crpo_jax's sampler, side by side with transformers' generate.

CPU mode (default): transformers builds and saves a random Qwen3-VL (the 'tiny'
preset or a 'small' text config), crpo_jax loads it with `load_hf`, and both
decode the same text prompts greedily in float32 with stopping disabled. Decode
tokens/s = B * (T - 1) / (time(T new tokens) - time(1 new token)), so prefill
and compilation are excluded on both sides. Greedy tokens are checked equal.

  .venv/bin/python benchmarks/sampler_decode.py --model tiny --batch 1,8 --new 32

With --groups G it instead times whole rollouts (JAX only): G samples per prompt
sharing one prefill against the same prompts copied G times.

  .venv/bin/python benchmarks/sampler_decode.py --model small --batch 2 --groups 8 \
      --prompt 512 --new 16

Both sides get the same CPU thread budget (--threads, default 1): on a shared
machine torch's spinning worker threads otherwise distort its numbers badly.

GPU mode: random-weight bf16 8B (text decoder only matters for decode), no
transformers. Besides tokens/s it reports the fraction of the HBM-bandwidth
roofline: each decode step must read every text weight once plus the whole KV
cache (this implementation attends over all static cache slots), so
roofline step time = (weight bytes + cache bytes) / peak HBM bandwidth.

  python benchmarks/sampler_decode.py --gpu --preset qwen3vl_8b --batch 16,64 --new 128

Results are recorded in benchmarks/RESULTS.md ('## Sampler decode').
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Peak HBM bandwidth in bytes/s by jax `device_kind` substring (vendor data sheets).
PEAK_HBM = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12, "TPU v5p": 2.76e12}


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
    depth=1,
    hidden_size=64,
    intermediate_size=64,
    num_heads=1,
    out_hidden_size=512,
    deepstack_visual_indexes=(0,),
  )
  return Qwen3VLConfig(text=text, vision=vision)


def text_batch(batch: int, prompt: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Left-padded text prompts of lengths prompt/2 .. prompt (ordinary word ids)."""
  rng = np.random.default_rng(seed)
  ids = np.full((batch, prompt), 151643, np.int64)
  mask = np.zeros((batch, prompt), np.int64)
  for b in range(batch):
    n = int(rng.integers(prompt // 2, prompt + 1))
    ids[b, prompt - n :] = rng.integers(10, 5000, size=n)
    mask[b, prompt - n :] = 1
  return {"input_ids": ids, "attention_mask": mask}


def _timed(fn, repeats: int) -> float:
  """Median wall time of `fn()` (which must block until its result is ready)."""
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _jax_sampler(model, batch, new: int, repeats: int):
  import jax
  from flax import nnx

  from crpo_jax import bucketing
  from crpo_jax.rl.sampler import SamplingConfig, make_sampler

  graphdef, state = nnx.split(model)
  padded = bucketing.pad_batch(batch, pad_id=model.config.pad_token_id)
  dtype = np.dtype(model.dtype).name if hasattr(model, "dtype") else "float32"
  never = (model.config.text.vocab_size + 7,)  # a stop id the model cannot emit
  outs, times = {}, {}
  for t in (1, new):
    cfg = SamplingConfig(max_new_tokens=t, eos_ids=never, cache_dtype=dtype)
    fn = make_sampler(graphdef, model.config, cfg)
    run = lambda fn=fn: jax.block_until_ready(fn(state, padded, jax.random.key(0)))
    times[t] = _timed(run, repeats)
    outs[t] = run()
  return outs[new], times


def group_sharing(model, args) -> None:
  """Whole rollout time: G samples per prompt sharing one prefill vs G copies of it."""
  import jax
  from flax import nnx

  from crpo_jax import bucketing
  from crpo_jax.rl.sampler import SamplingConfig, make_sampler

  graphdef, state = nnx.split(model)
  never = (model.config.text.vocab_size + 7,)
  batch = bucketing.pad_batch(text_batch(args.batch[0], args.prompt), pad_id=151643)
  copies = {k: np.repeat(v, args.groups, 0) for k, v in batch.items()}
  times = {}
  for name, g, b in (("shared", args.groups, batch), ("copied", 1, copies)):
    cfg = SamplingConfig(max_new_tokens=args.new, num_samples=g, temperature=1.0, eos_ids=never)
    fn = make_sampler(graphdef, model.config, cfg)
    times[name] = _timed(
      lambda fn=fn, b=b: jax.block_until_ready(fn(state, b, jax.random.key(0))), args.repeats
    )
  print(
    f"| {args.model} | {args.batch[0]} x G={args.groups} | {batch['input_ids'].shape[1]} | "
    f"{args.new} | {times['shared']:.3f} | {times['copied']:.3f} | "
    f"{times['copied'] / times['shared']:.2f}x |"
  )


def cpu(args) -> None:
  stub = "torchvision._meta_registrations", "torchvision._autograd_registrations"
  for name in stub:  # CPU torch + CUDA-linked torchvision wheel (tests/conftest.py)
    sys.modules.setdefault(name, types.ModuleType(name))
  import jax.numpy as jnp
  import torch
  import transformers

  from crpo_jax.model.config import get_preset
  from crpo_jax.model.hf_io import load_hf

  cfg = small_config() if args.model == "small" else get_preset(args.model)
  torch.manual_seed(0)
  hf_cfg = transformers.Qwen3VLConfig(**cfg.to_hf_config())
  hf = transformers.Qwen3VLForConditionalGeneration(hf_cfg).to(torch.float32).eval()
  with tempfile.TemporaryDirectory() as d:
    hf.save_pretrained(d)
    model = load_hf(d, dtype=jnp.float32)
  torch.set_num_threads(args.threads)
  if args.groups:
    return group_sharing(model, args)
  for batch_size in args.batch:
    batch = text_batch(batch_size, args.prompt)
    out, jt = _jax_sampler(model, batch, args.new, args.repeats)
    tb = {k: torch.from_numpy(v) for k, v in batch.items()}
    ht, gen = {}, None
    for t in (1, args.new):

      def run(t=t, tb=tb):
        with torch.no_grad():
          return hf.generate(
            **tb, max_new_tokens=t, min_new_tokens=t, do_sample=False, pad_token_id=151643
          )

      ht[t] = _timed(run, args.repeats)
      gen = run()
    same = np.array_equal(gen[:, args.prompt :].numpy(), np.asarray(out.tokens))
    tokens = batch_size * (args.new - 1)
    jax_tps, hf_tps = tokens / (jt[args.new] - jt[1]), tokens / (ht[args.new] - ht[1])
    print(
      f"| {args.model} | {batch_size} | {args.prompt} | {args.new} | {jax_tps:,.0f} | "
      f"{hf_tps:,.0f} | {jax_tps / hf_tps:.2f}x | {same} |"
    )


def gpu(args) -> None:
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from crpo_jax.model.config import get_preset
  from crpo_jax.model.vlm import Qwen3VL

  cfg = get_preset(args.preset)
  dtype = jnp.bfloat16
  model = nnx.jit(lambda: Qwen3VL(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0)))()
  kind = jax.devices()[0].device_kind
  peak = (
    args.peak_gbs * 1e9
    if args.peak_gbs
    else next((v for k, v in PEAK_HBM.items() if k in kind), None)
  )
  _, state = nnx.split(model)
  # Decode reads every text weight once per step, except an untied input embedding,
  # of which it gathers only B rows.
  skip = ("visual",) if cfg.text.tie_word_embeddings else ("visual", "embed_tokens")
  text_bytes = sum(
    x.nbytes for p, x in nnx.to_flat_state(state) if not any(str(k) in skip for k in p)
  )
  t = cfg.text
  print(f"device {kind}; text weights {text_bytes / 1e9:.2f} GB; peak HBM {peak}")
  for batch_size in args.batch:
    batch = text_batch(batch_size, args.prompt)
    _, times = _jax_sampler(model, batch, args.new, args.repeats)
    steps = args.new - 1
    step_s = (times[args.new] - times[1]) / steps
    slots = 64 * -(-args.prompt // 64) + args.new - 1  # bucketed prompt + decode slots
    cache_bytes = 2 * t.num_layers * batch_size * slots * t.num_kv_heads * t.head_dim * 2
    roof = (text_bytes + cache_bytes) / peak if peak else float("nan")
    print(
      f"| {args.preset} bf16 | {kind} | {batch_size} | {args.prompt} | {args.new} | "
      f"{batch_size / step_s:,.0f} | {step_s * 1e3:.2f} | {roof / step_s:.1%} |"
    )


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--gpu", action="store_true", help="random-weight bf16 roofline mode")
  p.add_argument("--model", default="tiny", choices=["tiny", "small"], help="CPU model")
  p.add_argument("--preset", default="qwen3vl_8b", help="GPU preset")
  p.add_argument("--batch", default="8", type=lambda s: [int(x) for x in s.split(",")])
  p.add_argument("--prompt", default=32, type=int, help="longest prompt length")
  p.add_argument("--new", default=32, type=int, help="new tokens per row")
  p.add_argument("--repeats", default=3, type=int)
  p.add_argument("--groups", default=0, type=int, help="time shared vs copied prefill")
  p.add_argument("--peak-gbs", default=0.0, type=float, help="override peak HBM GB/s")
  p.add_argument("--threads", default=1, type=int, help="CPU threads for both (CPU mode)")
  args = p.parse_args()
  if not args.gpu:  # same thread budget for XLA and torch; must precede importing jax
    os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "")
      + f" --xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'}"
      + f" intra_op_parallelism_threads={args.threads}"
    )
  gpu(args) if args.gpu else cpu(args)


if __name__ == "__main__":
  main()
