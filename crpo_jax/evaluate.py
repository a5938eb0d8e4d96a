"""Benchmark evaluation CLI.

  python -m crpo_jax.evaluate --config=configs/eval.py \
    --config.benchmark=NAME --config.data=PATH --config.model=HF_DIR_OR_WORKDIR

or, to re-score a predictions file without a model, `--config.predictions=FILE`.
Fields and defaults: configs/eval.py. Logic: crpo_jax/eval/runner.py.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Eval config file (configs/eval.py).")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Imported after flag parsing so jax starts with the final XLA flags.
  from crpo_jax.eval import runner

  results = runner.evaluate(_CONFIG.value)
  logging.info("%s: %s", results["benchmark"], {k: v for k, v in results["metrics"].items()})
  print((runner.output_dir(_CONFIG.value) / "results.md").read_text())


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
