"""Orbax checkpoints: asynchronous saves, keep-last-N, resume, and preemption.

One checkpoint (a step directory) holds everything a run needs to continue exactly:
  state  the `TrainState` (parameters, optimiser state, step, RNG key data);
  data   the input iterator's state (JSON);
  meta   small JSON facts about the loop (phase, steps done, metrics history).
The frozen reference parameters (beta > 0) never change, so they are written once,
when RL starts, beside the steps (`reference_dir`, default WORKDIR/reference), not
into every step. (Steps written before this layout carry a `ref` item; restore
still reads it.)
A killed and resumed run therefore draws the same batches and the same sampling
keys as one that never stopped.

Preemption: `PreemptionWatcher` turns SIGTERM (what TPU VMs, GKE and SLURM send
before killing a job) and SIGINT (Ctrl-C) into a stop request; the loop saves at
the next step boundary and the process exits with `PREEMPTED_EXIT_CODE`, within a
bounded time in every phase (the class docstring). On several hosts,
`jax.distributed`'s preemption sync point makes all hosts agree on the same step.

Crash safety is Orbax's: a step is written under a temporary name and renamed
(finalized) only once complete, and `latest_step()` sees finalized steps only, so
a process killed mid-save (kill -9, power loss) leaves the previous checkpoint as
the one a rerun restores.
"""

from __future__ import annotations

import base64
import os
import signal
import sys
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from crpo_jax.train.state import TrainState

PyTree = Any

# What a run that stopped early on SIGTERM / SIGINT exits with, distinct from success
# (0) and from a crash (1): EX_TEMPFAIL of sysexits.h, "try again later". Rerunning
# the same command resumes. launch/README.md documents it for SLURM and Kubernetes.
PREEMPTED_EXIT_CODE = 75


def _encode(data_state: Any) -> Any:
  """Makes an iterator state JSON-safe (grain's DataLoader state is bytes)."""
  if isinstance(data_state, bytes):
    return {"__bytes__": base64.b64encode(data_state).decode("ascii")}
  return data_state


def _decode(data_state: Any) -> Any:
  if isinstance(data_state, dict) and set(data_state) == {"__bytes__"}:
    return base64.b64decode(data_state["__bytes__"])
  return data_state


