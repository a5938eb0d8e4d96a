"""Rollout engine: group-shared prefill and a `lax.while_loop` decode.

One jitted call per batch: the B prompts (for CRPO the original and the
counterfactual prompts stacked along the batch) are prefilled once, with their
images and videos (DeepStack included, inside the model), into a static-shape KV
cache of `prompt_len + max_new_tokens` slots. The cache and last logits are then
repeated G times (row b -> rows b*G .. b*G+G-1, "prompt-major") and all B*G rows
decode together in a `jax.lax.while_loop` that stops when every row has emitted a
stop token or `max_new_tokens` is reached. Per-row MRoPE offsets ride in the
cache (`Cache.next_position`), so rows with different visual layouts decode
together. The KV cache is allocated inside the jitted function, so XLA owns it
and the loop updates it in place (no host-visible cache buffer exists to donate).

Host side, `generate` pads the HF-processor-style inputs to bucketed shapes
(`crpo_jax.bucketing`) so that a run compiles a small, bounded set of shapes, and
keeps one compiled sampler per (model graph, sampling settings).

Log-probs follow `crpo_jax.rl.sampling_ops`: log-softmax of logits / temperature
(untruncated by top-k/top-p) for temperature > 0, raw log-softmax for greedy.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from crpo_jax import bucketing, sharding
from crpo_jax.model.config import Qwen3VLConfig
from crpo_jax.rl.sampling_ops import sample_logits

ENDOFTEXT_ID = 151643

# Batch keys the model's prefill consumes (others, e.g. mm_token_type_ids, are
# recomputed by the model from input_ids and dropped here).
_PROMPT_KEYS = ("input_ids", "attention_mask")
_VISUAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """Static sampling settings; each distinct value compiles its own sampler.

  Attributes:
    max_new_tokens: decode budget T per row (the EOS token included).
    num_samples: G completions per prompt, sharing one prefill.
    temperature: 0 = greedy.
    top_p: nucleus mass (1.0 = off).
    top_k: keep the k most probable tokens (0 = off).
    eos_ids: tokens that end a row (the token itself is kept and counted).
    pad_id: written into `tokens` after a row has stopped.
    cache_dtype: KV-cache dtype name ("float32", "bfloat16").
  """

  max_new_tokens: int
  num_samples: int = 1
  temperature: float = 0.0
  top_p: float = 1.0
  top_k: int = 0
  eos_ids: tuple[int, ...] = (151645, ENDOFTEXT_ID)
  pad_id: int = ENDOFTEXT_ID
  cache_dtype: str = "float32"

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
    if self.num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
    if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
      raise ValueError(
        f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {self.temperature}, "
        f"{self.top_p}, {self.top_k}"
      )
    if not self.eos_ids:
      raise ValueError("eos_ids must name at least one stop token")


@struct.dataclass
class GenerateOutput:
  """Completions, rows prompt-major (row b*G + g is sample g of prompt b).

  Attributes:
    tokens: int32 [B*G, T]; `pad_id` after a row's stop token.
    logprobs: float32 [B*G, T]; log-prob of each sampled token (0 where masked).
    lengths: int32 [B*G]; completion length, the stop token included.
    mask: bool [B*G, T]; True on the first `lengths` tokens.
  """

  tokens: jax.Array
  logprobs: jax.Array
  lengths: jax.Array
  mask: jax.Array


@struct.dataclass
class _LoopState:
  step: jax.Array
  last: jax.Array
  done: jax.Array
  tokens: jax.Array
  logprobs: jax.Array
  lengths: jax.Array
  cache: Any


def _default_init_cache():
  from crpo_jax.model.cache import init_cache  # model code lands separately

  return init_cache


class Sampler:
  """A compiled rollout function `sampler(state, batch, rng) -> GenerateOutput`.

  Built by `make_sampler`. `batch` holds `input_ids` / `attention_mask` [B, L]
  (left-padded, bucketed) and optionally the visual arrays; `state` is the
  `nnx.split` state of the policy. `num_traces` counts compilations (one per
  distinct input shape), which the bucketing keeps bounded.
  """

  def __init__(
    self, graphdef, config: Qwen3VLConfig, sampling: SamplingConfig, mesh, rules, init_cache
  ):
    self.graphdef, self.config, self.sampling = graphdef, config, sampling
    self.mesh, self.rules = mesh, tuple(rules)
    self._init_cache = init_cache or _default_init_cache()
    self.num_traces = 0
    self._jitted: dict[Any, Callable] = {}

  def __call__(self, state, batch: Mapping[str, Any], rng: jax.Array) -> GenerateOutput:
    """Host (numpy) inputs must be the same on every process: each process places
    its own devices' shards of them."""
    batch = self._inputs(batch)
    fn = self._jit_for(state, batch)
    if self.mesh is not None:
      batch = sharding.to_global(batch, self._batch_shardings(batch))
    return fn(state, batch, rng)

  def lower(self, state, batch: Mapping[str, Any], rng) -> jax.stages.Lowered:
    """The program `__call__` would run, lowered (arrays or `ShapeDtypeStruct`s)."""
    batch = self._inputs(batch)
    return self._jit_for(state, batch).lower(state, batch, rng)

  def _inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in _PROMPT_KEYS if k not in batch]
    if missing:
      raise KeyError(f"sampler batch is missing {missing}")
    return {k: batch[k] for k in _PROMPT_KEYS + _VISUAL_KEYS if batch.get(k) is not None}

  def _jit_for(self, state, batch: dict[str, Any]) -> Callable:
    rows = int(np.shape(batch["input_ids"])[0])
    key = (tuple(sorted(batch)), rows)
    if key not in self._jitted:
      self._jitted[key] = self._build(state, batch, rows)
    return self._jitted[key]

  def in_shardings(self, state, batch: Mapping[str, Any]) -> tuple:
    """(state, batch, rng) shardings: prompt rows over the batch axes, pixels replicated."""
    return (
      sharding.param_shardings(state, self.mesh, self.rules),
      self._batch_shardings(self._inputs(batch)),
      NamedSharding(self.mesh, PartitionSpec()),
    )

  def _batch_shardings(self, batch: Mapping[str, Any]) -> dict[str, NamedSharding]:
    mesh, rules = self.mesh, self.rules
    rows = int(np.shape(batch["input_ids"])[0])

    def batch_sharding(k, v):
      if k in _PROMPT_KEYS:
        return NamedSharding(mesh, sharding.batch_spec(rows, np.ndim(v), mesh, rules))
      return NamedSharding(mesh, PartitionSpec())  # pixel rows are not per-example

    return {k: batch_sharding(k, v) for k, v in batch.items()}

  def _build(self, state, batch, rows: int) -> Callable:
    if self.mesh is None:
      return jax.jit(self._run)
    mesh, rules = self.mesh, self.rules
    out_rows = rows * self.sampling.num_samples
    out = GenerateOutput(
      *(NamedSharding(mesh, sharding.batch_spec(out_rows, r, mesh, rules)) for r in (2, 2, 1, 2))
    )
    return jax.jit(self._run, in_shardings=self.in_shardings(state, batch), out_shardings=out)

  def _run(self, state, batch, rng) -> GenerateOutput:
    self.num_traces += 1  # Python side effect: runs once per trace / compilation.
    if self.mesh is None:
      return self._decode(state, batch, rng)
    with sharding.use_mesh(self.mesh, self.rules):
      return self._decode(state, batch, rng)

  def _constrain_rows(self, x: jax.Array) -> jax.Array:
    return sharding.constrain(x, ("batch",) + (None,) * (x.ndim - 1))

  def _decode(self, state, batch, rng) -> GenerateOutput:
    s = self.sampling
    model = nnx.merge(self.graphdef, state)
    ids = batch["input_ids"].astype(jnp.int32)
    rows, prompt_len = ids.shape
    G, T = s.num_samples, s.max_new_tokens
    # A sampled vision placeholder id would be a visual token to the teacher-forced
    # forward but text to decode_step: never draw one (sampling_ops.py).
    placeholders = (self.config.image_token_id, self.config.video_token_id)
    sample = functools.partial(
      sample_logits,
      temperature=s.temperature,
      top_k=s.top_k,
      top_p=s.top_p,
      banned_ids=placeholders,
    )
    eos = jnp.asarray(s.eos_ids, jnp.int32)

    # The last generated token is never fed back, so T-1 decode writes suffice.
    cache = self._init_cache(self.config.text, rows, prompt_len + T - 1, jnp.dtype(s.cache_dtype))
    visual = {k: batch[k] for k in _VISUAL_KEYS if k in batch}
    logits, cache = model.prefill(ids, batch["attention_mask"].astype(jnp.int32), cache, **visual)
    if G > 1:  # group-shared prefill: broadcast the prompt's cache to its G samples
      cache, logits = cache.repeat(G), jnp.repeat(logits, G, axis=0)
    logits = self._constrain_rows(logits)

    tok, lp = sample(logits, jax.random.fold_in(rng, 0))
    n = rows * G
    init = _LoopState(
      step=jnp.int32(1),
      last=tok,
      done=jnp.isin(tok, eos),
      tokens=self._constrain_rows(jnp.full((n, T), s.pad_id, jnp.int32).at[:, 0].set(tok)),
      logprobs=self._constrain_rows(jnp.zeros((n, T), jnp.float32).at[:, 0].set(lp)),
      lengths=jnp.ones((n,), jnp.int32),
      cache=cache,
    )

    def cond(c: _LoopState) -> jax.Array:
      return (c.step < T) & ~jnp.all(c.done)

    def body(c: _LoopState) -> _LoopState:
      logits, cache = model.decode_step(c.last, c.cache)
      tok, lp = sample(logits, jax.random.fold_in(rng, c.step))
      tok = jnp.where(c.done, s.pad_id, tok)
      lp = jnp.where(c.done, 0.0, lp)
      return _LoopState(
        step=c.step + 1,
        last=tok,
        done=c.done | jnp.isin(tok, eos),
        tokens=jax.lax.dynamic_update_slice(c.tokens, tok[:, None], (0, c.step)),
        logprobs=jax.lax.dynamic_update_slice(c.logprobs, lp[:, None], (0, c.step)),
        lengths=c.lengths + (~c.done).astype(jnp.int32),
        cache=cache,
      )

    final = jax.lax.while_loop(cond, body, init)
    mask = jnp.arange(T, dtype=jnp.int32)[None, :] < final.lengths[:, None]
    return GenerateOutput(
      tokens=final.tokens, logprobs=final.logprobs, lengths=final.lengths, mask=mask
    )


