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
`--heartbeat_timeout_s` seconds (default 100, JAX's heartbeat timeout), with JAX's
error naming the lost task.

Exit codes: 0 the run finished; 75 (`checkpoint.PREEMPTED_EXIT_CODE`) it stopped
early on SIGTERM / SIGINT and a rerun of the same command resumes; 1 an error that
a rerun will not fix (bad config, data, workdir, non-finite training).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

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


def on_cloud_tpu_vm() -> bool:
  """TPU chips on this host's PCI bus: the scan JAX's own TPU start-up makes, which
  needs no backend (this runs before `jax.distributed.initialize`)."""
  try:
    from jax._src import hardware_utils
  except ImportError:  # a JAX without it: only the variables below are read
    return False
  return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0


def multiprocess_env(
  env: dict[str, str] | None = None, *, tpu_vm: bool | None = None
) -> str | None:
  """Names the launcher to initialise `jax.distributed` for, or None for one process."""
  env = dict(os.environ if env is None else env)
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "explicit"
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return "tpu"
  if env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu"
  if on_cloud_tpu_vm() if tpu_vm is None else tpu_vm:
    return "tpu"
  if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_STEP_NODELIST"):
    return "slurm"
  return None


def slurm_local_device_ids(env: dict[str, str] | None = None) -> list[int] | None:
  """Every GPU a SLURM task sees when the job runs one task per node, else None.

  JAX's SLURM detection assumes one process per GPU and restricts each process to
  GPU `SLURM_LOCALID`; with one task per node (launch/slurm_gpu.sbatch) that would
  leave all but one GPU of every node idle. The ids count the visible devices
  (`CUDA_VISIBLE_DEVICES` renumbers them from 0), else `SLURM_GPUS_ON_NODE`.
  """
  env = dict(os.environ if env is None else env)
  nodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 0)
  tasks = int(env.get("SLURM_NTASKS") or 0)
  if not nodes or tasks != nodes:
    return None  # several tasks per node: one GPU each, JAX's default
  visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
  count = len(visible) or int(env.get("SLURM_GPUS_ON_NODE") or 0)
  return list(range(count)) if count > 1 else None


def initialize_distributed(heartbeat_timeout_s: int = 100) -> None:
  """`jax.distributed.initialize()` with what the environment provides."""
  import jax  # absl flags parse before jax reads its config

  # CPU devices of several processes talk through gloo (shipped with jaxlib); the
  # setting only concerns the CPU backend, so it is harmless on TPU and GPU hosts.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kind = multiprocess_env()
  if kind is None:
    return
  timeouts = {"heartbeat_timeout_seconds": heartbeat_timeout_s}
  if kind == "explicit":
    jax.distributed.initialize(
      coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
      num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
      process_id=int(os.environ["JAX_PROCESS_ID"]),
      **timeouts,
    )
  elif kind == "slurm":
    jax.distributed.initialize(local_device_ids=slurm_local_device_ids(), **timeouts)
  else:  # TPU: JAX reads workers and coordinator from the TPU metadata.
    jax.distributed.initialize(**timeouts)
  logging.info(
    "jax.distributed (%s): process %d of %d, %d local / %d global devices",
    kind,
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def warn_if_not_distributed() -> None:
  """An error line when several processes run without `jax.distributed` (then the
  preemption sync is off: a SIGTERM kills every worker without a checkpoint)."""
  import jax

  if jax.process_count() > 1 and not jax.distributed.is_initialized():
    logging.error(
      "%d processes but jax.distributed is not initialised (--nodistributed?): "
      "preemption saves and the multi-host checks are off",
      jax.process_count(),
    )


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
    initialize_distributed(_HEARTBEAT_S.value)
  warn_if_not_distributed()
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
  if summary["status"] == "preempted":
    sys.exit(checkpoint.PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
  app.run(main)
