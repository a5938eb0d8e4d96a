"""Evaluation orchestration: resume, score, baselines, results.

`evaluate(cfg)` is what `python -m crpo_jax.evaluate` runs. It either re-scores an
existing predictions file (no model) or runs a policy over the benchmark's items
in batches, appending every scored batch to predictions.jsonl, so an interrupted
run resumes where it stopped. The policy is any callable
`(items, prompts, blind) -> outputs`; the real one is `model_policy.ModelPolicy`
(greedy generation through crpo_jax's sampler), tests pass a scripted one.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from crpo_jax.eval import baselines, predictions, report
from crpo_jax.eval.benchmarks import Benchmark, get_benchmark, unanswerable
from crpo_jax.eval.items import EvalItem, Prompt

_LOG = logging.getLogger(__name__)

# (items, prompts, blind) -> one raw output per item, or the exception that kept
# the item from being answered (say an unreadable video); it then scores as wrong.
Policy = Callable[[Sequence[EvalItem], Sequence[Prompt], bool], list["str | Exception"]]

PREDICTIONS = "predictions.jsonl"
BLIND_PREDICTIONS = "predictions_blind.jsonl"
BASELINES = ("constant", "blind")
RUN_CONFIG = "run_config.json"
# Fields that change what a generated answer is; resuming across a change would mix runs.
GENERATION_FIELDS = ("benchmark", "data", "video_dir", "model", "null_option", "max_new_tokens")
GENERATION_FIELDS += ("dtype", "fps", "min_frames", "max_frames", "max_pixels", "segments")


def check_resume_config(out: pathlib.Path, cfg, *, write: bool = True) -> None:
  """Records the generation settings of a run (when `write`), and refuses to resume
  under others.

  Raises:
    ValueError: `out` holds predictions made with different GENERATION_FIELDS.
  """
  now = {k: cfg[k] for k in GENERATION_FIELDS}
  path = out / RUN_CONFIG
  if path.exists():
    before = json.loads(path.read_text())
    diff = {k: (before.get(k), v) for k, v in now.items() if before.get(k) != v}
    if diff:
      raise ValueError(
        f"{out} holds predictions made with other settings {diff} (before, now); "
        "use another config.output_dir or delete it"
      )
  if write:
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(now, indent=2, sort_keys=True) + "\n")


def run_policy(
  benchmark: Benchmark,
  items: Sequence[EvalItem],
  policy: Policy,
  path: str | pathlib.Path,
  *,
  batch_size: int,
  blind: bool = False,
) -> list[dict[str, Any]]:
  """Answers every item not yet in `path`, appending scored records per batch.

  Returns:
    One record per item, in item order (resumed ones read back from `path`).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  index, count = _process()
  done = {r["id"]: r for r in predictions.repair(path)} if index == 0 else {}
  ids = {it.id for it in items}
  stale = sorted(set(done) - ids)
  if stale:
    _LOG.warning(
      "%s: %d records are not in the data (e.g. %r); ignored", path, len(stale), stale[0]
    )
  todo = np.array([it.id not in done for it in items])
  if count > 1:  # process 0's file decides; every process then runs the same batches
    from jax.experimental import multihost_utils

    todo = np.asarray(multihost_utils.broadcast_one_to_all(todo))
  pending = [it for it, t in zip(items, todo, strict=True) if t]
  _LOG.info("%s: %d items done, %d to go", path, len(items) - len(pending), len(pending))
  start = time.time()
  for b in range(0, len(pending), batch_size):
    batch = pending[b : b + batch_size]
    prompts = [benchmark.prompt(it) for it in batch]
    outputs = policy(batch, prompts, blind)
    if len(outputs) != len(batch):
      raise RuntimeError(f"policy returned {len(outputs)} outputs for {len(batch)} items")
    records = []
    for it, p, out in zip(batch, prompts, outputs, strict=True):
      error = out if isinstance(out, Exception) else None
      text = "" if error else str(out)
      scored = unanswerable(it) if error else benchmark.score(it, text)
      rec = predictions.to_record(scored, p, text)
      if error:
        rec["error"] = f"{type(error).__name__}: {error}"
        _LOG.warning("item %s: %s", it.id, rec["error"])
      records.append(rec)
    if index == 0:
      predictions.append(path, records)
    done.update((r["id"], r) for r in records)
    n = b + len(batch)
    _LOG.info("%d/%d items, %.1f s/item", n, len(pending), (time.time() - start) / n)
  if index != 0:  # this launch's batches only: process 0's records are the run's
    return [done[it.id] for it in pending]
  return [done[it.id] for it in items]


def _process() -> tuple[int, int]:
  """(index, count) of this process among the launch's; only process 0 writes files.

  With several processes (`python -m crpo_jax.evaluate` under jax.distributed)
  every process decodes and generates the same batches, since the model is sharded
  over all of their devices, and process 0 alone reads and writes the output folder.
  """
  import jax

  return jax.process_index(), jax.process_count()


def _summary(benchmark: Benchmark, records: Sequence[dict[str, Any]]) -> dict[str, float]:
  return benchmark.metrics(predictions.to_scored(records))