def make_sampler(
  graphdef: nnx.GraphDef,
  config: Qwen3VLConfig,
  sampling: SamplingConfig,
  mesh: Mesh | None = None,
  rules: sharding.Rules = sharding.DEFAULT_RULES,
  init_cache: Callable | None = None,
) -> Sampler:
  """The learner's pure rollout function `fn(state, batch, rng) -> GenerateOutput`.

  Args:
    graphdef: from `graphdef, state = nnx.split(model)`.
    config: the model's architecture config (cache shapes).
    sampling: static sampling settings.
    mesh: with a mesh, parameters follow their `logical_axes` metadata, prompt and
      output rows are sharded over the rules' batch axes, and the model's
      activation constraints are active while tracing.
    rules: logical-axis rules for `mesh`.
    init_cache: `(text_cfg, batch, max_len, dtype) -> Cache`; defaults to
      `crpo_jax.model.cache.init_cache`.

  Returns:
    A `Sampler`; its batch holds both CRPO branches stacked along the batch axis,
    so the trainer makes one call per step:

      batch = bucketing.pad_batch(bucketing.concat_batches(orig, cf, pad_id=p), pad_id=p)
      out = sampler(state, batch, rng)  # rows [0, B*G): original; then counterfactual
  """
  return Sampler(graphdef, config, sampling, mesh, rules, init_cache)


