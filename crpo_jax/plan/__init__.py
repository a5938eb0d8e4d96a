"""Will the run fit? Compile every program of a training run for a topology, ahead of time.

  python -m crpo_jax.plan --config=configs/qwen3vl_8b.py --topology=v5p-16 [--json PATH]

builds the run's abstract state (no weights, no device memory), compiles each program
the run executes (`programs.build_programs`) for the topology's devices, and reports
per-device memory from the compiler (`Compiled.memory_analysis`): arguments,
outputs, temporaries, the state that stays alive beside the program, and the peak.
A program fits when its peak is at most `max_fraction` of the chip's memory; the
compiler's own `RESOURCE_EXHAUSTED` is reported as the program's overflow.

`plan(config, topology)` is the library entry point; `__main__` is the command.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

from crpo_jax.plan import topology as topology_lib

_GIB = 2**30


@dataclasses.dataclass
class ProgramReport:
  name: str
  argument_bytes: int
  output_bytes: int
  temp_bytes: int
  resident_bytes: int
  peak_bytes: int
  fits: bool
  compile_s: float
  note: str = ""
  error: str = ""


@dataclasses.dataclass
class Report:
  topology: str
  devices: int
  device_kind: str
  hbm_bytes: int
  max_fraction: float
  mesh: dict[str, int]
  programs: list[ProgramReport]
  shapes: dict[str, Any]

  @property
  def fits(self) -> bool:
    return all(p.fits for p in self.programs)

  def to_json(self) -> dict[str, Any]:
    progs = {}
    for p in self.programs:
      d = dataclasses.asdict(p)
      d.pop("name")
      progs[p.name] = d
    return {
      "topology": self.topology,
      "devices": self.devices,
      "device_kind": self.device_kind,
      "hbm_bytes": self.hbm_bytes,
      "max_fraction": self.max_fraction,
      "mesh": self.mesh,
      "fits": self.fits,
      "shapes": self.shapes,
      "programs": progs,
    }

  def table(self) -> str:
    gib = lambda b: f"{b / _GIB:9.2f}"
    head = (
      f"{'program':24s} {'args GiB':>9s} {'out GiB':>9s} {'temp GiB':>9s} {'live GiB':>9s} "
      f"{'peak GiB':>9s} {'headroom':>9s} {'compile s':>9s}"
    )
    lines = [
      (
        f"{self.topology}: {self.devices} x {self.device_kind}, "
        f"{self.hbm_bytes / _GIB:.2f} GiB per device, mesh {self.mesh}"
      ),
      head,
      "-" * len(head),
    ]
    for p in self.programs:
      room = 1 - p.peak_bytes / self.hbm_bytes
      lines.append(
        f"{p.name:24s} {gib(p.argument_bytes)} {gib(p.output_bytes)} {gib(p.temp_bytes)} "
        f"{gib(p.resident_bytes)} {gib(p.peak_bytes)} {room:9.0%} {p.compile_s:9.1f}"
        + ("" if p.fits else "  DOES NOT FIT")
      )
      if p.error:
        lines.append(f"    {p.name}: {p.error}")
    lines.append("live = state alive beside the program that is not its argument")
    bound = f"{self.max_fraction:.0%} of {self.hbm_bytes / _GIB:.2f} GiB"
    if self.fits:
      lines.append(f"FITS: every program's peak is within {bound} per device.")
    else:
      bad = ", ".join(p.name for p in self.programs if not p.fits)
      lines.append(f"DOES NOT FIT: {bad} (bound: {bound} per device).")
    return "\n".join(lines)


def _overflow(message: str) -> tuple[str, int]:
  """The compiler's RESOURCE_EXHAUSTED line and the bytes it asked for (or 0)."""
  line = next((ln for ln in message.splitlines() if "RESOURCE_EXHAUSTED" in ln), message)
  line = line.strip()[:400]
  match = re.search(r"\(([\d.]+)([KMGTP]?)\) exceeds", line)
  if not match:
    return line, 0
  scale = 1024 ** " KMGTP".index(match.group(2) or " ")
  return line, int(float(match.group(1)) * scale)


def compile_program(program, hbm_bytes: int, max_fraction: float) -> ProgramReport:
  """Lowers and compiles one program; memory from the compiler, or its overflow."""
  t0 = time.perf_counter()
  lowered = program.lower()
  try:
    compiled = lowered.compile()
  except Exception as e:  # the compiler's RESOURCE_EXHAUSTED, or a real failure
    seconds = time.perf_counter() - t0
    text = str(e)
    if "RESOURCE_EXHAUSTED" not in text:
      raise
    line, needed = _overflow(text)
    arg = program.argument_bytes
    return ProgramReport(
      program.name, arg, 0, needed, program.resident_bytes,
      arg + needed + program.resident_bytes, False, seconds, program.note, line,
    )  # fmt: skip
  seconds = time.perf_counter() - t0
  m = compiled.memory_analysis()
  own = int(getattr(m, "peak_memory_in_bytes", 0) or 0)
  if own <= 0:  # backends without a peak: everything at once, aliased outputs once
    own = (
      m.argument_size_in_bytes
      + m.output_size_in_bytes
      - m.alias_size_in_bytes
      + m.temp_size_in_bytes
      + m.generated_code_size_in_bytes
    )
  # Arguments the compiler dropped as unused still occupy memory while it runs.
  resident = program.resident_bytes + max(0, program.argument_bytes - m.argument_size_in_bytes)
  peak = own + resident
  return ProgramReport(
    program.name,
    int(m.argument_size_in_bytes),
    int(m.output_size_in_bytes),
    int(m.temp_size_in_bytes),
    int(resident),
    int(peak),
    peak <= max_fraction * hbm_bytes,
    seconds,
    program.note,
  )


def plan(
  config,
  topology: str,
  *,
  max_fraction: float = 0.9,
  text_tokens: int = 256,
  only: tuple[str, ...] = (),
  log=None,
) -> Report:
  """Compiles every program of `config`'s run for `topology` and reports memory.

  Args:
    config: an experiment config (configs/*.py).
    topology: a name from `topology.known_names()`, a grid like `v5e:4x4`, or `local`.
    max_fraction: a program fits when its peak is at most this fraction of memory.
    text_tokens: prompt tokens besides the video's (`programs.worst_case_shapes`).
    only: compile only these programs (all when empty).
    log: optional `print`-like callable for progress lines.
  """
  from crpo_jax import sharding
  from crpo_jax.plan import programs as programs_lib

  topo = topology_lib.get_topology(topology)
  try:
    mesh = sharding.make_mesh(dict(config.mesh), devices=topo.devices)
  except ValueError as e:
    raise ValueError(f"config.mesh {dict(config.mesh)} on {topology}: {e}") from e
  rules = sharding.DEFAULT_RULES
  from crpo_jax.train import batch_sizes

  batch_sizes.check_batch_sizes(config, mesh, rules)
  programs, shapes = programs_lib.build_programs(config, mesh, rules, text_tokens=text_tokens)
  reports = []
  for program in programs:
    if only and program.name not in only:
      continue
    if log:
      log(f"compiling {program.name} ({program.note}) ...")
    reports.append(compile_program(program, topo.hbm_bytes, max_fraction))
  return Report(
    topology=topology,
    devices=len(topo.devices),
    device_kind=topo.kind,
    hbm_bytes=topo.hbm_bytes,
    max_fraction=max_fraction,
    mesh=dict(mesh.shape),
    programs=reports,
    shapes=shapes,
  )
