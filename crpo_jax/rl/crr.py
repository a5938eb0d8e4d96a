"""Counterfactual Relation Reward (CRR), METHOD.md section 5.

With a_i the extracted answer of original rollout i (i = 1..G) and b_j that of
counterfactual rollout j, the relation expected between the two branches is

  rel(a, b) = [a != b]  on dynamic routes (Spatial, Temporal, Spatiotemporal),
  rel(a, b) = [a == b]  on Static routes.

The paper names the reward but not its formula; every variant here is ours:

* "expected" (default): CRR(a_i) = mean over valid b_j of rel(a_i, b_j), and
  symmetrically CRR(b_j) = mean over valid a_i of rel(a_i, b_j).
* "majority": compare with the other branch's majority answer. Ties between modal
  answers are averaged, so the value never depends on rollout order (ours).
* "paired": rollout i against rollout i of the other branch.

Invalid answers (None) get 0, and a rollout whose other branch has no valid answer
gets 0. Gating on correctness lives in `rewards.py`, which knows the accuracy term.

A policy that always gives the same letter earns no CRR on dynamic routes, whatever
the letter: that is the property that stops the shortcut the reward targets.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np

Answer = str | None

VARIANTS = ("expected", "majority", "paired")
# Lower case as in the dataset schema (data/records.py); any case is accepted.
DYNAMIC_ROUTES = ("spatial", "temporal", "spatiotemporal")
ROUTES = (*DYNAMIC_ROUTES, "static")


def normalize_route(route: str) -> str:
  """The canonical lower-case route name; raises ValueError for unknown routes."""
  name = route.strip().lower() if isinstance(route, str) else route
  if name not in ROUTES:
    raise ValueError(f"unknown route {route!r}; expected one of {ROUTES} (any case)")
  return name


def is_dynamic(route: str) -> bool:
  """True for Spatial, Temporal and Spatiotemporal routes, False for Static."""
  return normalize_route(route) in DYNAMIC_ROUTES


def relation(a: Answer, b: Answer, dynamic: bool) -> float:
  """rel(a, b): 1 if the pair shows the relation the route expects, else 0.

  Args:
    a: answer on the original branch, None if invalid.
    b: answer on the counterfactual branch, None if invalid.
    dynamic: True if the answer is expected to change under the transform.
  """
  if a is None or b is None:
    return 0.0
  return float((a != b) if dynamic else (a == b))


def _expected(mine: Sequence[Answer], other: Sequence[Answer], dynamic: bool) -> np.ndarray:
  valid_other = [b for b in other if b is not None]
  if not valid_other:
    return np.zeros(len(mine), np.float32)
  return np.array(
    [
      np.mean([relation(a, b, dynamic) for b in valid_other]) if a is not None else 0.0
      for a in mine
    ],
    np.float32,
  )


def modal_answers(answers: Sequence[Answer]) -> list[str]:
  """The most frequent valid answers (several on a tie), sorted; [] if none is valid."""
  counts = collections.Counter(a for a in answers if a is not None)
  if not counts:
    return []
  top = max(counts.values())
  return sorted(a for a, c in counts.items() if c == top)


def _majority(mine: Sequence[Answer], other: Sequence[Answer], dynamic: bool) -> np.ndarray:
  modes = modal_answers(other)
  return _expected(mine, modes, dynamic)


def _paired(mine: Sequence[Answer], other: Sequence[Answer], dynamic: bool) -> np.ndarray:
  if len(mine) != len(other):
    raise ValueError(f"paired CRR needs equal group sizes, got {len(mine)} and {len(other)}")
  return np.array([relation(a, b, dynamic) for a, b in zip(mine, other)], np.float32)


def crr(
  orig_answers: Sequence[Answer],
  cf_answers: Sequence[Answer],
  route: str,
  variant: str = "expected",
) -> tuple[np.ndarray, np.ndarray]:
  """CRR for every rollout of both branches.

  Args:
    orig_answers: extracted answers a_1..a_G of the original branch (None = invalid).
    cf_answers: extracted answers b_1..b_G of the counterfactual branch.
    route: the example's route; decides whether answers should differ or agree.
    variant: "expected", "majority" or "paired" (module docstring).

  Returns:
    (crr_orig [G], crr_cf [G]) float32 arrays with values in [0, 1].
  """
  dynamic = is_dynamic(route)
  if variant == "expected":
    fn = _expected
  elif variant == "majority":
    fn = _majority
  elif variant == "paired":
    fn = _paired
  else:
    raise ValueError(f"unknown CRR variant {variant!r}; expected one of {VARIANTS}")
  # rel is symmetric in its two arguments, so one function serves both branches.
  return fn(orig_answers, cf_answers, dynamic), fn(cf_answers, orig_answers, dynamic)
