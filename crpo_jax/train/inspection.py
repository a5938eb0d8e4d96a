"""Reading a training workdir back for inspection (notebooks/run_inspection.ipynb).

A run leaves `WORKDIR/metrics.jsonl` (every scalar of every computed step; a resumed
run appends the steps it recomputes, and the last line of a step wins) and
`WORKDIR/rollouts/step_N.jsonl` (the rollouts of `config.log_rollouts` prompts per
logged RL step, train/reward_metrics.py). Reward tags are
`reward/<branch>/<unweighted|weighted>/<term>` and
`reward_route/<branch>/<unweighted|weighted>/<term>/<route>`.
"""

from __future__ import annotations

import glob
import html
import json
import os
import re
from typing import Any

import numpy as np

DEFAULT_WORKDIR = "workdirs/demo"  # the README's demo command writes here
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_workdir(path: str | None = None) -> str:
  """`path` (default: $CRPO_WORKDIR, else the demo's), as given or from the repo root."""
  path = path or os.environ.get("CRPO_WORKDIR") or DEFAULT_WORKDIR
  for candidate in (path, os.path.join(_REPO, path)):
    if os.path.exists(os.path.join(candidate, "metrics.jsonl")):
      return os.path.abspath(candidate)
  raise FileNotFoundError(
    f"{path}: no metrics.jsonl there (nor under {_REPO}); run the demo first "
    f"(python -m crpo_jax.main --config=configs/demo.py --workdir={DEFAULT_WORKDIR}) "
    f"or set CRPO_WORKDIR"
  )


def read_metrics(workdir: str) -> dict[int, dict[str, float]]:
  """{step: metrics} from metrics.jsonl; a recomputed step keeps its last line."""
  out: dict[int, dict[str, float]] = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        out[int(row.pop("step"))] = row
  return dict(sorted(out.items()))


def series(metrics: dict[int, dict[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of one metric over the steps that have it."""
  steps = [s for s, m in metrics.items() if key in m]
  return np.asarray(steps), np.asarray([metrics[s][key] for s in steps], np.float64)


def reward_keys(metrics: dict[int, dict[str, float]]) -> dict[str, dict[str, list[str]]]:
  """{branch: {'unweighted': [terms], 'weighted': [terms]}} of the logged reward tags."""
  out: dict[str, dict[str, list[str]]] = {}
  keys = sorted({k for m in metrics.values() for k in m})
  for key in keys:
    m = re.fullmatch(r"reward/([^/]+)/(unweighted|weighted)/([^/]+)", key)
    if m:
      out.setdefault(m[1], {"unweighted": [], "weighted": []})[m[2]].append(m[3])
  return out


def route_keys(metrics: dict[int, dict[str, float]], branch: str, term: str) -> dict[str, str]:
  """{route: tag} of one branch's unweighted term (or 'total', weighted) per route."""
  kind = "weighted" if term == "total" else "unweighted"
  prefix = f"reward_route/{branch}/{kind}/{term}/"
  keys = sorted({k for m in metrics.values() for k in m if k.startswith(prefix)})
  return {k[len(prefix) :]: k for k in keys}


def rollout_steps(workdir: str) -> list[int]:
  """The steps that kept a rollout sample, ascending."""
  paths = glob.glob(os.path.join(workdir, "rollouts", "step_*.jsonl"))
  return sorted(int(re.search(r"step_(\d+)\.jsonl$", p)[1]) for p in paths)


def read_rollouts(workdir: str, step: int | None = None) -> list[dict[str, Any]]:
  """The rollout sample of `step` (default: the last step that kept one)."""
  steps = rollout_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"{workdir}/rollouts: no step_N.jsonl (config.log_rollouts = 0?)")
  step = steps[-1] if step is None else step
  path = os.path.join(workdir, "rollouts", f"step_{step}.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no rollout sample for step {step}; steps with one: {steps}")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def advantages(workdir: str, steps: list[int] | None = None) -> dict[str, np.ndarray]:
  """{branch: advantages of every kept rollout} over `steps` (default: all kept)."""
  out: dict[str, list[float]] = {}
  for step in steps or rollout_steps(workdir):
    for record in read_rollouts(workdir, step):
      for branch, rollouts in record["branches"].items():
        out.setdefault(branch, []).extend(r["advantage"] for r in rollouts)
  return {b: np.asarray(v, np.float64) for b, v in out.items()}


def completion_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per (prompt, rollout): original beside counterfactual."""
  rows = []
  for rec in records:
    orig = rec["branches"].get("original", [])
    cf = rec["branches"].get("counterfactual", [])
    for g in range(max(len(orig), len(cf))):
      row = {"prompt": rec["prompt"], "id": rec["id"], "route": rec["route"], "g": g}
      for name, rollouts in (("orig", orig), ("cf", cf)):
        r = rollouts[g] if g < len(rollouts) else None
        target = rec["target"]["original" if name == "orig" else "counterfactual"]
        row[f"{name}_target"] = target
        row[f"{name}_text"] = r["text"] if r else ""
        row[f"{name}_answer"] = r["answer"] if r else None
        row[f"{name}_terms"] = r["terms"] if r else {}
        row[f"{name}_total"] = r["total"] if r else None
        row[f"{name}_advantage"] = r["advantage"] if r else None
      rows.append(row)
  return rows


def rows_html(rows: list[dict[str, Any]]) -> str:
  """`completion_rows` as an HTML table (terms as 'name=value' lists)."""

  def cell(v):
    if isinstance(v, dict):
      v = ", ".join(f"{k}={x:.2f}" for k, x in v.items())
    elif isinstance(v, float):
      v = f"{v:.3f}"
    return f"<td style='text-align:left'>{html.escape(str(v))}</td>"

  if not rows:
    return "<p>no rollouts</p>"
  head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
  body = "".join("<tr>" + "".join(cell(v) for v in r.values()) + "</tr>" for r in rows)
  return f"<table><tr>{head}</tr>{body}</table>"
