"""The training run: data, model, SFT warm start, RL steps, eval, checkpoints, export.

`run(config, workdir)` is what `python -m crpo_jax.main` calls. Layout of workdir:
  data/          the synthetic world and word tokenizer (when the config asks for them)
  checkpoints/   Orbax steps (state, data iterator, loop meta)
  reference/     the frozen reference parameters (beta > 0), written once when RL starts
  tensorboard/   event files (`tensorboard --logdir workdir/tensorboard`)
  hf/            the final policy as a transformers directory (export_at_end)
  config.json    this launch's config, and every launch's under `launch_history`
  metrics.jsonl  one line per computed step (a resumed run appends the steps it redoes)
  rollouts/      step_N.jsonl: `log_rollouts` prompts' rollouts per logged RL step
  logs/          library and INFO log lines (crpo_jax/console.py; main.py sets it up)

Steps are counted globally: 1..sft.steps are the warm start, the next train_steps
are RL. A checkpoint records its phase, so a resumed run continues where it
stopped, with the same data, sampling keys and metrics.

Before anything is generated or compiled, `setup.preflight` checks the workdir, the
data files and the tokenizer, and `setup.check_resume` refuses to resume under a
config that changes what was trained. A step whose loss or gradients are not finite
is skipped (train/optimizer.py); `max_nonfinite_steps` of them in a row stop the
run. SIGTERM / SIGINT save at the next step boundary and end the run as
"preempted" (`checkpoint.PreemptionWatcher`; main.py exits 75).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from crpo_jax import console, sharding
from crpo_jax.train import batch_sizes, evaluation, faults, setup
from crpo_jax.train import checkpoint as ckpt_lib
from crpo_jax.train import learner as learner_lib
from crpo_jax.train import learner_rows as rows_lib
from crpo_jax.train import metrics as metrics_lib
from crpo_jax.train import optimizer as optim_lib
from crpo_jax.train import progress as progress_lib
from crpo_jax.train import reward_metrics as reward_lib
from crpo_jax.train import sft as sft_lib
from crpo_jax.train import state as state_lib


def _say(msg: str) -> None:
  """Plain stdout for the demo's headline lines (process 0 only)."""
  if jax.process_index() == 0:
    print(msg, flush=True)


class NonFiniteError(RuntimeError):
  """Too many updates in a row had a non-finite loss or gradients (all were skipped)."""


def _append_metrics(path: str, step: int, metrics: dict[str, float]) -> None:
  """One JSON line per step; a resumed run appends the steps it recomputes again."""
  with open(path, "a") as f:
    f.write(json.dumps({"step": step, **metrics}, default=float) + "\n")


