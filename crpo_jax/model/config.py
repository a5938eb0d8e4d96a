"""Architecture configs for Qwen3-VL: frozen dataclasses, presets, HF conversion.

Values of the released checkpoints are in ../shared/reference/qwen3vl.md section 1.
The class defaults of transformers are *not* the released models: always go through
a preset or `from_hf_config` of a real `config.json`.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """Qwen3 dense decoder with interleaved MRoPE."""

  vocab_size: int = 151936
  hidden_size: int = 4096
  intermediate_size: int = 12288
  num_layers: int = 36
  num_heads: int = 32
  num_kv_heads: int = 8
  head_dim: int = 128
  rms_norm_eps: float = 1e-6
  rope_theta: float = 5_000_000.0
  mrope_section: tuple[int, int, int] = (24, 20, 20)
  max_position_embeddings: int = 262144
  tie_word_embeddings: bool = False

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads {self.num_heads} not divisible by kv heads {self.num_kv_heads}")
    if sum(self.mrope_section) != self.head_dim // 2:
      raise ValueError(f"mrope_section {self.mrope_section} must sum to head_dim/2")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """Qwen3-VL ViT with 2-D rotary, learned interpolated positions and DeepStack taps."""

  depth: int = 27
  hidden_size: int = 1152
  intermediate_size: int = 4304
  num_heads: int = 16
  in_channels: int = 3
  patch_size: int = 16
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  out_hidden_size: int = 4096
  num_position_embeddings: int = 2304
  deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
  layer_norm_eps: float = 1e-6
  rope_theta: float = 10000.0

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Features per `pixel_values` row: C * Tp * P * P (1536 for Qwen3-VL)."""
    return self.in_channels * self.temporal_patch_size * self.patch_size**2

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"vision hidden {self.hidden_size} not divisible by {self.num_heads} heads")
    if any(not 0 <= i < self.depth for i in self.deepstack_visual_indexes):
      raise ValueError(
        f"deepstack indexes {self.deepstack_visual_indexes} outside depth {self.depth}"
      )


