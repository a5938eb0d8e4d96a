"""Periodic held-out evaluation: greedy answers, then DyBench's Acc / P-Acc / sensitivity.

The held-out file holds DyBench-style pairs (the synthetic world's `--pairs`: an
original clip and its transformed clip sharing a `pair_id`). Every item is answered
greedily on its own video; `crpo_jax.eval.metrics.dybench` turns the answers into
Acc, P-Acc and the sensitivity diagnostic (METHOD.md section 8). Every metric is
kept per category too: `acc/category=<family>` and `p_acc/category=<family>` (the
record's `category`, e.g. the synthetic family), `acc/route=<route>`, and the
sensitivity per category (`sensitivity/dynamic_differ/category=<family>`), so static
and dynamic accuracy can be told apart. `predictions` keeps each item's answer for
callers that score more (e.g. cue following on a cue-conflict split).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from crpo_jax import sharding
from crpo_jax.data import records as records_lib
from crpo_jax.data import transforms
from crpo_jax.eval import items as items_lib
from crpo_jax.eval import metrics as eval_metrics
from crpo_jax.rl import rewards as rewards_lib
from crpo_jax.rl import sampler as sampler_lib
from crpo_jax.train import learner_rows as rows_lib
from crpo_jax.train import setup


class Evaluator:
  """Greedy decoding over a held-out record file, at most `eval_max_examples` items."""

  def __init__(
    self, config: ml_collections.ConfigDict, model_def, tokenizer, path: str, mesh, rules
  ):
    self.config, self.model_def, self.tokenizer, self.path = config, model_def, tokenizer, path
    self.mesh, self.rules = mesh, tuple(rules)
    self.enabled = bool(path)
    self.last_sample = ""  # the first held-out completion of the last run, for logs
    self.predictions: list[dict[str, str | bool]] = []  # the last run's answer per item
    self._category = {}
    if path:  # the batches carry the route, not the record's free-text category
      self._category = {ex.id: ex.category or "" for ex in records_lib.read_records(path)}
    self._sampler = model_def.sampler(
      sampler_lib.SamplingConfig(
        max_new_tokens=config.eval_max_new_tokens,
        num_samples=1,
        temperature=0.0,
        eos_ids=model_def.eos_ids,
        pad_id=model_def.pad_id,
        cache_dtype=config.sampling.cache_dtype,
      ),
      mesh,
      rules,
    )

  def run(self, params) -> dict[str, float]:
    """Acc, P-Acc, sensitivity and answer validity of the current parameters."""
    loader = setup.make_loader(
      self.config, self.path, self.tokenizer, self.model_def.pad_id, train=False
    )
    state = self.model_def.sampler_state(self.model_def.in_compute_dtype(params))
    scored, valid_answers = [], []
    try:
      for batch in loader:
        n = len(batch["route"])
        videos = rows_lib.split_videos(batch["orig"], n)
        self.model_def.check_videos(videos[1])
        inputs = rows_lib.stack_prompts(batch["orig"], [videos])
        with sharding.use_mesh(self.mesh, self.rules):
          gen = self._sampler(state, inputs, jax.random.key(0))
        gen = sharding.host_get(gen)
        for i in np.flatnonzero(batch["valid"]):
          text = rows_lib.decode(self.tokenizer, np.asarray(gen.tokens[i]), int(gen.lengths[i]))
          letter = rewards_lib.extract_letter(text, int(batch["num_options"][i]))
          route = transforms.ROUTES[int(batch["route"][i])]
          item = items_lib.EvalItem(
            id=str(batch["id"][i]),
            video="",
            question="",
            options=(),
            answer=str(batch["answer_letter"][i]),
            fmt="mcq",
            meta={
              "pair_id": str(batch["pair_id"][i]),
              "route": route,
              "category": self._category.get(str(batch["id"][i])) or route,
            },
          )
          scored.append(eval_metrics.Scored(item, letter or "", letter == item.answer))
          if len(scored) == 1:
            self.last_sample = text
          valid_answers.append(letter is not None)
        if len(scored) >= self.config.eval_max_examples:
          break
    finally:
      loader.close()
    self.predictions = [
      {"id": s.item.id, "answer": s.extracted, "correct": bool(s.correct)} for s in scored
    ]
    return summarise(scored, valid_answers)


def summarise(scored: list[eval_metrics.Scored], valid_answers: list[bool]) -> dict[str, float]:
  """DyBench metrics overall, per category and per route, plus answer validity."""
  out = {k: float(v) for k, v in eval_metrics.dybench(scored).items()}
  out |= eval_metrics.accuracy_by(scored, "route")
  groups: dict[str, list] = {}
  for s in scored:
    groups.setdefault(str(s.item.meta["category"]), []).append(s)
  for cat, members in sorted(groups.items()):
    for k, v in eval_metrics.dybench(members).items():
      if k.startswith("sensitivity/"):
        out[f"{k}/category={cat}"] = float(v)
  out["valid_answer"] = float(np.mean(valid_answers)) if valid_answers else 0.0
  return out
