"""crpo_jax entry point: `python -m crpo_jax.main --config=configs/NAME.py --workdir=DIR`.

Any config field can be overridden with `--config.field=value` (for example
`--config.algo=grpo --config.train_steps=50`). Every host of a multi-host job runs
this same command; see launch/README.md.

Multi-process initialisation (`jax.distributed.initialize`) happens when the
environment says the job spans several processes:
  - Cloud TPU pod slices: `TPU_WORKER_HOSTNAMES` lists more than one worker, or
    `MEGASCALE_COORDINATOR_ADDRESS` is set; JAX reads the rest from the TPU metadata.
  - SLURM: `SLURM_NTASKS` > 1 (one task per node or per GPU); JAX's SLURM cluster
    detection reads `SLURM_*` and `SLURM_STEP_NODELIST`.
  - Explicit: `JAX_COORDINATOR_ADDRESS` (host:port), `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID` (any launcher, e.g. Kubernetes / Open MPI wrappers).
`--nodistributed` skips it (e.g. several independent single-host jobs).

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
_DRY_RUN = flags.DEFINE_bool(
  "dry_run", False, "Parse the flags and the config, print what would run, touch nothing."
)
flags.mark_flags_as_required(["config", "workdir"])

EXIT_ERROR = 1  # an error that rerunning will not fix (message on stderr)


def multiprocess_env(env: dict[str, str] | None = None) -> str | None:
  """Names the multi-process launcher the environment shows, or None for one process."""
  env = dict(os.environ if env is None else env)
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "explicit"
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return "tpu"
  if env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu"
  if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_STEP_NODELIST"):
    return "slurm"
  return None


def initialize_distributed() -> None:
  """`jax.distributed.initialize()` with what the environment provides."""
  import jax  # absl flags parse before jax reads its config

  kind = multiprocess_env()
  if kind is None:
    return
  if kind == "explicit":
    jax.distributed.initialize(
      coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
      num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
      process_id=int(os.environ["JAX_PROCESS_ID"]),
    )
  else:  # TPU metadata / SLURM variables are auto-detected by JAX.
    jax.distributed.initialize()
  logging.info(
    "jax.distributed (%s): process %d of %d, %d local / %d global devices",
    kind,
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _DRY_RUN.value:
    print(dry_run_text(_CONFIG.value, _WORKDIR.value), flush=True)
    return
  from crpo_jax import console

  console.setup(_WORKDIR.value)  # library INFO to WORKDIR/logs/, our lines on the console
  if _DISTRIBUTED.value:
    initialize_distributed()
  from crpo_jax.data import pipeline  # imported after distributed init
  from crpo_jax.train import checkpoint, loop, setup

  try:
    summary = loop.run(_CONFIG.value, _WORKDIR.value)
  except (
    setup.PreflightError,
    setup.ResumeConfigError,
    pipeline.BadDataError,
    loop.NonFiniteError,
  ) as e:  # a clear one-paragraph error, no traceback
    print(f"crpo_jax: error: {e}", file=sys.stderr, flush=True)
    sys.exit(EXIT_ERROR)
  if summary["status"] == "preempted":
    sys.exit(checkpoint.PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
  app.run(main)