@dataclasses.dataclass(frozen=True)
class Qwen3VLConfig:
  text: TextConfig = TextConfig()
  vision: VisionConfig = VisionConfig()
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  bos_token_id: int = 151643
  eos_token_id: int = 151645
  pad_token_id: int = 151643

  def __post_init__(self):
    if self.vision.out_hidden_size != self.text.hidden_size:
      raise ValueError(
        f"vision out_hidden_size {self.vision.out_hidden_size} != text hidden {self.text.hidden_size}"
      )

  # ---------------------------------------------------------------- HF conversion

  @classmethod
  def from_hf_config(cls, hf: dict[str, Any]) -> Qwen3VLConfig:
    """Reads a Qwen3-VL `config.json` dict (4.57 `rope_scaling` or 5.x `rope_parameters`)."""
    if hf.get("model_type") not in (None, "qwen3_vl"):
      raise ValueError(f"config.json model_type {hf.get('model_type')!r} is not 'qwen3_vl'")
    for field in ("text_config", "vision_config"):
      if field not in hf:
        raise ValueError(f"config.json is missing {field!r}")
    t, v = hf["text_config"], hf["vision_config"]
    rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
    theta = t.get("rope_theta", rope.get("rope_theta"))
    if theta is None:
      raise ValueError(
        "config.json text_config has neither rope_theta nor rope_parameters.rope_theta"
      )
    tie = hf.get("tie_word_embeddings", t.get("tie_word_embeddings", False))
    text = TextConfig(
      vocab_size=t["vocab_size"],
      hidden_size=t["hidden_size"],
      intermediate_size=t["intermediate_size"],
      num_layers=t["num_hidden_layers"],
      num_heads=t["num_attention_heads"],
      num_kv_heads=t.get("num_key_value_heads", t["num_attention_heads"]),
      head_dim=t.get("head_dim") or t["hidden_size"] // t["num_attention_heads"],
      rms_norm_eps=t.get("rms_norm_eps", 1e-6),
      rope_theta=float(theta),
      mrope_section=tuple(rope.get("mrope_section", (24, 20, 20))),
      max_position_embeddings=t.get("max_position_embeddings", 262144),
      tie_word_embeddings=bool(tie),
    )
    vrope = v.get("rope_parameters") or {}
    vision = VisionConfig(
      depth=v["depth"],
      hidden_size=v["hidden_size"],
      intermediate_size=v["intermediate_size"],
      num_heads=v["num_heads"],
      in_channels=v.get("in_channels", 3),
      patch_size=v.get("patch_size", 16),
      temporal_patch_size=v.get("temporal_patch_size", 2),
      spatial_merge_size=v.get("spatial_merge_size", 2),
      out_hidden_size=v["out_hidden_size"],
      num_position_embeddings=v.get("num_position_embeddings", 2304),
      deepstack_visual_indexes=tuple(v.get("deepstack_visual_indexes", ())),
      rope_theta=float(vrope.get("rope_theta", 10000.0)),
    )
    ids = {
      k: hf[k]
      for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
      if k in hf
    }
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
      val = t.get(k, hf.get(k))
      if isinstance(val, int):
        ids[k] = val
    return cls(text=text, vision=vision, **ids)

  def to_hf_config(self) -> dict[str, Any]:
    """A `config.json` dict in the 4.57 form (`rope_theta` + `rope_scaling`).

    transformers 4.57 cannot read 5.x's `rope_parameters`; 5.x reads both, so export
    writes the older keys (reference/qwen3vl.md section 1).
    """
    t, v = self.text, self.vision
    return {
      "architectures": ["Qwen3VLForConditionalGeneration"],
      "model_type": "qwen3_vl",
      "image_token_id": self.image_token_id,
      "video_token_id": self.video_token_id,
      "vision_start_token_id": self.vision_start_token_id,
      "vision_end_token_id": self.vision_end_token_id,
      "tie_word_embeddings": t.tie_word_embeddings,
      "text_config": {
        "model_type": "qwen3_vl_text",
        "vocab_size": t.vocab_size,
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_layers,
        "num_attention_heads": t.num_heads,
        "num_key_value_heads": t.num_kv_heads,
        "head_dim": t.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": t.rms_norm_eps,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "max_position_embeddings": t.max_position_embeddings,
        "rope_theta": t.rope_theta,
        "rope_scaling": {
          "rope_type": "default",
          "mrope_section": list(t.mrope_section),
          "mrope_interleaved": True,
        },
        "tie_word_embeddings": t.tie_word_embeddings,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": self.eos_token_id,
        "pad_token_id": self.pad_token_id,
        "use_cache": True,
      },
      "vision_config": {
        "model_type": "qwen3_vl",
        "depth": v.depth,
        "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size,
        "num_heads": v.num_heads,
        "in_channels": v.in_channels,
        "patch_size": v.patch_size,
        "temporal_patch_size": v.temporal_patch_size,
        "spatial_merge_size": v.spatial_merge_size,
        "out_hidden_size": v.out_hidden_size,
        "num_position_embeddings": v.num_position_embeddings,
        "deepstack_visual_indexes": list(v.deepstack_visual_indexes),
        "hidden_act": "gelu_pytorch_tanh",
        "initializer_range": 0.02,
      },
    }


# -------------------------------------------------------------------- presets


def _preset(text: dict, vision: dict) -> Qwen3VLConfig:
  return Qwen3VLConfig(text=TextConfig(**text), vision=VisionConfig(**vision))


_VISION_SMALL = {
  "depth": 24,
  "hidden_size": 1024,
  "intermediate_size": 4096,
  "num_heads": 16,
  "deepstack_visual_indexes": (5, 11, 17),
}
_VISION_LARGE = {
  "depth": 27,
  "hidden_size": 1152,
  "intermediate_size": 4304,
  "num_heads": 16,
  "deepstack_visual_indexes": (8, 16, 24),
}

