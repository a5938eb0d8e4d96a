"""Accelerator topologies the planner compiles for: names, devices, memory per chip.

A TPU topology is built by libtpu as compile-only devices
(`jax.experimental.topologies.get_topology_desc`), so a CPU-only host compiles for
a v5p-16 without owning one. `local` is the devices of this host (a TPU VM or a GPU
node), with their real memory limit.

Names follow Cloud TPU's accelerator types (`v5p-16` counts TensorCores: 8 chips
of 2 cores; `v5e-8` and `v6e-8` count chips) or give a raw chip grid
(`v5e:4x4`, `v5p:2x2x4`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence

_GIB = 2**30

# HBM per chip that the TPU compiler allows a program (libtpu 0.0.42.1 reports it in
# its RESOURCE_EXHAUSTED message: "exceeds available HBM (95.74G)"), in GiB.
AVAILABLE_HBM_GIB = {"v4": 30.75, "v5e": 15.75, "v5p": 95.74, "v6e": 31.25}

# libtpu's chip configuration per generation: v4 and v5p run two cores as one.
_CHIP_CONFIG = {"v4": "megacore", "v5p": "megacore", "v5e": "default", "v6e": "default"}

# Accelerator type -> chip grid.
KNOWN = {
  "v4-8": "v4:2x2x1",
  "v5e-8": "v5e:2x4",
  "v5e-16": "v5e:4x4",
  "v5p-8": "v5p:2x2x1",
  "v5p-16": "v5p:2x2x2",
  "v5p-32": "v5p:2x2x4",
  "v6e-8": "v6e:2x4",
}

_GRID = re.compile(r"^(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})$")


@dataclasses.dataclass(frozen=True)
class Topology:
  """Devices to compile for and the memory one program may use on each.

  Attributes:
    name: what the user asked for (`v5p-16`, `v5e:4x4`, `local`).
    devices: the devices, compile-only for TPU topologies.
    hbm_bytes: memory per device the compiler lets a program use.
    kind: device kind as JAX reports it (`TPU v5`, `cpu`, ...).
  """

  name: str
  devices: Sequence
  hbm_bytes: int
  kind: str


def known_names() -> list[str]:
  return [*KNOWN, "local", "GEN:AxB[xC] (e.g. v5e:4x4, v5p:2x2x4)"]


def _host_bounds(dims: list[int]) -> tuple[int, int, int]:
  """Chips per host: one 8-chip host for small 2-D grids (v5e-8, v6e-8), else 2x2x1."""
  if len(dims) == 2 and dims[0] * dims[1] <= 8:
    return dims[0], dims[1], 1
  return min(dims[0], 2), min(dims[1], 2), 1


def tpu_topology(name: str) -> Topology:
  """Compile-only devices of a TPU topology (needs libtpu: `pip install -e ".[tpu]"`)."""
  grid = KNOWN.get(name, name)
  match = _GRID.match(grid)
  if not match:
    raise ValueError(f"unknown topology {name!r}; known: {', '.join(known_names())}")
  gen, dims = match.group(1), [int(d) for d in match.group(2).split("x")]
  # libtpu looks for a TPU VM's metadata server and lock file unless told not to.
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies

  topo_name = f"{gen}:{'x'.join(map(str, dims))}"
  try:
    desc = topologies.get_topology_desc(
      topology_name=topo_name,
      platform="tpu",
      chip_config_name=_CHIP_CONFIG[gen],
      chips_per_host_bounds=_host_bounds(dims),
      num_slices=1,
    )
  except Exception as e:  # no libtpu, or a grid libtpu rejects
    raise RuntimeError(
      f"could not build TPU topology {topo_name} ({e}); the TPU compiler comes with "
      f'`pip install -e ".[tpu]"`'
    ) from e
  devices = list(desc.devices)
  if len(devices) != math.prod(dims):
    raise RuntimeError(f"topology {topo_name}: libtpu gave {len(devices)} devices")
  hbm = int(AVAILABLE_HBM_GIB[gen] * _GIB)
  return Topology(name, devices, hbm, devices[0].device_kind)


def local_topology() -> Topology:
  """This host's devices and their memory limit (host RAM per device on CPU)."""
  import jax

  devices = jax.devices()
  try:
    limit = int(devices[0].memory_stats()["bytes_limit"])
  except (KeyError, TypeError, RuntimeError, NotImplementedError):  # CPU: no memory stats
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // len(devices)
  return Topology("local", devices, limit, devices[0].device_kind)


def get_topology(name: str) -> Topology:
  return local_topology() if name == "local" else tpu_topology(name)