@functools.lru_cache(maxsize=16)
def _cached_sampler(graphdef, config, sampling, init_cache) -> Sampler:
  return Sampler(graphdef, config, sampling, None, sharding.DEFAULT_RULES, init_cache)


def generate(
  model: nnx.Module,
  inputs: Mapping[str, Any],
  *,
  max_new_tokens: int,
  num_samples: int = 1,
  temperature: float = 0.0,
  top_p: float = 1.0,
  top_k: int = 0,
  seed: int = 0,
  eos_ids: tuple[int, ...] | None = None,
  pad_id: int | None = None,
  init_cache: Callable | None = None,
) -> GenerateOutput:
  """Samples `num_samples` completions per prompt from a Qwen3-VL model.

  Args:
    model: a `crpo_jax.model.vlm.Qwen3VL` (anything with `config`, `prefill` and
      `decode_step` of the same contract).
    inputs: HF-processor-style dict: `input_ids`, `attention_mask` [B, L] and
      optionally `pixel_values` + `image_grid_thw`, `pixel_values_videos` +
      `video_grid_thw` (numpy or torch). Left or right padding is accepted.
    max_new_tokens: decode budget per completion.
    num_samples: G completions per prompt (one shared prefill per prompt).
    temperature: 0 = greedy; else sample from softmax(logits / temperature).
    top_p, top_k: nucleus / top-k truncation (1.0 / 0 = off).
    seed: PRNG seed; the same seed and inputs give the same samples.
    eos_ids: stop tokens; default the config's eos (<|im_end|>) and <|endoftext|>.
    pad_id: filler after a stop; default the config's pad token.
    init_cache: cache factory override (see `make_sampler`).

  Returns:
    `GenerateOutput` with B*G rows, prompt-major. Log-probs: log-softmax of
    logits / temperature for temperature > 0, raw log-softmax for greedy.
  """
  config: Qwen3VLConfig = model.config
  if eos_ids is None:
    eos_ids = tuple(dict.fromkeys((config.eos_token_id, ENDOFTEXT_ID)))
  pad_id = config.pad_token_id if pad_id is None else pad_id
  dtype = jnp.dtype(getattr(model, "dtype", None) or jnp.float32)
  sampling = SamplingConfig(
    max_new_tokens=max_new_tokens,
    num_samples=num_samples,
    temperature=float(temperature),
    top_p=float(top_p),
    top_k=int(top_k),
    eos_ids=tuple(int(e) for e in eos_ids),
    pad_id=int(pad_id),
    cache_dtype=dtype.name,
  )
  inputs = {k: v.numpy() if hasattr(v, "numpy") else v for k, v in inputs.items()}
  batch = bucketing.pad_batch(inputs, pad_id=pad_id)
  rows = batch["input_ids"].shape[0]
  # Filler rows bring the batch size to a bucket too (e.g. an eval's last batch).
  batch = bucketing.pad_rows(batch, bucketing.bucket_size(rows, None, 1), pad_id=pad_id)
  graphdef, state = nnx.split(model)
  sampler = _cached_sampler(graphdef, config, sampling, init_cache)
  out = sampler(state, batch, jax.random.key(seed))
  keep = rows * num_samples  # prompt-major: filler rows' samples come last
  return jax.tree.map(lambda x: x[:keep], out)
