"""Benchmark metrics over scored items (METHOD.md section 8, reference section 5).

Every function takes `Scored` items and returns a flat {name: value} dict, values
as fractions in [0, 1] (counts are named `n...`). Group breakdowns are named
`<metric>/<field>=<value>`, so one markdown table can show any benchmark and put
baselines in extra columns.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from crpo_jax.eval.items import EvalItem

DYNAMIC_ROUTES = ("spatial", "temporal", "spatiotemporal")


class Scored(NamedTuple):
  """One item with the answer a policy gave and whether it is right."""

  item: EvalItem
  extracted: str
  correct: bool


def _mean(xs: Iterable[bool | float]) -> float:
  xs = list(xs)
  return float(sum(xs)) / len(xs) if xs else float("nan")


def _grouped(scored: Sequence[Scored], key: Callable[[Scored], str]) -> dict[str, list[Scored]]:
  groups: dict[str, list[Scored]] = collections.defaultdict(list)
  for s in scored:
    groups[key(s)].append(s)
  return dict(sorted(groups.items()))


def accuracy_by(scored: Sequence[Scored], field: str, name: str = "acc") -> dict[str, float]:
  """`name/field=value` accuracy for each value of `item.meta[field]`."""
  return {
    f"{name}/{field}={k}": _mean(s.correct for s in g)
    for k, g in _grouped(scored, lambda s: str(s.item.meta[field])).items()
  }


def _pairs(scored: Sequence[Scored]) -> list[list[Scored]]:
  return list(_grouped(scored, lambda s: str(s.item.meta["pair_id"])).values())


def dybench(scored: Sequence[Scored]) -> dict[str, float]:
  """Acc and P-Acc, overall and per category, plus the sensitivity diagnostic.

  P-Acc: a pair (items sharing `pair_id`) counts only if every member is correct.
  A pair's category is its first member's. Sensitivity (ours, diagnostic): the
  fraction of dynamic pairs whose members' answers are all valid and not all equal,
  and of static pairs whose answers are all valid and all equal; pairs of one and
  pairs without a route are left out.
  """
  pairs = _pairs(scored)
  out = {
    "acc": _mean(s.correct for s in scored),
    "p_acc": _mean(all(s.correct for s in p) for p in pairs),
  }
  out |= accuracy_by(scored, "category")
  by_cat: dict[str, list[bool]] = collections.defaultdict(list)
  for p in pairs:
    by_cat[str(p[0].item.meta["category"])].append(all(s.correct for s in p))
  out |= {f"p_acc/category={c}": _mean(v) for c, v in sorted(by_cat.items())}
  dynamic, static = [], []
  for p in pairs:
    route = str(p[0].item.meta.get("route") or "")
    answers = [s.extracted for s in p]
    valid = len(p) > 1 and all(answers)
    if route in DYNAMIC_ROUTES and len(p) > 1:
      dynamic.append(valid and len(set(answers)) > 1)
    elif route == "static" and len(p) > 1:
      static.append(valid and len(set(answers)) == 1)
  if dynamic:
    out["sensitivity/dynamic_differ"] = _mean(dynamic)
  if static:
    out["sensitivity/static_agree"] = _mean(static)
  out |= {"n_items": len(scored), "n_pairs": len(pairs)}
  return out


def timeblind(scored: Sequence[Scored]) -> dict[str, float]:
  """TimeBlind `get_scores`: Acc, Q_Acc, V_Acc, I_Acc over complete instances.

  Roles within an instance: 0 = q0 v0, 1 = q0 v1, 2 = q1 v0, 3 = q1 v1. A question
  scores if it is right on both videos, a video if both its questions are right,
  an instance if all four are. Instances missing a role are left out (the official
  script would misalign them). Also the sensitivity diagnostic (ours): the fraction
  of questions whose valid answers differ between the two videos.
  """
  inst: dict[int, dict[int, Scored]] = collections.defaultdict(dict)
  for s in scored:
    inst[int(s.item.meta["sample_id"])][int(s.item.meta["role"])] = s
  full = [r for r in inst.values() if len(r) == 4]
  ok = [{k: v.correct for k, v in r.items()} for r in full]
  q_ok = [c[0] and c[1] for c in ok] + [c[2] and c[3] for c in ok]
  v_ok = [c[0] and c[2] for c in ok] + [c[1] and c[3] for c in ok]
  differ = [
    bool(r[a].extracted) and bool(r[b].extracted) and r[a].extracted != r[b].extracted
    for r in full
    for a, b in ((0, 1), (2, 3))
  ]
  return {
    "acc": _mean(x for c in ok for x in c.values()),
    "q_acc": _mean(q_ok),
    "v_acc": _mean(v_ok),
    "i_acc": _mean(all(c.values()) for c in ok),
    "sensitivity/question_differ": _mean(differ),
    "n_items": len(scored),
    "n_instances": len(full),
  }


def tempcompass(scored: Sequence[Scored]) -> dict[str, float]:
  """Per task format: accuracy per temporal aspect and over its questions (the
  official `avg`); also per aspect over every format."""
  out: dict[str, float] = {"acc": _mean(s.correct for s in scored)}
  out |= accuracy_by(scored, "dim")
  for task, g in _grouped(scored, lambda s: str(s.item.meta["task"])).items():
    out[f"acc/task={task}"] = _mean(s.correct for s in g)
    out |= {k.replace("acc/", f"acc/task={task}/"): v for k, v in accuracy_by(g, "dim").items()}
  out["n_items"] = len(scored)
  return out


def mvbench(scored: Sequence[Scored]) -> dict[str, float]:
  """Per-task accuracy and their average (micro = macro on the full 20 x 200)."""
  per_task = accuracy_by(scored, "task")
  return {
    "acc": _mean(per_task.values()),
    "acc_micro": _mean(s.correct for s in scored),
    **per_task,
    "n_items": len(scored),
  }


def videomme(scored: Sequence[Scored]) -> dict[str, float]:
  """Accuracy overall and per duration, domain and task type."""
  out = {"acc": _mean(s.correct for s in scored)}
  for field in ("duration", "domain", "task_type"):
    out |= accuracy_by(scored, field)
  out["n_items"] = len(scored)
  return out
