"""Results JSON and the markdown table a reader looks at.

The table has one row per metric and one column per policy: the model, the blind
policy (blank video) when it ran, and the best constant-answer policy, so a
reader sees at a glance whether a paired metric beats what answer and language
priors alone reach.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

Metrics = Mapping[str, float]


def _cell(name: str, value: float | None) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  if name.startswith("n_"):
    return str(int(value))
  return f"{100.0 * value:.1f}"


def markdown_table(title: str, columns: Mapping[str, Metrics], primary: str) -> str:
  """A markdown table, metrics as rows (percent, counts as integers), policies as columns.

  Args:
    title: heading line.
    columns: {column name: metrics}; the first column fixes the row order.
    primary: the headline metric, shown first and in bold.
  """
  if not columns:
    raise ValueError("markdown_table needs at least one column")
  first = next(iter(columns.values()))
  rows = sorted(first, key=lambda n: (n != primary, n.startswith("n_"), "/" in n, n))
  lines = [f"### {title}", "", "| metric | " + " | ".join(columns) + " |"]
  lines.append("|---|" + "---:|" * len(columns))
  for name in rows:
    cells = [_cell(name, m.get(name)) for m in columns.values()]
    label = f"**{name}**" if name == primary else name
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  lines.append("")
  lines.append(
    "Values are percentages except n_* counts; '-' means not defined. "
    "Rows named ours/... are not the official scorer's."
  )
  return "\n".join(lines) + "\n"


VARIANT_LABELS = {
  "strict": "model, strict (official bug fixed)",
  "think": "model, <think> stripped (ours)",
}


def table_columns(results: Mapping[str, Any]) -> dict[str, Metrics]:
  """The columns of a results dict: the model under the official rules, under each
  variant judge, then the baselines (blind, best constant)."""
  cols = {"model (official)": results["metrics"]}
  for name, m in results.get("variants", {}).items():
    cols[VARIANT_LABELS.get(name, f"model, {name}")] = m
  base = results.get("baselines", {})
  if "blind" in base:
    cols["blind (blank video)"] = base["blind"]
  if "constant_best" in base:
    cols["constant answer (best)"] = base["constant_best"]
  return cols


def _json_safe(x: Any) -> Any:
  """NaN (an undefined metric) as null, since JSON has no NaN."""
  if isinstance(x, float) and math.isnan(x):
    return None
  if isinstance(x, Mapping):
    return {k: _json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v) for v in x]
  return x


def write(out_dir: str | os.PathLike, results: Mapping[str, Any], primary: str) -> tuple[str, str]:
  """Writes results.json and results.md under `out_dir`; returns both paths."""
  d = pathlib.Path(out_dir)
  d.mkdir(parents=True, exist_ok=True)
  json_path, md_path = d / "results.json", d / "results.md"
  json_path.write_text(
    json.dumps(_json_safe(results), indent=2, sort_keys=True, default=str) + "\n"
  )
  title = f"{results['benchmark']}: {results.get('model') or 'predictions file'}"
  md_path.write_text(markdown_table(title, table_columns(results), primary))
  return str(json_path), str(md_path)
