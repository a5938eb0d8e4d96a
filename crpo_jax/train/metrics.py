"""Metric writers (TensorBoard + console through CLU) and metric naming helpers.

CLU's own TensorBoard writer needs TensorFlow, which a bare accelerator image lacks;
`TensorBoardWriter` implements CLU's `MetricWriter` interface on tensorboardX
instead (event files that `tensorboard --logdir` reads). Only process 0 writes.

Names: `train/...` and `eval/...`; RL reward terms are
`reward/<branch>/unweighted/<term>` and `reward/<branch>/weighted/<term>` (the term
times its weight; `weighted/total` is the reward the advantages use), per route
`reward_route/<branch>/unweighted/<term>/<route>`, and
`reward/<branch>/zero_spread_groups` (train/reward_metrics.py). Only the terms the
algorithm uses are logged.
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

from crpo_jax.train.scalars import mean_by, to_scalars  # noqa: F401  (re-exported)


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
    """The HPARAMS dashboard's entry, plus the same as one text summary."""
    from tensorboardX.summary import hparams as hparams_summary

    flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
    file_writer = self._writer._get_file_writer()
    for summary in hparams_summary(flat, {}):
      file_writer.add_summary(summary)
    self._writer.add_text("hparams", "\n".join(f"{k}: {v}" for k, v in sorted(flat.items())), 0)

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


def flat_config(config) -> dict[str, Any]:
  """`{'loss.beta': 0.04, ...}` from a ConfigDict (which has no `flatten()`)."""
  flat: dict[str, Any] = {}

  def walk(d, prefix):
    for key, value in d.items():
      if isinstance(value, Mapping):
        walk(value, f"{prefix}{key}.")
      else:
        flat[f"{prefix}{key}"] = value

  walk(config.to_dict() if hasattr(config, "to_dict") else dict(config), "")
  return flat


def create_writer(logdir: str, *, console: bool = True) -> metric_writers.MetricWriter:
  """TensorBoard + console writer on process 0; a silent one elsewhere."""
  if jax.process_index() != 0:
    return metric_writers.MultiWriter([])
  writers: list[metric_writers.MetricWriter] = [TensorBoardWriter(logdir)]
  if console:
    writers.append(metric_writers.LoggingWriter())
  return metric_writers.MultiWriter(writers)


def log_scalars(writer: metric_writers.MetricWriter, step: int, scalars: Mapping[str, float]):
  """Writes scalars, warning once per call about non-finite values."""
  bad = [k for k, v in scalars.items() if not math.isfinite(v)]
  if bad:
    logging.warning("step %d: non-finite metrics %s", step, bad)
  writer.write_scalars(step, dict(scalars))
