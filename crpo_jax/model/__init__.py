"""Qwen3-VL in Flax NNX.

Imports nothing but jax, flax, numpy (and safetensors when weights are read or
written), so it runs on a bare accelerator image.

Einsum letter code, used in every contraction string, jaxtyping annotation and
name suffix (`q_BTNH`):
  B batch, T query length, S key length, D model width, N query heads,
  K kv heads, G query heads per kv head, H head dim, F MLP hidden, V vocab,
  L stacked layers; vision: P patches, C patch features (C*Tp*P*P = 1536).

`load_hf` / `save_hf` (crpo_jax.model.hf_io) are imported lazily on first access,
so importing the model does not import safetensors.
"""

from crpo_jax.model.cache import Cache, init_cache
from crpo_jax.model.config import PRESETS, Qwen3VLConfig, TextConfig, VisionConfig, get_preset
from crpo_jax.model.positions import get_rope_index
from crpo_jax.model.vlm import Qwen3VL, hf_params

_LAZY = {"load_hf", "save_hf"}


def __getattr__(name: str):
  if name in _LAZY:
    from crpo_jax.model import hf_io  # lazy on purpose

    return getattr(hf_io, name)
  raise AttributeError(f"module 'crpo_jax.model' has no attribute {name!r}")


__all__ = [
  "PRESETS",
  "Cache",
  "Qwen3VL",
  "Qwen3VLConfig",
  "TextConfig",
  "VisionConfig",
  "get_preset",
  "get_rope_index",
  "hf_params",
  "init_cache",
  "load_hf",
  "save_hf",
]
