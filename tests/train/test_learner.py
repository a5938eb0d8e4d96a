"""The RL learner: every algorithm updates a small Qwen3-VL on 8 fake devices.

A 64-token model keeps compilation short; a table tokenizer decodes most tokens
into answer strings so rewards (and so advantages) differ between rollouts.
"""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from configs import demo
from crpo_jax import sharding
from crpo_jax.data import processor, transforms
from crpo_jax.model import vlm
from crpo_jax.model.config import Qwen3VLConfig, TextConfig, VisionConfig
from crpo_jax.rl import rewards as rewards_lib
from crpo_jax.train import learner as learner_lib
from crpo_jax.train import learner_rows as rows_lib
from crpo_jax.train import optimizer
from crpo_jax.train import state as state_lib
from tests.tolerance import assert_close

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
    if step == 0:
      # On-policy: the learner's log-probs are the sampler's, so every ratio is 1
      # (float32 log-prob differences ~1e-6 give |ratio - 1| ~1e-6), nothing is
      # clipped, and the reference (a copy of the policy) has KL 0.
      assert abs(metrics["ratio_mean"] - 1.0) <= 1e-4, metrics["ratio_mean"]
      assert metrics["clip_frac"] == 0.0
      if learner.use_ref:
        assert abs(metrics["kl"]) <= 1e-6, metrics["kl"]
  assert int(state.step) == 2
  assert metrics["advantage_abs"] > 0  # rewards differed, so gradients flowed
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), before, state.params)
  assert all(jax.tree.leaves(changed)), changed
  branches = [b.name for b in learner.spec.gradient_branches]
  assert f"reward/{branches[-1]}/weighted/total" in metrics
  assert any(k.startswith("reward_route/original/") for k in metrics)
  # No tag for a reward term the algorithm never uses, nor KL without a reference.
  unused = set(rewards_lib.TERMS) - set(learner.spec.reward_terms)
  assert not [k for k in metrics if any(f"/{t}" in k for t in unused)]
  assert ("crr" in metrics) == ("crr" in learner.spec.reward_terms)
  assert ("kl" in metrics) == learner.use_ref
  for name in branches:
    assert 0.0 <= metrics[f"reward/{name}/zero_spread_groups"] <= 1.0
  # The bounded rollout sample the loop writes to WORKDIR/rollouts/.
  assert len(learner.last_rollouts) == min(config.log_rollouts, len(batch["route"]))
  assert set(learner.last_rollouts[0]["branches"]) == set(branches)


def _small_setup(algo="crpo", **overrides):
  config = _config(algo)
  config.update_from_flattened_dict(overrides)
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  model = vlm.Qwen3VL(SMALL, rngs=nnx.Rngs(0))
  model_def = rows_lib.ModelDef.from_model(model)
  tx, _ = optimizer.optimizer_from_config(config.optim, 2)
  state, shardings = state_lib.create_train_state(model_def.template, tx, 0, mesh)
  learner = learner_lib.Learner(
    config, model_def, TableTokenizer(), tx, shardings, mesh, sharding.DEFAULT_RULES
  )
  return config, model, model_def, state, learner


