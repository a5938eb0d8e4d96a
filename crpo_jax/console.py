"""What a run prints: our lines on the console, library INFO in `WORKDIR/logs/` only.

The console of `python -m crpo_jax.main` shows the phase, the progress line (rate,
ETA and a few key metrics), evaluation results, the final summary, and every
WARNING or ERROR. INFO lines (ours and the libraries': absl, Orbax, jax, Grain, CLU's
full metric dump) go to absl's log file in `WORKDIR/logs/` (`crpo_jax.INFO` links
the latest one). absl's own flags still apply: `--alsologtostderr` also shows the
INFO lines on the console, `--logtostderr` sends everything to the console and
nothing to the file, `--verbosity=-1` drops INFO altogether.
"""

from __future__ import annotations

import logging as py_logging
import os

from absl import flags, logging

PROGRAM = "crpo_jax"

# The few metrics the per-step console line shows (the rest: TensorBoard, metrics.jsonl).
# {console name: metric key}.
KEY_METRICS = {
  "sft": {"loss": "loss", "token_confident": "token_confident"},
  "rl": {
    "loss": "loss",
    "acc": "accuracy",
    "crr": "crr",
    "reward": "reward/original/weighted/total",
    "kl": "kl",
  },
}


def is_local_path(path: str) -> bool:
  return "://" not in path


def setup(workdir: str) -> str | None:
  """Sends INFO lines to `WORKDIR/logs/` and keeps WARNING and above on the console.

  Call after absl parsed the flags (inside `main`). Returns the log directory, or
  None when absl's flags ask for the console (`--logtostderr`) or the workdir is not
  a local path (then INFO lines are only kept with `--alsologtostderr`).
  """
  handler = logging.get_absl_handler()
  fl = flags.FLAGS
  if fl["logtostderr"].value:
    return None
  if not fl["stderrthreshold"].present:
    fl.stderrthreshold = "warning"  # absl's default, "fatal", would hide our warnings
  py_logging.captureWarnings(True)  # Python warnings are WARNING records (console and file)
  if not is_local_path(workdir):
    if not fl["alsologtostderr"].value:
      handler.setLevel(py_logging.WARNING)  # no local file: keep the console clean
    return None
  log_dir = os.path.join(os.path.abspath(workdir), "logs")
  os.makedirs(log_dir, exist_ok=True)
  handler.use_absl_log_file(program_name=PROGRAM, log_dir=log_dir)
  return log_dir


def key_metrics(metrics: dict[str, float], phase: str) -> dict[str, float]:
  """The few metrics of the per-step console line (those the step has)."""
  return {name: metrics[key] for name, key in KEY_METRICS[phase].items() if key in metrics}