def run(
  config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> dict[str, Any]:
  """Trains as the config says; returns a summary (evals, paths, per-step metrics).

  Args:
    config: experiment config (configs/common.py).
    workdir: output directory; an existing checkpoint there is resumed.
    stop_after: behave as if preempted once this global step is done (tests).

  Raises:
    setup.PreflightError: an unwritable workdir, unusable data files or tokenizer.
    setup.ResumeConfigError: the workdir was trained under a config that differs in
      what is trained (and `allow_config_change` is off).
    pipeline.BadDataError: the input pipeline skips every record.
    NonFiniteError: `max_nonfinite_steps` updates in a row were non-finite.
  """
  workdir = setup.local_workdir(workdir)
  paths = {k: os.path.join(workdir, k) for k in ("data", "checkpoints", "tensorboard", "hf")}
  # First, so that a signal in any phase (data generation and compilation included)
  # ends the process within `preempt_grace_s` (checkpoint.PreemptionWatcher).
  watcher = ckpt_lib.PreemptionWatcher(grace_s=config.preempt_grace_s)
  opened: list[ckpt_lib.Checkpointer] = []  # filled by _train
  try:
    setup.preflight(config, workdir)
    if ckpt_lib.Checkpointer.has_checkpoint(paths["checkpoints"]):
      setup.check_resume(workdir, config)
    if watcher.stop_requested:
      return _stopped_early(paths, "before any work")
    return _train(config, workdir, paths, watcher, stop_after, opened)
  finally:
    for ckpt in opened:
      ckpt.close()  # commits any save in flight: the last good checkpoint is whole
    watcher.restore_handlers()


def _stopped_early(paths, when: str) -> dict[str, Any]:
  _say(f"preempted {when}: nothing new to save; rerun the command to resume")
  return {"status": "preempted", "step": None, "evals": {}, "last": {}, "history": {}, **paths}


def _train(config, workdir, paths, watcher, stop_after, opened) -> dict[str, Any]:
  """The body of `run`, once the start-up checks passed; appends its Checkpointer."""
  mesh = sharding.make_mesh(dict(config.mesh))
  rules = sharding.DEFAULT_RULES
  batch_sizes.check_batch_sizes(config, mesh, rules)
  data = setup.prepare_data(config, paths["data"])
  sharding.open_communicators(mesh)  # the processes are in step after the data barrier
  for line in setup.describe_inputs(config, data):
    _say(line)
  if watcher.stop_requested:
    return _stopped_early(paths, "after data preparation")
  model = setup.build_model(config, mesh)
  model_def = rows_lib.ModelDef.from_model(model)
  del model
  tokenizer = data.tokenizer
  if jax.process_index() == 0:
    setup.write_run_files(workdir, config, model_def.config, data.tokenizer_dir)
  metrics_path = os.path.join(workdir, "metrics.jsonl")

  sft_steps, rl_steps = int(config.sft.steps), int(config.train_steps)
  total = sft_steps + rl_steps
  clip = config.optim.max_grad_norm
  sft_tx, _ = optim_lib.make_optimizer(
    config.sft.lr, max(sft_steps, 1), warmup_steps=config.sft.warmup_steps, max_grad_norm=clip
  )
  rl_tx, rl_lr = optim_lib.optimizer_from_config(config.optim, max(rl_steps, 1))
  state, shardings = state_lib.create_train_state(
    model_def.template, sft_tx if sft_steps else rl_tx, config.seed, mesh, rules
  )
  sft = sft_lib.SFT(config, model_def, tokenizer, sft_tx, shardings, mesh, rules)
  learner = learner_lib.Learner(config, model_def, tokenizer, rl_tx, shardings, mesh, rules)
  evaluator = evaluation.Evaluator(config, model_def, tokenizer, data.eval_path, mesh, rules)
  loader = data.train_loader()

  ckpt = ckpt_lib.Checkpointer(
    paths["checkpoints"], max_to_keep=config.keep_ckpts, async_save=config.async_ckpt
  )
  opened.append(ckpt)
  meta: dict[str, Any] = {"phase": "sft" if sft_steps else "rl", "evals": {}}
  ref = None
  step = 0
  if ckpt.latest_step() is not None:
    state, ref, data_state, meta = ckpt.restore(
      state,
      shardings,
      target_ref=jax.eval_shape(model_def.in_compute_dtype, state.params),
      ref_shardings=shardings.params,
    )
    loader.set_state(data_state)
    step = int(state.step)
    _say(f"resumed from {paths['checkpoints']} at step {step} ({meta['phase']})")
  writer = metrics_lib.create_writer(paths["tensorboard"])
  if step == 0:
    writer.write_hparams(metrics_lib.flat_config(config))

  saved = {"step": ckpt.latest_step(), "time": time.monotonic()}

  def save(step_now):
    if saved["step"] == step_now:  # e.g. a preemption right after a periodic save
      return
    ckpt.save(step_now, state, data_state=loader.get_state(), meta=meta)
    saved.update(step=step_now, time=time.monotonic())
    faults.at("checkpoint", step_now)

  def save_due(step_now) -> bool:
    """The step cadence, or `ckpt_every_s` since the last save (agreed by all hosts)."""
    if step_now % config.ckpt_every == 0 or step_now == total:
      return True
    if config.ckpt_every_s <= 0:
      return False
    return ckpt_lib.any_process(time.monotonic() - saved["time"] >= config.ckpt_every_s)[0]

  def do_eval(tag: str):
    faults.at("eval", step)
    result = evaluator.run(state.params)
    meta["evals"][tag] = result
    metrics_lib.log_scalars(writer, step, metrics_lib.to_scalars(result, "eval/"))
    _say(
      f"[eval {tag}] step {step}: Acc {result['acc']:.3f}  P-Acc {result['p_acc']:.3f}  "
      + "  ".join(f"{k} {v:.3f}" for k, v in result.items() if k.startswith("sensitivity"))
      + f"\n  valid answers {result['valid_answer']:.2f}; sample: {evaluator.last_sample!r}"
    )
    writer.write_texts(step, {f"eval/sample_{tag}": evaluator.last_sample})

  def preempt(step_now) -> None:
    save(step_now)
    ckpt.wait()
    _say(
      f"preempted: saved step {step_now} to {paths['checkpoints']}; exiting with code "
      f"{ckpt_lib.PREEMPTED_EXIT_CODE}; rerun the command to resume"
    )

  last: dict[str, float] = {}
  history: dict[int, dict[str, float]] = {}
  status = "finished"

  def phase_progress():
    if meta["phase"] == "sft":
      return progress_lib.Progress(
        "sft", sft_steps, start=step, every=config.log_every, printer=_say
      )
    return progress_lib.Progress(
      "rl", rl_steps, start=step - sft_steps, every=config.log_every, printer=_say
    )

  prog = phase_progress()
  if step < total and watcher.should_stop(step):  # a signal during set-up or compilation
    preempt(step)
    status = "preempted"
  while step < total and status == "finished":
    if meta["phase"] == "sft" and step >= sft_steps:
      # Warm start done: the RL phase gets a fresh optimiser; the reference model
      # is the policy RL starts from (METHOD.md section 6).
      state = state_lib.reset_optimizer(state, rl_tx, shardings)
      ref = None
      meta["phase"] = "rl"
      prog = phase_progress()
    if meta["phase"] == "rl" and learner.use_ref and ref is None:
      # In the compute dtype, as every forward uses it; a copy (the state is donated).
      ref = jax.tree.map(jnp.copy, model_def.in_compute_dtype(state.params))
      ckpt.save_reference(ref)  # once: it never changes
    if meta["phase"] == "rl" and "before_rl" not in meta["evals"] and evaluator.enabled:
      do_eval("before_rl")
    batch = next(loader)
    t0 = time.perf_counter()
    if meta["phase"] == "sft":
      state, last = sft.step(state, batch)
      prefix = "sft/"
    else:
      state, last = learner.step(state, batch, ref, step)
      last["lr"] = float(rl_lr(step - sft_steps))
      prefix = "train/"
    step += 1
    last["step_time"] = time.perf_counter() - t0
    in_a_row, last["skipped_updates"] = optim_lib.skip_counts(state.opt_state)
    if in_a_row:
      ids = [str(i) for i in batch.get("id", [])]
      logging.warning(
        "step %d (%s): non-finite loss %s / grad_norm %s: update skipped, parameters and "
        "optimiser state unchanged (%d in a row, %d this phase); batch ids %s",
        step, meta["phase"], last.get("loss"), last.get("grad_norm"), in_a_row,
        last["skipped_updates"], ids,
      )  # fmt: skip
      if in_a_row >= config.max_nonfinite_steps:
        raise NonFiniteError(
          f"{in_a_row} updates in a row (steps {step - in_a_row + 1}..{step}) had a non-finite "
          f"loss or gradients and were skipped (max_nonfinite_steps="
          f"{config.max_nonfinite_steps}); stopping. The last good checkpoint, step "
          f"{saved['step']}, is kept in {paths['checkpoints']}; last batch ids {ids}"
        )
    history[step] = dict(last)
    if jax.process_index() == 0:
      _append_metrics(metrics_path, step, last)
    if step % config.log_every == 0 or step == total:
      metrics_lib.log_scalars(writer, step, metrics_lib.to_scalars(last, prefix))
      if meta["phase"] == "rl" and config.log_rollouts and jax.process_index() == 0:
        reward_lib.write_rollouts(workdir, step, learner.last_rollouts)
    done = step if meta["phase"] == "sft" else step - sft_steps
    prog.update(done, console.key_metrics(last, meta["phase"]))
    rl_done = step - sft_steps
    periodic = config.eval_every and rl_done % config.eval_every == 0 and rl_done < rl_steps
    if meta["phase"] == "rl" and periodic and evaluator.enabled:
      do_eval(f"rl_step_{rl_done}")
    if step == total and evaluator.enabled:
      if meta["phase"] == "rl" and "before_rl" not in meta["evals"]:
        do_eval("before_rl")
      do_eval("after_rl")
    if save_due(step):
      save(step)
    if step == stop_after:
      watcher.trigger()
    if step < total and watcher.should_stop(step):
      preempt(step)
      status = "preempted"
  ckpt.wait()
  writer.flush()
  exported = None
  if status == "finished" and config.export_at_end:
    exported = setup.export_hf(model_def, state.params, tokenizer, paths["hf"], step)
  summary = {"status": status, "step": step, "evals": meta["evals"], "last": last, **paths}
  summary["hf"] = exported
  _say(_summary_text(summary))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=1, default=float)
  summary["history"] = history
  logging.info("run %s at step %d", status, step)
  return summary


def _summary_text(s: dict[str, Any]) -> str:
  lines = [f"== crpo_jax run {s['status']} at step {s['step']} =="]
  for tag in ("before_rl", "after_rl"):
    if tag in s["evals"]:
      e = s["evals"][tag]
      lines.append(f"held-out {tag:9s}: Acc {e['acc']:.3f}  P-Acc {e['p_acc']:.3f}")
  lines.append(f"TensorBoard logs: {s['tensorboard']}  (tensorboard --logdir {s['tensorboard']})")
  lines.append(f"checkpoints:      {s['checkpoints']}")
  if s.get("hf"):
    lines.append(f"HF export:        {s['hf']}")
  return "\n".join(lines)