def _padded_batch(height: int, width: int) -> dict:
  """`_batch`'s two prompts with 4 frames of height x width, padded as the pipeline
  pads (`bucketing.pad_batch`: prompt length and pixel rows bucketed)."""
  from crpo_jax import bucketing

  pcfg = processor.ProcessorConfig()
  rng = np.random.default_rng(height * 1000 + width)
  frames = [rng.integers(0, 255, (4, height, width, 3), dtype=np.uint8) for _ in range(2)]

  def branch(frames_list):
    pix, grids = zip(*(processor.patchify(f, pcfg) for f in frames_list))
    tokens = [int(np.prod(g)) // 4 for g in grids]
    video = lambda n: [SMALL.vision_start_token_id, *[SMALL.video_token_id] * n,
                       SMALL.vision_end_token_id]  # fmt: skip
    rows = [[1, 10 + i, *video(n), 12, 13] for i, n in enumerate(tokens)]
    ids = np.zeros((2, max(map(len, rows))), np.int32)
    for i, r in enumerate(rows):
      ids[i, : len(r)] = r
    inputs = {
      "input_ids": ids,
      "attention_mask": (ids != 0).astype(np.int32),
      "pixel_values_videos": np.concatenate(pix),
      "video_grid_thw": np.concatenate(grids),
    }
    return bucketing.pad_batch(inputs, pad_id=0, grid_rows=3)

  batch = _batch()
  batch["orig"] = branch(frames)
  batch["cf"] = branch([transforms.reverse(frames[0]), transforms.flip(frames[1])])
  return batch


def test_mixed_video_resolutions_compile_a_bounded_number_of_programs():
  """Steps on four video sizes (32, 48, 64 and 48 pixel rows per video): the
  sampler's and the update's pixel-row totals are bucketed (bucketing.py), so they
  compile once per bucket (1 and 2 here); exact totals compiled one program per
  distinct size (3 and 3)."""
  from crpo_jax import bucketing

  config, _, _, state, learner = _small_setup("crpo")
  ref = jax.tree.map(lambda x: x.copy(), state.params) if learner.use_ref else None
  sizes = [(64, 64), (64, 96), (64, 128), (96, 64)]
  per_video = []
  for step, (h, w) in enumerate(sizes):
    batch = _padded_batch(h, w)
    per_video.append(int(np.prod(batch["orig"]["video_grid_thw"][0])))
    state, metrics = learner.step(state, batch, ref, step)
    assert np.isfinite(metrics["loss"]), (h, w)
  assert per_video == [32, 48, 64, 48]
  # One sampler call holds 2 prompts x 2 branches' videos; an update micro-batch
  # holds `micro_rollouts` rows, each with its own video.
  micro = config.batch.micro_rollouts
  buckets = lambda k: len({bucketing.bucket_size(k * r, None, bucketing.PATCH_MULTIPLE)
                           for r in per_video})  # fmt: skip
  assert (buckets(4), buckets(micro)) == (1, 2)
  [sampler] = learner._samplers.values()
  assert sampler.num_traces == buckets(4)
  assert learner.train_step._cache_size() == buckets(micro)


def test_learner_logprobs_equal_decode_on_placeholder_ids():
  """Teacher-forced completion log-probs equal decode_step's token by token, also for
  completions holding the video / image placeholder and vision start / end ids."""
  model = vlm.Qwen3VL(SMALL, rngs=nnx.Rngs(0))
  model_def = rows_lib.ModelDef.from_model(model)
  branch = _branch([_frames(0), _frames(1)])
  specials = [SMALL.video_token_id, SMALL.image_token_id, SMALL.vision_start_token_id,
              SMALL.vision_end_token_id]  # fmt: skip
  tokens = np.array([[5, *specials, 7, 2], [SMALL.video_token_id] * 3 + [9, 8, 3, 2]], np.int32)
  t = tokens.shape[1]
  # Decode side: prefill the prompt, then feed the completion one token at a time.
  from crpo_jax.model.cache import init_cache

  cache = init_cache(SMALL.text, 2, branch["input_ids"].shape[1] + t, jax.numpy.float32)
  logits, cache = model.prefill(
    branch["input_ids"], branch["attention_mask"], cache,
    pixel_values_videos=branch["pixel_values_videos"], video_grid_thw=branch["video_grid_thw"],
  )  # fmt: skip
  want = []
  for j in range(t):
    want.append(np.asarray(jax.nn.log_softmax(logits, -1))[np.arange(2), tokens[:, j]])
    logits, cache = model.decode_step(jax.numpy.asarray(tokens[:, j]), cache)
  want = np.stack(want, 1)
  mb = {
    "prompt_ids": branch["input_ids"],
    "prompt_mask": branch["attention_mask"],
    "tokens": tokens,
    "mask": np.ones_like(tokens, bool),
    "pixel_values_videos": branch["pixel_values_videos"],
    "video_grid_thw": branch["video_grid_thw"],
  }
  _, params, _ = state_lib.split_model(model)
  got, _ = jax.jit(lambda p, mb: model_def.completion_logprobs(p, mb, 1.0, 4))(
    params.to_pure_dict(), mb
  )
  # Same float32 computation in two reduction orders: log-probs of magnitude ~4.
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_on_policy_ratio_is_one_in_the_compute_dtype(dtype):
  """The learner's teacher-forced log-probs of sampled completions equal the
  sampler's, per token, in bf16 too. Both heads multiply compute-dtype hidden
  states by the compute-dtype kernel (an fp32 learner head gave 4.5e-3 here), and
  both run the policy in the compute dtype: the sampler its rollout copy, as
  `Learner.sample` makes it, the learner the same rounding inside its jit (a bare
  `astype` there, which XLA undoes, gave 3.2e-2)."""
  from crpo_jax.rl import sampler as sampler_lib

  g = 4
  model = vlm.Qwen3VL(SMALL, dtype=jax.numpy.dtype(dtype), rngs=nnx.Rngs(0))
  model_def = rows_lib.ModelDef.from_model(model)
  _, params, _ = state_lib.split_model(model)
  rollout_copy = model_def.sampler_state(model_def.in_compute_dtype(params.to_pure_dict()))
  branch = _branch([_frames(0), _frames(1)])
  out = sampler_lib.generate(
    nnx.merge(model_def.full_graphdef, rollout_copy),
    branch,
    max_new_tokens=8,
    num_samples=g,
    temperature=1.0,
    seed=3,
    eos_ids=(63,),
  )
  per_video = len(branch["pixel_values_videos"]) // 2
  videos = np.split(branch["pixel_values_videos"], [per_video])
  rows = lambda x: np.repeat(np.asarray(x), g, axis=0)  # prompt-major, as the sampler's
  mb = {
    "prompt_ids": rows(branch["input_ids"]),
    "prompt_mask": rows(branch["attention_mask"]),
    "tokens": np.asarray(out.tokens),
    "mask": np.asarray(out.mask),
    "pixel_values_videos": np.concatenate([v for v in videos for _ in range(g)]),
    "video_grid_thw": rows(branch["video_grid_thw"]),
  }
  got, _ = jax.jit(lambda p, mb: model_def.completion_logprobs(p, mb, 1.0, 4))(
    params.to_pure_dict(), mb
  )
  mask = np.asarray(out.mask)
  assert mask.sum() > 16  # enough sampled tokens to compare
  log_ratio = (np.asarray(got) - np.asarray(out.logprobs))[mask]
  # |ratio - 1| <= 1e-3; float32 differs only by reduction order (~1e-6 here).
  assert np.abs(np.expm1(log_ratio)).max() <= 1e-3, np.abs(log_ratio).max()


def test_rollout_copy_and_reference_are_in_the_compute_dtype(tmp_path):
  """At bf16 the rollout samples from, and the reference is stored as, a bf16 copy
  laid out as the fp32 master weights, and the reference restores as bf16. At fp32
  the copy holds the master's values."""
  from crpo_jax.train import checkpoint as ckpt_lib

  mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
  for dtype in ("bfloat16", "float32"):
    model = vlm.Qwen3VL(SMALL, dtype=jax.numpy.dtype(dtype), rngs=nnx.Rngs(0))
    model_def = rows_lib.ModelDef.from_model(model)
    state, shardings = state_lib.create_train_state(
      model_def.template, optax.adam(1e-3), 0, mesh, sharding.DEFAULT_RULES
    )
    copy = model_def.in_compute_dtype(state.params)
    pairs = list(zip(jax.tree.leaves(state.params), jax.tree.leaves(copy)))
    assert {str(m.dtype) for m, _ in pairs} == {"float32"}
    assert {str(c.dtype) for _, c in pairs} == {dtype}
    for m, c in pairs:
      assert c.sharding.is_equivalent_to(m.sharding, m.ndim)
      np.testing.assert_array_equal(np.asarray(c), np.asarray(m).astype(c.dtype))
    if dtype == "float32":
      continue
    ckpt = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1, async_save=False)
    ckpt.save_reference(copy)
    ckpt.save(1, state)
    ckpt.wait()
    target = jax.eval_shape(model_def.in_compute_dtype, state.params)
    _, ref, _, _ = ckpt.restore(state, shardings, target_ref=target, ref_shardings=shardings.params)
    ckpt.close()
    assert {str(r.dtype) for r in jax.tree.leaves(ref)} == {"bfloat16"}
    for r, c in zip(jax.tree.leaves(ref), jax.tree.leaves(copy)):
      np.testing.assert_array_equal(np.asarray(r), np.asarray(c))


