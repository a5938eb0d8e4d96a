"""`sharding.open_communicators`: with 2 real processes, one of them 35 s late to its
first collective (as when it is still compiling the first training step) does not
fail the run. Without it, gloo's 30 s wait to create a communicator ends both with
"Gloo context initialization failed: DEADLINE_EXCEEDED" (measured once by hand).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATE_S = 35  # past gloo's 30 s

_SCRIPT = textwrap.dedent(
  """
  import sys, time
  import jax, jax.numpy as jnp, numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  port, i, late = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
  jax.distributed.initialize(f"127.0.0.1:{port}", 2, i)
  from crpo_jax import sharding
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 1})
  sharding.open_communicators(mesh)
  x = jax.make_array_from_callback(
    (8,), NamedSharding(mesh, P(("data", "fsdp"))), lambda idx: np.arange(8.0)[idx]
  )
  if i == 1:
    time.sleep(late)
  total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(x)
  print("sum", float(total), flush=True)
  """
)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_a_late_process_joins_an_open_communicator(tmp_path):
  script = tmp_path / "late.py"
  script.write_text(_SCRIPT)
  port = _free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT, "TPU_SKIP_MDS_QUERY": "1",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}  # fmt: skip
  for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(k, None)
  procs = [
    subprocess.Popen(
      [sys.executable, str(script), str(port), str(i), str(LATE_S)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=240)[0])
    finally:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
    assert "sum 28.0" in out, out[-3000:]
