"""Benchmark evaluation CLI.

  python -m crpo_jax.evaluate --config=configs/eval.py \
    --config.benchmark=NAME --config.data=PATH --config.model=HF_DIR_OR_WORKDIR

`--config.model` is an HF checkpoint directory or a training WORKDIR. A WORKDIR is
evaluated at its latest checkpoint (exported once to WORKDIR/export/step_N, which a
rerun reuses); a WORKDIR without checkpoints at its final `hf/` export. Results go to
eval_results/<benchmark>/<WORKDIR name> unless --config.output_dir says otherwise.
Nothing is created under the output directory when the run fails before its first
prediction.

Or, to re-score a predictions file without a model, `--config.predictions=FILE`.
Fields and defaults: configs/eval.py. Logic: crpo_jax/eval/runner.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

from absl import app, flags, logging
from ml_collections import config_flags


def _define_flags():
  """Flags exist only when this module is the program (it is also imported as a library,
  next to crpo_jax.main, which defines its own --config)."""
  return config_flags.DEFINE_config_file("config", None, "Eval config file (configs/eval.py).")


def is_hf_dir(path: pathlib.Path) -> bool:
  """A transformers Qwen3-VL directory: config.json with a `text_config`."""
  try:
    with open(path / "config.json", encoding="utf-8") as f:
      return "text_config" in json.load(f)
  except (OSError, ValueError):
    return False


def is_workdir(path: pathlib.Path) -> bool:
  """A training workdir: the run files `crpo_jax.export` reads (train/setup.py)."""
  return (path / "model_config.json").is_file() or (path / "checkpoints").is_dir()


def _latest_step(checkpoints: pathlib.Path) -> int | None:
  if not checkpoints.is_dir():
    return None
  from crpo_jax.train import checkpoint as ckpt_lib

  ckpt = ckpt_lib.Checkpointer(str(checkpoints), async_save=False)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def resolve_model(model: str) -> tuple[str, str]:
  """(HF directory to load, a name for the output folder) for `config.model`.

  Raises:
    FileNotFoundError: `model` is neither an HF directory nor a workdir with a
      checkpoint or an `hf/` export.
  """
  p = pathlib.Path(model).expanduser()
  if is_hf_dir(p):
    return str(p), p.name
  if not is_workdir(p):
    raise FileNotFoundError(
      f"config.model: {p} is neither an HF checkpoint (config.json with text_config) "
      "nor a training workdir (model_config.json, checkpoints/)"
    )
  step = _latest_step(p / "checkpoints")
  if step is not None:
    out = p / "export" / f"step_{step}"
    if not is_hf_dir(out):
      import jax

      if jax.process_count() > 1:
        raise FileNotFoundError(
          f"config.model: {out} is not exported yet, and a multi-process launch does "
          f"not export; run `python -m crpo_jax.evaluate` (or crpo_jax.export) once "
          f"as one process, or give an HF directory"
        )
      from crpo_jax import export

      tmp = out.with_name(out.name + ".partial")
      shutil.rmtree(tmp, ignore_errors=True)
      export.export(str(p), str(tmp), step)
      os.replace(tmp, out)  # a crashed export never looks finished
    logging.info("config.model: workdir %s at its latest checkpoint, step %d", p, step)
    return str(out), p.name
  if is_hf_dir(p / "hf"):
    logging.info("config.model: workdir %s has no checkpoint; using its hf/ export", p)
    return str(p / "hf"), p.name
  raise FileNotFoundError(
    f"config.model: workdir {p} has no checkpoint in checkpoints/ and no hf/ export"
  )


def _remove_if_unused(out: pathlib.Path, existed: bool) -> None:
  """Removes an output folder this run created and left without a prediction."""
  if existed or not out.is_dir():
    return
  from crpo_jax.eval import runner

  if set(os.listdir(out)) <= {runner.RUN_CONFIG}:
    shutil.rmtree(out)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Imported after flag parsing so jax starts with the final XLA flags.
  import jax

  from crpo_jax import distributed

  distributed.initialize()
  # Several processes (one per host) share the model's mesh and generate the same
  # batches together; process 0 alone writes the output folder (eval/runner.py).
  writer = jax.process_index() == 0
  from crpo_jax.eval import runner

  cfg = flags.FLAGS.config
  if cfg.model and not cfg.predictions:
    hf_dir, name = resolve_model(cfg.model)
    with cfg.unlocked():
      if not cfg.output_dir:
        cfg.output_dir = str(pathlib.Path("eval_results") / cfg.benchmark / name)
      cfg.model = hf_dir
  out = runner.output_dir(cfg)
  if cfg.predictions and not writer:
    return  # re-scoring is host work: process 0 does it
  existed = out.exists()
  try:
    results = runner.evaluate(cfg)
  except BaseException:
    if writer:
      _remove_if_unused(out, existed)
    raise
  if results is None:
    return
  logging.info("%s: %s", results["benchmark"], {k: v for k, v in results["metrics"].items()})
  print(f"model: {cfg.model}")
  print((out / "results.md").read_text())


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config"])
  app.run(main)
