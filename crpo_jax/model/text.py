"""Qwen3-VL text decoder: stacked Qwen3 layers, DeepStack injection, final norm.

reference/qwen3vl.md section 3. All decoder layers live in one `DecoderLayer`
module whose parameters carry a leading layer axis; `TextModel.__call__` walks them
with `jax.lax.scan`, re-assembling one layer from its parameter slice each step.
DeepStack features are data: a [K, Nvis, D] array whose level i is added at the
visual positions after layer i for i < K (layers >= K add nothing), so no layer is
special-cased in Python.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from crpo_jax.model import remat as remat_lib
from crpo_jax.model.array_types import Array, Bool, Float, Int
from crpo_jax.model.attention import Attention
from crpo_jax.model.config import Qwen3VLConfig, TextConfig
from crpo_jax.model.hf_spec import IDENTITY, TRANSPOSE, HFParam
from crpo_jax.model.layers import Embed, Linear, RMSNorm
from crpo_jax.model.rope import mrope_cos_sin
from crpo_jax.sharding import constrain

_BTD = ("batch", "length", "embed")


@dataclasses.dataclass(frozen=True)
class DeepStack:
  """Visual features injected into the first decoder layers.

  Attributes:
    features: [K, Nvis, D], level k added after decoder layer k.
    token_index: [B, T] row of `features` that each position takes (any value at
      non-visual positions).
    is_visual: [B, T] True at image and video placeholder positions.
  """

  features: Float[Array, "K N D"]
  token_index: Int[Array, "B T"]
  is_visual: Bool[Array, "B T"]


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: TextConfig, *, stack=None, dtype, param_dtype, rngs: nnx.Rngs):
    d, f = cfg.hidden_size, cfg.intermediate_size
    kw = {"stack": stack, "dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
    self.gate_proj = Linear(d, f, logical_axes=("embed", "mlp"), **kw)
    self.up_proj = Linear(d, f, logical_axes=("embed", "mlp"), **kw)
    self.down_proj = Linear(f, d, logical_axes=("mlp", "embed"), **kw)

  def __call__(self, x_BTD: Float[Array, "B T D"]) -> Float[Array, "B T D"]:
    h_BTF = jax.nn.silu(self.gate_proj(x_BTD)) * self.up_proj(x_BTD)
    h_BTF = constrain(h_BTF, ("batch", "length", "mlp"))
    return self.down_proj(h_BTF)


class DecoderLayer(nnx.Module):
  """Pre-norm Qwen3 block: x + attn(norm(x)), then h + mlp(norm(h))."""

  def __init__(self, cfg: TextConfig, *, stack=None, dtype, param_dtype, rngs: nnx.Rngs):
    kw = {"stack": stack, "dtype": dtype, "param_dtype": param_dtype}
    self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)
    self.self_attn = Attention(cfg, rngs=rngs, **kw)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)
    self.mlp = MLP(cfg, rngs=rngs, **kw)

  def __call__(self, x_BTD, cos, sin, key_mask, query_slot, kv_cache=None, write_index=None):
    attn_BTD, kv_cache = self.self_attn(
      self.input_layernorm(x_BTD), cos, sin, key_mask, query_slot, kv_cache, write_index
    )
    h_BTD = constrain(x_BTD + attn_BTD, _BTD)
    return constrain(h_BTD + self.mlp(self.post_attention_layernorm(h_BTD)), _BTD), kv_cache


class TextModel(nnx.Module):
  """Token embedding, `num_layers` stacked decoder layers and the final RMSNorm."""

  def __init__(
    self,
    cfg: TextConfig,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    remat: str | bool = "none",
    rngs: nnx.Rngs,
  ):
    kw = {"dtype": dtype, "param_dtype": param_dtype}
    self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, rngs=rngs, **kw)
    self.layers = DecoderLayer(cfg, stack=cfg.num_layers, rngs=rngs, **kw)
    self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)
    self.cfg = cfg
    self.dtype = dtype
    # Recompute (part of) each layer in the backward pass (`crpo_jax.model.remat`).
    self.remat = remat_lib.policy_name(remat)

  def __call__(
    self,
    x_BTD: Float[Array, "B T D"],
    positions: Int[Array, "3 B T"],
    key_mask: Bool[Array, "B S"],
    query_slot: Int[Array, " T"],
    deepstack: DeepStack | None = None,
    kv_cache: tuple[Array, Array] | None = None,
    write_index: Int[Array, ""] | None = None,
  ) -> tuple[Float[Array, "B T D"], tuple[Array, Array] | None]:
    """Runs every layer on input embeddings; returns final-normed hidden states.

    Args:
      x_BTD: input embeddings (visual tokens already spliced in).
      positions: 3-row MRoPE positions of the T inputs.
      key_mask: keys holding real tokens (S = T without a cache).
      query_slot: key slot of each input; it attends to slots up to its own.
      deepstack: features injected after the first layers, or None.
      kv_cache: (k, v), each [L, B, S, K, H]; written at `write_index`.
      write_index: first cache slot of this call's tokens.

    Returns:
      Hidden states [B, T, D] after the final norm, and the new (k, v) or None.
    """
    cfg = self.cfg
    cos, sin = mrope_cos_sin(
      positions,
      head_dim=cfg.head_dim,
      theta=cfg.rope_theta,
      mrope_section=cfg.mrope_section,
      dtype=self.dtype,
    )
    graphdef, params = nnx.split(self.layers)
    has_cache = kv_cache is not None

    def body(x, xs):
      layer_params, i, kv = xs
      layer = nnx.merge(graphdef, layer_params)
      x, kv = layer(x, cos, sin, key_mask, query_slot, kv if has_cache else None, write_index)
      if deepstack is not None:
        num_levels = deepstack.features.shape[0]
        level = jax.lax.dynamic_index_in_dim(
          deepstack.features, jnp.minimum(i, num_levels - 1), keepdims=False
        )
        inject = deepstack.is_visual[..., None] & (i < num_levels)
        x = x + jnp.where(inject, level[deepstack.token_index].astype(x.dtype), 0)
      return constrain(x, _BTD), kv

    layer_ids = jnp.arange(cfg.num_layers, dtype=jnp.int32)
    xs = (params, layer_ids, kv_cache if has_cache else layer_ids)
    body = remat_lib.wrap(body, self.remat)
    x_BTD, new_kv = jax.lax.scan(body, constrain(x_BTD, _BTD), xs)
    return self.norm(x_BTD), (new_kv if has_cache else None)


def text_hf_params(cfg: Qwen3VLConfig) -> list[HFParam]:
  """HF safetensors keys of the text decoder and head, paths from the Qwen3VL root."""
  t = cfg.text
  root, hf = ("language_model",), "model.language_model"
  out = [HFParam(root + ("embed_tokens", "embedding"), f"{hf}.embed_tokens.weight")]
  stacked = {
    ("input_layernorm", "weight"): IDENTITY,
    ("post_attention_layernorm", "weight"): IDENTITY,
    ("self_attn", "q_proj", "kernel"): TRANSPOSE,
    ("self_attn", "k_proj", "kernel"): TRANSPOSE,
    ("self_attn", "v_proj", "kernel"): TRANSPOSE,
    ("self_attn", "o_proj", "kernel"): TRANSPOSE,
    ("self_attn", "q_norm", "weight"): IDENTITY,
    ("self_attn", "k_norm", "weight"): IDENTITY,
    ("mlp", "gate_proj", "kernel"): TRANSPOSE,
    ("mlp", "up_proj", "kernel"): TRANSPOSE,
    ("mlp", "down_proj", "kernel"): TRANSPOSE,
  }
  for sub, transform in stacked.items():
    key = f"{hf}.layers.{{i}}." + ".".join(sub[:-1]) + ".weight"
    out.append(HFParam(root + ("layers",) + sub, key, t.num_layers, transform))
  out.append(HFParam(root + ("norm", "weight"), f"{hf}.norm.weight"))
  if not t.tie_word_embeddings:
    out.append(HFParam(("lm_head", "kernel"), "lm_head.weight", None, TRANSPOSE))
  return out