PRESETS: dict[str, Qwen3VLConfig] = {
  "qwen3vl_2b": _preset(
    {
      "hidden_size": 2048,
      "intermediate_size": 6144,
      "num_layers": 28,
      "num_heads": 16,
      "num_kv_heads": 8,
      "tie_word_embeddings": True,
    },
    dict(_VISION_SMALL, out_hidden_size=2048),
  ),
  "qwen3vl_4b": _preset(
    {
      "hidden_size": 2560,
      "intermediate_size": 9728,
      "num_layers": 36,
      "num_heads": 32,
      "num_kv_heads": 8,
      "tie_word_embeddings": True,
    },
    dict(_VISION_SMALL, out_hidden_size=2560),
  ),
  "qwen3vl_8b": _preset(
    {
      "hidden_size": 4096,
      "intermediate_size": 12288,
      "num_layers": 36,
      "num_heads": 32,
      "num_kv_heads": 8,
      "tie_word_embeddings": False,
    },
    dict(_VISION_LARGE, out_hidden_size=4096),
  ),
  "qwen3vl_32b": _preset(
    {
      "hidden_size": 5120,
      "intermediate_size": 25600,
      "num_layers": 64,
      "num_heads": 64,
      "num_kv_heads": 8,
      "tie_word_embeddings": False,
    },
    dict(_VISION_LARGE, out_hidden_size=5120),
  ),
  # Tiny CPU model: distinct odd-ish sizes so a transposed axis cannot hide. The real
  # vocabulary size is kept so the real special-token ids work.
  "tiny": _preset(
    {
      "hidden_size": 48,
      "intermediate_size": 72,
      "num_layers": 3,
      "num_heads": 6,
      "num_kv_heads": 2,
      "head_dim": 16,
      "mrope_section": (4, 2, 2),
      "max_position_embeddings": 4096,
      "tie_word_embeddings": False,
    },
    {
      "depth": 3,
      "hidden_size": 40,
      "intermediate_size": 56,
      "num_heads": 2,
      "out_hidden_size": 48,
      "deepstack_visual_indexes": (0, 2),
    },
  ),
}

# Narrow-vocabulary presets for the CPU synthetic world (ours). The word tokenizer's
# compact layout (data.compact_vocab, data/tokenizer.py) puts the Qwen added tokens at
# ids 1..26 in Qwen's order, so every special token keeps its role; 512 rows hold those
# and the few hundred words of the synthetic world. With 152k rows the tiny model is
# 99% vocabulary and the head takes most of each step.
_COMPACT_IDS = {
  "vocab_size": 512,
  "image_token_id": 13,
  "video_token_id": 14,
  "vision_start_token_id": 10,
  "vision_end_token_id": 11,
  "bos_token_id": 1,
  "eos_token_id": 3,
  "pad_token_id": 1,
}


def _compact(base: Qwen3VLConfig, **text) -> Qwen3VLConfig:
  ids = {k: v for k, v in _COMPACT_IDS.items() if k != "vocab_size"}
  text_cfg = dataclasses.replace(base.text, vocab_size=_COMPACT_IDS["vocab_size"], **text)
  return dataclasses.replace(base, text=text_cfg, **ids)


# The tiny body with a 512-row vocabulary.
PRESETS["tiny_compact"] = _compact(PRESETS["tiny"])
# A wider demo model (still a few hundred vocabulary rows): width 96, 4 text layers.
PRESETS["demo_compact"] = _compact(
  _preset(
    {
      "hidden_size": 96,
      "intermediate_size": 192,
      "num_layers": 4,
      "num_heads": 6,
      "num_kv_heads": 2,
      "head_dim": 16,
      "mrope_section": (4, 2, 2),
      "max_position_embeddings": 4096,
      "tie_word_embeddings": False,
    },
    {
      "depth": 3,
      "hidden_size": 64,
      "intermediate_size": 128,
      "num_heads": 4,
      "out_hidden_size": 96,
      "deepstack_visual_indexes": (0, 2),
    },
  )
)


def get_preset(name: str) -> Qwen3VLConfig:
  try:
    return PRESETS[name]
  except KeyError:
    raise ValueError(f"unknown Qwen3-VL preset {name!r}; known: {sorted(PRESETS)}") from None
