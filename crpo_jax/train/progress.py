"""A plain-text progress line with rate and ETA that reads well in log files.

Interactive bars (tqdm) redraw with carriage returns, which turns into noise in
SLURM and TPU-pod logs; this prints one full line every `every` steps instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


def format_seconds(seconds: float) -> str:
  """`93` -> `1m33s`, `4000` -> `1h06m40s`."""
  seconds = max(0, round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  if h:
    return f"{h}h{m:02d}m{s:02d}s"
  if m:
    return f"{m}m{s:02d}s"
  return f"{s}s"


class Progress:
  """Tracks steps of one phase and prints `name step/total [bar] pct rate ETA`.

  The rate ignores the first step (compilation) once later steps exist, so the ETA
  is not thrown off by a long first step.
  """

  def __init__(
    self,
    name: str,
    total: int,
    *,
    start: int = 0,
    every: int = 1,
    width: int = 20,
    printer: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
  ):
    self.name, self.total, self.every, self.width = name, total, max(1, every), width
    self._printer = printer or (lambda line: print(line, flush=True))
    self._clock = clock
    self._start_step = start
    self._times: list[float] = [clock()]
    self.step = start

  def seconds_per_step(self) -> float | None:
    t = self._times
    if len(t) < 2:
      return None
    if len(t) >= 3:  # skip the first (compiling) step
      return (t[-1] - t[1]) / (len(t) - 2)
    return t[-1] - t[0]

  def eta(self) -> float | None:
    rate = self.seconds_per_step()
    return None if rate is None else rate * (self.total - self.step)

  def line(self, extra: Mapping[str, float] | None = None) -> str:
    frac = self.step / self.total if self.total else 1.0
    filled = round(frac * self.width)
    bar = "#" * filled + "." * (self.width - filled)
    rate, eta = self.seconds_per_step(), self.eta()
    parts = [f"{self.name} {self.step}/{self.total} [{bar}] {100 * frac:5.1f}%"]
    if rate is not None:
      parts.append(f"{rate:.2f}s/step ETA {format_seconds(eta)}")
    parts.append(f"elapsed {format_seconds(self._times[-1] - self._times[0])}")
    for k, v in (extra or {}).items():
      parts.append(f"{k}={v:.4g}")
    return "  ".join(parts)

  def update(self, step: int, extra: Mapping[str, float] | None = None) -> None:
    """Records that `step` steps are done; prints every `every` steps and at the end."""
    self.step = step
    self._times.append(self._clock())
    if step % self.every == 0 or step >= self.total:
      self._printer(self.line(extra))
