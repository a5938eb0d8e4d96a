"""Run set-up: the data (synthetic world, tokenizer, loaders), the model, the export.

Kept apart from the loop so that `loop.py` reads as the training schedule only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from flax import nnx

from crpo_jax.model.config import get_preset


@dataclasses.dataclass
class RunData:
  """Where the run's records live, its tokenizer, and how to open loaders."""

  train_path: str
  eval_path: str
  tokenizer: Any
  tokenizer_dir: str
  train_loader: Callable[[], Any]


class _Process:
  """Picklable `(example, frames, meta) -> model inputs` for Grain workers."""

  def __init__(self, tokenizer, cfg):
    self.tokenizer, self.cfg = tokenizer, cfg

  def __call__(self, example, frames, meta):
    from crpo_jax.data import processor  # heavy: imported in the worker

    return processor.process_example(example, self.tokenizer, self.cfg, frames, meta)


def processor_config(config: ml_collections.ConfigDict):
  from crpo_jax.data import processor

  d = config.data
  return processor.ProcessorConfig(
    fps=d.fps, max_frames=d.num_frames, video_max_pixels=d.max_pixels * d.num_frames
  )


def pipeline_config(config: ml_collections.ConfigDict, pad_id: int, *, train: bool):
  from crpo_jax.data import pipeline

  return pipeline.PipelineConfig(
    batch_size=config.batch.prompts,
    seed=config.seed,
    shuffle=config.data.shuffle and train,
    num_epochs=None if train else 1,
    drop_remainder=train,
    worker_count=config.data.num_workers if train else 0,
    fps=config.data.fps,
    max_frames=config.data.num_frames,
    pad_id=pad_id,
  )


def make_loader(config, path: str, tokenizer, pad_id: int, *, train: bool):
  """A loader of *global* batches: every host reads the same examples.

  The learner scores all prompts on every host and feeds identical host arrays to
  the jitted steps, which is correct on any number of hosts; reading a per-host
  shard and assembling global arrays would cut the redundant decoding (not done).
  """
  import grain

  from crpo_jax.data import pipeline

  return pipeline.make_loader(
    path,
    pipeline_config(config, pad_id, train=train),
    _Process(tokenizer, processor_config(config)),
    video_root=config.data.video_root or None,
    shard_options=grain.sharding.NoSharding(),
  )


def _words(*paths: str) -> list[str]:
  from crpo_jax.data import records

  words = []
  for path in paths:
    for ex in records.read_records(path):
      words += [ex.question, *ex.options]
  return words


def synthetic_world(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The `synthetic.generate` knobs shared by every split (families, option order)."""
  from crpo_jax.data import synthetic

  syn = config.data.synthetic
  names = synthetic.FAMILIES if syn.families == "all" else syn.families.split(",")
  return {
    "families": synthetic.check_families(names),
    "shuffle_options": bool(syn.shuffle_options),
  }


def prepare_data(config: ml_collections.ConfigDict, data_dir: str) -> RunData:
  """Generates the synthetic world if asked, loads or builds the tokenizer."""
  from crpo_jax.data import synthetic
  from crpo_jax.data import tokenizer as tok_lib

  d = config.data
  train, heldout = d.train, d.eval
  syn = d.synthetic
  if syn.num_train > 0:
    train = os.path.join(data_dir, "train.jsonl")
    heldout = os.path.join(data_dir, "eval.jsonl") if syn.num_eval > 0 else ""
    # Every process writes the same files (the generator is a pure function of its
    # flags); only process 0 does on a shared filesystem.
    world = synthetic_world(config)
    if not os.path.exists(train) and jax.process_index() == 0:
      synthetic.generate(data_dir, syn.num_train, config.seed, split="train",
                         shortcut=syn.shortcut, **world)  # fmt: skip
      if syn.num_eval > 0:
        synthetic.generate(
          data_dir, syn.num_eval, config.seed + 1, split="eval", pairs=True, **world
        )
  if not train:
    raise ValueError("config.data.train is empty and no synthetic world was asked for")
  tok_dir = d.tokenizer or config.model.init_from
  if not tok_dir:
    tok_dir = os.path.join(data_dir, "tokenizer")
    if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
      words = _words(*(p for p in (train, heldout) if p))
      tok_lib.build_word_tokenizer(words, tok_dir, compact=d.compact_vocab)
  tokenizer = tok_lib.load_tokenizer(tok_dir)
  if not config.model.init_from:  # a checkpoint's own tokenizer is checked on load
    cfg = get_preset(config.model.preset)
    ids = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name.endswith("_id")}
    tok_lib.check_special_ids(tokenizer, dict(ids, vocab_size=cfg.text.vocab_size), tok_dir)
  pad_id = get_preset(config.model.preset).pad_token_id
  return RunData(
    train,
    heldout,
    tokenizer,
    tok_dir,
    lambda: make_loader(config, train, tokenizer, pad_id, train=True),
  )


def build_model(config: ml_collections.ConfigDict, mesh):
  """The policy: a local HF checkpoint (sharded on load) or a seeded random init."""
  from crpo_jax.model import vlm

  dtype, param_dtype = jnp.dtype(config.model.dtype), jnp.dtype(config.model.param_dtype)
  if config.model.init_from:
    from crpo_jax import model as model_lib

    logging.info("loading %s", config.model.init_from)
    return model_lib.load_hf(config.model.init_from, dtype, param_dtype=param_dtype, mesh=mesh)
  cfg = get_preset(config.model.preset)
  # Random init is for the tiny demo and tests; real runs start from init_from.
  return vlm.Qwen3VL(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(config.seed))


def export_hf(model_def, params, tokenizer, out_dir: str) -> str:
  """Writes the policy (and tokenizer) as a transformers-loadable directory."""
  from crpo_jax import model as model_lib
  from crpo_jax.train import state as state_lib

  model = state_lib.merge_model(model_def.graphdef, params, model_def.rest)
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
  model_lib.save_hf(model, out_dir)
  if jax.process_index() == 0 and tokenizer is not None:
    tokenizer.save_pretrained(out_dir)
  return out_dir


RUN_FILES = ("config.json", "model_config.json", "tokenizer_dir.txt")


def write_run_files(workdir: str, config, model_config, tokenizer_dir: str) -> None:
  """What `crpo_jax.export` needs besides a checkpoint: config, architecture, tokenizer."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=1))
  with open(os.path.join(workdir, "model_config.json"), "w") as f:
    json.dump(model_config.to_hf_config(), f, indent=1)
  with open(os.path.join(workdir, "tokenizer_dir.txt"), "w") as f:
    f.write(os.path.abspath(tokenizer_dir))
