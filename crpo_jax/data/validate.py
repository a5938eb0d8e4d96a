"""Checks a dataset before a long run: `python -m crpo_jax.data.validate DATA`.

Every record goes through the training pipeline's own per-example path
(`pipeline.ExampleLoader`: parse, decode, counterfactual branch, Qwen3-VL vision
processing of both branches), minus tokenisation, which needs no data check. The
command reports every problem of every record in one pass (a record without a
route still has its video decoded): how many records are usable and, per reason,
the count and the first file names; it writes one JSON line per problem (source
file:line, video, reason, detail) to the report file, and exits 1 when no record
is usable, 0 otherwise.

  python -m crpo_jax.data.validate data/train.jsonl --report bad.jsonl
  python -m crpo_jax.data.validate data/arrayrecord/crpo_records/1.0.0 --split train
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from crpo_jax.data import pipeline, records, transforms


@dataclasses.dataclass(frozen=True)
class VisionOnly:
  """A `pipeline.Processor` without the prompt: the vision inputs of one branch."""

  cfg: Any = None  # processor.ProcessorConfig; None = its defaults

  def __call__(self, example: records.Example, frames: np.ndarray, meta: Any) -> dict:
    from crpo_jax.data import processor  # PIL: imported where used

    v = processor.process_video_frames(frames, meta, self.cfg or processor.ProcessorConfig())
    return {"pixel_values_videos": v.pixel_values, "video_grid_thw": v.grid_thw}


@dataclasses.dataclass(frozen=True)
class _Check:
  """Runs the pipeline path on one record and keeps every problem found (no pixels).

  A record without a route is reported as `no_route` and still decoded (with a
  stand-in route, which changes no video check), so a broken clip shows up in the
  same pass rather than after a rerun with --default-route.
  """

  load: pipeline.ExampleLoader

  def __call__(self, item: Any) -> list[pipeline.Skipped]:
    load, problems = self.load, []
    if load.cfg.default_route is None:
      try:
        ex = load.from_source(item) if load.from_source else item
      except Exception:  # noqa: BLE001  (the loader below reports it as the pipeline would)
        ex = None
      if ex is not None and ex.route is None:
        why = "record has no route and no default_route is set"
        problems.append(pipeline.Skipped(ex.source, ex.video, "no_route", why))
        item, load = (
          dataclasses.replace(ex, route="static"),
          dataclasses.replace(load, from_source=None),
        )
    out = load(item)
    return problems + ([out] if isinstance(out, pipeline.Skipped) else [])


@dataclasses.dataclass
class Report:
  """Outcome of a validation run.

  Attributes:
    usable: records the training pipeline would use.
    bad: every problem found, in record order; one record may have several
      (no route and a broken video).
  """

  usable: int
  bad: list[pipeline.Skipped]

  @property
  def reasons(self) -> collections.Counter[str]:
    """Problems per reason."""
    return collections.Counter(s.reason for s in self.bad)

  @property
  def unusable(self) -> int:
    """Records with at least one problem."""
    return len({s.source for s in self.bad})

  def examples(self, reason: str, n: int = 3) -> list[str]:
    """The first `n` file names (the video, else the record's file:line) with `reason`."""
    names = [os.path.basename(s.video) if s.video else s.source for s in self.bad]
    return [name for s, name in zip(self.bad, names) if s.reason == reason][:n]


def validate(
  data: str,
  *,
  cfg: pipeline.PipelineConfig | None = None,
  split: str = "train",
  video_root: str | None = None,
  workers: int = 0,
) -> Report:
  """Runs every record of `data` (record file or ArrayRecord directory) through
  the pipeline's per-example path, collecting every problem of every record;
  `workers` > 0 uses that many processes."""
  cfg = cfg or pipeline.PipelineConfig()
  transforms.validate_route_table(cfg.route_table)
  source, from_source, bad = pipeline.open_source(data, split=split, video_root=video_root)
  check = _Check(pipeline.ExampleLoader(cfg, VisionOnly(), from_source))
  items = (source[i] for i in range(len(source)))
  if workers > 0:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      results = list(pool.imap(check, items, chunksize=4))
  else:
    results = [check(item) for item in items]
  bad = list(bad) + [s for r in results for s in r]
  usable = sum(not r for r in results)
  return Report(usable=usable, bad=bad)


def write_report(report: Report, path: str) -> None:
  """One JSON line per problem (a record with two problems has two lines)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(dataclasses.asdict(s)) + "\n" for s in report.bad)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m crpo_jax.data.validate",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("data", help="record file (JSONL / Video-R1 JSON) or ArrayRecord dataset dir")
  p.add_argument("--report", default=None, help="bad-record JSONL (default: DATA.bad.jsonl)")
  p.add_argument("--video-root", default=None, help="where relative video paths resolve")
  p.add_argument("--split", default="train", help="split of an ArrayRecord dataset")
  p.add_argument(
    "--default-route",
    default=None,
    choices=transforms.ROUTES,
    help="route for records without one (else they are unusable for training)",
  )
  p.add_argument("--fps", type=float, default=pipeline.PipelineConfig.fps)
  p.add_argument("--max-frames", type=int, default=pipeline.PipelineConfig.max_frames)
  p.add_argument("--workers", type=int, default=0, help="decode in this many processes")
  a = p.parse_args(argv)
  if not os.path.exists(a.data):
    p.error(f"{a.data}: no such file or directory")
  cfg = pipeline.PipelineConfig(default_route=a.default_route, fps=a.fps, max_frames=a.max_frames)
  report = validate(a.data, cfg=cfg, split=a.split, video_root=a.video_root, workers=a.workers)
  path = a.report or a.data.rstrip("/") + ".bad.jsonl"
  write_report(report, path)
  total = report.usable + report.unusable
  print(f"{a.data}: {report.usable} of {total} records usable, {report.unusable} not")
  for reason, n in report.reasons.most_common():
    shown = report.examples(reason)
    more = ", ..." if n > len(shown) else ""
    print(f"  {reason}: {n} (e.g. {', '.join(shown)}{more})")
  if report.reasons["unsupported_type"]:
    print("note: unsupported_type records (Video-R1 image or numerical questions) are skipped")
  if report.reasons["no_route"]:
    print("hint: label routes with the task router first, or pass --default-route")
  if report.bad:
    print(f"unusable records written to {path}")
  if report.usable == 0:
    print("error: no usable record", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
