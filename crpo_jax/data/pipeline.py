"""The Grain input pipeline: records -> both branches -> padded batches.

  source (JSONL or ArrayRecord)  -> per-host shard -> seeded shuffle -> repeat
  -> decode + counterfactual + process both branches  (bad input -> `Skipped`)
  -> batch with padding to bucketed static shapes      (skips ride along)
  -> multi-worker prefetch (`worker_count` processes)  -> `Loader` (stats, state)

A bad example never kills a run: a missing or broken video, too few frames, an odd
resolution or a processing failure turns into a `Skipped` marker carrying the
record's source (file:line), video path and reason. The batcher drops markers and
carries them inside the next batch, so the `Loader` in the main process counts and
logs every skip even when the work happened in a worker process. Malformed records
are counted when the source is loaded.

Batch format (what the trainer consumes; `orig` and `cf` have identical shapes):
  orig, cf   dicts of model inputs, padded by `bucketing.pad_batch`:
             input_ids / attention_mask / mm_token_type_ids [B, L] (left-padded),
             pixel_values_videos [P, 1536], video_grid_thw [G, 3] (B real rows,
             then bucketing's padding rows)
  answer     int32 [B] option index of y;  answer_letter  str [B]
  answer_cf  int32 [B] index of y_cf or -1; answer_cf_letter str [B] ('' if none)
  route      int32 [B] index into transforms.ROUTES
  num_options int32 [B] including the null option
  id, pair_id, transform  str [B]
  valid      bool [B]: False for the filler rows of a short last batch

Resumption: `Loader.get_state()` / `set_state()` wrap Grain's iterator state (plus
the skip counters), so a restored run sees exactly the batches of one that never
stopped. Shards are cut after dropping the remainder so every host sees the same
number of examples per epoch.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags, logging

from crpo_jax import bucketing
from crpo_jax.data import records, transforms, video

Processor = Callable[[records.Example, np.ndarray, Any], dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Knobs of the input pipeline; one comment per field."""

  batch_size: int = 2  # examples per batch (per host)
  seed: int = 0  # shuffle and counterfactual-transform seed
  shuffle: bool = True  # seeded global shuffle, re-drawn every epoch
  num_epochs: int | None = None  # None repeats forever (training)
  drop_remainder: bool = True  # a last partial batch would be a new static shape
  worker_count: int = 0  # Grain worker processes; 0 processes in the main process
  worker_buffer_size: int = 2  # batches each worker prepares ahead
  route_table: Mapping[str, tuple[str, ...]] = dataclasses.field(
    default_factory=lambda: dict(transforms.DEFAULT_ROUTE_TABLE)
  )  # route -> allowed counterfactual transforms (METHOD.md section 3)
  default_route: str | None = None  # route for records without one; None skips them
  fps: float = 2.0  # frames sampled per second (Qwen3-VL: 2)
  min_frames: int = 4  # clamp on sampled frames
  max_frames: int = 16  # Video-R1 trains on 16 frames
  length_buckets: Sequence[int] | None = None  # prompt length buckets (bucketing)
  length_multiple: int = 64  # geometric length buckets when length_buckets is None
  patch_buckets: Sequence[int] | None = None  # pixel-row buckets
  patch_multiple: int = bucketing.PATCH_MULTIPLE  # geometric buckets without patch_buckets
  pad_id: int = 0  # token id written into padding slots
  max_consecutive_skips: int = 1000  # skipped records in a row without a batch -> BadDataError
  skip_report_every: int = 16  # the batcher hands skips to the main process this often


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A bad example: where it came from and why it was dropped."""

  source: str  # "file:line"
  video: str
  reason: str  # a short category (see `classify`)
  detail: str  # the full message


def classify(err: Exception) -> str:
  """A short, countable reason for an error raised while loading one example."""
  if isinstance(err, records.RecordError):
    return "malformed_record"
  if isinstance(err, TooLongError):
    return "too_long"
  if not isinstance(err, video.VideoError):
    return "process_error"
  r = err.reason  # video.py's reasons start with a fixed phrase; the rest may hold paths
  for key, reason in (
    ("file not found", "missing_file"),
    ("is a directory", "missing_file"),
    ("zero frames", "zero_frames"),
    ("fewer than 2", "too_few_frames"),
    ("resolution", "bad_resolution"),
    ("aspect", "bad_resolution"),
    ("truncated", "truncated"),
    ("no video stream", "no_video_stream"),
    ("unreadable container", "unreadable_container"),  # garbage, or mp4 cut before moov
  ):
    if r.startswith(key):
      return reason
  return "corrupt_video"


class BadDataError(RuntimeError):
  """The input pipeline skipped so many records in a row that no batch can be made."""


_FULL_SKIP_WARNINGS = 20  # skips logged one by one; after that, a summary every 10 s


class PipelineStats:
  """Counts of used and skipped examples, by reason (main process).

  Each skip is logged as it is counted: the first ones in full, then a summary of
  the counts at most every 10 seconds, so a noisy dataset cannot flood the log.
  """

  def __init__(self):
    self.used = 0
    self.skipped: collections.Counter[str] = collections.Counter()

  def skip(self, s: Skipped) -> None:
    self.skipped[s.reason] += 1
    total = sum(self.skipped.values())
    if total <= _FULL_SKIP_WARNINGS:
      logging.warning("skipped %s (video %s): %s: %s", s.source, s.video, s.reason, s.detail)
      if total == _FULL_SKIP_WARNINGS:
        logging.warning("further skips are summarised every 10 s")
    else:
      logging.log_every_n_seconds(
        logging.WARNING, "skipped %d records so far %s; latest %s: %s", 10,
        total, dict(self.skipped), s.source, s.reason,
      )  # fmt: skip

  def state(self) -> dict[str, Any]:
    return {"used": self.used, "skipped": dict(self.skipped)}

  def restore(self, state: Mapping[str, Any]) -> None:
    self.used, self.skipped = int(state["used"]), collections.Counter(state["skipped"])

  def __repr__(self) -> str:
    return f"PipelineStats(used={self.used}, skipped={dict(self.skipped)})"


class JsonlSource(grain.sources.RandomAccessDataSource):
  """Good records of a JSONL / Video-R1 JSON file, parsed once at construction.

  Malformed records ("malformed_record") and well-formed ones of a kind we do not
  train on ("unsupported_type": Video-R1 image or numerical questions) are kept in
  `self.bad` with file and line; whoever counts them logs them (once).
  """

  def __init__(self, path: str, *, fmt: str = "auto", video_root: str | None = None):
    self.path, self.examples, self.bad = path, [], []
    for r in records.iter_records(path, fmt=fmt, video_root=video_root):
      if isinstance(r, records.RecordError):
        reason = "unsupported_type" if isinstance(r, records.RecordSkipped) else "malformed_record"
        self.bad.append(Skipped(f"{r.file}:{r.line}", "", reason, str(r)))
      else:
        self.examples.append(r)

  def __len__(self) -> int:
    return len(self.examples)

  def __getitem__(self, index: int) -> records.Example:
    return self.examples[index]


@dataclasses.dataclass(frozen=True)
class QwenProcessor:
  """The default `Processor`: Qwen3-VL preprocessing and the CRPO prompt.

  Picklable (worker processes get a copy). The frames are already decoded and
  transformed, so `cfg`'s decode fields are unused here; `PipelineConfig` has them.
  """

  tokenizer: Any
  cfg: Any = None  # processor.ProcessorConfig; None = its defaults

  def __call__(self, example: records.Example, frames: np.ndarray, meta: Any) -> dict:
    from crpo_jax.data import processor  # PIL and prompts: imported where used

    cfg = self.cfg or processor.ProcessorConfig()
    if not cfg.add_null_option:
      raise ValueError("ProcessorConfig.add_null_option must be True (METHOD.md section 1)")
    return processor.process_example(example, self.tokenizer, cfg, frames=frames, meta=meta)


def _arrayrecord_example(features: Mapping[str, Any]) -> records.Example:
  from crpo_jax.data import arrayrecord  # tensorflow_datasets is heavy: import on use

  return arrayrecord.to_example(features)


class TooLongError(ValueError):
  """An example larger than the largest explicit length or patch bucket."""


def _check_fits(item: Mapping[str, np.ndarray], cfg: PipelineConfig) -> None:
  # Caught here, per example, so that batching (`bucketing.pad_batch`) never raises.
  sizes = {
    "tokens": np.size(item.get("input_ids", ())),
    "pixel rows": len(item.get("pixel_values_videos", ())),
  }
  for what, buckets in (("tokens", cfg.length_buckets), ("pixel rows", cfg.patch_buckets)):
    if buckets and sizes[what] > max(buckets):
      raise TooLongError(f"{sizes[what]} {what} exceed the largest bucket {max(buckets)}")


@dataclasses.dataclass(frozen=True)
class ExampleLoader:
  """One example's path through the pipeline: decode -> counterfactual branch ->
  process both branches. Returns the processed item, or `Skipped` on any failure
  (`validate` runs the same path over a whole dataset)."""

  cfg: PipelineConfig
  process: Processor
  from_source: Callable[[Any], records.Example] | None = None

  def __call__(self, item: Any) -> dict[str, Any] | Skipped:
    src, path = "?", "?"
    try:
      ex = self.from_source(item) if self.from_source else item
      src, path = ex.source, ex.video
      route = ex.route or self.cfg.default_route
      if route is None:
        return Skipped(src, path, "no_route", "record has no route and no default_route is set")
      ex = dataclasses.replace(ex, route=route)
      frames, meta = video.decode_video(
        path,
        fps=self.cfg.fps,
        min_frames=self.cfg.min_frames,
        max_frames=self.cfg.max_frames,
        start=ex.start,
        end=ex.end,
      )
      b = transforms.make_branches(frames, ex, seed=self.cfg.seed, table=self.cfg.route_table)
      orig, cf = self.process(ex, b.original, meta), self.process(ex, b.counterfactual, meta)
      _check_fits(orig, self.cfg)
      for k in orig:
        if np.shape(orig[k]) != np.shape(cf[k]):
          raise ValueError(
            f"branch shapes differ for {k}: {np.shape(orig[k])} vs {np.shape(cf[k])}"
          )
    except Exception as e:  # noqa: BLE001  (bad input must never kill a run: count it)
      return Skipped(src, path, classify(e), f"{type(e).__name__}: {e}")
    n = len(ex.options) + 1  # the null option is appended last
    answer_cf = -1 if b.answer_cf is None else transforms.letter_index(b.answer_cf)
    return {
      "orig": orig,
      "cf": cf,
      "answer": transforms.letter_index(ex.answer),
      "answer_cf": answer_cf,
      "route": transforms.ROUTES.index(route),
      "num_options": n,
      "id": ex.id,
      "pair_id": ex.pair_id or ex.id,
      "transform": b.transform,
    }


def _pad_branch(rows: Sequence[Mapping[str, np.ndarray]], cfg: PipelineConfig) -> dict:
  """Right-aligns rows into [B, L] and pads with `bucketing.pad_batch` (left, bucketed)."""
  ids = [np.asarray(r["input_ids"]).reshape(-1) for r in rows]
  batch = {
    k: np.zeros((len(rows), max(map(len, ids))), np.int32)
    for k in ("input_ids", "attention_mask", "mm_token_type_ids")
  }
  for b, (r, x) in enumerate(zip(rows, ids)):
    batch["input_ids"][b, : len(x)] = x
    batch["attention_mask"][b, : len(x)] = np.asarray(r.get("attention_mask", 1)).reshape(-1)
    batch["mm_token_type_ids"][b, : len(x)] = np.asarray(r.get("mm_token_type_ids", 0)).reshape(-1)
  batch["pixel_values_videos"] = np.concatenate([r["pixel_values_videos"] for r in rows])
  batch["video_grid_thw"] = np.concatenate([np.reshape(r["video_grid_thw"], (-1, 3)) for r in rows])
  return bucketing.pad_batch(
    batch,
    pad_id=cfg.pad_id,
    length_buckets=cfg.length_buckets,
    length_multiple=cfg.length_multiple,
    patch_buckets=cfg.patch_buckets,
    patch_multiple=cfg.patch_multiple,
    grid_rows=cfg.batch_size + 1,  # B items plus bucketing's one padding row
  )


def collate(items: Sequence[Mapping[str, Any]], cfg: PipelineConfig) -> dict[str, Any]:
  """Stacks processed examples into one batch of static shape (module docstring).

  A short final batch is filled up to `batch_size` by repeating its last example
  with `valid` False, so even the remainder keeps the static batch size.
  """
  n = len(items)
  items = list(items) + [items[-1]] * (cfg.batch_size - n)
  batch = {"orig": _pad_branch([x["orig"] for x in items], cfg)}
  batch["cf"] = _pad_branch([x["cf"] for x in items], cfg)
  for k, v in batch["orig"].items():
    if v.shape != batch["cf"][k].shape:  # cannot happen unless a branch transform is wrong
      raise AssertionError(
        f"orig/cf batch shapes differ for {k}: {v.shape} vs {batch['cf'][k].shape}"
      )
  for k in ("answer", "answer_cf", "route", "num_options"):
    batch[k] = np.array([x[k] for x in items], np.int32)
  for k in ("id", "pair_id", "transform"):
    batch[k] = np.array([x[k] for x in items], np.str_)
  batch["answer_letter"] = np.array([transforms.letter(i) for i in batch["answer"]], np.str_)
  batch["answer_cf_letter"] = np.array(
    [transforms.letter(i) if i >= 0 else "" for i in batch["answer_cf"]], np.str_
  )
  batch["valid"] = np.arange(cfg.batch_size) < n
  return batch


class _SkipBatchIterator(grain.DatasetIterator):
  """Batches good items; `Skipped` markers ride along in `batch['skipped']`.

  Every `skip_report_every` skips without a full batch, the skips go out alone
  (`{'skipped': [...]}`), so the main process logs them as they happen and can stop
  a run whose records are all bad; the good items gathered so far stay buffered.
  The state is that of the parent where the unfinished batch began, so a restore
  reads those items again.
  """

  def __init__(self, parent: grain.DatasetIterator, cfg: PipelineConfig):
    super().__init__(parent)
    self._cfg = cfg
    self._good: list[Any] = []
    self._batch_start: Any = None  # parent state where the buffered items began

  def __next__(self) -> dict[str, Any]:
    skipped = []
    while len(self._good) < self._cfg.batch_size:
      if not self._good and self._batch_start is None:
        self._batch_start = self._parent.get_state()
      try:
        x = next(self._parent)
      except StopIteration:
        if self._good and not self._cfg.drop_remainder:
          break
        if skipped:  # report trailing skips before the end
          return {"skipped": skipped}
        raise
      if isinstance(x, Skipped):
        skipped.append(x)
        if len(skipped) >= self._cfg.skip_report_every:
          if not self._good:
            self._batch_start = None  # nothing buffered: the parent's state is exact
          return {"skipped": skipped}
      else:
        self._good.append(x)
    batch = collate(self._good, self._cfg)
    self._good, self._batch_start = [], None
    batch["skipped"] = skipped
    return batch

  def get_state(self) -> dict[str, Any]:
    if self._good:
      return copy.deepcopy(self._batch_start)
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._good, self._batch_start = [], None
    self._parent.set_state(state)


class _SkipBatchDataset(grain.IterDataset):
  def __init__(self, parent: grain.IterDataset, cfg: PipelineConfig):
    super().__init__(parent)
    self._cfg = cfg

  def __iter__(self) -> _SkipBatchIterator:
    return _SkipBatchIterator(self._parent.__iter__(), self._cfg)


class Loader:
  """Iterator over batches; counts skips in `stats`; resumable with get/set_state.

  Raises `BadDataError` once `max_consecutive_skips` records in a row were skipped
  without a batch (a source that repeats forever would otherwise spin silently).
  """

  def __init__(
    self,
    dataset: grain.IterDataset,
    stats: PipelineStats,
    *,
    max_consecutive_skips: int = 1000,
    name: str = "the data",
  ):
    self.stats = stats
    self._it = iter(dataset)
    self._max_skips, self._name = int(max_consecutive_skips), name
    self._in_a_row: list[Skipped] = []

  def __iter__(self) -> Loader:
    return self

  def __next__(self) -> dict[str, Any]:
    while True:
      batch = next(self._it)
      for s in batch.pop("skipped"):
        self.stats.skip(s)
        self._in_a_row.append(s)
      if "orig" in batch:
        self.stats.used += int(batch["valid"].sum())
        self._in_a_row = []
        return batch
      if len(self._in_a_row) >= self._max_skips:
        raise BadDataError(self._bad_data_message())

  def _bad_data_message(self) -> str:
    skips = self._in_a_row
    reasons = collections.Counter(s.reason for s in skips)
    first = list(dict.fromkeys(f"{s.source} (video {s.video}): {s.reason}" for s in skips))[:5]
    return (
      f"{self._name}: {len(skips)} records in a row were skipped without making a batch "
      f"(data.max_consecutive_skips={self._max_skips}); by reason: {dict(reasons)}; "
      f"first: {'; '.join(first)}; details: {skips[0].detail}. Check the data with: "
      f"python -m crpo_jax.data.validate {self._name}"
    )

  def get_state(self) -> dict[str, Any]:
    return {"grain": self._it.get_state(), "stats": self.stats.state()}

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._it.set_state(state["grain"])
    self.stats.restore(state["stats"])

  def close(self) -> None:
    close = getattr(self._it, "close", None)
    if close is not None:
      close()


def open_source(
  data: str, *, split: str = "train", fmt: str = "auto", video_root: str | None = None
) -> tuple[Any, Callable[[Any], records.Example] | None, list[Skipped]]:
  """(random-access source, item -> Example converter or None, malformed records).

  `data` is a record file (parsed now) or an `arrayrecord` dataset directory
  (malformed records were already dropped, and counted, when it was built).
  """
  if os.path.isdir(data):
    from crpo_jax.data import arrayrecord  # tensorflow_datasets is heavy: import on use

    return arrayrecord.open_arrayrecord(data, split), _arrayrecord_example, []
  src = JsonlSource(data, fmt=fmt, video_root=video_root)
  return src, None, src.bad


def make_loader(
  data: str | Any,
  cfg: PipelineConfig,
  process: Processor,
  *,
  split: str = "train",
  video_root: str | None = None,
  shard_options: grain.sharding.ShardOptions | None = None,
) -> Loader:
  """Builds the pipeline over `data` (a path for `open_source`, or a source object).

  Args:
    data: record file, ArrayRecord dataset directory, or a random-access source of
      `records.Example`s.
    cfg: pipeline knobs.
    process: (example, frames, meta) -> dict of one example's model inputs
      (`input_ids`, `attention_mask`, `mm_token_type_ids`, `pixel_values_videos`,
      `video_grid_thw`); must be picklable when `cfg.worker_count > 0`.
    split: split of an ArrayRecord dataset.
    video_root: where relative video paths of a record file resolve.
    shard_options: this host's shard; default `ShardByJaxProcess(drop_remainder=True)`.
  """
  transforms.validate_route_table(cfg.route_table)
  stats = PipelineStats()
  from_source = None
  if isinstance(data, str):
    name = data
    data, from_source, bad = open_source(data, split=split, video_root=video_root)
    for s in bad:
      stats.skip(s)
    if len(data) == 0:
      detail = f": {len(bad)} malformed, first {bad[0].detail}" if bad else ""
      raise BadDataError(
        f"{name}: no usable record{detail}. Check the data with: "
        f"python -m crpo_jax.data.validate {name}"
      )
  else:
    name = type(data).__name__
  ds = grain.MapDataset.source(data)
  shard = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
  if shard.drop_remainder:
    ds = ds[: len(ds) - len(ds) % shard.shard_count]
  ds = ds[shard.shard_index :: shard.shard_count]
  if cfg.shuffle:
    ds = ds.shuffle(seed=cfg.seed)
  ds = ds.repeat(cfg.num_epochs).map(ExampleLoader(cfg, process, from_source))
  it_ds: grain.IterDataset = _SkipBatchDataset(ds.to_iter_dataset(), cfg)
  if cfg.worker_count > 0:
    # Grain's workers read absl flags; outside an absl app (notebooks, tests, plain
    # scripts) nobody parsed them, so take their defaults rather than crash.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(
      grain.MultiprocessingOptions(
        num_workers=cfg.worker_count, per_worker_buffer_size=cfg.worker_buffer_size
      )
    )
  return Loader(it_ds, stats, max_consecutive_skips=cfg.max_consecutive_skips, name=name)
