"""Rematerialisation policies for the stacked layers (training memory).

`none` stores every activation a layer's backward needs; `full` stores only the
layer's input and recomputes the rest in the backward pass; `dots` also stores the
outputs of matmuls without batch dimensions (the projections and MLPs), so only
attention scores and elementwise work are recomputed.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

POLICIES: dict[str, Callable | None] = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def policy_name(remat: str | bool | None) -> str:
  """Normalises `remat` (a policy name, or the older bool) and checks it."""
  if remat is None or remat is False:
    return "none"
  if remat is True:
    return "full"
  if remat not in POLICIES:
    raise ValueError(f"unknown remat policy {remat!r}; expected one of {sorted(POLICIES)}")
  return remat


def wrap(fn: Callable, remat: str) -> Callable:
  """`fn` under `jax.checkpoint` with the named policy (`fn` itself for `none`)."""
  name = policy_name(remat)
  if name == "none":
    return fn
  # Inside a scan body common-subexpression elimination across the boundary is no risk.
  return jax.checkpoint(fn, policy=POLICIES[name], prevent_cse=False)
