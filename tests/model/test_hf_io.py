"""HF checkpoint I/O: HF -> load_hf -> save_hf -> HF round trips, sharded loading, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from crpo_jax.model import hf_io
from crpo_jax.model.config import get_preset
from crpo_jax.model.hf_io import load_hf, save_hf
from crpo_jax.sharding import make_mesh, param_shardings
from tests.tolerance import assert_close

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
R = pytest.importorskip("tests.model.hf_reference")

TINY = get_preset("tiny")
TINY_TIED = dataclasses.replace(TINY, text=dataclasses.replace(TINY.text, tie_word_embeddings=True))


def _tensors(path) -> dict[str, torch.Tensor]:
  """Every tensor of a checkpoint directory (single file or shards)."""
  out = {}
  for f in sorted(path.glob("*.safetensors")):
    out.update(safetensors_torch.load_file(str(f)))
  return out


def _from_pretrained(path, dtype):
  model, info = transformers.Qwen3VLForConditionalGeneration.from_pretrained(
    str(path), dtype=dtype, attn_implementation="eager", output_loading_info=True
  )
  return model.eval(), info


@pytest.fixture(scope="module")
def hf_models():
  return {False: R.build_hf_model(TINY, seed=1), True: R.build_hf_model(TINY_TIED, seed=2)}


@pytest.fixture(scope="module")
def fp32_dir(hf_models, tmp_path_factory):
  path = tmp_path_factory.mktemp("fp32")
  R.save_hf_model(hf_models[False], path)
  return path


def _add_lm_head(path) -> None:
  """Rewrites a tied single-file checkpoint so that it also stores lm_head.weight."""
  tensors = _tensors(path)
  assert "lm_head.weight" not in tensors
  tensors["lm_head.weight"] = tensors["model.language_model.embed_tokens.weight"].clone()
  safetensors_torch.save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize(
  "tied, dtype, hf_shard, our_shard, with_head",
  [
    (False, torch.float32, None, 4 * 2**30, False),  # single file both ways
    (False, torch.float32, "5MB", 3 * 2**20, False),  # sharded with an index both ways
    (True, torch.bfloat16, None, 4 * 2**30, False),  # bf16, tied, no lm_head stored
    (True, torch.float32, None, 4 * 2**30, True),  # tied, lm_head stored anyway
  ],
  ids=["fp32-single", "fp32-sharded", "bf16-tied", "fp32-tied-with-head"],
)
def test_round_trip_is_bit_identical(
  hf_models, tmp_path, tied, dtype, hf_shard, our_shard, with_head
):
  src, out = tmp_path / "src", tmp_path / "out"
  R.save_hf_model(hf_models[tied], src, max_shard_size=hf_shard, dtype=dtype)
  if with_head:
    _add_lm_head(src)
  assert (src / "model.safetensors.index.json").exists() == (hf_shard is not None)
  param_dtype = jnp.bfloat16 if dtype == torch.bfloat16 else jnp.float32
  model = load_hf(src, dtype=jnp.float32, param_dtype=param_dtype)
  assert model.visual.blocks.qkv_kernel.get_value().dtype == param_dtype
  save_hf(model, out, max_shard_size_bytes=our_shard)
  assert (out / "model.safetensors.index.json").exists() == (our_shard < 2**30)

  want, got = _tensors(src), _tensors(out)
  if with_head:
    del want["lm_head.weight"]  # the export of a tied model stores one copy, as HF does
  assert set(got) == set(want)
  for key, tensor in want.items():
    assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key

  ref, _ = _from_pretrained(src, dtype)
  back, info = _from_pretrained(out, dtype)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  inputs = R.to_torch(R.video_inputs(cfg=TINY_TIED if tied else TINY))
  with torch.no_grad():
    assert torch.equal(back(**inputs).logits, ref(**inputs).logits)


def test_loaded_model_matches_transformers(hf_models, fp32_dir):
  model = load_hf(fp32_dir, dtype=jnp.float32)
  inputs = R.image_inputs(cfg=TINY)
  want = R.hf_logits(hf_models[False], inputs)
  logits = nnx.jit(lambda m, x: m(**x))(model, inputs)
  assert_close(np.asarray(logits), want, rtol=1e-5, err_msg="loaded vs transformers")


def test_tied_checkpoint_with_only_lm_head(hf_models, tmp_path):
  """Some exports store the tied table once as lm_head.weight: it feeds the embedding."""
  R.save_hf_model(hf_models[True], tmp_path / "src")
  embed = "model.language_model.embed_tokens.weight"

  def rename(t):
    t["lm_head.weight"] = t.pop(embed)

  _rewrite(tmp_path / "src", tmp_path / "head_only", rename)
  model = load_hf(tmp_path / "head_only", dtype=jnp.float32)
  want = hf_models[True].model.language_model.embed_tokens.weight.detach().numpy()
  got = model.language_model.embed_tokens.embedding.get_value()
  np.testing.assert_array_equal(np.asarray(got), want)


def test_load_onto_mesh_streams_shards(fp32_dir, tmp_path, monkeypatch):
  reads = []
  original = hf_io.SafetensorsDir.read

  def spy(self, key, index):
    block = original(self, key, index)
    reads.append((key, block.size))
    return block

  monkeypatch.setattr(hf_io.SafetensorsDir, "read", spy)
  mesh = make_mesh({"fsdp": 4, "tensor": 2})
  sharded = load_hf(fp32_dir, dtype=jnp.float32, mesh=mesh)
  monkeypatch.undo()
  plain = load_hf(fp32_dir, dtype=jnp.float32)

  state, plain_state = nnx.state(sharded, nnx.Param), nnx.state(plain, nnx.Param)
  want = dict(nnx.to_flat_state(param_shardings(state, mesh)))
  plain_flat = dict(nnx.to_flat_state(plain_state))
  for path, var in nnx.to_flat_state(state):
    value = var.get_value()
    assert value.sharding == want[path], path
    np.testing.assert_array_equal(np.asarray(value), np.asarray(plain_flat[path].get_value()))
  embed = state["language_model"]["embed_tokens"]["embedding"].get_value()
  assert embed.sharding.spec == P("tensor", "fsdp")
  assert embed.addressable_shards[0].data.shape == (
    TINY.text.vocab_size // 2,
    TINY.text.hidden_size // 4,
  )
  fc1 = state["visual"]["blocks"]["fc1_kernel"].get_value()
  assert fc1.sharding.spec == P(None, "fsdp", "tensor")
  # Streaming: no single read of the embedding table is larger than one device's shard.
  embed_reads = [n for key, n in reads if key.endswith("embed_tokens.weight")]
  assert embed_reads and max(embed_reads) == embed.size // 8
  # Exporting the sharded model gathers it back to the same bits.
  save_hf(sharded, tmp_path / "out")
  want, got = _tensors(fp32_dir), _tensors(tmp_path / "out")
  assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def _rewrite(src, dst, edit) -> None:
  shutil.copytree(src, dst)
  tensors = _tensors(dst)
  edit(tensors)
  safetensors_torch.save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})


def test_missing_key_is_a_clear_error(fp32_dir, tmp_path):
  key = "model.visual.blocks.1.attn.qkv.weight"
  _rewrite(fp32_dir, tmp_path / "bad", lambda t: t.pop(key))
  with pytest.raises(KeyError, match=r"bad.*blocks\.1\.attn\.qkv\.weight"):
    load_hf(tmp_path / "bad", dtype=jnp.float32)


def test_unexpected_key_and_bad_shape_are_clear_errors(fp32_dir, tmp_path):
  _rewrite(fp32_dir, tmp_path / "extra", lambda t: t.update(stray=torch.zeros(3)))
  with pytest.raises(KeyError, match="unexpected tensors.*stray"):
    load_hf(tmp_path / "extra", dtype=jnp.float32)
  key = "model.language_model.norm.weight"
  _rewrite(fp32_dir, tmp_path / "shape", lambda t: t.update({key: torch.zeros(7)}))
  with pytest.raises(ValueError, match=r"model\.safetensors.*norm\.weight.*\(7,\)"):
    load_hf(tmp_path / "shape", dtype=jnp.float32)


def test_missing_files_are_clear_errors(fp32_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_hf(tmp_path, dtype=jnp.float32)
  (tmp_path / "config.json").write_text(json.dumps(TINY.to_hf_config()))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    load_hf(tmp_path, dtype=jnp.float32)


def test_bf16_memmap_reads_match_safetensors(hf_models, tmp_path):
  R.save_hf_model(hf_models[False], tmp_path, dtype=torch.bfloat16)
  want = _tensors(tmp_path)
  key = "model.visual.merger.linear_fc1.weight"
  with hf_io.SafetensorsDir(tmp_path) as ckpt:
    got = ckpt.read(key, (slice(3, 9), slice(None)))
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(got.astype(np.float32), want[key][3:9].float().numpy())


def test_model_package_imports_without_torch_or_transformers():
  code = (
    "import sys\n"
    "for name in ('torch', 'transformers', 'tensorflow'):\n"
    "  sys.modules[name] = None  # any import of them now raises ImportError\n"
    "import crpo_jax.model.hf_io, crpo_jax.model.vision\n"
    "from crpo_jax.model import load_hf, save_hf\n"
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  root = Path(__file__).resolve().parents[2]
  proc = subprocess.run(
    [sys.executable, "-c", code], check=False, cwd=root, env=env, capture_output=True, text=True
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
