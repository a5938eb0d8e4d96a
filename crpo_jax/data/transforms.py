"""Counterfactual branches: the null option, the route table, flip and reverse.

METHOD.md sections 1, 3, 4 and 5. Every multiple-choice question gets a last
"None of the above" option. The route of a question picks the counterfactual
transform T applied to its decoded frames:

  spatial         -> flip     (mirror every frame left-right)
  temporal        -> reverse  (reverse the order of the sampled frames)
  spatiotemporal  -> flip or reverse, drawn per example from the seeded data RNG
  static          -> flip or reverse, drawn likewise; the answer must not change

Never both at once: for left/right motion they cancel. The counterfactual clip has
exactly the frame count, size and dtype of the original, and the frame timestamps
are not touched (the reversed clip is a new video played forward), so both branches
share every shape downstream.

Counterfactual ground truth (METHOD.md section 5): Static routes keep y; otherwise
`answer_cf` when the data gives one, else None (no accuracy term on that branch).
A record's `answer_cf` is the truth under whichever transform its route may draw;
data sets whose counterfactual truth depends on the draw (a spatiotemporal question
that flip and reverse answer differently) must fix the route's table entry to one
transform (ours; the synthetic world only emits routes that satisfy this).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

TRANSFORMS = ("flip", "reverse")
ROUTES = ("spatial", "temporal", "spatiotemporal", "static")

# Route -> the transforms it may use; one entry means a fixed transform.
RouteTable = Mapping[str, tuple[str, ...]]

DEFAULT_ROUTE_TABLE: RouteTable = {
  "spatial": ("flip",),
  "temporal": ("reverse",),
  "spatiotemporal": ("flip", "reverse"),
  "static": ("flip", "reverse"),
}


def letter(index: int) -> str:
  """Option letter of a 0-based option index ('A' for 0)."""
  if not 0 <= index < 26:
    raise ValueError(f"option index {index} has no letter (0..25)")
  return chr(ord("A") + index)


def letter_index(answer: str) -> int:
  """0-based option index of a letter ('A' -> 0)."""
  a = answer.strip().upper()
  if len(a) != 1 or not "A" <= a <= "Z":
    raise ValueError(f"answer {answer!r} is not a single option letter")
  return ord(a) - ord("A")


def validate_route_table(table: RouteTable) -> None:
  """Raises ValueError unless every route maps to a non-empty set of known transforms."""
  for route in ROUTES:
    if route not in table:
      raise ValueError(f"route table has no entry for route {route!r}")
  for route, transforms in table.items():
    if not transforms:
      raise ValueError(f"route table entry {route!r} is empty")
    bad = [t for t in transforms if t not in TRANSFORMS]
    if bad:
      raise ValueError(f"route table entry {route!r} names unknown transforms {bad}")


def choose_transform(
  route: str, seed: int, example_id: str, table: RouteTable = DEFAULT_ROUTE_TABLE
) -> str:
  """The counterfactual transform of one example: 'flip' or 'reverse', never both.

  Deterministic in (seed, example_id): a stable hash (not Python's salted `hash`) so
  every host, worker and resumed run draws the same transform for the same example.
  """
  if route not in table:
    raise ValueError(f"unknown route {route!r} (table has {sorted(table)})")
  choices = table[route]
  if len(choices) == 1:
    return choices[0]
  digest = hashlib.sha256(f"{seed}\x00{example_id}".encode()).digest()
  return choices[int.from_bytes(digest[:8], "little") % len(choices)]


def _check_frames(frames: np.ndarray) -> None:
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be [T, H, W, 3], got shape {frames.shape}")


def flip(frames: np.ndarray) -> np.ndarray:
  """Mirrors every frame left-right; [T, H, W, 3] in, same shape out."""
  _check_frames(frames)
  return np.ascontiguousarray(frames[:, :, ::-1, :])


def reverse(frames: np.ndarray) -> np.ndarray:
  """Reverses the order of the sampled frames; timestamps are left to the caller as-is."""
  _check_frames(frames)
  return np.ascontiguousarray(frames[::-1])


def apply_transform(frames: np.ndarray, transform: str) -> np.ndarray:
  """Applies the named transform ('flip' or 'reverse')."""
  if transform == "flip":
    return flip(frames)
  if transform == "reverse":
    return reverse(frames)
  raise ValueError(f"unknown transform {transform!r}; expected one of {TRANSFORMS}")


def counterfactual_answer(example: Any, transform: str) -> str | None:
  """Ground truth letter of the counterfactual branch, or None when unknown.

  Args:
    example: a `records.Example` (anything with `route`, `answer`, `answer_cf`).
    transform: the transform applied; checked only for being known, since a record's
      `answer_cf` holds for every transform its route may draw (module docstring).

  Returns:
    y for static routes, `answer_cf` when the data gives one, else None.
  """
  if transform not in TRANSFORMS:
    raise ValueError(f"unknown transform {transform!r}; expected one of {TRANSFORMS}")
  if example.route == "static":
    return example.answer
  answer_cf = getattr(example, "answer_cf", None)
  return answer_cf if answer_cf else None


@dataclasses.dataclass(frozen=True)
class Branches:
  """The two branches of one example.

  Attributes:
    original: frames V, [T, H, W, 3].
    counterfactual: frames T(V), same shape and dtype.
    transform: 'flip' or 'reverse'.
    answer_cf: counterfactual ground truth letter, or None when unknown.
  """

  original: np.ndarray
  counterfactual: np.ndarray
  transform: str
  answer_cf: str | None


def make_branches(
  frames: np.ndarray, example: Any, *, seed: int, table: RouteTable = DEFAULT_ROUTE_TABLE
) -> Branches:
  """Builds the original and counterfactual branch of one decoded example."""
  transform = choose_transform(example.route, seed, example.id, table)
  cf = apply_transform(frames, transform)
  assert cf.shape == frames.shape and cf.dtype == frames.dtype
  return Branches(frames, cf, transform, counterfactual_answer(example, transform))
