"""Hugging Face checkpoint directories in and out: `load_hf` and `save_hf`.

Loading builds the model abstractly (`nnx.eval_shape`, no random-init memory) and
streams each parameter of `vlm.hf_params(cfg)` onto its target sharding with
`jax.make_array_from_callback`: every device shard is read from the memory-mapped
safetensors file(s) as just the slice it needs, transformed and cast, so the host
never holds the whole model (nor even a whole stacked parameter when sharded).
Saving writes one layer slice at a time into size-bounded shards.

Only numpy, safetensors and ml_dtypes (a jax dependency) are used: no torch.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Self

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from safetensors import safe_open
from safetensors.numpy import save_file

from crpo_jax.model.config import Qwen3VLConfig
from crpo_jax.model.hf_spec import IDENTITY, PATCH_CONV, TRANSPOSE, HFParam
from crpo_jax.model.vlm import Qwen3VL, hf_params
from crpo_jax.sharding import Rules, param_shardings

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_EMBED_KEY, _HEAD_KEY = "model.language_model.embed_tokens.weight", "lm_head.weight"
# safetensors dtype codes numpy cannot name by itself: read through ml_dtypes.
_EXTRA_DTYPES = {
  "BF16": ml_dtypes.bfloat16,
  "F8_E4M3": ml_dtypes.float8_e4m3fn,
  "F8_E5M2": ml_dtypes.float8_e5m2,
}


class SafetensorsDir:
  """Read-only view of a checkpoint directory (one file, or shards plus an index)."""

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self._stack = contextlib.ExitStack()
    self._handles: dict[str, Any] = {}
    self._maps: dict[str, np.memmap] = {}
    if (self.path / INDEX_FILE).exists():
      index = json.loads((self.path / INDEX_FILE).read_text())
      if "weight_map" not in index:
        raise ValueError(f"hf_io: {self.path / INDEX_FILE} has no 'weight_map'")
      self.file_of: dict[str, str] = dict(index["weight_map"])
    elif (self.path / SINGLE_FILE).exists():
      self.file_of = {k: SINGLE_FILE for k in self._handle(SINGLE_FILE).keys()}  # noqa: SIM118
    else:
      raise FileNotFoundError(f"hf_io: {self.path} has neither {SINGLE_FILE} nor {INDEX_FILE}")

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc) -> None:
    self._maps.clear()
    self._stack.close()

  def _handle(self, name: str):
    if name not in self._handles:
      if not (self.path / name).exists():
        raise FileNotFoundError(f"hf_io: shard {self.path / name} named in {INDEX_FILE} is missing")
      self._handles[name] = self._stack.enter_context(
        safe_open(self.path / name, framework="numpy")
      )
    return self._handles[name]

  def where(self, key: str) -> str:
    return str(self.path / self.file_of.get(key, "?"))

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self._handle(self.file_of[key]).get_slice(key).get_shape())

  def read(self, key: str, index: tuple[slice, ...]) -> np.ndarray:
    """The `index` slice of tensor `key`, reading only those bytes."""
    name = self.file_of[key]
    view = self._handle(name).get_slice(key)
    if view.get_dtype() not in _EXTRA_DTYPES:
      return np.asarray(view[index])
    # safetensors' numpy slices cannot hold bf16: memory-map the raw bytes instead.
    if key not in self._maps:
      self._maps[key] = _memmap(
        self.path / name, key, view.get_shape(), _EXTRA_DTYPES[view.get_dtype()]
      )
    return np.asarray(self._maps[key][index])


def _memmap(file: Path, key: str, shape, dtype) -> np.memmap:
  """A memmap of one tensor from the safetensors layout (u64 header size, JSON, data)."""
  with open(file, "rb") as f:
    size = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(size))
  begin, end = header[key]["data_offsets"]
  if end - begin != int(np.prod(shape)) * np.dtype(dtype).itemsize:
    raise ValueError(f"hf_io: {file}: byte range of {key!r} does not match its shape {shape}")
  return np.memmap(file, dtype=dtype, mode="r", offset=8 + size + begin, shape=tuple(shape))


# ------------------------------------------------------------------ layouts


def hf_shape(ours: tuple[int, ...], transform: str, patch: tuple[int, ...] = ()) -> tuple[int, ...]:
  """HF tensor shape of one (unstacked) parameter slice of shape `ours`."""
  if transform == IDENTITY:
    return ours
  if transform == TRANSPOSE:
    return ours[::-1]
  if transform == PATCH_CONV:  # ours [C*T*P*P, D] <- torch Conv3d [D, C, T, P, P]
    return (ours[1], *patch)
  raise ValueError(f"hf_io: unknown transform {transform!r}")


def to_hf(x: np.ndarray, transform: str, patch: tuple[int, ...] = ()) -> np.ndarray:
  """One parameter slice in crpo_jax layout -> HF layout."""
  if transform == IDENTITY:
    return x
  if transform == TRANSPOSE:
    return np.ascontiguousarray(x.T)
  if transform == PATCH_CONV:
    return np.ascontiguousarray(x.T).reshape(hf_shape(x.shape, transform, patch))
  raise ValueError(f"hf_io: unknown transform {transform!r}")


def _read_ours(
  ckpt: SafetensorsDir, key: str, transform: str, index: tuple[slice, ...]
) -> np.ndarray:
  """The `index` slice (crpo_jax layout) of one HF tensor, reading only what it needs."""
  if transform == IDENTITY:
    return ckpt.read(key, index)
  if transform == TRANSPOSE:
    return ckpt.read(key, index[::-1]).T
  if transform == PATCH_CONV:  # index = (features, width); HF rows are the width
    block = ckpt.read(key, (index[1],))
    return block.reshape(block.shape[0], -1).T[index[0]]
  raise ValueError(f"hf_io: unknown transform {transform!r}")


# ------------------------------------------------------------------ loading


def load_params(
  model: nnx.Module,
  specs: list[HFParam],
  path: str | os.PathLike,
  *,
  param_dtype=None,
  mesh: jax.sharding.Mesh | None = None,
  rules: Rules | None = None,
  patch: tuple[int, ...] = (),
  aliases: dict[str, str] | None = None,
  ignore: tuple[str, ...] = (),
) -> None:
  """Fills the (abstract or concrete) parameters of `model` from a checkpoint dir.

  Args:
    model: e.g. `nnx.eval_shape(lambda: Qwen3VL(...))`; its Params are replaced.
    specs: which HF key(s) feed each parameter path.
    path: checkpoint directory.
    param_dtype: storage dtype; None keeps each parameter's declared dtype.
    mesh: place each parameter with `param_shardings(state, mesh, rules)`; None puts
      everything on the default device.
    rules: logical-axis rules for `mesh`.
    patch: (C, T, P, P) of PATCH_CONV tensors, for the shape check.
    aliases: key -> fallback key when the first is absent (tied embeddings).
    ignore: checkpoint keys that may be present without being used.

  Raises:
    KeyError: a needed key is absent, or the checkpoint has keys nothing uses.
    ValueError: a tensor's shape does not match the model.
  """
  aliases = aliases or {}
  state = nnx.state(model, nnx.Param)
  flat = dict(nnx.to_flat_state(state))
  shardings = (
    dict(nnx.to_flat_state(param_shardings(state, mesh, rules))) if mesh is not None else {}
  )
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  covered, used = set(), set()
  with SafetensorsDir(path) as ckpt:
    for spec in specs:
      if spec.path not in flat:
        raise KeyError(f"hf_io: parameter path {spec.path} (HF {spec.hf_key}) is not in the model")
      var = flat[spec.path]
      shape, dtype = tuple(var.get_value().shape), np.dtype(param_dtype or var.get_value().dtype)
      keys = []
      for key in spec.keys():  # noqa: SIM118  (HFParam.keys)
        if key not in ckpt.file_of and aliases.get(key) in ckpt.file_of:
          key = aliases[key]
        if key not in ckpt.file_of:
          raise KeyError(f"hf_io: checkpoint {ckpt.path} has no tensor {key!r} (for {spec.path})")
        want = hf_shape(shape[1:] if spec.num_layers is not None else shape, spec.transform, patch)
        if ckpt.shape(key) != want:
          raise ValueError(
            f"hf_io: {ckpt.where(key)}: {key!r} has shape {ckpt.shape(key)}, the model needs {want}"
          )
        keys.append(key)
      used.update(keys)
      cache: dict[Any, np.ndarray] = {}  # replicas ask for the same index: read once

      def shard(index, spec=spec, keys=keys, dtype=dtype, cache=cache):
        marker = tuple((s.start, s.stop) for s in index)
        if marker not in cache:
          cache.clear()
          if spec.num_layers is None:
            block = _read_ours(ckpt, keys[0], spec.transform, index)
          else:
            layers = range(*index[0].indices(len(keys)))
            block = np.stack([_read_ours(ckpt, keys[i], spec.transform, index[1:]) for i in layers])
          cache[marker] = block.astype(dtype)
        return cache[marker]

      sharding = shardings.get(spec.path, default)
      var.set_value(jax.make_array_from_callback(shape, sharding, shard))
      covered.add(spec.path)
    unexpected = sorted(set(ckpt.file_of) - used - set(ignore))
    if unexpected:
      raise KeyError(f"hf_io: checkpoint {ckpt.path} has unexpected tensors, e.g. {unexpected[:5]}")
  missing = sorted(set(flat) - covered)
  if missing:
    raise KeyError(f"hf_io: model parameters without an HF key: {missing[:5]}")
  nnx.update(model, state)


def load_hf(
  path: str | os.PathLike,
  dtype=jnp.bfloat16,
  param_dtype=None,
  mesh: jax.sharding.Mesh | None = None,
  rules: Rules | None = None,
  remat: str = "none",
  vision_segments: tuple[int, int] | None = None,
):
  """Loads a `Qwen3VL` from a HF checkpoint directory.

  Args:
    path: directory with config.json and model.safetensors (or shards + index);
      bf16 or fp32 tensors; tied checkpoints with or without lm_head.weight.
    dtype: compute dtype.
    param_dtype: storage dtype; defaults to `dtype`.
    mesh: target mesh; parameters are sharded by their logical axes and `rules`.
    rules: logical-axis rules (default `sharding.DEFAULT_RULES`).
    remat: rematerialisation policy of the layer stacks (`crpo_jax.model.remat`).
    vision_segments: per-segment vision attention bounds (`Qwen3VL`).

  Returns:
    The model, every parameter on its target sharding.
  """
  path = Path(path)
  if not (path / "config.json").exists():
    raise FileNotFoundError(f"hf_io: {path / 'config.json'} not found")
  cfg = Qwen3VLConfig.from_hf_config(json.loads((path / "config.json").read_text()))
  param_dtype = dtype if param_dtype is None else param_dtype
  model = nnx.eval_shape(
    lambda: Qwen3VL(
      cfg,
      dtype=dtype,
      param_dtype=param_dtype,
      remat=remat,
      vision_segments=vision_segments,
      rngs=nnx.Rngs(0),
    )
  )
  tied = cfg.text.tie_word_embeddings
  load_params(
    model,
    hf_params(cfg),
    path,
    param_dtype=param_dtype,
    mesh=mesh,
    rules=rules,
    patch=_patch(cfg),
    aliases={_EMBED_KEY: _HEAD_KEY} if tied else None,
    ignore=(_HEAD_KEY, _EMBED_KEY) if tied else (),
  )
  abstract = [
    p
    for p, v in nnx.to_flat_state(nnx.state(model))
    if isinstance(v.get_value(), jax.ShapeDtypeStruct)
  ]
  if abstract:
    raise NotImplementedError(f"hf_io: model state without a checkpoint source: {abstract[:5]}")
  return model


def _patch(cfg: Qwen3VLConfig) -> tuple[int, ...]:
  v = cfg.vision
  return (v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)


# ------------------------------------------------------------------ saving


def save_params(
  model: nnx.Module,
  specs: list[HFParam],
  path: str | os.PathLike,
  *,
  dtype=None,
  max_shard_size_bytes: int = 4 * 2**30,
  patch: tuple[int, ...] = (),
) -> list[str]:
  """Writes the parameters named by `specs` as HF safetensors, one slice at a time.

  One file `model.safetensors` when everything fits in `max_shard_size_bytes`,
  otherwise `model-0000i-of-0000n.safetensors` plus `model.safetensors.index.json`.
  The host holds at most one shard. On several hosts every process must call
  this (arrays are gathered); only process 0 writes.

  Returns:
    The written file names.
  """
  path = Path(path)
  writer = jax.process_index() == 0
  if writer:
    path.mkdir(parents=True, exist_ok=True)
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  entries = []  # (key, parameter value, layer or None, transform, bytes)
  for spec in specs:
    if spec.path not in flat:
      raise KeyError(f"hf_io: parameter path {spec.path} (HF {spec.hf_key}) is not in the model")
    value = flat[spec.path].get_value()
    out_dtype = np.dtype(dtype or value.dtype)
    shape = value.shape[1:] if spec.num_layers is not None else value.shape
    nbytes = int(np.prod(shape)) * out_dtype.itemsize
    for i, key in enumerate(spec.keys()):
      layer = i if spec.num_layers is not None else None
      entries.append((key, value, layer, spec.transform, out_dtype, nbytes))
  shards: list[list[tuple]] = [[]]
  size = 0
  for entry in entries:
    if shards[-1] and size + entry[-1] > max_shard_size_bytes:
      shards.append([])
      size = 0
    shards[-1].append(entry)
    size += entry[-1]
  names = (
    [SINGLE_FILE]
    if len(shards) == 1
    else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  )
  weight_map = {}
  for name, shard in zip(names, shards):
    tensors = {}
    for key, value, layer, transform, out_dtype, _ in shard:
      piece = value if layer is None else value[layer]
      if not piece.is_fully_addressable:  # multi-host: every process joins the gather
        piece = multihost_utils.process_allgather(piece, tiled=True)
      tensors[key] = to_hf(np.asarray(jax.device_get(piece)), transform, patch).astype(out_dtype)
      weight_map[key] = name
    if writer:
      save_file(tensors, str(path / name), metadata={"format": "pt"})
    del tensors
  if not writer:
    return names
  # Never leave a second layout behind (a stale index would shadow the new file).
  for stale in [path / INDEX_FILE, path / SINGLE_FILE, *path.glob("model-*-of-*.safetensors")]:
    if stale.name not in names and stale.exists():
      stale.unlink()
  if len(names) > 1:
    total = sum(e[-1] for e in entries)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (path / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
  return names


def save_hf(
  model, path: str | os.PathLike, *, dtype=None, max_shard_size_bytes: int = 4 * 2**30
) -> None:
  """Writes a `Qwen3VL` as a directory that transformers loads with from_pretrained.

  Args:
    model: a `crpo_jax.model.vlm.Qwen3VL`.
    path: output directory (created).
    dtype: storage dtype of the tensors; None keeps each parameter's dtype.
    max_shard_size_bytes: above this the tensors are split into indexed shards.

  Writes config.json (4.57-style keys, readable by 4.57 and 5.x), the safetensors
  file(s) and generation_config.json. Tied models store no lm_head.weight, as
  transformers' own save_pretrained does.
  """
  cfg: Qwen3VLConfig = model.config
  path = Path(path)
  save_params(
    model,
    hf_params(cfg),
    path,
    dtype=dtype,
    max_shard_size_bytes=max_shard_size_bytes,
    patch=_patch(cfg),
  )
  stored = (
    np.dtype(dtype)
    if dtype is not None
    else np.dtype(model.language_model.embed_tokens.embedding.get_value().dtype)
  )
  if jax.process_index() != 0:
    return
  hf = cfg.to_hf_config()
  hf["torch_dtype"] = {"bfloat16": "bfloat16", "float16": "float16"}.get(stored.name, "float32")
  (path / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
  generation = {
    "bos_token_id": cfg.bos_token_id,
    "eos_token_id": cfg.eos_token_id,
    "pad_token_id": cfg.pad_token_id,
  }
  (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
