"""`crpo_jax.model` and `crpo_jax.rl` run on a bare accelerator image.

Such images carry jax, flax, optax, orbax, numpy and safetensors but not grain, av,
ml_collections, clu, TFDS or jaxtyping; the model must not need torch or
transformers either. A subprocess blocks all of them, then builds the tiny model,
runs a forward, samples, and scores a loss. `crpo_jax.rl` must not import
`crpo_jax.train` either: the layers only look down.
"""

import os
import subprocess
import sys
from pathlib import Path

BLOCKED = (
  "torch",
  "torchvision",
  "transformers",
  "jaxtyping",
  "grain",
  "av",
  "ml_collections",
  "clu",
  "tensorflow",
  "tensorflow_datasets",
  "array_record",
  "PIL",
  "crpo_jax.train",  # layers look down only: rl/ holds the maths, train/ the orchestration
)

CODE = f"""
import sys
for name in {BLOCKED!r}:
  sys.modules[name] = None  # any import of these now raises ImportError
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
import crpo_jax
from crpo_jax import model as M
from crpo_jax.rl import advantages, algorithms, crr, kl, logprobs, losses, rewards, sampler
from crpo_jax.rl import sampling_ops
from crpo_jax.model import load_hf, save_hf  # resolved lazily; must not pull torch

cfg = M.get_preset("tiny")
net = M.Qwen3VL(cfg, rngs=nnx.Rngs(0))
ids = np.array([[1, 2, 3, 4, 5]], np.int32)
logits = net(input_ids=ids, attention_mask=np.ones_like(ids))
assert logits.shape == (1, 5, cfg.text.vocab_size) and logits.dtype == jnp.float32
out = crpo_jax.generate(net, {{"input_ids": ids, "attention_mask": np.ones_like(ids)}},
                        max_new_tokens=3)
assert out.tokens.shape == (1, 3)
mask = jnp.ones((2, 3), bool)
lp = jnp.zeros((2, 3))
loss_sum, denom, _ = losses.policy_loss(
  lp, lp, jnp.array([1.0, -1.0]), mask, losses.LossConfig(), ref_logp=lp - 0.1
)
assert np.isfinite(float(loss_sum / denom))
print("ok")
"""


def test_model_and_rl_run_without_optional_packages():
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  root = Path(__file__).resolve().parents[1]
  proc = subprocess.run(
    [sys.executable, "-c", CODE], cwd=root, env=env, capture_output=True, text=True, check=False
  )
  assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
