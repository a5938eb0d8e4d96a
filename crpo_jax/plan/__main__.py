"""`python -m crpo_jax.plan --config=CONFIG --topology=NAME [--json PATH]`.

Compiles every program of the run `python -m crpo_jax.main --config=CONFIG` would
execute, for the named accelerator topology, and prints one row per program with
per-device memory. Exit status 0 only when every program fits. Any config field can
be overridden as for `crpo_jax.main` (`--config.batch.micro_rollouts=4`).

On a CPU-only host the TPU compiler comes from `pip install -e ".[tpu]"`; the tool
sets JAX_PLATFORMS=cpu itself for TPU topologies. On a TPU VM or GPU node,
`--topology=local` plans for the host's own devices.
"""

from __future__ import annotations

import os
import sys


def _topology_arg(argv: list[str]) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith("--topology="):
      return a.split("=", 1)[1]
    if a == "--topology" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _prepare_env(argv: list[str]) -> None:
  """Before jax is imported: compile-only TPU devices need the CPU platform only."""
  if _topology_arg(argv) not in (None, "local"):
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


_prepare_env(sys.argv)

import json

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (configs/*.py[:arg]).", lock_config=True
)
_TOPOLOGY = flags.DEFINE_string(
  "topology", None, "v4-8, v5e-8, v5e-16, v5p-8, v5p-16, v5p-32, v6e-8, GEN:AxB[xC], or local."
)
_JSON = flags.DEFINE_string("json", None, "Also write the report as JSON to this path.")
_MAX_FRACTION = flags.DEFINE_float(
  "max_fraction", 0.9, "A program fits when its peak is at most this fraction of memory."
)
_TEXT_TOKENS = flags.DEFINE_integer(
  "text_tokens", 256, "Prompt tokens besides the video's (template, question, timestamps)."
)
_ONLY = flags.DEFINE_list("only", [], "Compile only these programs (e.g. update,rollout).")
flags.mark_flags_as_required(["config", "topology"])


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from crpo_jax import plan as plan_lib

  try:
    report = plan_lib.plan(
      _CONFIG.value,
      _TOPOLOGY.value,
      max_fraction=_MAX_FRACTION.value,
      text_tokens=_TEXT_TOKENS.value,
      only=tuple(_ONLY.value),
      log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
  except ValueError as e:
    print(f"crpo_jax.plan: {e}", file=sys.stderr)
    return 2
  print(report.table(), flush=True)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(report.to_json(), f, indent=1)
  return 0 if report.fits else 1


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
