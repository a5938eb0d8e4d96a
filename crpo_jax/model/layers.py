"""Small building blocks of the text decoder: linear, RMSNorm, embedding.

Every layer takes `dtype` (compute) and `param_dtype` (storage) separately, and an
optional `stack` size: with `stack=L` each parameter gets a leading layer axis
(logical name 'layers') so that a whole decoder stack is one set of arrays that
`jax.lax.scan` walks over. Inside the scan the same module is re-assembled from one
layer's slice (`nnx.merge`), so `__call__` is written for a single layer.

Weights are laid out so that one Hugging Face tensor maps onto one parameter slice
with a plain transpose (reference/qwen3vl.md section 6): a Linear kernel is
[in, out] (torch stores [out, in]), fused head axes stay fused ([D, N*H]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from crpo_jax.model.array_types import Array, Float, Int


def _stacked(stack: int | None, shape: tuple[int, ...], axes: tuple[str | None, ...]):
  if stack is None:
    return shape, axes
  return (stack, *shape), ("layers", *axes)


class Linear(nnx.Module):
  """`y = x @ kernel` over the last axis of x; no bias (Qwen3 text has none)."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    logical_axes: tuple[str | None, str | None],
    stack: int | None = None,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    shape, axes = _stacked(stack, (in_features, out_features), logical_axes)
    # fan-in scaling keeps activations of order 1 for a randomly initialised model.
    init = jax.random.normal(rngs.params(), shape, jnp.float32) * in_features**-0.5
    self.kernel = nnx.Param(init.astype(param_dtype), logical_axes=axes)
    self.dtype = dtype

  def __call__(self, x: Float[Array, "... I"]) -> Float[Array, "... O"]:
    kernel = self.kernel[...].astype(self.dtype)
    return jnp.einsum("...i,io->...o", x.astype(self.dtype), kernel)


class RMSNorm(nnx.Module):
  """Qwen3 RMSNorm: normalise in float32, cast to the compute dtype, then scale.

  The weight multiply happens in the compute dtype, as in HF's Qwen3VLTextRMSNorm
  (reference/qwen3vl.md section 7.3); the bf16 rounding matches theirs.
  """

  def __init__(
    self,
    dim: int,
    *,
    eps: float,
    logical_axes: tuple[str | None] = ("embed",),
    stack: int | None = None,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
  ):
    shape, axes = _stacked(stack, (dim,), logical_axes)
    self.weight = nnx.Param(jnp.ones(shape, param_dtype), logical_axes=axes)
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... D"]:
    return rms_norm(x, self.weight[...], self.eps, self.dtype)


def rms_norm(x: Array, weight: Array, eps: float, dtype) -> Array:
  x32 = x.astype(jnp.float32)
  variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
  normed = (x32 * jax.lax.rsqrt(variance + eps)).astype(dtype)
  return weight.astype(dtype) * normed


class Embed(nnx.Module):
  """Token embedding table [V, D]; also the output kernel when embeddings are tied."""

  def __init__(
    self,
    vocab_size: int,
    dim: int,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    init = jax.random.normal(rngs.params(), (vocab_size, dim), jnp.float32)
    self.embedding = nnx.Param(init.astype(param_dtype), logical_axes=("vocab", "embed"))
    self.dtype = dtype

  def __call__(self, ids: Int[Array, "B T"]) -> Float[Array, "B T D"]:
    return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)


def split_heads(x: Float[Array, "B T NH"], num_heads: int) -> Float[Array, "B T N H"]:
  b, t, nh = x.shape
  return x.reshape(b, t, num_heads, nh // num_heads)


def merge_heads(x: Float[Array, "B T N H"]) -> Float[Array, "B T NH"]:
  b, t, n, h = x.shape
  return x.reshape(b, t, n * h)
