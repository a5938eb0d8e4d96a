"""Token selection for the sampler: greedy, temperature, top-k, top-p, log-probs.

All functions are pure and jittable; `temperature`, `top_k` and `top_p` are Python
values fixed at trace time, so the greedy and truncation branches cost nothing
when they are off.

Log-prob convention (what the learner uses as the old policy's log-probs):
  * temperature > 0: `log_softmax(logits / temperature)[token]`, the *untruncated*
    tempered distribution. top-k / top-p only restrict which token may be drawn;
    the returned log-prob is the one a teacher-forced forward of the same policy
    at the same temperature gives, as TRL and veRL compute it. At the default
    temperature 1.0 it is the policy's own log-prob.
  * greedy (temperature 0): raw `log_softmax(logits)[token]`.

Banned ids (the vision placeholder ids: a completion must never hold one) are never
drawn, greedy included; like top-k, the ban restricts the draw only, and the
returned log-prob stays that of the untruncated distribution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crpo_jax.model.array_types import Array, Float, Int

_NEG_INF = -jnp.inf


def top_k_mask(logits: Float[Array, "B V"], k: int) -> Float[Array, "B V"]:
  """Sets every logit below the k-th largest of its row to -inf (k=0: no-op).

  Ties with the k-th largest are kept, so at least k tokens stay available.
  """
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits >= kth, logits, _NEG_INF)


def top_p_mask(logits: Float[Array, "B V"], p: float) -> Float[Array, "B V"]:
  """Nucleus filter: keeps the smallest top set of tokens whose mass reaches p.

  A token is kept when the mass of the strictly more probable tokens is below p,
  so the most probable token is always kept. Ties at the boundary are all kept.
  """
  if p >= 1.0:
    return logits
  if p <= 0.0:
    raise ValueError(f"top_p must be in (0, 1], got {p}")
  sorted_desc = -jnp.sort(-logits, axis=-1)
  kept = _nucleus_sorted(sorted_desc, p)
  threshold = jnp.min(jnp.where(kept > _NEG_INF, kept, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits >= threshold, logits, _NEG_INF)


def _nucleus_sorted(sorted_desc: Float[Array, "B K"], p: float) -> Float[Array, "B K"]:
  """`top_p_mask` for logits already sorted in descending order."""
  probs = jax.nn.softmax(sorted_desc, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  return jnp.where(mass_before < p, sorted_desc, _NEG_INF)


def sample_logits(
  logits: Float[Array, "B V"],
  rng: jax.Array,
  *,
  temperature: float = 0.0,
  top_k: int = 0,
  top_p: float = 1.0,
  banned_ids: tuple[int, ...] = (),
) -> tuple[Int[Array, " B"], Float[Array, " B"]]:
  """Draws one token per row and returns it with its log-prob (module docstring).

  Args:
    logits: float logits, upcast to float32.
    rng: a PRNG key; each row draws independently from it.
    temperature: 0 selects greedy argmax (rng unused).
    top_k: keep only the k most probable tokens (0 = all).
    top_p: nucleus mass (1.0 = all).
    banned_ids: token ids never drawn (module docstring).

  Returns:
    (tokens int32 [B], logprobs float32 [B]).
  """
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  logits = logits.astype(jnp.float32)
  if temperature == 0.0:
    tokens = first_argmax(ban(logits, banned_ids))
    return tokens, token_logprobs(logits, tokens)
  scaled = logits / temperature
  drawable = ban(scaled, banned_ids)
  if 0 < top_k < scaled.shape[-1]:
    # Candidate path: draw among the k best only (sorted), so top-p needs no full
    # sort and the Gumbel noise covers k values instead of the vocabulary. Same
    # order as HF: top-k before top-p.
    values, index = jax.lax.top_k(drawable, top_k)
    values = _nucleus_sorted(values, top_p) if top_p < 1.0 else values
    choice = first_argmax(values + jax.random.gumbel(rng, values.shape, jnp.float32))
    tokens = jnp.take_along_axis(index, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
  else:
    filtered = top_p_mask(drawable, top_p)
    # Gumbel-max, as jax.random.categorical, but with the two-pass argmax below.
    tokens = first_argmax(filtered + jax.random.gumbel(rng, filtered.shape, jnp.float32))
  return tokens, token_logprobs(scaled, tokens)


def ban(logits: Float[Array, "B V"], ids: tuple[int, ...]) -> Float[Array, "B V"]:
  """Sets the logits of `ids` to -inf (no-op when empty)."""
  if not ids:
    return logits
  return logits.at[..., jnp.asarray(ids, jnp.int32)].set(_NEG_INF)


def first_argmax(x: Float[Array, "B V"]) -> Int[Array, " B"]:
  """`jnp.argmax(x, -1)` (first index of the maximum) as two plain reductions.

  XLA:CPU lowers argmax to a variadic (value, index) reduce that is ~5x slower
  than a max followed by a min over matching indices on a 151k vocabulary.
  """
  top = jnp.max(x, axis=-1, keepdims=True)
  index = jnp.arange(x.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where(x == top, index, x.shape[-1]), axis=-1).astype(jnp.int32)


def token_logprobs(logits: Float[Array, "*B V"], tokens: Int[Array, "*B"]) -> Float[Array, "*B"]:
  """log_softmax(logits)[tokens] in float32 without materialising the full log-softmax."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)
