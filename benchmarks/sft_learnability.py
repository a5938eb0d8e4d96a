"""Does SFT learn the answer letter from the pixels? A direct probe of the training path.

  python benchmarks/sft_learnability.py --families static_colour --fixed-options \
      --preset tiny_compact --steps 150 --lr 3e-3 --num-train 400

Trains the SFT warm start (original branch) on one synthetic world and prints, every
10 steps, the mean log-probability of each target position on a fixed training
batch (position 5 is the answer letter), then: how much the letter's log-probability
moves when the pixels are zeroed, and the held-out letter accuracy (argmax over the
option letters at that position, teacher-forced). Timings are wall-clock on
whatever machine runs it.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from configs import demo
from crpo_jax import sharding
from crpo_jax.data import synthetic
from crpo_jax.train import learner_rows as rows_lib
from crpo_jax.train import optimizer as optim_lib
from crpo_jax.train import setup
from crpo_jax.train import sft as sft_lib
from crpo_jax.train import state as state_lib


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--families", default="static")
  p.add_argument("--fixed-options", action="store_true")
  p.add_argument("--preset", default="tiny_compact")
  p.add_argument("--steps", type=int, default=150)
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument("--num-train", type=int, default=400)
  p.add_argument("--num-eval", type=int, default=20)
  p.add_argument("--out", default="/tmp/sft_learnability")
  a = p.parse_args()
  world = {"families": a.families.split(","), "shuffle_options": not a.fixed_options}
  d = os.path.join(a.out, f"{a.families}_{int(a.fixed_options)}_{a.num_train}_{a.preset}")
  c = demo.get_config()
  c.model.preset, c.data.compact_vocab = a.preset, a.preset.endswith("_compact")
  c.data.num_frames, c.batch.prompts = 4, 8
  c.sft.steps, c.sft.lr, c.sft.warmup_steps = a.steps, a.lr, 5
  if not os.path.exists(os.path.join(d, "eval.jsonl")):
    synthetic.generate(d, a.num_train, 0, split="train", **world)
    synthetic.generate(d, a.num_eval, 1, split="eval", **world)
  c.data.train, c.data.synthetic.num_train = os.path.join(d, "train.jsonl"), 0
  mesh, rules = sharding.make_mesh(dict(c.mesh)), sharding.DEFAULT_RULES
  data = setup.prepare_data(c, d)
  md = rows_lib.ModelDef.from_model(setup.build_model(c, mesh))
  tx, _ = optim_lib.make_optimizer(c.sft.lr, a.steps, warmup_steps=5, max_grad_norm=5.0)
  state, sh = state_lib.create_train_state(md.template, tx, 0, mesh, rules)
  sft = sft_lib.SFT(c, md, data.tokenizer, tx, sh, mesh, rules)
  tok = data.tokenizer
  loader = data.train_loader()
  fixed = next(loader)
  lp_fn = jax.jit(lambda params, mb: md.completion_logprobs(params, mb, 1.0, 128)[0])

  def logp(params, rows):
    mb = {k: v[0] for k, v in rows_lib.to_micro_batches(rows, 16).items()}
    return np.asarray(lp_fn(params, mb))[: rows["tokens"].shape[0]], mb

  t0 = time.time()
  for s in range(a.steps):
    state, m = sft.step(state, next(loader))
    if s % 10 == 0 or s == a.steps - 1:
      rows = sft.rows(fixed)
      lp, _ = logp(state.params, rows)
      per_pos = [lp[:, j][rows["mask"][:, j]].mean() for j in range(rows["mask"].shape[1])
                 if rows["mask"][:, j].any()]  # fmt: skip
      print(f"step {s} loss {m['loss']:.3f} per-position logp {np.round(per_pos, 2)} "
            f"{time.time() - t0:.0f}s", flush=True)  # fmt: skip
  loader.close()
  rows = sft.rows(fixed)
  lp1, mb = logp(state.params, rows)
  mb = dict(mb, pixel_values_videos=np.zeros_like(mb["pixel_values_videos"]))
  lp2 = np.asarray(lp_fn(state.params, mb))[: rows["tokens"].shape[0]]
  print(f"max |d logp(letter)| with pixels zeroed: {np.abs(lp1 - lp2)[:, 5].max():.3f}")
  ev = setup.make_loader(c, os.path.join(d, "eval.jsonl"), tok, md.pad_id, train=False)
  hit = tot = 0
  letters = "ABCDE"
  for b in ev:
    rows = sft.rows(b)
    n = rows["tokens"].shape[0]
    scores = []
    for letter in letters:
      t = rows["tokens"].copy()
      t[:, 5] = tok.convert_tokens_to_ids(letter)
      scores.append(logp(state.params, dict(rows, tokens=t))[0][:, 5])
    pred = np.argmax(np.stack(scores, 1), 1)
    gold = np.array([letters.index(str(x)) for x in b["answer_letter"][:n]])
    valid = np.asarray(b["valid"][:n])
    hit, tot = hit + int(((pred == gold) & valid).sum()), tot + int(valid.sum())
  print(f"held-out letter accuracy {hit}/{tot} = {hit / max(tot, 1):.3f}")


if __name__ == "__main__":
  main()
