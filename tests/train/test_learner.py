"""The RL learner: every algorithm updates a small Qwen3-VL on 8 fake devices.

A 64-token model keeps compilation short; a table tokenizer decodes most tokens
into answer strings so rewards (and so advantages) differ between rollouts.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from configs import demo
from crpo_jax import sharding
from crpo_jax.data import processor, transforms
from crpo_jax.model import vlm
from crpo_jax.model.config import Qwen3VLConfig, TextConfig, VisionConfig
from crpo_jax.train import learner as learner_lib
from crpo_jax.train import learner_rows as rows_lib
from crpo_jax.train import optimizer
from crpo_jax.train import state as state_lib

SMALL = Qwen3VLConfig(
  text=TextConfig(vocab_size=64, hidden_size=32, intermediate_size=40, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=8, mrope_section=(2, 1, 1),
                  max_position_embeddings=512),
  vision=VisionConfig(depth=1, hidden_size=16, intermediate_size=24, num_heads=2,
                      out_hidden_size=32, deepstack_visual_indexes=(0,)),
  image_token_id=60, video_token_id=61, vision_start_token_id=62, vision_end_token_id=63,
  bos_token_id=1, eos_token_id=2, pad_token_id=0,
)  # fmt: skip


class TableTokenizer:
  """Token i -> a fixed string; most strings carry an answer, some a full format."""

  def __init__(self):
    self.table = {i: f" w{i}" for i in range(64)}
    for i in range(3, 40):
      letter = "ABCD"[i % 4]
      self.table[i] = (
        f"<think>t</think><answer>{letter}</answer>" if i % 3 else f"<answer>{letter}</answer>"
      )

  def decode(self, ids, skip_special_tokens=True):
    return "".join(self.table[i] for i in ids if i not in (0, 1, 2))


def _frames(seed):
  return np.random.default_rng(seed).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)


def _branch(frames_list):
  pcfg = processor.ProcessorConfig()
  pix, grids = zip(*(processor.patchify(f, pcfg) for f in frames_list))
  n = len(frames_list)
  video = [SMALL.vision_start_token_id, *[SMALL.video_token_id] * 8, SMALL.vision_end_token_id]
  ids = np.array([[0, 1, 10 + i, *video, 12, 13] for i in range(n)], np.int32)
  mask = (ids != 0).astype(np.int32)
  return {
    "input_ids": ids,
    "attention_mask": mask,
    "pixel_values_videos": np.concatenate(pix),
    "video_grid_thw": np.concatenate(grids),
  }


def _batch():
  frames = [_frames(0), _frames(1)]
  return {
    "orig": _branch(frames),
    "cf": _branch([transforms.reverse(frames[0]), transforms.flip(frames[1])]),
    "route": np.array([transforms.ROUTES.index("temporal"), transforms.ROUTES.index("static")]),
    "answer_letter": np.array(["A", "B"]),
    "answer_cf_letter": np.array(["B", ""]),
    "num_options": np.array([4, 4]),
  }


@pytest.mark.parametrize("kind", ["flip", "reverse"])
def test_row_transforms_equal_frame_transforms(kind):
  pcfg = processor.ProcessorConfig()
  frames = _frames(3)
  rows, grid = processor.patchify(frames, pcfg)
  expected, _ = processor.patchify(transforms.apply_transform(frames, kind), pcfg)
  got = rows_lib.transform_rows(rows, grid[0], SMALL.vision, kind)
  np.testing.assert_array_equal(got, expected)
  twice = rows_lib.transform_rows(got, grid[0], SMALL.vision, kind)
  np.testing.assert_array_equal(twice, rows)


def test_row_shuffle_permutes_frames():
  pcfg = processor.ProcessorConfig()
  frames = _frames(4)
  rows, grid = processor.patchify(frames, pcfg)
  got = rows_lib.transform_rows(rows, grid[0], SMALL.vision, "shuffle", np.random.default_rng(7))
  perm = np.random.default_rng(7).permutation(len(frames))
  np.testing.assert_array_equal(got, processor.patchify(frames[perm], pcfg)[0])


def _config(algo):
  c = demo.get_config("test")
  c.algo = algo
  c.sampling.num_generations = 4
  c.sampling.max_new_tokens = 3
  c.batch.micro_rollouts = 8
  c.optim.lr = 1e-2
  c.optim.weight_decay = 0.0  # a changed parameter must come from the gradient
  return c


@pytest.mark.parametrize("algo", ["crpo", "grpo", "tgrpo", "arrowrl"])
def test_two_steps_finite_and_changing(algo):
  config = _config(algo)
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  model = vlm.Qwen3VL(SMALL, rngs=nnx.Rngs(0))
  model_def = rows_lib.ModelDef.from_model(model)
  tx, _ = optimizer.optimizer_from_config(config.optim, 2)
  state, shardings = state_lib.create_train_state(model_def.template, tx, 0, mesh)
  learner = learner_lib.Learner(
    config, model_def, TableTokenizer(), tx, shardings, mesh, sharding.DEFAULT_RULES
  )
  ref = jax.tree.map(lambda x: x.copy(), state.params) if learner.use_ref else None
  before = jax.tree.map(np.asarray, state.params)
  batch = _batch()
  for step in range(2):
    state, metrics = learner.step(state, batch, ref, step)
    bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
    assert not bad, bad
  assert int(state.step) == 2
  assert metrics["advantage_abs"] > 0  # rewards differed, so gradients flowed
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), before, state.params)
  assert all(jax.tree.leaves(changed)), changed
  branches = [b.name for b in learner.spec.gradient_branches]
  assert f"reward/{branches[-1]}/total" in metrics
  assert any(k.startswith("reward_route/original/") for k in metrics)