def abstract_like(tree: PyTree, shardings: PyTree) -> PyTree:
  """ShapeDtypeStructs carrying the target shardings (what restore fills in)."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
  )


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with crpo_jax's item layout."""

  def __init__(
    self,
    directory: str | epath.Path,
    *,
    reference_dir: str | epath.Path | None = None,
    max_to_keep: int = 3,
    async_save: bool = True,
  ):
    self.directory = epath.Path(directory)
    self.reference_dir = epath.Path(reference_dir or self.directory.parent / "reference")
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      enable_async_checkpointing=async_save,
      create=True,
      # A save killed half-way leaves a temporary directory that was never
      # finalized; it is never restored, and this removes it on the next start.
      cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  @staticmethod
  def has_checkpoint(directory: str | epath.Path) -> bool:
    """Whether `directory` holds a finalized step (half-written ones do not count)."""
    directory = epath.Path(directory)
    if not directory.exists():
      return False
    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(directory, options=options) as manager:
      return manager.latest_step() is not None

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(
    self,
    step: int,
    state: TrainState,
    *,
    data_state: Any = None,
    meta: dict[str, Any] | None = None,
  ) -> bool:
    """Starts a save of `step` (asynchronous unless disabled); returns whether it did."""
    items = {
      "state": ocp.args.StandardSave(state),
      "data": ocp.args.JsonSave({"iterator": _encode(data_state)}),
      "meta": ocp.args.JsonSave(dict(meta or {})),
    }
    saved = self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    if saved:
      logging.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def restore(
    self,
    target_state: TrainState,
    target_shardings: TrainState,
    *,
    step: int | None = None,
    target_ref: PyTree | None = None,
    ref_shardings: PyTree | None = None,
  ) -> tuple[TrainState, PyTree | None, Any, dict[str, Any]]:
    """Restores (state, ref_params, data_state, meta) of `step` (default: latest).

    `target_state` (arrays or ShapeDtypeStructs) gives structure, shapes and dtypes;
    `target_shardings` where each array goes, so a run may resume on another mesh.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = {
      "state": ocp.args.StandardRestore(abstract_like(target_state, target_shardings)),
      "data": ocp.args.JsonRestore(),
      "meta": ocp.args.JsonRestore(),
    }
    in_step = (self.directory / str(step) / "ref").exists()  # the older layout
    if target_ref is not None and in_step:
      items["ref"] = ocp.args.StandardRestore(abstract_like(target_ref, ref_shardings))
    out = self._manager.restore(step, args=ocp.args.Composite(**items))
    ref = out["ref"] if "ref" in items else None
    if ref is None and target_ref is not None and self.reference_dir.exists():
      with ocp.StandardCheckpointer() as reader:
        ref = reader.restore(self.reference_dir, abstract_like(target_ref, ref_shardings))
    return out["state"], ref, _decode(out["data"]["iterator"]), dict(out["meta"])

  def save_reference(self, ref_params: PyTree) -> None:
    """Writes the frozen reference once (every process takes part), and waits until it
    is committed: Orbax writes to a temporary name and renames, so `reference_dir`
    exists only when whole. A reference already there is kept (a resumed run
    recomputes the same one)."""
    if self.reference_dir.exists():
      return
    with ocp.StandardCheckpointer() as writer:
      writer.save(self.reference_dir, ref_params)
      writer.wait_until_finished()
    logging.info("checkpoint: reference parameters saved to %s", self.reference_dir)

  def wait(self) -> None:
    """Blocks until any asynchronous save has been committed to disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class PreemptionWatcher:
  """SIGTERM and SIGINT become a stop request that the loop acts on at a safe point.

  A safe point is the end of a training step (or the start of training): the loop
  saves a checkpoint there and exits with `PREEMPTED_EXIT_CODE`. The signals are
  noticed at once in every phase, even while the main thread sits in a long XLA
  compilation or a device computation: Python's C-level handler writes each signal
  to a wakeup pipe (`signal.set_wakeup_fd`) that a watcher thread reads. That
  thread starts a grace timer: if no safe point is reached within `grace_s`
  seconds (a long evaluation, compilation or export), the process exits with the
  same code without saving, and a rerun resumes from the last committed checkpoint.
  A second signal exits at once. So a signalled process ends within `grace_s`
  seconds plus the save of one checkpoint that started inside the window.

  On several hosts, jax.distributed's preemption service owns SIGTERM and makes
  every host stop at the same step (`reached_preemption_sync_point`); only SIGINT
  is handled here then, and `should_stop` shares each host's request with the
  others, so a signal to any one host stops all of them at the same step.
  """

  def __init__(self, grace_s: float = 60.0, signals: tuple[int, ...] | None = None):
    self.grace_s = float(grace_s)
    self._event = threading.Event()
    self._previous: dict[int, Any] = {}
    self._timer: threading.Timer | None = None
    self._signals_seen = 0
    self._lock = threading.Lock()
    self._closed = False  # set by restore_handlers: no grace timer may start after it
    self._pipe: tuple[int, int] | None = None
    self._previous_fd = -1
    # With several processes, jax.distributed's preemption service owns SIGTERM and
    # makes every host stop at the same step; a Python handler would replace it.
    self._multihost = jax.process_count() > 1
    if signals is None:
      signals = (signal.SIGINT,) if self._multihost else (signal.SIGTERM, signal.SIGINT)
    self._signals = tuple(signals)
    if threading.current_thread() is not threading.main_thread():
      return
    for sig in self._signals:
      self._previous[sig] = signal.signal(sig, self._handle)
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    self._pipe = (read_fd, write_fd)
    self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    self._thread = threading.Thread(target=self._watch, args=(read_fd,), daemon=True)
    self._thread.start()

  def _handle(self, signum, frame):
    """The Python-level handler (main thread, once it runs Python again).

    It only raises the flag; the watcher thread, which saw the same signal through
    the wakeup pipe, counts it, reports it and starts the grace timer.
    """
    del signum, frame
    self._event.set()

  def _watch(self, read_fd: int) -> None:
    while True:
      try:
        data = os.read(read_fd, 64)
      except OSError:
        return
      for signum in data:
        if signum == _STOP_WATCHING:  # restore_handlers: this watcher is done
          return
        if signum in self._signals:
          self._on_signal(signum)

  def _on_signal(self, signum: int) -> None:
    name = signal.Signals(signum).name
    with self._lock:
      # The thread can read a signal's byte after the run already ended and
      # restore_handlers ran (the main thread's handler acted on it first): then
      # there is nothing left to guard, and a grace timer started now would end the
      # process that outlives this watcher (a test session) grace_s seconds later.
      if self._closed:
        return
      self._signals_seen += 1
      if self._signals_seen > 1:
        _stderr(f"received {name} again: exiting now without saving (exit {PREEMPTED_EXIT_CODE})")
        os._exit(PREEMPTED_EXIT_CODE)
      _stderr(
        f"received {name}: will save a checkpoint at the next step boundary and exit "
        f"(exit {PREEMPTED_EXIT_CODE}); exiting without saving if that takes over "
        f"{self.grace_s:g} s; send it again to exit now"
      )
      self._event.set()
      self._timer = threading.Timer(self.grace_s, self._expire)
      self._timer.daemon = True
      self._timer.start()

  def _expire(self) -> None:
    with self._lock:
      if self._closed:  # the run ended as the timer fired
        return
    _stderr(
      f"no safe point within {self.grace_s:g} s of the stop signal: exiting without saving "
      f"(exit {PREEMPTED_EXIT_CODE}); a rerun resumes from the last committed checkpoint"
    )
    os._exit(PREEMPTED_EXIT_CODE)

  @property
  def stop_requested(self) -> bool:
    return self._event.is_set()

  def trigger(self) -> None:
    """Requests a stop as a signal would (tests, or an external controller)."""
    self._event.set()

  def should_stop(self, step: int) -> bool:
    """True once a stop was requested here or, on several hosts, anywhere.

    Every host must call this at the same steps: on several hosts it is a collective
    (JAX's preemption sync point for SIGTERM, and an all-gather of the local request,
    so a Ctrl-C on one host stops all of them at the same step)."""
    if not self._multihost:
      return self._event.is_set()
    from jax.experimental import multihost_utils

    try:
      synced = bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:  # the preemption service is only on under jax.distributed
      synced = False
    return any_process(self._event.is_set() or synced)[0]

  def restore_handlers(self) -> None:
    """Puts the previous handlers back and stops the grace timer (the run is over)."""
    with self._lock:
      self._closed = True
      if self._timer is not None:
        self._timer.cancel()
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    if self._pipe is not None:
      signal.set_wakeup_fd(self._previous_fd)
      # Wake the thread and let it end before the descriptors (whose numbers the
      # next watcher may reuse) are closed.
      os.write(self._pipe[1], bytes([_STOP_WATCHING]))
      self._thread.join(timeout=5)
      for fd in self._pipe:
        os.close(fd)
      self._pipe = None


_STOP_WATCHING = 0  # not a signal number


def any_process(*flags: bool) -> tuple[bool, ...]:
  """Each flag OR-ed over all processes: one small all-gather on several processes (every
  process must call it at the same point), the flags themselves on one."""
  if jax.process_count() == 1:
    return tuple(bool(f) for f in flags)
  from jax.experimental import multihost_utils

  gathered = multihost_utils.process_allgather(np.asarray(flags, np.int32))
  return tuple(bool(f) for f in np.asarray(gathered).reshape(-1, len(flags)).any(axis=0))


def _stderr(msg: str) -> None:
  """Straight to stderr (safe from any thread, flushed before an os._exit)."""
  logging.warning("%s", msg)
  print(msg, file=sys.stderr, flush=True)