def test_decode_layout_rollout_equals_the_fsdp_layout():
  """`sampling.rollout_layout = "decode"`: the rollout's copy is split over tensor
  only (gathered over fsdp once per step), and it samples what the FSDP-laid-out
  copy samples."""
  outs = {}
  for layout in ("fsdp", "decode"):
    _, _, _, state, learner = _small_setup(**{"sampling.rollout_layout": layout})
    copy = learner.rollout_copy(state.params)
    uses_fsdp = ["fsdp" in str(x.sharding.spec) for x in jax.tree.leaves(copy)]
    assert any(uses_fsdp) == (layout == "fsdp"), layout
    assert any("tensor" in str(x.sharding.spec) for x in jax.tree.leaves(copy))
    outs[layout] = learner.sample(state, _batch(), 0)
  assert set(outs["fsdp"]) == set(outs["decode"])
  for name, (a, _, _) in outs["fsdp"].items():
    b = outs["decode"][name][0]
    np.testing.assert_array_equal(b.tokens, a.tokens)
    # The same float32 model in two layouts: reduction orders differ (~1e-6).
    assert_close(b.logprobs, a.logprobs, rtol=1e-5, err_msg=name)


def test_unknown_rollout_layout_names_the_field():
  with pytest.raises(ValueError, match="config.sampling.rollout_layout='tp'.*fsdp, decode"):
    _small_setup(**{"sampling.rollout_layout": "tp"})


