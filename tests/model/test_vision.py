"""Vision encoder parity with transformers 5.23 `Qwen3VLVisionModel`, and invariances."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from crpo_jax.model.config import VisionConfig
from crpo_jax.model.hf_spec import PATCH_CONV, TRANSPOSE
from crpo_jax.model.vision import (
  VisionEncoder,
  patch_layout,
  segment_attention,
  vision_hf_params,
  windowed_attention,
)
from crpo_jax.sharding import make_mesh, param_shardings, use_mesh

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Distinct odd-ish sizes; deepstack taps out of order to check HF's tap ordering.
CFG = VisionConfig(
  depth=3,
  hidden_size=40,
  intermediate_size=56,
  num_heads=2,
  out_hidden_size=24,
  deepstack_visual_indexes=(2, 0),
)


def _hf_model(cfg: VisionConfig):
  from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
  from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

  hf_cfg = Qwen3VLVisionConfig(
    depth=cfg.depth,
    hidden_size=cfg.hidden_size,
    intermediate_size=cfg.intermediate_size,
    num_heads=cfg.num_heads,
    out_hidden_size=cfg.out_hidden_size,
    patch_size=cfg.patch_size,
    temporal_patch_size=cfg.temporal_patch_size,
    spatial_merge_size=cfg.spatial_merge_size,
    num_position_embeddings=cfg.num_position_embeddings,
    hidden_act="gelu_pytorch_tanh",
    deepstack_visual_indexes=list(cfg.deepstack_visual_indexes),
  )
  hf_cfg._attn_implementation = "eager"
  torch.manual_seed(0)
  model = Qwen3VLVisionModel(hf_cfg).eval()
  # Re-randomise every tensor (norms and biases too) so no weight can hide at 0 or 1.
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.05 + (1.0 if p.ndim == 1 and p.shape[0] % 8 == 0 else 0.0))
  return model


def _port(hf_model, cfg: VisionConfig, **kw) -> VisionEncoder:
  """Copies HF weights into a VisionEncoder through `vision_hf_params`."""
  sd = {"model.visual." + k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
  enc = VisionEncoder(cfg, rngs=nnx.Rngs(1), **kw)
  flat = dict(nnx.state(enc).flat_state())
  seen = set()
  for spec in vision_hf_params(cfg):
    slices = []
    for key in spec.keys():  # noqa: SIM118  (HFParam.keys, not a dict)
      t = sd[key]
      seen.add(key)
      if spec.transform == TRANSPOSE:
        t = t.T
      elif spec.transform == PATCH_CONV:
        t = t.reshape(t.shape[0], -1).T
      slices.append(t)
    arr = np.stack(slices) if spec.num_layers is not None else slices[0]
    var = flat[spec.path]
    assert arr.shape == var.get_value().shape, spec
    var.set_value(jnp.asarray(arr, var.get_value().dtype))
  assert seen == set(sd), set(sd) ^ seen
  return enc


@pytest.fixture(scope="module")
def models():
  hf = _hf_model(CFG)
  return hf, _port(hf, CFG)


def _inputs(grids, pad_rows=0, seed=0):
  n = sum(t * h * w for t, h, w in grids)
  rng = np.random.default_rng(seed)
  px = rng.normal(size=(n + pad_rows, CFG.patch_dim)).astype(np.float32)
  return px, np.asarray(grids, np.int32)


def _hf_forward(hf, px, grid):
  with torch.no_grad():
    out = hf(torch.from_numpy(px), grid_thw=torch.from_numpy(grid).long())
  return out.pooler_output.numpy(), np.stack([d.numpy() for d in out.deepstack_features])


_jit_call = nnx.jit(lambda enc, px, grid: enc(px, grid))


@pytest.mark.parametrize(
  "grids",
  [
    [(1, 6, 10)],  # one image
    [(3, 4, 6)],  # video: three temporal groups, attention per group
    [(1, 8, 4), (2, 4, 6), (1, 2, 2)],  # image + video + image packed in one call
  ],
  ids=["image", "video", "packed"],
)
def test_matches_hf(models, grids):
  hf, enc = models
  px, grid = _inputs(grids)
  want_merged, want_ds = _hf_forward(hf, px, grid)
  merged, ds = _jit_call(enc, jnp.asarray(px), jnp.asarray(grid))
  assert merged.shape == want_merged.shape and ds.shape == want_ds.shape == (2,) + merged.shape
  np.testing.assert_allclose(np.asarray(merged), want_merged, atol=2e-5, rtol=1e-5)
  for k in range(ds.shape[0]):  # each DeepStack feature on its own
    np.testing.assert_allclose(np.asarray(ds[k]), want_ds[k], atol=2e-5, rtol=1e-5)


def test_padding_rows_and_grid_rows_do_not_change_outputs(models):
  _, enc = models
  grids = [(1, 8, 4), (2, 4, 6)]
  px, grid = _inputs(grids)
  merged, ds = _jit_call(enc, jnp.asarray(px), jnp.asarray(grid))
  n = px.shape[0] // 4
  rng = np.random.default_rng(5)
  px_pad = np.concatenate([px, 3.0 * rng.normal(size=(20, CFG.patch_dim)).astype(np.float32)])
  grid_pad = np.asarray([(1, 8, 4), (0, 0, 0), (2, 4, 6), (0, 0, 0)], np.int32)
  merged_p, ds_p = _jit_call(enc, jnp.asarray(px_pad), jnp.asarray(grid_pad))
  assert merged_p.shape[0] == n + 5
  np.testing.assert_allclose(np.asarray(merged_p[:n]), np.asarray(merged), atol=1e-6, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(ds_p[:, :n]), np.asarray(ds), atol=1e-6, rtol=1e-6)
  assert np.isfinite(np.asarray(merged_p)).all()


def test_bad_inputs_are_clear_errors(models):
  _, enc = models
  px, grid = _inputs([(1, 4, 4)])
  with pytest.raises(ValueError, match="covers 32 patches, pixel_values has 16"):
    enc(jnp.asarray(px), jnp.asarray([(2, 4, 4)]))
  with pytest.raises(ValueError, match="multiples of 2"):
    enc(jnp.asarray(px), jnp.asarray([(1, 3, 4)]))
  with pytest.raises(ValueError, match="expected \\[P, 1536\\]"):
    enc(jnp.asarray(px[:, :100]), jnp.asarray(grid))


def test_layout_segments_and_merge_order():
  taps, wts, rot, seg = jax.jit(patch_layout, static_argnums=(1, 2))(
    jnp.asarray([(1, 2, 4), (0, 0, 0), (2, 2, 2)]), 20, CFG
  )
  # Image: one segment; video: one per temporal group; 4 padding rows get -1.
  np.testing.assert_array_equal(np.asarray(seg), [0] * 8 + [1] * 4 + [2] * 4 + [-1] * 4)
  # Merge-block order of a 2x4 grid: block (0,0) = (0,0),(0,1),(1,0),(1,1), then block (0,1).
  np.testing.assert_array_equal(
    np.asarray(rot[:8]), [[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3], [1, 2], [1, 3]]
  )
  np.testing.assert_allclose(np.asarray(wts).sum(-1)[:16], 1.0, rtol=1e-6)
  # Corners of a grid map exactly onto corners of the 48x48 table (align_corners=True).
  assert int(taps[0, 0]) == 0 and float(wts[0, 0]) == 1.0
  assert int(taps[7, 0]) == 47 * 48 + 47 and float(wts[7, 0]) == 1.0


def test_chunked_attention_equals_dense(models):
  hf, enc = models
  chunked = _port(hf, CFG, attention_chunk=12)  # 56 rows: 5 chunks, the last one padded
  px, grid = _inputs([(1, 4, 2), (2, 4, 6)])
  merged, ds = _jit_call(enc, jnp.asarray(px), jnp.asarray(grid))
  merged_c, ds_c = _jit_call(chunked, jnp.asarray(px), jnp.asarray(grid))
  np.testing.assert_allclose(np.asarray(merged_c), np.asarray(merged), atol=1e-6, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(ds_c), np.asarray(ds), atol=1e-6, rtol=1e-6)


def test_windowed_attention_equals_dense():
  rng = np.random.default_rng(3)
  # Segments of 5, 9, 3, 9 rows, then 4 padding rows (-1): 30 rows in all.
  segment = jnp.asarray([0] * 5 + [1] * 9 + [2] * 3 + [3] * 9 + [-1] * 4)
  q, k, v = (jnp.asarray(rng.normal(size=(30, 2, 8)), jnp.float32) for _ in range(3))
  dense = segment_attention(q, k, v, segment)
  real = np.asarray(segment) >= 0
  got = windowed_attention(q, k, v, segment, chunk=4, window=9)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(dense)[real], atol=1e-6)
  for window in (9, 6):  # 6 < longest segment: the run-time check takes the full-key path
    got = jax.jit(segment_attention, static_argnums=(4, 5))(q, k, v, segment, 4, window)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(dense)[real], atol=1e-6)
  # A too-small window on the windowed path itself really does lose keys.
  short = windowed_attention(q, k, v, segment, chunk=4, window=3)
  assert np.abs(np.asarray(short)[real] - np.asarray(dense)[real]).max() > 1e-3


def test_encoder_with_window_matches_hf(models):
  hf, _ = models
  enc = _port(hf, CFG, attention_chunk=8, attention_window=24)
  px, grid = _inputs([(1, 4, 2), (2, 4, 6), (1, 2, 2)])
  want_merged, want_ds = _hf_forward(hf, px, grid)
  merged, ds = _jit_call(enc, jnp.asarray(px), jnp.asarray(grid))
  np.testing.assert_allclose(np.asarray(merged), want_merged, atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(ds), want_ds, atol=2e-5, rtol=1e-5)


def test_bf16_compute_is_close(models):
  hf, _ = models
  enc16 = _port(hf, CFG, dtype=jnp.bfloat16, param_dtype=jnp.float32)
  assert enc16.blocks.qkv_kernel.get_value().dtype == jnp.float32
  px, grid = _inputs([(2, 4, 6)])
  want, _ = _hf_forward(hf, px, grid)
  merged, ds = _jit_call(enc16, jnp.asarray(px), jnp.asarray(grid))
  assert merged.dtype == jnp.bfloat16 and ds.dtype == jnp.bfloat16
  err = np.abs(np.asarray(merged, np.float32) - want).max()
  assert err < 0.05 * np.abs(want).max(), err


def test_sharded_equals_unsharded(models):
  _, enc = models
  px, grid = _inputs([(1, 8, 4), (2, 4, 6)])
  want, want_ds = _jit_call(enc, jnp.asarray(px), jnp.asarray(grid))
  mesh = make_mesh({"fsdp": 4, "tensor": 2})
  graphdef, state = nnx.split(enc)
  state = jax.device_put(state, param_shardings(state, mesh))
  assert state["blocks"]["fc1_kernel"].get_value().sharding.spec == P(None, "fsdp", "tensor")

  @jax.jit
  def fwd(state, px, grid):
    with use_mesh(mesh):
      return nnx.merge(graphdef, state)(px, grid)

  got, got_ds = fwd(state, jnp.asarray(px), jnp.asarray(grid))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(got_ds), np.asarray(want_ds), atol=1e-5, rtol=1e-5)


def test_every_param_has_logical_axes_and_hf_key():
  enc = nnx.eval_shape(lambda: VisionEncoder(CFG, rngs=nnx.Rngs(0)))
  flat = dict(nnx.to_flat_state(nnx.state(enc, nnx.Param)))
  for path, var in flat.items():
    axes = var.get_metadata().get("logical_axes")
    assert axes is not None and len(axes) == len(var.get_value().shape), path
  assert {p.path for p in vision_hf_params(CFG)} == set(flat)


# ----------------------------------------------------------------- per-segment attention


def _grid(items, t=2, h=4, w=6):
  return np.array([[t, h, w]] * items + [[0, 0, 0]])


def test_slot_attention_equals_masked_attention():
  from crpo_jax.model.vision import slot_attention, slot_layout

  # Mixed sizes: an image-like item (t=1), a video, a smaller video; padding rows after.
  grid = np.array([[1, 4, 6], [3, 4, 4], [2, 2, 6], [0, 0, 0]])
  real = int(grid.prod(1).sum())
  num_p = real + 8
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((num_p, 2, 8)), jnp.float32) for _ in range(3))
  _, _, _, segment = patch_layout(jnp.asarray(grid), num_p, CFG)
  want = segment_attention(q, k, v, segment)
  slots = jax.jit(slot_layout, static_argnums=(1, 2, 3))(jnp.asarray(grid), num_p, 24, 3)
  got = jax.jit(slot_attention)(q, k, v, *slots)
  scale = float(jnp.max(jnp.abs(want[:real])))
  np.testing.assert_allclose(got[:real], want[:real], atol=1e-5 * scale, rtol=1e-5)
  np.testing.assert_array_equal(got[real:], 0)


def test_encoder_with_segment_bounds_equals_masked():
  grid = np.array([[2, 4, 6], [2, 4, 4], [0, 0, 0]])
  num_p = int(grid.prod(1).sum()) + 4
  pix = np.random.default_rng(1).standard_normal((num_p, CFG.patch_dim)).astype(np.float32)
  base = VisionEncoder(CFG, rngs=nnx.Rngs(0))
  bounded = VisionEncoder(CFG, rngs=nnx.Rngs(0), segment_rows=24, segments_per_item=2)
  m0, d0 = base(pix, grid)
  m1, d1 = bounded(pix, grid)
  real = int(grid.prod(1).sum()) // 4
  for a, b in ((m0[:real], m1[:real]), (d0[:, :real], d1[:, :real])):
    np.testing.assert_allclose(b, a, atol=1e-5 * float(jnp.max(jnp.abs(a))), rtol=1e-5)
  with pytest.raises(ValueError, match="exceeds segment_rows=24"):
    bounded(np.zeros((4 * 8 * 4, CFG.patch_dim), np.float32), np.array([[4, 8, 4]]))


def test_segment_attention_cost_is_linear_in_segments():
  # 1x and 4x the segments: per-segment attention grows ~4x; the masked attention
  # of the whole call (scores [N, P, P]) would grow ~16x.
  enc = VisionEncoder(CFG, rngs=nnx.Rngs(0), segment_rows=64, segments_per_item=2)
  graphdef, state = nnx.split(enc)

  def cost(items):
    grid = _grid(items, 2, 8, 8)
    num_p = int(grid.prod(1).sum())
    fn = jax.jit(lambda s, x, g: nnx.merge(graphdef, s)(x, g)[0].sum())
    compiled = fn.lower(
      state, jax.ShapeDtypeStruct((num_p, CFG.patch_dim), jnp.float32), jnp.asarray(grid)
    ).compile()
    return compiled.memory_analysis().temp_size_in_bytes, compiled.cost_analysis()["flops"]

  (t1, f1), (t4, f4) = cost(4), cost(16)
  assert t4 <= 4.4 * t1, (t1, t4)
  assert f4 <= 4.4 * f1, (f1, f4)
