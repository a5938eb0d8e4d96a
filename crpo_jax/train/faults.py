"""Deterministic fault injection for the reliability tests (off unless asked for).

Environment variables, read when a fault point is reached:

  CRPO_KILL_AT=POINT@STEP   the process sends itself SIGKILL (no handler, no
                            cleanup: a machine dying) when it reaches POINT while
                            working on global step STEP (the step being computed,
                            1-based; for `checkpoint`, `eval` and `export`, the last
                            finished step).
  CRPO_SIGNAL_AT=POINT@STEP:SIG  the process sends itself SIGINT or SIGTERM there
                            (a scheduler's preemption, a Ctrl-C), once.
  CRPO_NAN_AT=STEP[,STEP]   the RL update of those global steps gets a NaN
                            advantage in its first micro-batch (a bad batch).

Points, in the order a step meets them: `rollout` (after sampling, before
scoring), `update` (the jitted update has been dispatched), `checkpoint` (an
asynchronous save has started and is not yet committed), `eval` (a held-out
evaluation has started), `export` (the HF directory is half written).
"""

from __future__ import annotations

import os
import signal

POINTS = ("rollout", "update", "checkpoint", "eval", "export")
KILL_ENV = "CRPO_KILL_AT"
SIGNAL_ENV = "CRPO_SIGNAL_AT"
NAN_ENV = "CRPO_NAN_AT"
_sent: set[str] = set()


def _target(env: str) -> tuple[str, int, str] | None:
  spec = os.environ.get(env, "")
  if not spec:
    return None
  where, _, sig = spec.partition(":")
  point, _, step = where.partition("@")
  if point not in POINTS or not step.isdigit() or sig not in ("", "SIGINT", "SIGTERM"):
    raise ValueError(
      f"{env}={spec!r}: expected POINT@STEP[:SIGINT|SIGTERM] with POINT one of {POINTS}"
    )
  return point, int(step), sig or "SIGINT"


def at(point: str, step: int) -> None:
  """A fault point: kills or signals this process when the environment asks for it."""
  if point not in POINTS:
    raise ValueError(f"unknown fault point {point!r}; expected one of {POINTS}")
  kill = _target(KILL_ENV)
  if kill and kill[:2] == (point, int(step)):
    print(f"[faults] {KILL_ENV}: killing the process at {point}@{step}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
  sig = _target(SIGNAL_ENV)
  if sig and sig[:2] == (point, int(step)) and SIGNAL_ENV not in _sent:
    _sent.add(SIGNAL_ENV)
    print(f"[faults] {SIGNAL_ENV}: sending {sig[2]} at {point}@{step}", flush=True)
    os.kill(os.getpid(), getattr(signal, sig[2]))


def nan_at(step: int) -> bool:
  """Whether CRPO_NAN_AT asks for a NaN in the update of global step `step`."""
  spec = os.environ.get(NAN_ENV, "")
  return bool(spec) and int(step) in {int(s) for s in spec.split(",") if s.strip()}