def test_a_video_beyond_the_segment_bounds_is_refused_before_jit():
  """With per-segment vision attention, a video over its bounds would lose rows
  inside jit without an error; the learner refuses it on the host, naming the
  config fields. At the bounds it samples."""
  config = _config("crpo")
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  batch = _batch()
  t, h, w = (int(x) for x in np.asarray(batch["orig"]["video_grid_thw"])[0])
  for rows, ok in ((h * w, True), (h * w - 4, False)):
    model = vlm.Qwen3VL(SMALL, vision_segments=(rows, t), rngs=nnx.Rngs(0))
    model_def = rows_lib.ModelDef.from_model(model)
    assert model_def.vision_segments == (rows, t)
    tx, _ = optimizer.optimizer_from_config(config.optim, 2)
    state, shardings = state_lib.create_train_state(model_def.template, tx, 0, mesh)
    learner = learner_lib.Learner(
      config, model_def, TableTokenizer(), tx, shardings, mesh, sharding.DEFAULT_RULES
    )
    if ok:
      assert set(learner.sample(state, batch, 0)) == {"original", "counterfactual"}
    else:
      with pytest.raises(ValueError, match=r"exceeds segment_rows=.*data\.max_pixels"):
        learner.sample(state, batch, 0)


def test_sampling_never_emits_placeholder_ids():
  """At temperature 2 on a 64-token vocabulary, an unbanned sampler would draw the
  two placeholder ids ~3% of the time: 256 rows x 6 tokens would hold ~50."""
  from crpo_jax.rl import sampler as sampler_lib

  model = vlm.Qwen3VL(SMALL, rngs=nnx.Rngs(0))
  branch = _branch([_frames(0), _frames(1)])
  for temperature, top_k in ((2.0, 0), (2.0, 8), (0.0, 0)):
    out = sampler_lib.generate(
      model, branch, max_new_tokens=6, num_samples=128 if temperature else 1,
      temperature=temperature, top_k=top_k, seed=3, eos_ids=(63,),
    )  # fmt: skip
    tokens = np.asarray(out.tokens)[np.asarray(out.mask)]
    assert not np.isin(tokens, [SMALL.image_token_id, SMALL.video_token_id]).any()
    assert len(np.unique(tokens)) > (20 if temperature else 0)


