"""AdamW with a warmup-cosine learning-rate schedule and global-norm clipping.

The schedule is a function of the optimiser's own step count, so it is part of the
checkpointed optimiser state and a resumed run continues on the same curve.

Non-finite updates are never applied: the whole chain sits inside
`optax.apply_if_finite`, so a step whose gradients hold a NaN or Inf leaves the
parameters and the inner optimiser state (moments, count, so the schedule too)
exactly as they were. `make_train_step` (train/state.py) turns a non-finite loss
into non-finite gradients, so a bad loss is skipped the same way. The wrapper's
own counters (`skip_counts`) tell the loop how many steps in a row were skipped;
the loop, not optax, decides when to give up (`config.max_nonfinite_steps`), so
optax's give-up-and-apply threshold is set out of reach.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
import optax

# optax.apply_if_finite applies the update anyway after this many skips in a row;
# the loop stops the run long before (config.max_nonfinite_steps).
_NEVER_APPLY_NONFINITE = int(np.iinfo(np.int32).max) - 1


def make_schedule(
  peak_lr: float,
  total_steps: int,
  warmup_steps: int = 0,
  final_lr_fraction: float = 0.0,
  kind: str = "cosine",
) -> optax.Schedule:
  """Linear warmup from 0 to `peak_lr`, then cosine (or constant) decay.

  Args:
    peak_lr: learning rate at the end of warmup.
    total_steps: optimiser updates over the whole run, warmup included.
    warmup_steps: linear-warmup updates (0: start at `peak_lr`).
    final_lr_fraction: the cosine ends at `peak_lr * final_lr_fraction`.
    kind: "cosine" or "constant" (after warmup).

  Returns:
    An optax schedule, step -> learning rate.
  """
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps}")
  warmup_steps = max(0, min(int(warmup_steps), int(total_steps)))
  if kind == "cosine" and warmup_steps == total_steps:
    kind = "constant"  # nothing left to decay over (short smoke runs)
  if kind == "cosine":
    if warmup_steps == 0:
      return optax.cosine_decay_schedule(peak_lr, total_steps, alpha=final_lr_fraction)
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=peak_lr,
      warmup_steps=warmup_steps,
      decay_steps=total_steps,
      end_value=peak_lr * final_lr_fraction,
    )
  if kind == "constant":
    if warmup_steps == 0:
      return optax.constant_schedule(peak_lr)
    return optax.join_schedules(
      [optax.linear_schedule(0.0, peak_lr, warmup_steps), optax.constant_schedule(peak_lr)],
      [warmup_steps],
    )
  raise ValueError(f"unknown schedule kind {kind!r}; expected 'cosine' or 'constant'")


def make_optimizer(
  peak_lr: float,
  total_steps: int,
  *,
  warmup_steps: int = 0,
  final_lr_fraction: float = 0.0,
  schedule: str = "cosine",
  weight_decay: float = 0.0,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  max_grad_norm: float | None = 1.0,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """`clip_by_global_norm` then AdamW; returns (optimizer, schedule).

  Clipping happens before the Adam moments see the gradient, as in PyTorch's
  `clip_grad_norm_` + AdamW that the Video-R1 / TRL recipes use.
  """
  lr = make_schedule(peak_lr, total_steps, warmup_steps, final_lr_fraction, schedule)
  parts = []
  if max_grad_norm is not None and max_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(max_grad_norm))
  parts.append(optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
  return optax.apply_if_finite(optax.chain(*parts), _NEVER_APPLY_NONFINITE), lr


def skip_counts(opt_state: Any) -> tuple[int, int]:
  """(skipped in a row up to now, skipped in total) of a `make_optimizer` state.

  Counts reset with the optimiser (the RL phase starts a fresh one after SFT).
  """
  if not isinstance(opt_state, optax.ApplyIfFiniteState):
    raise TypeError(f"expected the optax.apply_if_finite state, got {type(opt_state).__name__}")
  consecutive, total = jax.device_get((opt_state.notfinite_count, opt_state.total_notfinite))
  return int(consecutive), int(total)


def optimizer_from_config(
  optim: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimiser from a config's `optim` block (see configs/common.py)."""
  return make_optimizer(
    optim.lr,
    total_steps,
    warmup_steps=optim.warmup_steps,
    final_lr_fraction=optim.final_lr_fraction,
    schedule=optim.schedule,
    weight_decay=optim.weight_decay,
    b1=optim.b1,
    b2=optim.b2,
    eps=optim.eps,
    max_grad_norm=optim.max_grad_norm,
  )
