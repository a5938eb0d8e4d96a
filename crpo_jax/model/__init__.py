"""Qwen3-VL in Flax NNX.

Imports nothing but jax, flax, numpy (and safetensors when weights are read or
written), so it runs on a bare accelerator image.

Einsum letter code, used in every contraction string, jaxtyping annotation and
name suffix (`q_BTNH`):
  B batch, T query length, S key length, D model width, N query heads,
  K kv heads, G query heads per kv head, H head dim, F MLP hidden, V vocab,
  L stacked layers; vision: P patches, C patch features (C*Tp*P*P = 1536).
"""

from crpo_jax.model.config import PRESETS, Qwen3VLConfig, TextConfig, VisionConfig, get_preset

__all__ = ["PRESETS", "Qwen3VLConfig", "TextConfig", "VisionConfig", "get_preset"]
