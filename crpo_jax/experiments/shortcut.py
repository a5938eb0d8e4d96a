"""The shortcut experiment: does CRPO beat GRPO on held-out pairs when a static cue lies?

  python -m crpo_jax.experiments.shortcut --out DIR --seeds 0,1,2

Per seed (METHOD.md section 9):
- the world: `train.jsonl`, where with probability `--shortcut` the background
  encodes the original answer; `eval.jsonl`, held-out DyBench-style pairs without
  the cue; `cue.jsonl`, held-out pairs whose background encodes a *wrong* letter;
  `train_nolabels.jsonl`, the training records without `answer_cf` (the paper's
  setting: the counterfactual branch earns format + CRR, and accuracy only on
  Static routes, where y is the answer);
- one SFT warm start on the original branch only (`sft.branches = "orig"`);
- every arm in ARMS from that same checkpoint, with the same RL steps, learning
  rate, prompts per step and data order (the warm start's data iterator state);
- a control (`--control-seed`, one seed): GRPO and CRPO on a world without the
  shortcut, from their own warm start.

Writes DIR/results.json (`summary`: arm -> p_acc_mean, p_acc_per_seed; `runs`:
arm -> seed -> held-out metrics per family, cue following, curves), DIR/results.md
(mean and 95% t-interval across seeds, paired bootstrap of CRPO - GRPO P-Acc over
pairs, exact McNemar on per-pair correctness pooled over seeds) and DIR/*.png.
Runs are cached: a finished arm (its `arm.json`) is not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

# Arm name -> (config overrides, training file). The GRPO baselines never see y_cf;
# "crpo" is the paper's setting (no counterfactual labels).
ARMS: dict[str, tuple[dict[str, Any], str]] = {
  "grpo": ({"algo": "grpo"}, "train.jsonl"),
  "grpo_2g": ({"algo": "grpo", "sampling.num_generations": "2G"}, "train.jsonl"),
  "crpo": ({"algo": "crpo"}, "train_nolabels.jsonl"),
  "crpo_labels": ({"algo": "crpo"}, "train.jsonl"),
  "cf_aug_no_crr": ({"algo": "crpo", "reward.crr_weight": 0.0}, "train.jsonl"),
}
CONTROL_ARMS = ("grpo", "crpo")


# -------------------------------------------------------------------- the world


def make_world(out: str, seed: int, config, shortcut: float) -> dict[str, str]:
  """Writes the four record files and the tokenizer; returns their paths."""
  from crpo_jax.data import synthetic
  from crpo_jax.data import tokenizer as tok_lib
  from crpo_jax.train import setup

  paths = {k: os.path.join(out, f"{k}.jsonl") for k in ("train", "eval", "cue")}
  paths["train_nolabels"] = os.path.join(out, "train_nolabels.jsonl")
  paths["tokenizer"] = os.path.join(out, "tokenizer")
  if os.path.exists(os.path.join(paths["tokenizer"], "tokenizer.json")):
    return paths
  syn, world = config.data.synthetic, setup.synthetic_world(config)
  # Seeds of the three splits never meet: the held-out clips are new scenes.
  synthetic.generate(out, syn.num_train, seed, split="train", shortcut=shortcut, **world)
  synthetic.generate(out, syn.num_eval, seed + 1000, split="eval", pairs=True, **world)
  synthetic.generate(
    out, syn.num_eval, seed + 2000, split="cue", pairs=True, cue_conflict=True, **world
  )
  with open(paths["train"]) as f, open(paths["train_nolabels"], "w") as g:
    for line in f:
      rec = json.loads(line)
      rec.pop("answer_cf")
      g.write(json.dumps(rec) + "\n")
  words = setup._words(paths["train"], paths["eval"], paths["cue"])
  tok_lib.build_word_tokenizer(words, paths["tokenizer"], compact=config.data.compact_vocab)
  return paths


# -------------------------------------------------------------------- runs


def _override(config, key: str, value) -> None:
  node = config
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value


def arm_config(base, world: dict[str, str], overrides: dict[str, Any], train_file: str):
  c = base.copy_and_resolve_references()
  c.data.synthetic.num_train = 0  # the runner writes the world itself
  c.data.synthetic.num_eval = 0
  c.data.train = os.path.join(os.path.dirname(world["train"]), train_file)
  c.data.eval = world["eval"]
  c.data.tokenizer = world["tokenizer"]
  for key, value in overrides.items():
    if value == "2G":
      value = 2 * base.sampling.num_generations
    _override(c, key, value)
  return c


def warm_start(base, world: dict[str, str], workdir: str) -> str:
  """SFT on the original branch only; returns its checkpoint directory."""
  from crpo_jax.train import loop

  ckpts = os.path.join(workdir, "checkpoints")
  if os.path.exists(os.path.join(workdir, "summary.json")):
    return ckpts
  c = arm_config(base, world, {"algo": "grpo"}, "train.jsonl")
  c.sft.branches = "orig"
  c.train_steps = 0
  c.export_at_end = False
  c.async_ckpt = False
  loop.run(c, workdir)
  return ckpts


def heldout(config, hf_dir: str, path: str) -> tuple[dict[str, float], list[dict]]:
  """Metrics and per-item predictions of an exported policy on one held-out file."""
  import jax.numpy as jnp

  from crpo_jax import model as model_lib
  from crpo_jax import sharding
  from crpo_jax.data import tokenizer as tok_lib
  from crpo_jax.train import evaluation
  from crpo_jax.train import learner_rows as rows_lib

  mesh = sharding.make_mesh(dict(config.mesh))
  model = model_lib.load_hf(hf_dir, jnp.float32, mesh=mesh)
  model_def = rows_lib.ModelDef.from_model(model)
  tokenizer = tok_lib.load_tokenizer(config.data.tokenizer)
  c = config.copy_and_resolve_references()
  c.eval_max_examples = 10**9  # every item
  ev = evaluation.Evaluator(c, model_def, tokenizer, path, mesh, sharding.DEFAULT_RULES)
  metrics = ev.run(model_def.template.to_pure_dict())
  return metrics, ev.predictions


def cue_following(predictions: list[dict], path: str) -> float:
  """Fraction of cue-conflict items answered with the letter the background encodes."""
  cue = {}
  with open(path) as f:
    for line in f:
      rec = json.loads(line)
      if rec["cue"] != rec["answer"]:
        cue[rec["id"]] = rec["cue"]
  hits = [p["answer"] == cue[p["id"]] for p in predictions if p["id"] in cue]
  return float(np.mean(hits)) if hits else 0.0


def pair_correct(predictions: list[dict], path: str) -> dict[str, bool]:
  """pair_id -> every member right."""
  pair_of = {}
  with open(path) as f:
    for line in f:
      rec = json.loads(line)
      pair_of[rec["id"]] = rec["pair_id"]
  out: dict[str, bool] = {}
  for p in predictions:
    pid = pair_of[p["id"]]
    out[pid] = out.get(pid, True) and bool(p["correct"])
  return out


def run_arm(base, world, sft_ckpts: str, name: str, workdir: str) -> dict[str, Any]:
  """One RL arm from the shared warm start; cached in workdir/arm.json."""
  from crpo_jax.train import loop

  cached = os.path.join(workdir, "arm.json")
  if os.path.exists(cached):
    with open(cached) as f:
      return json.load(f)
  overrides, train_file = ARMS[name]
  c = arm_config(base, world, overrides, train_file)
  c.async_ckpt = False
  if os.path.exists(workdir):
    shutil.rmtree(workdir)  # an unfinished arm restarts from the warm start
  shutil.copytree(sft_ckpts, os.path.join(workdir, "checkpoints"))
  t0 = time.perf_counter()
  summary = loop.run(c, workdir)
  seconds = time.perf_counter() - t0
  metrics, preds = heldout(c, summary["hf"], world["eval"])
  cue_metrics, cue_preds = heldout(c, summary["hf"], world["cue"])
  curve = {
    int(tag.rsplit("_", 1)[1]) if tag.startswith("rl_step_") else 0: e["p_acc"]
    for tag, e in summary["evals"].items()
    if tag != "after_rl"
  }
  curve[int(c.train_steps)] = metrics["p_acc"]
  history = {
    int(s): {k: v for k, v in m.items() if k.startswith("reward/") or k in ("accuracy", "crr")}
    for s, m in summary["history"].items()
    if s > c.sft.steps
  }
  out = {
    "heldout": metrics,
    "before_rl": summary["evals"].get("before_rl", {}),
    "cue_conflict": {"follows_cue": cue_following(cue_preds, world["cue"]), **cue_metrics},
    "pair_correct": pair_correct(preds, world["eval"]),
    "p_acc_curve": dict(sorted(curve.items())),
    "train_curves": history,
    "train_accuracy_last5": float(
      np.mean([m["accuracy"] for s, m in sorted(history.items())[-5:]]) if history else 0.0
    ),
    "seconds": seconds,
  }
  with open(cached, "w") as f:
    json.dump(out, f, indent=1, default=float)
  return out


# -------------------------------------------------------------------- report


def summarise(runs: dict[str, dict[int, dict]], seeds: Sequence[int]) -> dict[str, Any]:
  from crpo_jax.experiments import stats

  summary = {}
  for arm, by_seed in runs.items():
    per_seed = [by_seed[s]["heldout"]["p_acc"] for s in seeds if s in by_seed]
    if not per_seed:
      continue
    mean, low, high = stats.mean_interval(per_seed)
    summary[arm] = {"p_acc_mean": mean, "p_acc_ci95": [low, high], "p_acc_per_seed": per_seed}
  if "crpo" in runs and "grpo" in runs:
    both = [s for s in seeds if s in runs["crpo"] and s in runs["grpo"]]
    a, b = [], []
    for s in both:
      pc, pg = runs["crpo"][s]["pair_correct"], runs["grpo"][s]["pair_correct"]
      for pid in sorted(pc):
        a.append(float(pc[pid]))
        b.append(float(pg[pid]))
    diff = [summary["crpo"]["p_acc_per_seed"][i] - summary["grpo"]["p_acc_per_seed"][i]
            for i in range(len(both))]  # fmt: skip
    mean, low, high = stats.paired_bootstrap(a, b)
    summary["crpo_minus_grpo"] = {
      "p_acc_diff_mean": float(np.mean(diff)),
      "p_acc_diff_per_seed": diff,
      "bootstrap_ci95_over_pairs": [low, high],
      "mcnemar": stats.mcnemar_exact(np.array(a, bool), np.array(b, bool)),
      "num_pairs": len(a),
    }
  return summary


def _row(name: str, vals: list[float]) -> str:
  from crpo_jax.experiments import stats

  mean, low, high = stats.mean_interval(vals)
  return f"| {name} | {mean:.3f} [{low:.3f}, {high:.3f}] | " + ", ".join(f"{v:.3f}" for v in vals)


def write_markdown(path: str, results: dict[str, Any]) -> None:
  runs, seeds = results["runs"], results["seeds"]
  lines = [
    "# Shortcut experiment",
    "",
    f"Command: `{results['command']}`  ",
    f"Seeds: {seeds}; shortcut {results['shortcut']}; wall time {results['seconds']:.0f} s.",
    "",
  ]
  for metric in ("p_acc", "acc", "sensitivity/dynamic_differ", "sensitivity/static_agree"):
    lines += [
      f"## Held-out {metric} (mean [95% t-interval] | per seed)",
      "",
      "| arm | mean | seeds |",
    ]
    lines += ["|---|---|---|"]
    for arm, by_seed in runs.items():
      vals = [
        by_seed[str(s)]["heldout"].get(metric, float("nan")) for s in seeds if str(s) in by_seed
      ]
      if vals:
        lines.append(_row(arm, vals) + " |")
    lines.append("")
  lines += ["## Shortcut visibility", "", "| arm | train acc (last 5 RL steps) | follows cue |"]
  lines += ["|---|---|---|"]
  for arm, by_seed in runs.items():
    tr = [by_seed[str(s)]["train_accuracy_last5"] for s in seeds if str(s) in by_seed]
    cue = [by_seed[str(s)]["cue_conflict"]["follows_cue"] for s in seeds if str(s) in by_seed]
    if tr:
      lines.append(f"| {arm} | {np.mean(tr):.3f} | {np.mean(cue):.3f} |")
  d = results["summary"].get("crpo_minus_grpo")
  if d:
    m = d["mcnemar"]
    lines += [
      "",
      "## CRPO (paper setting) - GRPO, held-out P-Acc",
      "",
      (
        f"- mean over seeds {d['p_acc_diff_mean']:+.3f}; per seed "
        + ", ".join(f"{v:+.3f}" for v in d["p_acc_diff_per_seed"])
      ),
      (
        f"- paired bootstrap 95% interval over {d['num_pairs']} pairs (pooled): "
        f"[{d['bootstrap_ci95_over_pairs'][0]:+.3f}, {d['bootstrap_ci95_over_pairs'][1]:+.3f}]"
      ),
      f"- exact McNemar: CRPO-only {m['a_only']}, GRPO-only {m['b_only']}, p = {m['p_value']:.4g}",
    ]
  if results.get("control"):
    lines += ["", "## Control: shortcut off (one seed)", ""]
    for arm, r in results["control"].items():
      lines.append(f"- {arm}: held-out P-Acc {r['heldout']['p_acc']:.3f}")
  lines += ["", "Plots: " + ", ".join(results["plots"]), ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))


def write_plots(out: str, results: dict[str, Any]) -> list[str]:
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  runs, seeds = results["runs"], results["seeds"]
  files = []
  fig, ax = plt.subplots(figsize=(6, 4))
  for arm, by_seed in runs.items():
    for i, s in enumerate(seeds):
      r = by_seed.get(str(s))
      if r:
        steps = sorted(r["p_acc_curve"], key=int)
        ax.plot([int(x) for x in steps], [r["p_acc_curve"][x] for x in steps],
                color=f"C{list(runs).index(arm)}", label=arm if i == 0 else None, marker="o")  # fmt: skip
  ax.set(xlabel="RL step", ylabel="held-out P-Acc", title="held-out P-Acc per arm (every seed)")
  ax.legend()
  files.append(os.path.join(out, "p_acc_vs_step.png"))
  fig.savefig(files[-1], dpi=100, bbox_inches="tight")
  plt.close(fig)
  terms = sorted({k for by_seed in runs.values() for r in by_seed.values()
                  for m in r["train_curves"].values() for k in m if k.startswith("reward/")})  # fmt: skip
  if terms:
    fig, axes = plt.subplots(len(terms), 1, figsize=(6, 2.2 * len(terms)), squeeze=False)
    for ax, term in zip(axes[:, 0], terms):
      for arm, by_seed in runs.items():
        r = by_seed.get(str(seeds[0]))
        if r and any(term in m for m in r["train_curves"].values()):
          steps = sorted(r["train_curves"], key=int)
          ax.plot([int(x) for x in steps], [r["train_curves"][x].get(term, np.nan) for x in steps],
                  label=arm, color=f"C{list(runs).index(arm)}")  # fmt: skip
      ax.set_title(f"{term} (seed {seeds[0]})", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    axes[-1, 0].set_xlabel("global step")
    files.append(os.path.join(out, "reward_terms.png"))
    fig.savefig(files[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
  return files


# -------------------------------------------------------------------- main


def load_config(path: str, arg: str):
  """`get_config(arg)` of a config file, as `--config=path:arg` would give."""
  import importlib.util

  if not os.path.exists(path):
    raise FileNotFoundError(f"--config {path}: no such file")
  spec = importlib.util.spec_from_file_location("_shortcut_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def run(
  out: str,
  seeds: Sequence[int],
  *,
  config_path: str,
  config_arg: str,
  shortcut: float,
  control_seed: int | None,
  arms: Sequence[str],
  command: str,
) -> dict[str, Any]:
  import jax

  os.makedirs(out, exist_ok=True)
  # Persistent compilation cache: every arm and seed reuses the same compiled steps.
  jax.config.update("jax_compilation_cache_dir", os.path.join(out, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  t0 = time.perf_counter()
  runs: dict[str, dict[str, Any]] = {a: {} for a in arms}
  control: dict[str, Any] = {}
  for seed in seeds:
    base = load_config(config_path, config_arg)
    base.seed = seed
    root = os.path.join(out, f"seed_{seed}")
    world = make_world(os.path.join(root, "world"), seed, base, shortcut)
    sft = warm_start(base, world, os.path.join(root, "sft"))
    for arm in arms:
      runs[arm][str(seed)] = run_arm(base, world, sft, arm, os.path.join(root, arm))
    if seed == control_seed:
      croot = os.path.join(out, f"control_seed_{seed}")
      cworld = make_world(os.path.join(croot, "world"), seed, base, 0.0)
      csft = warm_start(base, cworld, os.path.join(croot, "sft"))
      for arm in CONTROL_ARMS:
        control[arm] = run_arm(base, cworld, csft, arm, os.path.join(croot, arm))
  results = {
    "command": command,
    "seeds": list(seeds),
    "shortcut": shortcut,
    "config": config_path + (f":{config_arg}" if config_arg else ""),
    "runs": runs,
    "control": control,
    "seconds": time.perf_counter() - t0,
  }
  results["summary"] = summarise(
    {a: {int(s): r for s, r in v.items()} for a, v in runs.items()}, seeds
  )
  if control:
    results["summary"]["control"] = {a: r["heldout"]["p_acc"] for a, r in control.items()}
  results["plots"] = write_plots(out, results)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=1, default=float)
  write_markdown(os.path.join(out, "results.md"), results)
  return results


def plan_lines(out: str, seeds, config_path: str, config_arg: str, arms) -> list[str]:
  """What `run` would train, one line per arm, from the configs `run` would build."""
  base = load_config(config_path, config_arg)
  world = {k: os.path.join(out, "seed_S", "world", f) for k, f in
           (("train", "train.jsonl"), ("eval", "eval.jsonl"), ("tokenizer", "tokenizer"))}  # fmt: skip
  lines = [f"dry run: seeds {list(seeds)}, {len(arms)} arms from one SFT warm start per seed"]
  for arm in arms:
    overrides, train_file = ARMS[arm]
    c = arm_config(base, world, overrides, train_file)
    lines.append(
      f"  {arm}: algo={c.algo} data={train_file} steps={c.train_steps} lr={c.optim.lr}"
      f" prompts/step={c.batch.prompts} G={c.sampling.num_generations}"
    )
  return lines


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m crpo_jax.experiments.shortcut",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--out", required=True, help="output directory (finished arms are reused)")
  p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  p.add_argument("--config", default="configs/demo.py", help="base config file")
  p.add_argument("--config-arg", default="", help="the config's ':arg' (e.g. 'test')")
  p.add_argument("--shortcut", type=float, default=0.9, help="P(background encodes y), train")
  p.add_argument("--control-seed", type=int, default=0, help="seed of the no-shortcut control")
  p.add_argument("--no-control", action="store_true", help="skip the control")
  p.add_argument("--arms", default=",".join(ARMS), help=f"subset of {list(ARMS)}")
  p.add_argument(
    "--dry-run",
    action="store_true",
    help="build every arm's config (unknown fields fail), print the plan, write nothing",
  )
  a = p.parse_args(argv)
  arms = [x for x in a.arms.split(",") if x]
  unknown = [x for x in arms if x not in ARMS]
  if unknown:
    p.error(f"--arms: unknown {unknown}; known {list(ARMS)}")
  seeds = [int(s) for s in a.seeds.split(",") if s]
  if a.dry_run:
    for line in plan_lines(a.out, seeds, a.config, a.config_arg, arms):
      print(line)
    return 0
  res = run(
    a.out,
    seeds,
    config_path=a.config,
    config_arg=a.config_arg,
    shortcut=a.shortcut,
    control_seed=None if a.no_control else a.control_seed,
    arms=arms,
    command="python -m crpo_jax.experiments.shortcut " + " ".join(argv or sys.argv[1:]),
  )
  with open(os.path.join(a.out, "results.md")) as f:
    print(f.read())
  return 0 if res["summary"] else 1


if __name__ == "__main__":
  sys.exit(main())
