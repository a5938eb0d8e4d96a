"""Run set-up: the data (synthetic world, tokenizer, loaders), the model, the export.

Kept apart from the loop so that `loop.py` reads as the training schedule only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from flax import nnx

from crpo_jax.model.config import Qwen3VLConfig, get_preset


@dataclasses.dataclass
class RunData:
  """Where the run's records live, its tokenizer, and how to open loaders."""

  train_path: str
  eval_path: str
  tokenizer: Any
  tokenizer_dir: str
  train_loader: Callable[[], Any]


class _Process:
  """Picklable `(example, frames, meta) -> model inputs` for Grain workers."""

  def __init__(self, tokenizer, cfg):
    self.tokenizer, self.cfg = tokenizer, cfg

  def __call__(self, example, frames, meta):
    from crpo_jax.data import processor  # heavy: imported in the worker

    return processor.process_example(example, self.tokenizer, self.cfg, frames, meta)


def processor_config(config: ml_collections.ConfigDict):
  from crpo_jax.data import processor

  d = config.data
  return processor.ProcessorConfig(
    fps=d.fps,
    max_frames=d.num_frames,
    video_max_pixels=d.max_pixels * d.num_frames,
    video_frame_max_pixels=d.max_pixels,  # short clips too (vision_segments relies on it)
  )


def pipeline_config(config: ml_collections.ConfigDict, pad_id: int, *, train: bool):
  from crpo_jax.data import pipeline

  return pipeline.PipelineConfig(
    batch_size=config.batch.prompts,
    seed=config.seed,
    shuffle=config.data.shuffle and train,
    num_epochs=None if train else 1,
    drop_remainder=train,
    worker_count=config.data.num_workers if train else 0,
    fps=config.data.fps,
    max_frames=config.data.num_frames,
    pad_id=pad_id,
    max_consecutive_skips=config.data.max_consecutive_skips,
  )


def make_loader(config, path: str, tokenizer, pad_id: int, *, train: bool):
  """A loader of *global* batches: every host reads the same examples.

  The learner scores all prompts on every host and feeds identical host arrays to
  the jitted steps, which is correct on any number of hosts; reading a per-host
  shard and assembling global arrays would cut the redundant decoding (not done).
  """
  import grain

  from crpo_jax.data import pipeline

  return pipeline.make_loader(
    path,
    pipeline_config(config, pad_id, train=train),
    _Process(tokenizer, processor_config(config)),
    video_root=config.data.video_root or None,
    shard_options=grain.sharding.NoSharding(),
  )


def _words(*paths: str) -> list[str]:
  from crpo_jax.data import records

  words = []
  for path in paths:
    for ex in records.read_records(path):
      words += [ex.question, *ex.options]
  return words