def variant_metrics(
  benchmark: Benchmark, records: Sequence[dict[str, Any]]
) -> dict[str, dict[str, float]]:
  """{variant: metrics} of each extra judge, re-judged from the raw outputs."""
  return {
    name: benchmark.metrics([predictions.judge_record(r, judge) for r in records])
    for name, judge in benchmark.variants.items()
  }


def _blind_path(pred_path: pathlib.Path) -> pathlib.Path:
  return pred_path.with_name(pred_path.stem + "_blind" + pred_path.suffix)


FRAME_MODES = ("official", "config")


def apply_frame_rule(cfg, bench: Benchmark):
  """`cfg` with the benchmark's official frame rule in fps/min_frames/max_frames/
  segments (and max_pixels where the rule sets it), when `cfg.frames` is
  'official' and the official code has a rule; else `cfg` itself."""
  mode = cfg.get("frames", "official")
  if mode not in FRAME_MODES:
    raise ValueError(f"config.frames: {mode!r}; expected one of {FRAME_MODES}")
  rule = bench.frames
  if mode == "config" or rule is None:
    return cfg
  cfg = cfg.copy_and_resolve_references()
  cfg.fps, cfg.min_frames, cfg.max_frames = rule.fps, rule.min_frames, rule.max_frames
  cfg.segments = rule.segments
  if rule.max_pixels is not None:
    cfg.max_pixels = rule.max_pixels
  _LOG.info("%s frames: %s (config.frames=config keeps the config's)", bench.name, rule)
  return cfg


def output_dir(cfg) -> pathlib.Path:
  """cfg.output_dir, else next to the predictions being re-scored, else
  eval_results/<benchmark>/<model folder name>."""
  if cfg.output_dir:
    return pathlib.Path(cfg.output_dir)
  if cfg.predictions:
    return pathlib.Path(cfg.predictions).parent
  return pathlib.Path("eval_results") / cfg.benchmark / pathlib.Path(cfg.model).name


def evaluate(cfg, policy: Policy | None = None) -> dict[str, Any] | None:
  """Runs or re-scores one benchmark and writes results.json and results.md.

  Args:
    cfg: the `configs/eval.py` ConfigDict.
    policy: overrides the model policy (tests); ignored when re-scoring.

  Returns:
    The results dict that was written; None on processes other than 0 of a
    multi-process launch, which generate with process 0 and write nothing.
  """
  wanted = [b for b in cfg.baselines.split(",") if b]
  unknown = set(wanted) - set(BASELINES)
  if unknown:
    raise ValueError(f"config.baselines: unknown {sorted(unknown)}; expected some of {BASELINES}")
  bench = get_benchmark(
    cfg.benchmark, null_option=cfg.null_option, lenient=cfg.lenient, strip_think=cfg.strip_think
  )
  out = output_dir(cfg)
  blind_records = None
  if cfg.predictions:
    src = pathlib.Path(cfg.predictions)
    if not src.exists():
      raise FileNotFoundError(f"config.predictions: {src} does not exist")
    records = predictions.rescore(predictions.read(src), bench)
    if not records:
      raise ValueError(f"config.predictions: {src} holds no records")
    predictions.write_all(out / f"{src.stem}.rescored.jsonl", records)
    if "blind" in wanted and _blind_path(src).exists():
      blind_records = predictions.rescore(predictions.read(_blind_path(src)), bench)
      predictions.write_all(out / f"{_blind_path(src).stem}.rescored.jsonl", blind_records)
    items = [EvalItem.from_json(r["item"]) for r in records]
  else:
    if not cfg.data:
      raise ValueError("config.data: give the benchmark data path (or config.predictions)")
    cfg = apply_frame_rule(cfg, bench)
    items = bench.load(cfg.data, cfg.video_dir or None)
    if cfg.limit:
      items = items[: cfg.limit]
    index = _process()[0]
    check_resume_config(out, cfg, write=index == 0)
    if policy is None:
      if not cfg.model:
        raise ValueError("config.model: give an HF checkpoint dir or a training workdir")
      # Only generation needs the model stack; re-scoring stays light.
      from crpo_jax.eval import model_policy

      policy = model_policy.ModelPolicy.from_config(cfg)
    records = run_policy(bench, items, policy, out / PREDICTIONS, batch_size=cfg.batch_size)
    if "blind" in wanted:
      blind_records = run_policy(
        bench, items, policy, out / BLIND_PREDICTIONS, batch_size=cfg.batch_size, blind=True
      )
    if index != 0:
      return None
  results: dict[str, Any] = {
    "benchmark": cfg.benchmark,
    "data": cfg.data,
    "model": cfg.model,
    "predictions": cfg.predictions or str(out / PREDICTIONS),
    "n_items": len(records),
    "n_errors": sum("error" in r for r in records),
    "metrics": _summary(bench, records),
    "variants": variant_metrics(bench, records),
    "baselines": {},
    "config": cfg.to_dict(),
  }
  if "constant" in wanted:
    const = baselines.constant_policies(bench, items)
    results["baselines"]["constant"] = const
    results["baselines"]["constant_best"] = baselines.best_of(const)
  if blind_records is not None:
    results["baselines"]["blind"] = _summary(bench, blind_records)
  json_path, md_path = report.write(out, results, bench.primary)
  _LOG.info("wrote %s and %s", json_path, md_path)
  return results
