"""crpo_jax entry point: `python -m crpo_jax.main --config=configs/NAME.py --workdir=DIR`.

Any config field can be overridden with `--config.field=value` (for example
`--config.algo=grpo --config.train_steps=50`). Every host of a multi-host job runs
this same command; see launch/README.md.

Multi-process initialisation (`jax.distributed.initialize`) happens when the
environment says the job spans several processes, or runs on Cloud TPU:
  - Cloud TPU VMs (GCE, queued resources, GKE): always, as MaxText does, on one host
    or many; JAX reads the workers and coordinator from the TPU metadata (GCE TPU
    VMs do not set `TPU_WORKER_HOSTNAMES`, so no variable can be relied on).
  - SLURM: `SLURM_NTASKS` > 1; JAX's SLURM cluster detection reads `SLURM_*`. With
    one task per node, every GPU the task sees is passed as `local_device_ids` (JAX
    alone would give each process GPU `SLURM_LOCALID` only, jax#16788).
  - Explicit: `JAX_COORDINATOR_ADDRESS` (host:port), `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID` (any launcher, e.g. Kubernetes / Open MPI wrappers, or the
    local 2-process check in launch/README.md). On CPU, gloo carries the
    cross-process collectives.
`--nodistributed` skips it (e.g. several independent single-host jobs).
A process that stops answering (killed, or its host lost) ends the others within
`--heartbeat_timeout_s` seconds (default 100, JAX's heartbeat timeout) plus JAX's
error polling: JAX's error names the lost task and aborts them (exit 134).

Exit codes: 0 the run finished; 75 (`checkpoint.PREEMPTED_EXIT_CODE`) it stopped
early on SIGTERM / SIGINT and a rerun of the same command resumes; 1 an error that
a rerun will not fix (bad config, data, workdir, non-finite training).
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from crpo_jax import distributed

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs, data and export go here.")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed", True, "Call jax.distributed.initialize() when the environment is multi-process."
)
_HEARTBEAT_S = flags.DEFINE_integer(
  "heartbeat_timeout_s",
  100,
  "With several processes: a process silent this long counts as lost, and the others "
  "exit with an error naming it (jax.distributed's heartbeat timeout).",
)
_DRY_RUN = flags.DEFINE_bool(
  "dry_run", False, "Parse the flags and the config, print what would run, touch nothing."
)
flags.mark_flags_as_required(["config", "workdir"])

EXIT_ERROR = 1  # an error that rerunning will not fix (message on stderr)


def dry_run_text(config, workdir: str) -> str:
  """What `--dry_run` prints: the fields that say what a run would do."""
  fields = ("algo", "model.preset", "model.init_from", "data.train", "data.eval",
            "sft.steps", "train_steps", "mesh")  # fmt: skip
  lines = [f"crpo_jax: dry run (config parsed; nothing run): workdir {workdir}"]
  for field in fields:
    value = config
    for part in field.split("."):
      value = value.get(part) if hasattr(value, "get") else None
    lines.append(f"  {field} = {dict(value) if hasattr(value, 'items') else value!r}")
  return "\n".join(lines)


def _exit_with(error: Exception) -> None:
  """A clear one-paragraph error, no traceback, and the exit code for a rerun that will
  not help."""
  print(f"crpo_jax: error: {error}", file=sys.stderr, flush=True)
  sys.exit(EXIT_ERROR)


def _lost_a_process(error: Exception, heartbeat_timeout_s: int) -> None:
  """A collective across processes failed (gloo saw a peer's connection close): say so,
  then give jax.distributed the time to name the lost process (its heartbeat check
  aborts this process with that message), and exit 1 if it has not by then."""
  first_line = str(error).strip().splitlines()[0][:300]
  print(
    f"crpo_jax: error: a collective across processes failed ({first_line}): another "
    f"process of this job has stopped. jax.distributed names it within "
    f"--heartbeat_timeout_s={heartbeat_timeout_s} s; rerun every process to resume "
    "from the last committed checkpoint.",
    file=sys.stderr,
    flush=True,
  )
  time.sleep(heartbeat_timeout_s + 30)
  os._exit(EXIT_ERROR)  # atexit's distributed shutdown would wait for the lost process


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from crpo_jax import console
  from crpo_jax.train import setup  # jax and flax only: no backend starts before the init

  try:  # before anything writes there: os.path would turn gs://b/run into ./gs:/b/run
    workdir = setup.local_workdir(_WORKDIR.value)
  except setup.PreflightError as e:
    _exit_with(e)
  if _DRY_RUN.value:
    print(dry_run_text(_CONFIG.value, workdir), flush=True)
    return
  console.setup(workdir)  # library INFO to WORKDIR/logs/, our lines on the console
  if _DISTRIBUTED.value:
    distributed.initialize(_HEARTBEAT_S.value)
  distributed.warn_if_not_initialized()
  import jax

  from crpo_jax.data import pipeline  # imported after distributed init
  from crpo_jax.train import checkpoint, loop

  try:
    summary = loop.run(_CONFIG.value, workdir)
  except (
    setup.PreflightError,
    setup.ResumeConfigError,
    pipeline.BadDataError,
    loop.NonFiniteError,
  ) as e:
    _exit_with(e)
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    _lost_a_process(e, _HEARTBEAT_S.value)
  if summary["status"] == "preempted":
    sys.exit(checkpoint.PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
  app.run(main)
