"""Benchmark metrics over scored items, each as its official scorer aggregates.

Every function takes `Scored` items and returns a flat {name: value} dict, values
as fractions in [0, 1] (counts are named `n_...`). Group breakdowns are named
`<metric>/<field>=<value>`, so one markdown table can show any benchmark and put
variants and baselines in extra columns. Numbers that are ours, not the official
scorer's (pooled or averaged differently, diagnostics), are named `ours/...` and
are never the headline. Official sources and commits: extraction.py.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from crpo_jax.eval.items import EvalItem

DYNAMIC_ROUTES = ("spatial", "temporal", "spatiotemporal")


class Scored(NamedTuple):
  """One item with the answer a policy gave.

  Attributes:
    item: the item.
    extracted: the answer the rules read ('' if none), for diagnostics.
    correct: the official judgement.
    answered: whether the rules read an answer at all (Video-MME's denominator,
      TempCompass's match rate).
  """

  item: EvalItem
  extracted: str
  correct: bool
  answered: bool = True


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


def _pairs(scored: Sequence[Scored]) -> list[tuple[list[Scored], bool]]:
  """(members, complete) per pair; complete = all `meta['pair_size']` members scored
  (the loader records the released pair size; without it, the scored size)."""
  out = []
  for p in _grouped(scored, lambda s: str(s.item.meta["pair_id"])).values():
    size = int(p[0].item.meta.get("pair_size", len(p)))
    out.append((p, len(p) == size))
  return out


def dybench(scored: Sequence[Scored]) -> dict[str, float]:
  """Acc and P-Acc, overall and per category, plus the sensitivity diagnostic.

  DyBench has no public official scorer; these are our rules (README,
  "DyBench"). P-Acc: a pair (items sharing `pair_id`) counts only if it is
  complete and every member is correct; a pair with a missing member counts
  wrong and stays in the denominator. A pair's category is its first member's.
  Sensitivity (diagnostic) uses the same pairs: of the dynamic pairs, the fraction
  that are complete with all answers valid and not all equal; of the static
  pairs, complete with all answers valid and all equal. Pairs released as one
  item, and pairs without a route, have no sensitivity.
  """
  pairs = _pairs(scored)
  ok = [complete and all(s.correct for s in p) for p, complete in pairs]
  out = {"acc": _mean(s.correct for s in scored), "p_acc": _mean(ok)}
  out |= accuracy_by(scored, "category")
  by_cat: dict[str, list[bool]] = collections.defaultdict(list)
  for (p, _), good in zip(pairs, ok):
    by_cat[str(p[0].item.meta["category"])].append(good)
  out |= {f"p_acc/category={c}": _mean(v) for c, v in sorted(by_cat.items())}
  dynamic, static = [], []
  for p, complete in pairs:
    if int(p[0].item.meta.get("pair_size", len(p))) < 2:
      continue
    route = str(p[0].item.meta.get("route") or "")
    answers = [s.extracted for s in p]
    valid = complete and all(answers)
    if route in DYNAMIC_ROUTES:
      dynamic.append(valid and len(set(answers)) > 1)
    elif route == "static":
      static.append(valid and len(set(answers)) == 1)
  if dynamic:
    out["sensitivity/dynamic_differ"] = _mean(dynamic)
  if static:
    out["sensitivity/static_agree"] = _mean(static)
  n_incomplete = sum(not c for _, c in pairs)
  out |= {"n_items": len(scored), "n_pairs": len(pairs), "n_pairs_incomplete": n_incomplete}
  return out


def timeblind(scored: Sequence[Scored]) -> dict[str, float]:
  """TimeBlind `build_answers` + `get_scores`: Acc, Q_Acc, V_Acc, I_Acc.

  Instances are the sample ids (index // 4) with at least one scored item. Roles:
  0 = q0 v0, 1 = q0 v1, 2 = q1 v0, 3 = q1 v1. A question scores if right on both
  videos, a video if both its questions are right, an instance if all four are.
  As officially, an instance missing a role gets -1 for all four roles: it scores
  zero everywhere and stays in every denominator (4 per instance for Acc, 2 for
  Q/V, 1 for I). Also our diagnostic `ours/sensitivity/question_differ`: over
  complete instances, the fraction of questions whose valid answers differ
  between the two videos.
  """
  inst: dict[int, dict[int, Scored]] = collections.defaultdict(dict)
  for s in scored:
    inst[int(s.item.meta["sample_id"])][int(s.item.meta["role"])] = s
  ok = [[r[k].correct for k in range(4)] if len(r) == 4 else [False] * 4 for r in inst.values()]
  q_ok = [c[0] and c[1] for c in ok] + [c[2] and c[3] for c in ok]
  v_ok = [c[0] and c[2] for c in ok] + [c[1] and c[3] for c in ok]
  full = [r for r in inst.values() if len(r) == 4]
  differ = [
    bool(r[a].extracted) and bool(r[b].extracted) and r[a].extracted != r[b].extracted
    for r in full
    for a, b in ((0, 1), (2, 3))
  ]
  return {
    "acc": _mean(x for c in ok for x in c),
    "q_acc": _mean(q_ok),
    "v_acc": _mean(v_ok),
    "i_acc": _mean(all(c) for c in ok),
    "ours/sensitivity/question_differ": _mean(differ),
    "n_items": len(scored),
    "n_instances": len(ok),
    "n_instances_incomplete": len(ok) - len(full),
  }


def tempcompass(scored: Sequence[Scored]) -> dict[str, float]:
  """TempCompass `print_result`, once per task file (format).

  Per task: `acc/task=T` is the official 'avg' (pooled over the task's questions),
  `acc/task=T/dim=D` the accuracy per temporal aspect, `acc/task=T/fine_dim=F`
  per fine-grained aspect (when the loader found meta_info.json), and
  `match_rate/task=T` the share of outputs the rules matched. There is no official
  number across formats: `ours/acc_pooled` (every question, every format) and
  `ours/acc/dim=D` are ours.
  """
  out: dict[str, float] = {}
  for task, g in _grouped(scored, lambda s: str(s.item.meta["task"])).items():
    out[f"acc/task={task}"] = _mean(s.correct for s in g)
    out |= {k.replace("acc/", f"acc/task={task}/"): v for k, v in accuracy_by(g, "dim").items()}
    fine = [s for s in g if "fine_dim" in s.item.meta]
    if fine:
      out |= {
        k.replace("acc/", f"acc/task={task}/"): v for k, v in accuracy_by(fine, "fine_dim").items()
      }
    out[f"match_rate/task={task}"] = _mean(s.answered for s in g)
  out["ours/acc_pooled"] = _mean(s.correct for s in scored)
  out |= {f"ours/{k}": v for k, v in accuracy_by(scored, "dim").items()}
  out["n_items"] = len(scored)
  return out


def mvbench(scored: Sequence[Scored]) -> dict[str, float]:
  """VideoChat2's `final_res`: per-task accuracy and 'Avg', correct / total over all
  items (not a mean of the tasks); `ours/acc_task_mean` is that mean, ours."""
  per_task = accuracy_by(scored, "task")
  return {
    "acc": _mean(s.correct for s in scored),
    "ours/acc_task_mean": _mean(per_task.values()),
    **per_task,
    "n_items": len(scored),
  }


def _by_field(scored: Sequence[Scored], field: str) -> dict[str, list[Scored]]:
  return _grouped(scored, lambda s: str(s.item.meta[field]))


def _answered_acc(g: Sequence[Scored]) -> float:
  """Video-MME: correct / answered, 0 when nothing was answered (as printed)."""
  answered = [s for s in g if s.answered]
  return float(sum(s.correct for s in answered)) / len(answered) if answered else 0.0


def videomme(scored: Sequence[Scored]) -> dict[str, float]:
  """Video-MME `eval_your_results`: every accuracy is correct / answered items
  (an output with no A-D is left out of numerator and denominator; a group with
  none answered reads 0), overall, per duration, and per domain, sub-category and
  task type, over the whole set and within each duration."""
  out = {"acc": _answered_acc(scored)}
  fields = ("domain", "sub_category", "task_type")
  for d, g in _by_field(scored, "duration").items():
    out[f"acc/duration={d}"] = _answered_acc(g)
    for field in fields:
      for k, h in _by_field(g, field).items():
        out[f"acc/duration={d}/{field}={k}"] = _answered_acc(h)
  for field in fields:
    for k, g in _by_field(scored, field).items():
      out[f"acc/{field}={k}"] = _answered_acc(g)
  out["n_items"] = len(scored)
  out["n_answered"] = sum(s.answered for s in scored)
  return out
