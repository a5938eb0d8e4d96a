"""`jax.distributed` for crpo_jax's programs: which launcher started this process, and
the initialisation that fits it (explicit `JAX_*` variables, Cloud TPU VMs, SLURM).

No flags and no backend here, so `crpo_jax.main` and `crpo_jax.evaluate` share it
and call it before anything starts a JAX backend.
"""

from __future__ import annotations

import os

from absl import logging


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


def initialize(heartbeat_timeout_s: int = 100) -> None:
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


def warn_if_not_initialized() -> None:
  """An error line when several processes run without `jax.distributed` (then the
  preemption sync is off: a SIGTERM kills every worker without a checkpoint)."""
  import jax

  if jax.process_count() > 1 and not jax.distributed.is_initialized():
    logging.error(
      "%d processes but jax.distributed is not initialised (--nodistributed?): "
      "preemption saves and the multi-host checks are off",
      jax.process_count(),
    )
