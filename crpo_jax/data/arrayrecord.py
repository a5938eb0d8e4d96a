"""A TFDS dataset builder that turns record files into ArrayRecord, Grain's format.

JSONL suits small data: `pipeline.JsonlSource` parses the whole file at start-up.
Large data is converted once with `build_arrayrecord` (or `python -m
crpo_jax.data.arrayrecord [SPLIT=]DATA... OUT_DIR [--overwrite]`, e.g.
`train=train.jsonl eval=eval.jsonl out/`): a `tfds.core.GeneratorBasedBuilder`
with `file_format="array_record"` parses every record with `records.iter_records`,
skips (counts and logs) the malformed ones, and writes the good ones as ArrayRecord
shards, which give Grain O(1) random access for global shuffling and per-host
sharding without reading the file from the start. All splits are written in one
build: OUT_DIR must be empty, or --overwrite deletes the dataset there first (TFDS
would otherwise reuse the old one silently). TFDS writes ArrayRecord without
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
import shutil
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
        what = "unsupported" if isinstance(r, records.RecordSkipped) else "malformed"
        logging.warning("skipping %s record: %s", what, r)
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


# What TFDS writes under a data directory for this builder.
_OURS = ("crpo_records", "downloads")


def _clear_out_dir(out_dir: str, overwrite: bool) -> None:
  """Refuses a non-empty `out_dir` unless `overwrite`, then removes what TFDS wrote.

  TFDS silently reuses an existing dataset version, so writing into a used folder
  would report success and keep the stale records (and never add a new split).
  """
  if not os.path.isdir(out_dir) or not os.listdir(out_dir):
    return
  present = sorted(os.listdir(out_dir))
  if not overwrite:
    raise FileExistsError(
      f"{out_dir} is not empty (holds {', '.join(present[:5])}); pass --overwrite to rewrite "
      "it completely, or choose an empty directory"
    )
  foreign = [name for name in present if name not in _OURS]
  if foreign:
    raise FileExistsError(
      f"{out_dir} holds files this builder did not write ({', '.join(foreign[:5])}); "
      "refusing to delete them: choose an empty directory"
    )
  for name in present:
    shutil.rmtree(os.path.join(out_dir, name))


def build_arrayrecord(
  splits: Mapping[str, str],
  out_dir: str,
  *,
  fmt: str = "auto",
  video_root: str | None = None,
  overwrite: bool = False,
) -> tuple[str, list[records.RecordError]]:
  """Converts record files to ArrayRecord under `out_dir`, every split in one build.

  Args:
    splits: split name -> record file.
    out_dir: TFDS data directory; must be empty or missing unless `overwrite`,
      which deletes the dataset written there before and rewrites it completely.

  Returns:
    (the versioned dataset directory for `open_arrayrecord`, the skipped records).

  Raises:
    FileExistsError: `out_dir` is not empty and `overwrite` is off, or it holds
      files this builder did not write.
  """
  if not splits:
    raise ValueError("build_arrayrecord: no split to write")
  for name, path in splits.items():
    if not os.path.isfile(path):
      raise FileNotFoundError(f"split {name!r}: {path}: no such record file")
  _clear_out_dir(out_dir, overwrite)
  builder = CrpoRecords(splits=splits, fmt=fmt, video_root=video_root, data_dir=out_dir)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(verify_ssl=False, try_download_gcs=False),
  )
  missing = set(splits) - set(builder.info.splits)
  if missing:  # cannot happen after a fresh build; a guard against TFDS reusing old data
    raise RuntimeError(f"{builder.data_dir}: splits {sorted(missing)} were not written")
  return str(builder.data_dir), builder.bad_records


def _split_args(items: Sequence[str], default_split: str) -> dict[str, str]:
  """`[SPLIT=]FILE` arguments -> {split: file}; a bare FILE takes `default_split`."""
  out: dict[str, str] = {}
  for item in items:
    name, sep, path = item.partition("=")
    if not sep:
      name, path = default_split, item
    if name in out:
      raise ValueError(f"split {name!r} given twice; name each file: train=a.jsonl eval=b.jsonl")
    out[name] = path
  return out


def open_arrayrecord(dataset_dir: str, split: str = "train"):
  """The Grain random-access source (TFDS ArrayRecordDataSource) of one split."""
  if not os.path.isdir(dataset_dir):
    raise FileNotFoundError(f"{dataset_dir}: no such dataset directory")
  builder = tfds.builder_from_directory(dataset_dir)
  if split not in builder.info.splits:
    raise ValueError(f"{dataset_dir}: no split {split!r} (has {sorted(builder.info.splits)})")
  return builder.as_data_source(split=split)


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m crpo_jax.data.arrayrecord",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument(
    "data",
    nargs="+",
    help="record file(s) (JSONL or Video-R1 JSON) as [SPLIT=]FILE, e.g. train=t.jsonl eval=e.jsonl",
  )
  p.add_argument("out_dir", help="TFDS data directory to write (empty, or --overwrite)")
  p.add_argument("--split", default="train", help="split name of a FILE given without SPLIT=")
  p.add_argument("--video-root", default=None)
  p.add_argument(
    "--overwrite", action="store_true", help="delete the dataset in OUT_DIR and rewrite it"
  )
  a = p.parse_args(argv)
  try:
    splits = _split_args(a.data, a.split)
    tfds.disable_progress_bar()  # a CLI prints its own one-line summary
    path, bad = build_arrayrecord(splits, a.out_dir, video_root=a.video_root, overwrite=a.overwrite)
  except (ValueError, FileExistsError, FileNotFoundError) as e:
    p.error(str(e))
  unsupported = sum(isinstance(r, records.RecordSkipped) for r in bad)
  sizes = tfds.builder_from_directory(path).info.splits
  written = ", ".join(f"{name}: {sizes[name].num_examples}" for name in splits)
  print(
    f"wrote {path} ({written} records; {len(bad) - unsupported} malformed records skipped, "
    f"{unsupported} unsupported)"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
