"""Interleaved multimodal rotary embedding of the Qwen3-VL text decoder.

reference/qwen3vl.md section 3.1: positions have three rows (t, h, w). Frequency j
takes its angle from the H row when j % 3 == 1 and j < 3 * mrope_section[1], from
the W row when j % 3 == 2 and j < 3 * mrope_section[2], otherwise from the T row.
The half-size angle vector is concatenated with itself (rotate_half pairing: dim j
with dim j + H/2); cos and sin are cast to the compute dtype before rotating, as HF
does, so a bf16 run rotates in bf16.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from crpo_jax.model.array_types import Array, Float, Int


def inv_freq(head_dim: int, theta: float) -> np.ndarray:
  """`1 / theta ** (arange(0, H, 2) / H)` in float32, as close to torch's bits as we can.

  torch computes the exponent in float32, then `pow` in float32 (Sleef, 1 ulp) and
  the reciprocal in float32. Evaluating `pow` in float64 on the same float32 inputs
  and rounding once reproduces torch exactly for the tiny and vision configs and
  differs by 1 ulp in at most a few of 64 frequencies for head_dim 128 (the cases
  where torch's pow itself is not correctly rounded); a pure-float32 numpy pow
  differs in 13/64 (reference/qwen3vl.md section 7.4). tests/model/test_text.py
  checks this against torch.
  """
  exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
  power = (np.float64(np.float32(theta)) ** exponent.astype(np.float64)).astype(np.float32)
  return (np.float32(1.0) / power).astype(np.float32)


def mrope_source_rows(head_dim: int, mrope_section: tuple[int, int, int]) -> np.ndarray:
  """For each of the H/2 frequencies, which position row (0=t, 1=h, 2=w) drives it."""
  j = np.arange(head_dim // 2)
  rows = np.zeros_like(j)
  rows[(j % 3 == 1) & (j < 3 * mrope_section[1])] = 1
  rows[(j % 3 == 2) & (j < 3 * mrope_section[2])] = 2
  return rows


def mrope_cos_sin(
  positions: Int[Array, "3 B T"],
  *,
  head_dim: int,
  theta: float,
  mrope_section: tuple[int, int, int],
  dtype,
) -> tuple[Float[Array, "B T H"], Float[Array, "B T H"]]:
  """cos and sin tables [B, T, H] for 3-row positions, in the compute dtype."""
  freqs = jnp.asarray(inv_freq(head_dim, theta))
  angles = positions.astype(jnp.float32)[..., None] * freqs  # [3, B, T, H/2], float32
  rows = mrope_source_rows(head_dim, mrope_section)
  # Static one-hot selection of the row per frequency; exact (picks, never mixes).
  angle = jnp.where(rows == 1, angles[1], jnp.where(rows == 2, angles[2], angles[0]))
  angle = jnp.concatenate([angle, angle], axis=-1)
  return jnp.cos(angle).astype(dtype), jnp.sin(angle).astype(dtype)


def apply_rope(
  x: Float[Array, "B T N H"], cos: Float[Array, "B T H"], sin: Float[Array, "B T H"]
) -> Float[Array, "B T N H"]:
  """`x * cos + rotate_half(x) * sin` with rotate_half(x) = [-x2, x1], in x's dtype."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
  return x * cos + rotated * sin
