"""Metric writers (TensorBoard + console through CLU) and metric naming helpers.

CLU's own TensorBoard writer needs TensorFlow, which a bare accelerator image lacks;
`TensorBoardWriter` implements CLU's `MetricWriter` interface on tensorboardX
instead (event files that `tensorboard --logdir` reads). Only process 0 writes.

Names: `train/...` and `eval/...`; RL reward terms are
`reward/<branch>/<term>` (branch: orig, cf) and `reward_route/<route>/<term>`, so
TensorBoard groups them per branch and per route.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging


def _clu_writers():
  """Imports `clu.metric_writers` on an image without TensorFlow.

  CLU's package `__init__` imports its TensorFlow summary writer unconditionally, so
  without TensorFlow nothing in `clu.metric_writers` imports. When TensorFlow is
  absent, an empty stand-in takes that one module's place; crpo_jax writes event
  files with `TensorBoardWriter` below instead.
  """
  if importlib.util.find_spec("tensorflow") is None:
    stub = types.ModuleType("clu.metric_writers.summary_writer")
    stub.SummaryWriter = None
    sys.modules.setdefault("clu.metric_writers.summary_writer", stub)
  from clu import metric_writers
  from clu.metric_writers import interface

  return metric_writers, interface


metric_writers, interface = _clu_writers()


class TensorBoardWriter(interface.MetricWriter):
  """CLU `MetricWriter` over tensorboardX (no TensorFlow needed)."""

  def __init__(self, logdir: str):
    from tensorboardX import SummaryWriter

    self._writer = SummaryWriter(logdir=logdir, flush_secs=10)

  def write_summaries(self, step, values, metadata=None):
    for key, value in values.items():
      self._writer.add_scalar(key, float(np.asarray(value)), step)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    for key, value in scalars.items():
      self._writer.add_scalar(key, float(np.asarray(value)), step)

  def write_images(self, step: int, images: Mapping[str, Any]):
    for key, value in images.items():
      self._writer.add_images(key, np.asarray(value), step, dataformats="NHWC")

  def write_videos(self, step: int, videos: Mapping[str, Any]):
    for key, value in videos.items():
      self._writer.add_video(key, np.asarray(value), step)

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int):
    for key, value in audios.items():
      self._writer.add_audio(key, np.asarray(value), step, sample_rate=sample_rate)

  def write_texts(self, step: int, texts: Mapping[str, str]):
    for key, value in texts.items():
      self._writer.add_text(key, value, step)

  def write_histograms(self, step, arrays, num_buckets=None):
    for key, value in arrays.items():
      self._writer.add_histogram(key, np.asarray(value), step)

  def write_hparams(self, hparams: Mapping[str, Any]):
    flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
    self._writer.add_text("hparams", "\n".join(f"{k}: {v}" for k, v in sorted(flat.items())), 0)

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


def create_writer(logdir: str, *, console: bool = True) -> metric_writers.MetricWriter:
  """TensorBoard + console writer on process 0; a silent one elsewhere."""
  if jax.process_index() != 0:
    return metric_writers.MultiWriter([])
  writers: list[metric_writers.MetricWriter] = [TensorBoardWriter(logdir)]
  if console:
    writers.append(metric_writers.LoggingWriter())
  return metric_writers.MultiWriter(writers)


def host_get(tree: Any) -> Any:
  """Numpy copies of (possibly multi-host sharded) arrays, the same on every host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, jax.device_get(tree))


def to_scalars(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """Host floats from (possibly device) scalars; non-finite values are kept so they show."""
  out = {}
  metrics = host_get(dict(metrics))
  for key, value in metrics.items():
    arr = np.asarray(value)
    if arr.size != 1:
      continue
    out[f"{prefix}{key}"] = float(arr.reshape(()))
  return out


def mean_by(values: list[float], groups: list[str], name: str) -> dict[str, float]:
  """Means of `values` per group label: {f'{name}/{group}': mean}."""
  sums: dict[str, list[float]] = {}
  for v, g in zip(values, groups):
    if v is None or (isinstance(v, float) and math.isnan(v)):
      continue
    sums.setdefault(g, []).append(float(v))
  return {f"{name}/{g}": float(np.mean(vs)) for g, vs in sorted(sums.items())}


def log_scalars(writer: metric_writers.MetricWriter, step: int, scalars: Mapping[str, float]):
  """Writes scalars, warning once per call about non-finite values."""
  bad = [k for k, v in scalars.items() if not math.isfinite(v)]
  if bad:
    logging.warning("step %d: non-finite metrics %s", step, bad)
  writer.write_scalars(step, dict(scalars))
