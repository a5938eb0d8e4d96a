"""Export a training checkpoint as a Hugging Face directory.

  python -m crpo_jax.export --workdir DIR [--step N] --out HF_DIR

Reads DIR/model_config.json (the architecture), DIR/config.json (the optimiser, so
the checkpoint's structure is known) and DIR/checkpoints/N (default: latest), and
writes HF_DIR with config.json, safetensors and the run's tokenizer;
`transformers.Qwen3VLForConditionalGeneration.from_pretrained(HF_DIR)` loads it and
gives the trained parameters' logits.
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging


def restore_model(workdir: str, step: int | None = None):
  """(Qwen3VL with the checkpoint's policy parameters, step) from a training workdir."""
  import jax
  import ml_collections
  from flax import nnx

  from crpo_jax import sharding
  from crpo_jax.model import vlm
  from crpo_jax.model.config import Qwen3VLConfig
  from crpo_jax.train import checkpoint as ckpt_lib
  from crpo_jax.train import optimizer
  from crpo_jax.train import state as state_lib

  with open(os.path.join(workdir, "model_config.json")) as f:
    model_cfg = Qwen3VLConfig.from_hf_config(json.load(f))
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  dtype = jax.numpy.dtype(config.model.dtype)
  param_dtype = jax.numpy.dtype(config.model.param_dtype)
  abstract = nnx.eval_shape(
    lambda: vlm.Qwen3VL(model_cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
  )
  graphdef, params, rest = state_lib.split_model(abstract)
  # SFT and RL optimisers share one structure; only shapes matter for the target.
  tx, _ = optimizer.optimizer_from_config(config.optim, max(int(config.train_steps), 1))
  mesh = sharding.make_mesh({"fsdp": -1})
  param_sh = sharding.param_shardings(params, mesh).to_pure_dict()
  pure = params.to_pure_dict()
  rep = state_lib.replicated(mesh)
  opt_state = jax.eval_shape(tx.init, pure)
  target = state_lib.TrainState(
    step=jax.ShapeDtypeStruct((), jax.numpy.int32),
    params=pure,
    opt_state=opt_state,
    rng=jax.ShapeDtypeStruct((2,), jax.numpy.uint32),
  )
  shardings = state_lib.TrainState(
    step=rep, params=param_sh, opt_state=jax.tree.map(lambda _: rep, opt_state), rng=rep
  )
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  state, _, _, _ = ckpt.restore(target, shardings, step=step)
  ckpt.close()
  model = state_lib.merge_model(graphdef, state.params, rest)
  return model, int(state.step)


def export(workdir: str, out: str, step: int | None = None) -> str:
  """Writes the checkpoint's policy and the run's tokenizer to `out`; returns `out`."""
  from crpo_jax import model as model_lib

  model, step = restore_model(workdir, step)
  model_lib.save_hf(model, out)
  tok_file = os.path.join(workdir, "tokenizer_dir.txt")
  if os.path.exists(tok_file):
    from crpo_jax.data import tokenizer as tok_lib

    with open(tok_file) as f:
      tok_lib.load_tokenizer(f.read().strip()).save_pretrained(out)
  logging.info("exported step %d of %s to %s", step, workdir, out)
  print(f"exported step {step} of {workdir} to {out}", flush=True)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS
  from crpo_jax import console

  console.setup(f.workdir)  # Orbax's INFO lines to WORKDIR/logs/, not the console
  export(f.workdir, f.out, f.step)


def _define_flags() -> None:
  """Flags exist only when this module is the program (it is also imported as a library)."""
  flags.DEFINE_string("workdir", None, "Training workdir (holds checkpoints/).")
  flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
  flags.DEFINE_string("out", None, "Output directory for the HF checkpoint.")
  flags.mark_flags_as_required(["workdir", "out"])


if __name__ == "__main__":
  _define_flags()
  app.run(main)