def synthetic_world(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The `synthetic.generate` knobs shared by every split (families, option order)."""
  from crpo_jax.data import synthetic

  syn = config.data.synthetic
  names = synthetic.FAMILIES if syn.families == "all" else syn.families.split(",")
  return {
    "families": synthetic.check_families(names),
    "shuffle_options": bool(syn.shuffle_options),
  }


def make_once(name: str, exists: Callable[[], bool], make: Callable[[], None]) -> None:
  """Runs `make()` on process 0 unless `exists()`; the other processes wait for it.

  A process that still sees nothing after the barrier (a workdir on a filesystem
  the processes do not share) makes its own copy: the makers used here are pure
  functions of the config, so every copy is the same.
  """
  if jax.process_index() == 0 and not exists():
    make()
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils

  multihost_utils.sync_global_devices(f"crpo_jax: {name} written")
  if not exists():
    logging.warning(
      "process %d: no shared %s in sight; writing a local copy", jax.process_index(), name
    )
    make()


def prepare_data(config: ml_collections.ConfigDict, data_dir: str) -> RunData:
  """Generates the synthetic world if asked, loads or builds the tokenizer.

  User data wins: the synthetic world (`data.synthetic.num_train` > 0, as in
  `:runlocal` and the demo) is generated only when `data.train` is empty. The given
  files were checked by `preflight` before anything was built.
  """
  from crpo_jax.data import synthetic
  from crpo_jax.data import tokenizer as tok_lib

  d = config.data
  train, heldout = d.train, d.eval
  syn = d.synthetic
  if syn.num_train > 0 and not train:
    train = os.path.join(data_dir, "train.jsonl")
    heldout = heldout or (os.path.join(data_dir, "eval.jsonl") if syn.num_eval > 0 else "")
    world = synthetic_world(config)

    def make_world() -> None:
      synthetic.generate(data_dir, syn.num_train, config.seed, split="train",
                         shortcut=syn.shortcut, **world)  # fmt: skip
      if syn.num_eval > 0 and not d.eval:
        synthetic.generate(
          data_dir, syn.num_eval, config.seed + 1, split="eval", pairs=True, **world
        )

    make_once("synthetic world", lambda: os.path.exists(train), make_world)
  if not train:
    raise ValueError("config.data.train is empty and no synthetic world was asked for")
  tok_dir = d.tokenizer or config.model.init_from
  if not tok_dir:
    tok_dir = os.path.join(data_dir, "tokenizer")
    make_once(
      "word tokenizer",
      lambda: os.path.exists(os.path.join(tok_dir, "tokenizer.json")),
      lambda: tok_lib.build_word_tokenizer(
        _words(*(p for p in (train, heldout) if p)), tok_dir, compact=d.compact_vocab
      ),
    )
  tokenizer = tok_lib.load_tokenizer(tok_dir)
  if not config.model.init_from:  # a checkpoint's own tokenizer is checked on load
    cfg = get_preset(config.model.preset)
    ids = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name.endswith("_id")}
    tok_lib.check_special_ids(tokenizer, dict(ids, vocab_size=cfg.text.vocab_size), tok_dir)
  pad_id = get_preset(config.model.preset).pad_token_id
  return RunData(
    train,
    heldout,
    tokenizer,
    tok_dir,
    lambda: make_loader(config, train, tokenizer, pad_id, train=True),
  )


def describe_inputs(config: ml_collections.ConfigDict, data: RunData) -> list[str]:
  """The console lines that say what a run trains on: data files, tokenizer, model."""

  def where(path: str, given: str) -> str:
    if not path:
      return "(none)"
    return os.path.abspath(path) + ("" if given else " (synthetic world)")

  m = config.model
  model = f"{m.init_from} ({m.dtype})" if m.init_from else f"random init, preset {m.preset}"
  return [
    f"data.train:  {where(data.train_path, config.data.train)}",
    f"data.eval:   {where(data.eval_path, config.data.eval)}",
    f"tokenizer:   {os.path.abspath(data.tokenizer_dir)}",
    f"model:       {model}",
  ]


VISION_ATTENTION = ("masked", "segments")


def model_config(config: ml_collections.ConfigDict) -> Qwen3VLConfig:
  """The architecture the run builds: the checkpoint's config.json, else the preset."""
  if config.model.init_from:
    with open(os.path.join(config.model.init_from, "config.json")) as f:
      return Qwen3VLConfig.from_hf_config(json.load(f))
  return get_preset(config.model.preset)


def vision_segments(config: ml_collections.ConfigDict, vision) -> tuple[int, int] | None:
  """Per-segment vision attention bounds the pipeline guarantees, or None (masked).

  With `model.vision_attention = "segments"`: a temporal group has at most
  `data.max_pixels` pixels (the processor's per-frame cap, `processor_config`), so
  at most max_pixels / patch_size**2 patch rows (never fewer than one merge block),
  and a video has at most ceil(data.num_frames / temporal_patch_size) groups.
  """
  mode = config.model.vision_attention
  if mode not in VISION_ATTENTION:
    raise ValueError(
      f"config.model.vision_attention={mode!r}: expected one of {', '.join(VISION_ATTENTION)}"
    )
  if mode == "masked":
    return None
  rows = max(int(config.data.max_pixels) // vision.patch_size**2, vision.spatial_merge_size**2)
  groups = -(-int(config.data.num_frames) // vision.temporal_patch_size)
  return rows, groups


def model_kwargs(config: ml_collections.ConfigDict, cfg) -> dict[str, Any]:
  """`Qwen3VL` / `load_hf` options from the config (the run and the planner)."""
  return {
    "dtype": jnp.dtype(config.model.dtype),
    "param_dtype": jnp.dtype(config.model.param_dtype),
    "remat": config.model.remat,
    "vision_segments": vision_segments(config, cfg.vision),
  }


def build_model(config: ml_collections.ConfigDict, mesh):
  """The policy: a local HF checkpoint (sharded on load) or a seeded random init."""
  from crpo_jax.model import vlm

  if config.model.init_from:
    from crpo_jax import model as model_lib

    kw = model_kwargs(config, model_config(config))
    logging.info("loading %s", config.model.init_from)
    return model_lib.load_hf(config.model.init_from, mesh=mesh, **kw)
  cfg = get_preset(config.model.preset)
  # Random init is for the tiny demo and tests; real runs start from init_from.
  return vlm.Qwen3VL(cfg, rngs=nnx.Rngs(config.seed), **model_kwargs(config, cfg))


def export_hf(model_def, params, tokenizer, out_dir: str, step: int = 0) -> str:
  """Writes the policy (and tokenizer) as a transformers-loadable directory.

  A kill half-way leaves a partial directory; the rerun resumes from the final
  checkpoint and writes it again.
  """
  from crpo_jax import model as model_lib
  from crpo_jax.train import faults
  from crpo_jax.train import state as state_lib

  model = state_lib.merge_model(model_def.graphdef, params, model_def.rest)
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
  model_lib.save_hf(model, out_dir)
  faults.at("export", step)
  if jax.process_index() == 0 and tokenizer is not None:
    tokenizer.save_pretrained(out_dir)
  return out_dir


RUN_FILES = ("config.json", "model_config.json", "tokenizer_dir.txt")
LAUNCHES_KEY = "launch_history"  # config.json: every launch's time and config, oldest first


def _config_dict(config) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def write_run_files(workdir: str, config, model_config, tokenizer_dir: str) -> None:
  """What `crpo_jax.export` needs besides a checkpoint: config, architecture, tokenizer.

  config.json holds this launch's config at the top level (what export and the
  resume guard read) and, under `launch_history`, every launch's config with its
  UTC start time, so a workdir resumed under another config still says how each
  part of it was trained.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  history = []
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    history = old.pop(LAUNCHES_KEY, None) or [{"time": None, "config": old}]
  current = _config_dict(config)
  history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "config": current})
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({**current, LAUNCHES_KEY: history}, f, indent=1)
  os.replace(tmp, path)
  with open(os.path.join(workdir, "model_config.json"), "w") as f:
    json.dump(model_config.to_hf_config(), f, indent=1)
  with open(os.path.join(workdir, "tokenizer_dir.txt"), "w") as f:
    f.write(os.path.abspath(tokenizer_dir))


# ---------------------------------------------------------------- resume guard

# Fields that only change how long or how visibly a run goes on: a resume may change
# them freely. Everything else decides what is trained (algorithm, model, data, loss,
# reward, sampling, optimiser, seed) and must match the checkpoint's run.
HARMLESS_FIELDS = (
  "train_steps", "log_every", "log_rollouts", "eval_every", "eval_max_examples", "eval_max_new_tokens",
  "ckpt_every", "ckpt_every_s", "keep_ckpts", "async_ckpt", "export_at_end", "max_nonfinite_steps",
  "preempt_grace_s", "allow_config_change", "mesh.", "data.num_workers",
  "data.max_consecutive_skips", "data.eval",
)  # fmt: skip


class ResumeConfigError(ValueError):
  """A resume under a config that changes what the checkpoint's run trained."""


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _harmless(field: str) -> bool:
  return any(field == h or (h.endswith(".") and field.startswith(h)) for h in HARMLESS_FIELDS)


def config_changes(previous: dict[str, Any], config) -> dict[str, tuple[Any, Any]]:
  """{field: (previous, now)} for every field that changes what is trained."""
  prev = _flatten({k: v for k, v in previous.items() if k != LAUNCHES_KEY})
  now = _flatten(_config_dict(config))
  return {
    k: (prev.get(k, "<absent>"), now.get(k, "<absent>"))
    for k in sorted(set(prev) | set(now))
    if not _harmless(k) and prev.get(k, "<absent>") != now.get(k, "<absent>")
  }


def check_resume(workdir: str, config) -> None:
  """Refuses to resume `workdir` under a config that changes what was trained.

  Raises ResumeConfigError with the changed fields unless `allow_config_change`.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    previous = json.load(f)
  changes = config_changes(previous, config)
  if not changes:
    return
  diff = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
  if config.allow_config_change:
    logging.warning("resuming %s under a changed config (allowed):\n%s", workdir, diff)
    return
  raise ResumeConfigError(
    f"{path}: the checkpoints in {workdir} were trained under another config; resuming "
    f"would change what is trained:\n{diff}\nUse a new --workdir, or pass "
    f"--config.allow_config_change=True to resume anyway (config.json keeps both)."
  )


# ---------------------------------------------------------------- preflight


class PreflightError(ValueError):
  """A start-up check failed; the message names the path and what is wrong."""


def local_workdir(workdir: str) -> str:
  """The workdir as an absolute local (or mounted) path; a URL is refused."""
  if "://" in workdir:
    # os.path.abspath would make gs://b/run a folder `<cwd>/gs:/b/run` on each host.
    raise PreflightError(
      f"--workdir {workdir}: URL workdirs are not supported yet (the run writes its data, "
      "tokenizer, logs, metrics and HF export through local file APIs). Mount the bucket "
      "on every host (e.g. gcsfuse, or a Filestore share) and pass the mount's path."
    )
  return os.path.abspath(workdir)


def check_workdir(workdir: str) -> None:
  """The workdir exists (or can be created) and a file can be written in it."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test.{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PreflightError(f"--workdir {workdir}: not writable ({e.strerror or e})") from None


def check_records(
  path: str, field: str, *, video_root: str | None, need_route: bool, probe: int = 64
) -> None:
  """At least one of the first `probe` records of `path` parses, has a route (when the
  pipeline needs one) and a video file that exists."""
  if not path:
    raise PreflightError(f"{field} is empty: give a record file")
  if os.path.isdir(path):  # an ArrayRecord dataset: built (and validated) by its builder
    return
  if not os.path.exists(path):
    raise PreflightError(f"{field}={path}: file not found")
  from crpo_jax.data import records

  reasons: dict[str, int] = {}
  first: dict[str, str] = {}

  def bad(reason: str, where: str) -> None:
    reasons[reason] = reasons.get(reason, 0) + 1
    first.setdefault(reason, where)

  try:
    for i, r in enumerate(records.iter_records(path, video_root=video_root)):
      if i >= probe:
        break
      if isinstance(r, records.RecordError):
        bad("malformed_record", str(r))
      elif need_route and not r.route:
        bad("no_route", f"{r.source}: record has no 'route' (label it: python -m "
                        "crpo_jax.data.router)")  # fmt: skip
      elif not os.path.isfile(r.video):
        bad("missing_video", f"{r.source}: {r.video} not found")
      else:
        return
  except (OSError, UnicodeDecodeError) as e:
    raise PreflightError(f"{field}={path}: cannot be read ({e})") from None
  if not reasons:
    raise PreflightError(f"{field}={path}: no records")
  detail = "; ".join(f"{k} x{n} (first: {first[k]})" for k, n in reasons.items())
  root = f" (video_root {video_root})" if video_root else ""
  raise PreflightError(
    f"{field}={path}: none of the first {sum(reasons.values())} records is usable{root}: "
    f"{detail}. Check the whole file with: python -m crpo_jax.data.validate {path}"
  )


def check_tokenizer(tok_dir: str, field: str) -> None:
  from crpo_jax.data import tokenizer as tok_lib

  try:
    tok_lib.load_tokenizer(tok_dir)
  except Exception as e:  # noqa: BLE001  (any failure to load is one start-up error)
    raise PreflightError(f"{field}={tok_dir}: the tokenizer does not load: {e}") from None


def preflight(config, workdir: str) -> None:
  """Start-up checks before any compilation or data generation (one clear error each).

  The workdir is writable; the training and evaluation files exist and have usable
  records (a synthetic world is generated later, so its files are not checked); the
  tokenizer loads when the config names one.
  """
  check_workdir(workdir)
  d = config.data
  root = d.video_root or None
  if d.train or d.synthetic.num_train <= 0:  # user data wins over the synthetic world
    check_records(d.train, "config.data.train", video_root=root, need_route=True)
  if d.eval:
    check_records(d.eval, "config.data.eval", video_root=root, need_route=False)
  if d.tokenizer:
    check_tokenizer(d.tokenizer, "config.data.tokenizer")
  elif config.model.init_from:
    check_tokenizer(config.model.init_from, "config.model.init_from")
