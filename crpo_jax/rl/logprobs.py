"""Per-token log-probabilities and entropies from hidden states, in chunks.

The loss needs log pi(y_t) for each completion token, but the logits [B, T, V] of a
152k-word vocabulary are the largest tensor of an RL step (B=16, T=768: 7.5 GB in
float32). `token_logprobs` scans over chunks of `chunk_size` positions and computes
logits, log-softmax, the target's log-prob and the entropy for one chunk at a time.
The chunk body is rematerialised (`jax.checkpoint`), so the backward pass also holds
one chunk of logits instead of all of them.

All softmax maths is float32 whatever the hidden dtype, as the final logits are in
the reference implementation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array


def _chunk_stats(
  h_BCD: Array, kernel_DV: Array, y_BC: Array, temperature: float
) -> tuple[Array, Array]:
  """log pi(y) and entropy for one chunk of positions."""
  logits_BCV = jnp.einsum("BCD,DV->BCV", h_BCD, kernel_DV, preferred_element_type=jnp.float32)
  logits_BCV = logits_BCV.astype(jnp.float32) / temperature
  logz_BC = jax.nn.logsumexp(logits_BCV, axis=-1)
  target_BC = jnp.take_along_axis(logits_BCV, y_BC[..., None], axis=-1)[..., 0]
  probs_BCV = jnp.exp(logits_BCV - logz_BC[..., None])
  entropy_BC = logz_BC - (probs_BCV * logits_BCV).sum(-1)
  return target_BC - logz_BC, entropy_BC


def token_logprobs(
  hidden: Array,
  kernel: Array,
  targets: Array,
  *,
  chunk_size: int = 128,
  temperature: float = 1.0,
) -> tuple[Array, Array]:
  """log pi(targets) and the entropy of pi at every position, without [B, T, V].

  Args:
    hidden: final hidden states h [B, T, D] at the positions that predict `targets`
      (the learner slices completion positions, shifted by one).
    kernel: output projection [D, V] (`model.output_kernel()`).
    targets: token ids [B, T] (int); padding positions may hold any id.
    chunk_size: positions per chunk; T is padded up to a multiple of it.
    temperature: the sampling temperature, so log-probs match the sampler's.

  Returns:
    (logp [B, T], entropy [B, T]), float32.
  """
  b, t, d = hidden.shape
  if targets.shape != (b, t):
    raise ValueError(f"targets shape {targets.shape} != hidden's leading {(b, t)}")
  if kernel.shape[0] != d:
    raise ValueError(f"kernel {kernel.shape} does not contract hidden width {d}")
  chunk = max(1, min(chunk_size, t))
  num_chunks = -(-t // chunk)
  pad = num_chunks * chunk - t
  h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  # Clipped so pad ids outside the vocabulary cannot gather NaN (jnp's "fill" mode).
  y = jnp.pad(jnp.clip(targets.astype(jnp.int32), 0, kernel.shape[1] - 1), ((0, 0), (0, pad)))
  # [B, n*C, D] -> [n, B, C, D]: chunks lead so lax.map walks over them.
  h_NBCD = h.reshape(b, num_chunks, chunk, d).transpose(1, 0, 2, 3)
  y_NBC = y.reshape(b, num_chunks, chunk).transpose(1, 0, 2)

  body = jax.checkpoint(lambda xs: _chunk_stats(xs[0], kernel, xs[1], temperature))
  logp_NBC, ent_NBC = jax.lax.map(body, (h_NBCD, y_NBC))
  logp = logp_NBC.transpose(1, 0, 2).reshape(b, num_chunks * chunk)[:, :t]
  ent = ent_NBC.transpose(1, 0, 2).reshape(b, num_chunks * chunk)[:, :t]
  return logp, ent
