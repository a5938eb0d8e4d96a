"""A TFDS dataset builder that turns record files into ArrayRecord, Grain's format.

JSONL suits small data: `pipeline.JsonlSource` parses the whole file at start-up.
Large data is converted once with `build_arrayrecord` (or `python -m
crpo_jax.data.arrayrecord DATA OUT_DIR`): a `tfds.core.GeneratorBasedBuilder`
with `file_format="array_record"` parses every record with `records.iter_records`,
skips (counts and logs) the malformed ones, and writes the good ones as ArrayRecord
shards, which give Grain O(1) random access for global shuffling and per-host
sharding without reading the file from the start. TFDS writes ArrayRecord without
tensorflow (its numpy example serializer), so nothing beyond tensorflow-datasets
and array_record is needed. Videos stay where they are: records hold resolved
paths, not video bytes.

`open_arrayrecord(dir, split)` returns the TFDS ArrayRecord data source (a Grain
`RandomAccessDataSource` of feature dicts); `to_example` turns one back into a
`records.Example`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from crpo_jax.data import records

_TEXT_FIELDS = ("id", "video", "question", "answer", "answer_cf", "pair_id", "category", "route")


class CrpoRecords(tfds.core.GeneratorBasedBuilder):
  """crpo_jax MCQ video records, one split per input record file."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Records schema of crpo_jax.data.records."}

  def __init__(
    self,
    *,
    splits: Mapping[str, str] | None = None,
    fmt: str = "auto",
    video_root: str | None = None,
    **kwargs: Any,
  ):
    """Args: splits maps split name -> record file (only needed to build); the rest
    go to `records.iter_records` and `tfds.core.GeneratorBasedBuilder`."""
    self._splits, self._fmt, self._video_root = dict(splits or {}), fmt, video_root
    self.bad_records: list[records.RecordError] = []
    kwargs.setdefault("file_format", "array_record")  # TFDS's default is TFRecord
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    text = {f: tfds.features.Text() for f in _TEXT_FIELDS + ("source",)}
    return tfds.core.DatasetInfo(
      builder=self,
      description="Multiple-choice video questions (crpo_jax records schema).",
      features=tfds.features.FeaturesDict(
        {
          **text,
          "options": tfds.features.Sequence(tfds.features.Text()),
          # NaN stands for "no window bound" (TFDS has no optional scalars).
          "start": tfds.features.Scalar(np.float32),
          "end": tfds.features.Scalar(np.float32),
        }
      ),
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    del dl_manager  # nothing to download: the records are local files
    if not self._splits:
      raise ValueError("CrpoRecords: pass splits={name: record file} to build")
    return {name: self._generate_examples(path) for name, path in self._splits.items()}

  def _generate_examples(self, path: str):
    seen: set[str] = set()
    for r in records.iter_records(path, fmt=self._fmt, video_root=self._video_root):
      if isinstance(r, records.RecordError):
        self.bad_records.append(r)
        logging.warning("skipping malformed record: %s", r)
        continue
      if r.id in seen:  # TFDS keys must be unique; a repeated id is a data bug
        err = records.RecordError(path, _line(r), "id", f"duplicate id {r.id!r}")
        self.bad_records.append(err)
        logging.warning("skipping record: %s", err)
        continue
      seen.add(r.id)
      yield r.id, from_example(r)


def _line(example: records.Example) -> int:
  try:
    return int(example.source.rsplit(":", 1)[1])
  except (IndexError, ValueError):
    return 0


def from_example(example: records.Example) -> dict[str, Any]:
  """The TFDS feature dict of an Example (None text -> '', None bound -> NaN)."""
  out: dict[str, Any] = {f: getattr(example, f) or "" for f in _TEXT_FIELDS + ("source",)}
  out["options"] = list(example.options)
  out["start"] = np.float32(math.nan if example.start is None else example.start)
  out["end"] = np.float32(math.nan if example.end is None else example.end)
  return out


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def to_example(features: Mapping[str, Any]) -> records.Example:
  """Inverse of `from_example` for a dict read back from the ArrayRecord source."""
  text = {f: _text(features[f]) for f in _TEXT_FIELDS + ("source",)}
  start, end = float(features["start"]), float(features["end"])
  return records.Example(
    id=text["id"],
    video=text["video"],
    question=text["question"],
    options=tuple(_text(o) for o in features["options"]),
    answer=text["answer"],
    answer_cf=text["answer_cf"] or None,
    pair_id=text["pair_id"] or None,
    category=text["category"] or None,
    route=text["route"] or None,
    start=None if math.isnan(start) else start,
    end=None if math.isnan(end) else end,
    source=text["source"],
  )


def build_arrayrecord(
  splits: Mapping[str, str], out_dir: str, *, fmt: str = "auto", video_root: str | None = None
) -> tuple[str, list[records.RecordError]]:
  """Converts record files to ArrayRecord under `out_dir`.

  Returns:
    (the versioned dataset directory for `open_arrayrecord`, the skipped records).
  """
  builder = CrpoRecords(splits=splits, fmt=fmt, video_root=video_root, data_dir=out_dir)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(verify_ssl=False, try_download_gcs=False),
  )
  return str(builder.data_dir), builder.bad_records


def open_arrayrecord(dataset_dir: str, split: str = "train"):
  """The Grain random-access source (TFDS ArrayRecordDataSource) of one split."""
  if not os.path.isdir(dataset_dir):
    raise FileNotFoundError(f"{dataset_dir}: no such dataset directory")
  builder = tfds.builder_from_directory(dataset_dir)
  if split not in builder.info.splits:
    raise ValueError(f"{dataset_dir}: no split {split!r} (has {sorted(builder.info.splits)})")
  return builder.as_data_source(split=split)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m crpo_jax.data.arrayrecord", description=__doc__)
  p.add_argument("data", help="record file (JSONL or Video-R1 JSON)")
  p.add_argument("out_dir", help="TFDS data directory to write")
  p.add_argument("--split", default="train")
  p.add_argument("--video-root", default=None)
  a = p.parse_args(argv)
  tfds.disable_progress_bar()  # a CLI prints its own one-line summary
  path, bad = build_arrayrecord({a.split: a.data}, a.out_dir, video_root=a.video_root)
  print(f"wrote {path} ({len(bad)} malformed records skipped)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
