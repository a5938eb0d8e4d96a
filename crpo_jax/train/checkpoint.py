"""Orbax checkpoints: asynchronous saves, keep-last-N, resume, and preemption.

One checkpoint (a step directory) holds everything a run needs to continue exactly:
  state  the `TrainState` (parameters, optimiser state, step, RNG key data);
  ref    the frozen reference parameters, when the run has them (beta > 0);
  data   the input iterator's state (JSON);
  meta   small JSON facts about the loop (phase, steps done, metrics history).
A killed and resumed run therefore draws the same batches and the same sampling
keys as one that never stopped.

Preemption: `PreemptionWatcher` turns SIGTERM (what TPU VMs, GKE and SLURM send
before killing a job) into a flag the loop polls once per step; the loop then
saves synchronously and exits. On several hosts, `jax.distributed`'s preemption
sync point makes all hosts agree on the same step.
"""

from __future__ import annotations

import base64
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from crpo_jax.train.state import TrainState

PyTree = Any


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
    max_to_keep: int = 3,
    async_save: bool = True,
  ):
    self.directory = epath.Path(directory)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      enable_async_checkpointing=async_save,
      create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(
    self,
    step: int,
    state: TrainState,
    *,
    ref_params: PyTree | None = None,
    data_state: Any = None,
    meta: dict[str, Any] | None = None,
  ) -> bool:
    """Starts a save of `step` (asynchronous unless disabled); returns whether it did."""
    items = {
      "state": ocp.args.StandardSave(state),
      "data": ocp.args.JsonSave({"iterator": _encode(data_state)}),
      "meta": ocp.args.JsonSave(dict(meta or {})),
    }
    if ref_params is not None:
      items["ref"] = ocp.args.StandardSave(ref_params)
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
    has_ref = (self.directory / str(step) / "ref").exists()
    if target_ref is not None and has_ref:
      items["ref"] = ocp.args.StandardRestore(abstract_like(target_ref, ref_shardings))
    out = self._manager.restore(step, args=ocp.args.Composite(**items))
    ref = out["ref"] if "ref" in items else None
    return out["state"], ref, _decode(out["data"]["iterator"]), dict(out["meta"])

  def wait(self) -> None:
    """Blocks until any asynchronous save has been committed to disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class PreemptionWatcher:
  """Turns SIGTERM into a flag that the training loop polls once per step."""

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
    self._event = threading.Event()
    self._previous = {}
    # With several processes, jax.distributed's preemption service owns SIGTERM and
    # makes every host stop at the same step; a Python handler would replace it.
    self._multihost = jax.process_count() > 1
    if not self._multihost and threading.current_thread() is threading.main_thread():
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    logging.warning("received signal %d: will checkpoint and exit after this step", signum)
    self._event.set()

  def trigger(self) -> None:
    """Requests a stop as a signal would (tests, or an external controller)."""
    self._event.set()

  def should_stop(self, step: int) -> bool:
    """True once a stop was requested here or, on several hosts, anywhere."""
    if self._event.is_set():
      return True
    if self._multihost:
      try:
        from jax.experimental import multihost_utils

        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError:
        # The preemption service is only on when jax.distributed was initialised.
        return False
    return False

  def restore_handlers(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
