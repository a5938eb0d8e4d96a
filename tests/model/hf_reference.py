"""Tiny random-init Hugging Face Qwen3-VL reference models and processor-style inputs.

Used by the parity tests of the whole model package (text decoder, vision encoder,
HF I/O). Nothing is downloaded: the reference model is built from a crpo_jax config,
its weights are re-randomised so that every parameter matters, and inputs are built
by hand from vision grids with the real special-token ids (no tokenizer needed).

Video prompts use the transformers 4.57 layout, which is what our processor emits:
per temporal group `<t seconds><|vision_start|>pads<|vision_end|>`, with no outer
wrapper (reference/qwen3vl.md section 7.1). `video_inputs(layout="5.x")` builds the
5.x layout (outer `<|vision_start|> ... <|vision_end|>` kept) for position-id tests.
"""

from __future__ import annotations

import copy
import math
import os

import jax.numpy as jnp
import numpy as np
import torch
import transformers

from crpo_jax.model.config import Qwen3VLConfig, get_preset

# ------------------------------------------------------------------ reference model


def hf_config_for(cfg: Qwen3VLConfig) -> transformers.Qwen3VLConfig:
  """The transformers config equivalent to `cfg`, eager attention, float32."""
  hf = transformers.Qwen3VLConfig(**cfg.to_hf_config())
  hf._attn_implementation = "eager"
  hf.dtype = torch.float32
  return hf


def _rerandomise(model: torch.nn.Module, seed: int) -> None:
  """Draws every parameter afresh so that no weight is trivial (ones, zeros, tiny).

  Norm weights are 1 +- noise, biases nonzero, linear weights ~ N(0, 1/fan_in) so
  activations stay of order 1, and the output head is scaled so that final logits
  are of order 10: a parity test with tolerance 1e-4 then checks ~1e-5 relative.
  """
  gen = torch.Generator().manual_seed(seed)

  def randn(shape):
    return torch.randn(shape, generator=gen, dtype=torch.float32)

  tied = model.config.tie_word_embeddings
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1 and ("norm" in name or "layernorm" in name):
        if name.endswith("bias"):
          p.copy_(0.1 * randn(p.shape))
        else:
          p.copy_(1.0 + 0.2 * randn(p.shape))
      elif p.ndim == 1:  # linear / conv biases
        p.copy_(0.1 * randn(p.shape))
      elif name.endswith("embed_tokens.weight"):
        # Tied: the embedding is also the head; std 0.45 gives logits of order 10.
        p.copy_((0.45 if tied else 1.0) * randn(p.shape))
      elif name.endswith("pos_embed.weight"):
        p.copy_(0.5 * randn(p.shape))
      elif name == "lm_head.weight":
        p.copy_(randn(p.shape) * (3.0 / math.sqrt(p.shape[1])))
      else:  # Linear [out, in] or Conv3d [out, C, T, P, P]
        fan_in = int(np.prod(p.shape[1:]))
        p.copy_(randn(p.shape) / math.sqrt(fan_in))


def build_hf_model(
  cfg: Qwen3VLConfig | None = None, seed: int = 0
) -> transformers.Qwen3VLForConditionalGeneration:
  """A float32, eval-mode HF Qwen3-VL with re-randomised, non-trivial weights."""
  cfg = get_preset("tiny") if cfg is None else cfg
  torch.manual_seed(seed)
  model = transformers.Qwen3VLForConditionalGeneration(hf_config_for(cfg))
  model = model.to(torch.float32).eval()
  _rerandomise(model, seed)
  if cfg.text.tie_word_embeddings:
    model.tie_weights()
    lm, emb = model.lm_head.weight, model.model.language_model.embed_tokens.weight
    if lm.data_ptr() != emb.data_ptr():
      raise AssertionError("hf_reference: tie_word_embeddings set but lm_head is not tied")
  return model


def save_hf_model(
  model: transformers.Qwen3VLForConditionalGeneration,
  path: str | os.PathLike,
  *,
  max_shard_size: int | str | None = None,
  dtype: torch.dtype | None = None,
) -> None:
  """Writes `model` as a HF checkpoint directory (config.json + safetensors).

  Args:
    model: the reference model.
    path: output directory.
    max_shard_size: e.g. "200KB" to force several shards; None keeps HF's default.
    dtype: storage dtype (e.g. torch.bfloat16); the model passed in is not modified.
  """
  if dtype is not None:
    model = copy.deepcopy(model).to(dtype)
  kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
  model.save_pretrained(os.fspath(path), **kwargs)