def test_nonfinite_update_is_skipped():
  """A NaN in one micro-batch leaves parameters and optimiser moments unchanged and is
  counted; the next finite batch updates again."""
  _, _, _, state, learner = _small_setup(
    "grpo", **{"loss.beta": 0.0, "batch.micro_rollouts": 4, "optim.warmup_steps": 0}
  )
  batch = _batch()
  rollouts = learner.sample(state, batch, 0)
  scored = learner.score(rollouts, learner_lib.example_infos(batch))
  adv = np.asarray(
    learner_lib.adv_lib.compute_advantages(np.stack([r.total for r in scored]), mode="group")
  )
  adv = adv + 0.5  # nonzero everywhere, so a finite batch surely moves the parameters
  micro = rows_lib.to_micro_batches(learner.train_rows(batch, rollouts, adv), 4)
  assert not learner.use_ref
  assert micro["advantages"].shape[0] >= 2  # the NaN sits in one of several micro-batches
  poisoned = {k: v.copy() for k, v in micro.items()}
  poisoned["advantages"][1, 0] = np.nan
  before = jax.tree.map(np.asarray, (state.params, state.opt_state.inner_state))
  state, metrics = learner.update(state, poisoned, None)
  assert not np.isfinite(float(metrics["loss"]))
  after = jax.tree.map(np.asarray, (state.params, state.opt_state.inner_state))
  jax.tree.map(np.testing.assert_array_equal, after, before)
  assert optimizer.skip_counts(state.opt_state) == (1, 1)
  state, metrics = learner.update(state, micro, None)
  assert np.isfinite(float(metrics["loss"]))
  assert optimizer.skip_counts(state.opt_state) == (0, 1)
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), before[0], state.params)
  assert all(jax.tree.leaves(moved))


def test_reference_forward_only_when_beta_is_positive(monkeypatch):
  """beta = 0 skips the frozen reference: its log-probs are never computed in the loss."""
  calls = []
  original = rows_lib.ModelDef.completion_logprobs

  def counted(self, params, mb, temperature, chunk):
    calls.append(params)  # at trace time: one entry per forward in the traced loss
    return original(self, params, mb, temperature, chunk)

  _, _, _, state, with_ref = _small_setup("grpo", **{"loss.beta": 0.04})
  batch = _batch()
  rollouts = with_ref.sample(state, batch, 0)
  scored = with_ref.score(rollouts, learner_lib.example_infos(batch))
  adv = np.asarray(
    learner_lib.adv_lib.compute_advantages(np.stack([r.total for r in scored]), mode="group")
  )
  micro = rows_lib.to_micro_batches(with_ref.train_rows(batch, rollouts, adv), 1)
  mb = jax.tree.map(lambda x: x[0], micro)
  monkeypatch.setattr(rows_lib.ModelDef, "completion_logprobs", counted)
  jax.eval_shape(with_ref._loss, state.params, mb, state.params)
  assert len(calls) == 2 and calls[1] is not calls[0]  # policy, then the reference
  calls.clear()
  _, _, _, state0, no_ref = _small_setup("grpo", **{"loss.beta": 0.0})
  assert with_ref.use_ref and not no_ref.use_ref
  jax.eval_shape(no_ref._loss, state0.params, mb, None)
  assert len(calls) == 1
