"""Parameter counts of every preset by shape only (nnx.eval_shape: no weight memory).

Published counts (reference/qwen3vl.md sections 1 and 6, meta-device instantiation
of the released configs): 4B 4.438 B with a 415.3 M vision tower, 8B 8.767 B with
576.4 M. The 2B and 32B values are computed here independently from the HF shape
table (section 6), by `_hf_shape_table_count`:
  qwen3vl_2b   2,127,532,032 (vision 406,957,056)
  qwen3vl_32b 33,357,390,064 (vision 595,266,800)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crpo_jax.model.config import PRESETS, Qwen3VLConfig
from crpo_jax.model.vlm import Qwen3VL, hf_params

PUBLISHED = {  # (total, vision) in billions / millions, rounded as published
  "qwen3vl_4b": (4.438, 415.3),
  "qwen3vl_8b": (8.767, 576.4),
}
COMPUTED = {  # exact, from the shape table (module docstring)
  "qwen3vl_2b": (2_127_532_032, 406_957_056),
  "qwen3vl_32b": (33_357_390_064, 595_266_800),
}


def _hf_shape_table_count(cfg: Qwen3VLConfig) -> tuple[int, int]:
  """(total, vision) unique parameters, summed from the HF tensor shapes of section 6."""
  v, t = cfg.vision, cfg.text
  d, i, o = v.hidden_size, v.intermediate_size, v.out_hidden_size
  m = d * v.spatial_merge_size**2  # merged width
  block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (i * d + i) + (d * i + d)
  merger_tail = (m * m + m) + (o * m + o)
  vision = (
    (d * v.patch_dim + d)  # patch_embed.proj weight [D, 3, 2, 16, 16] + bias
    + v.num_position_embeddings * d  # pos_embed
    + v.depth * block
    + 2 * d
    + merger_tail  # merger: LayerNorm(D) before the 2x2 concat
    + len(v.deepstack_visual_indexes) * (2 * m + merger_tail)  # LayerNorm(4D) after
  )
  h, n, k, hd = t.hidden_size, t.num_heads, t.num_kv_heads, t.head_dim
  layer = (
    (n * hd * h) + 2 * (k * hd * h) + (h * n * hd) + 2 * hd + 3 * (t.intermediate_size * h) + 2 * h
  )
  text = t.vocab_size * h + t.num_layers * layer + h
  head = 0 if t.tie_word_embeddings else t.vocab_size * h
  return vision + text + head, vision


def _abstract(cfg: Qwen3VLConfig) -> Qwen3VL:
  return nnx.eval_shape(
    lambda: Qwen3VL(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  )


def _count(state) -> int:
  return sum(int(np.prod(v.get_value().shape)) for _, v in nnx.to_flat_state(state))


@pytest.fixture(scope="module", params=sorted(PRESETS))
def preset(request):
  cfg = PRESETS[request.param]
  model = _abstract(cfg)
  params = nnx.state(model, nnx.Param)
  return request.param, cfg, params, _count(params), _count(params["visual"])


def test_counts_match_shape_table(preset):
  _, cfg, _, total, vision = preset
  assert (total, vision) == _hf_shape_table_count(cfg)


def test_published_and_computed_counts(preset):
  name, _, _, total, vision = preset
  if name in PUBLISHED:
    want_total, want_vision = PUBLISHED[name]
    assert round(total / 1e9, 3) == want_total
    assert round(vision / 1e6, 1) == want_vision
  elif name in COMPUTED:
    assert (total, vision) == COMPUTED[name]
  else:
    # Test- and demo-scale presets have no published count; test_counts_match_shape_table
    # checks theirs against the independent shape table.
    small = ("tiny", "tiny_compact", "demo_compact")
    assert name in small, f"preset {name} has no expected count: add one"


def test_eval_shape_holds_no_memory_and_keeps_dtype(preset):
  _, _, params, _, _ = preset
  for path, var in nnx.to_flat_state(params):
    value = var.get_value()
    assert not hasattr(value, "addressable_shards"), path  # a ShapeDtypeStruct, not an array
    assert value.dtype == jnp.bfloat16, path


def test_hf_params_cover_every_parameter_once(preset):
  _, cfg, params, _, _ = preset
  flat = dict(nnx.to_flat_state(params))
  paths = [p.path for p in hf_params(cfg)]
  assert len(paths) == len(set(paths)) and set(paths) == set(flat)
  for spec in hf_params(cfg):
    shape = flat[spec.path].get_value().shape
    assert (spec.num_layers is None) or shape[0] == spec.num_layers, spec