# ------------------------------------------------------------------ inputs

_IM_START, _IM_END = 151644, 151645
_NEWLINE, _USER, _ASSISTANT = 198, 872, 77091  # any small ids work; these are Qwen's


def _words(rng: np.random.Generator, n: int) -> list[int]:
  """Ids of ordinary text tokens (far from every special token)."""
  return rng.integers(10, 5000, size=n).tolist()


def _pixels(rng: np.random.Generator, grid: tuple[int, int, int], patch_dim: int) -> np.ndarray:
  t, h, w = grid
  return rng.uniform(-1.0, 1.0, size=(t * h * w, patch_dim)).astype(np.float32)


def _prompt(body: list[int], rng: np.random.Generator) -> list[int]:
  """Chat-template framing: user turn with `body`, then the assistant prefix."""
  head = [_IM_START, _USER, _NEWLINE]
  tail = _words(rng, 4) + [_IM_END, _NEWLINE, _IM_START, _ASSISTANT, _NEWLINE]
  return head + body + tail


def _image_block(cfg: Qwen3VLConfig, grid: tuple[int, int, int]) -> list[int]:
  m = cfg.vision.spatial_merge_size
  n = grid[0] * grid[1] * grid[2] // (m * m)
  return [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id]


def _video_block(
  cfg: Qwen3VLConfig, grid: tuple[int, int, int], rng: np.random.Generator, layout: str
) -> list[int]:
  """Per temporal group: timestamp text tokens, vision_start, pads, vision_end."""
  m = cfg.vision.spatial_merge_size
  per_group = grid[1] * grid[2] // (m * m)
  ids: list[int] = []
  for _ in range(grid[0]):
    ids += _words(rng, int(rng.integers(4, 7)))  # "<", "1", ".", "5", " seconds", ">"
    ids += [cfg.vision_start_token_id] + [cfg.video_token_id] * per_group
    ids += [cfg.vision_end_token_id]
  if layout == "5.x":
    ids = [cfg.vision_start_token_id] + ids + [cfg.vision_end_token_id]
  elif layout != "4.57":
    raise ValueError(f"hf_reference: unknown video layout {layout!r}; use '4.57' or '5.x'")
  return ids


def _token_types(ids: np.ndarray, attention_mask: np.ndarray, cfg: Qwen3VLConfig) -> np.ndarray:
  types = np.where(ids == cfg.image_token_id, 1, np.where(ids == cfg.video_token_id, 2, 0))
  return (types * attention_mask).astype(np.int64)


def _batch(rows: list[list[int]], cfg: Qwen3VLConfig) -> dict[str, np.ndarray]:
  """Left-pads rows to one length, as the processor does for batch generation."""
  length = max(len(r) for r in rows)
  ids = np.full((len(rows), length), cfg.pad_token_id, np.int64)
  mask = np.zeros((len(rows), length), np.int64)
  for b, r in enumerate(rows):
    ids[b, length - len(r) :] = r
    mask[b, length - len(r) :] = 1
  return {
    "input_ids": ids,
    "attention_mask": mask,
    "mm_token_type_ids": _token_types(ids, mask, cfg),
  }


IMAGE_GRID = (1, 6, 10)  # 15 merged tokens in a 3 x 5 block
VIDEO_GRID = (3, 4, 6)  # 3 temporal groups of 2 x 3 merged tokens


def text_inputs(seed: int = 0, cfg: Qwen3VLConfig | None = None) -> dict[str, np.ndarray]:
  """One text-only prompt."""
  cfg = get_preset("tiny") if cfg is None else cfg
  rng = np.random.default_rng(seed)
  return _batch([_prompt(_words(rng, 11), rng)], cfg)


def image_inputs(seed: int = 0, cfg: Qwen3VLConfig | None = None) -> dict[str, np.ndarray]:
  """One prompt with one image between two text spans."""
  cfg = get_preset("tiny") if cfg is None else cfg
  rng = np.random.default_rng(seed)
  body = _words(rng, 3) + _image_block(cfg, IMAGE_GRID) + _words(rng, 5)
  out = _batch([_prompt(body, rng)], cfg)
  out["pixel_values"] = _pixels(rng, IMAGE_GRID, cfg.vision.patch_dim)
  out["image_grid_thw"] = np.asarray([IMAGE_GRID], np.int64)
  return out


def video_inputs(
  seed: int = 0, cfg: Qwen3VLConfig | None = None, layout: str = "4.57"
) -> dict[str, np.ndarray]:
  """One prompt with one multi-frame video, each temporal group after its timestamp."""
  cfg = get_preset("tiny") if cfg is None else cfg
  rng = np.random.default_rng(seed)
  body = _video_block(cfg, VIDEO_GRID, rng, layout) + _words(rng, 6)
  out = _batch([_prompt(body, rng)], cfg)
  out["pixel_values_videos"] = _pixels(rng, VIDEO_GRID, cfg.vision.patch_dim)
  out["video_grid_thw"] = np.asarray([VIDEO_GRID], np.int64)
  return out


def mixed_batch_inputs(
  seed: int = 0, cfg: Qwen3VLConfig | None = None, layout: str = "4.57"
) -> dict[str, np.ndarray]:
  """A left-padded batch of two: row 0 holds an image, row 1 a (longer) video."""
  cfg = get_preset("tiny") if cfg is None else cfg
  rng = np.random.default_rng(seed)
  image_grid, video_grid = (1, 4, 6), (2, 6, 4)
  row0 = _prompt(_words(rng, 2) + _image_block(cfg, image_grid) + _words(rng, 3), rng)
  row1 = _prompt(_video_block(cfg, video_grid, rng, layout) + _words(rng, 4), rng)
  if len(row0) >= len(row1):
    raise AssertionError("hf_reference: the image row must be shorter so it gets padded")
  out = _batch([row0, row1], cfg)
  out["pixel_values"] = _pixels(rng, image_grid, cfg.vision.patch_dim)
  out["image_grid_thw"] = np.asarray([image_grid], np.int64)
  out["pixel_values_videos"] = _pixels(rng, video_grid, cfg.vision.patch_dim)
  out["video_grid_thw"] = np.asarray([video_grid], np.int64)
  return out


def to_torch(inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
  """Processor-style numpy dict -> torch tensors for the HF model."""
  return {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}


@torch.no_grad()
def hf_logits(model: transformers.Qwen3VLForConditionalGeneration, inputs) -> np.ndarray:
  """Float32 logits [B, L, V] of a full no-cache forward."""
  return model(**to_torch(inputs), use_cache=False).logits.float().numpy()


# ------------------------------------------------------------------ weights HF -> ours


def _to_ours(tensor: torch.Tensor, transform: str) -> np.ndarray:
  from crpo_jax.model.hf_spec import IDENTITY, PATCH_CONV, TRANSPOSE

  a = tensor.detach().float().numpy()
  if transform == IDENTITY:
    return a
  if transform == TRANSPOSE:
    return a.T
  if transform == PATCH_CONV:
    return a.reshape(a.shape[0], -1).T
  raise ValueError(f"hf_reference: unknown transform {transform!r}")


def copy_hf_weights(model, hf_model: transformers.Qwen3VLForConditionalGeneration) -> None:
  """Loads the HF model's weights into a crpo_jax `Qwen3VL`, driven by `hf_params`.

  A stand-in for `hf_io.load_hf` that needs no files; it also checks that the
  mapping covers every parameter of `model` exactly once with matching shapes.
  """
  from flax import nnx

  from crpo_jax.model.vlm import hf_params

  sd = hf_model.state_dict()
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  seen = set()
  for p in hf_params(model.config):
    if p.path not in flat:
      raise KeyError(f"hf_reference: {p.path} from hf_params is not a parameter of the model")
    slices = [_to_ours(sd[k], p.transform) for k in p.keys()]  # noqa: SIM118 (HFParam.keys)
    value = np.stack(slices) if p.num_layers is not None else slices[0]
    var = flat[p.path]
    if value.shape != var.get_value().shape:
      raise ValueError(
        f"hf_reference: {p.path} has shape {var.get_value().shape}, HF {value.shape}"
      )
    var.set_value(jnp.asarray(value, var.get_value().dtype))
    seen.add(p.path)
  missing = set(flat) - seen
  if missing:
    raise KeyError(f"hf_reference: parameters not covered by hf_params: {sorted(missing)}")
