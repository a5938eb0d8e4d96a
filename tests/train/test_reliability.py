"""A long run survives: preflight, resume guard, non-finite steps, signals, kill -9.

The loop-level tests share one small CRPO run (`_config`: 2 SFT + 4 RL steps, a
checkpoint every 2 steps, an evaluation every 2 RL steps) and one persistent XLA
compilation cache, so the relaunched processes compile nothing new. Faults are
injected deterministically through `crpo_jax.train.faults`' environment variables.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import demo
from crpo_jax.train import checkpoint as ckpt_lib
from crpo_jax.train import loop, setup
from crpo_jax.train import state as state_lib
from tests.train.run_metrics import assert_same_metrics, read_metrics, scales

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Overrides of configs/demo.py:test, as flags (subprocesses) and as a config (in-process).
OVERRIDES = {"sft.steps": 2, "train_steps": 4, "ckpt_every": 2, "eval_every": 2}


def _config(**extra):
  c = demo.get_config("test")
  c.update_from_flattened_dict({**OVERRIDES, **extra})
  return c


# ---------------------------------------------------------------- fast: no compilation


def _user_data_config(tmp_path, **extra):
  """A config reading user files (no synthetic world) from a generated world."""
  from crpo_jax.data import synthetic

  world = tmp_path / "world"
  train = synthetic.generate(str(world), 2, seed=0)
  c = _config(**{"data.synthetic.num_train": 0, "data.synthetic.num_eval": 0,
                 "data.train": train, **extra})  # fmt: skip
  return c, train


def test_preflight_names_the_bad_path(tmp_path):
  c, train = _user_data_config(tmp_path)
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(setup.PreflightError, match=f"--workdir {blocker}/run: not writable"):
    loop.run(c, str(blocker / "run"))
  missing = str(tmp_path / "missing.jsonl")
  with pytest.raises(setup.PreflightError, match=f"config.data.train={missing}: file not found"):
    loop.run(_user_data_config(tmp_path, **{"data.train": missing})[0], str(tmp_path / "w"))
  routeless = tmp_path / "routeless.jsonl"
  with open(train) as f:
    recs = [json.loads(line) for line in f]
  routeless.write_text(
    "".join(json.dumps({k: v for k, v in r.items() if k != "route"}) + "\n" for r in recs)
  )
  c2 = _user_data_config(tmp_path, **{"data.train": str(routeless)})[0]
  with pytest.raises(setup.PreflightError, match=r"none of the first 2 records.*no_route x2.*"
                     r"crpo_jax.data.validate"):  # fmt: skip
    loop.run(c2, str(tmp_path / "w"))
  c3 = _user_data_config(tmp_path, **{"data.video_root": str(tmp_path / "nowhere")})[0]
  with pytest.raises(setup.PreflightError, match=r"missing_video x2"):
    loop.run(c3, str(tmp_path / "w"))
  c4 = _user_data_config(tmp_path, **{"data.eval": str(tmp_path / "no_eval.jsonl")})[0]
  with pytest.raises(setup.PreflightError, match="config.data.eval=.*no_eval.jsonl: file not"):
    loop.run(c4, str(tmp_path / "w"))
  bad_tok = tmp_path / "tok"
  bad_tok.mkdir()
  c5 = _user_data_config(tmp_path, **{"data.tokenizer": str(bad_tok)})[0]
  with pytest.raises(setup.PreflightError, match=f"config.data.tokenizer={bad_tok}: the tok"):
    loop.run(c5, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "checkpoints")  # nothing started


def _fake_checkpoint(workdir, config):
  """A workdir as a run leaves it: config.json and one finalized checkpoint step."""
  from crpo_jax.model.config import get_preset

  setup.write_run_files(str(workdir), config, get_preset("tiny"), str(workdir))
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  state = state_lib.TrainState(
    step=np.int32(1), params={"w": np.zeros(2)}, opt_state={"m": np.zeros(2)},
    rng=np.zeros(2, np.uint32),
  )  # fmt: skip
  ckpt.save(1, state)
  ckpt.close()


def test_resume_guard_refuses_a_changed_training_config(tmp_path):
  workdir = tmp_path / "run"
  _fake_checkpoint(workdir, _config())
  changed = _config(algo="grpo", **{"loss.beta": 0.0})
  with pytest.raises(setup.ResumeConfigError) as err:
    loop.run(changed, str(workdir))
  msg = str(err.value)
  assert "algo: 'crpo' -> 'grpo'" in msg and "loss.beta: 0.04 -> 0.0" in msg
  assert "allow_config_change" in msg and "train_steps" not in msg
  # Harmless changes pass; so does a changed config with the explicit override.
  setup.check_resume(str(workdir), _config(train_steps=9, log_every=3, ckpt_every=5))
  setup.check_resume(str(workdir), _config(algo="grpo", allow_config_change=True))
  # config.json keeps every launch.
  setup.write_run_files(str(workdir), changed, _tiny(), str(workdir))
  with open(workdir / "config.json") as f:
    saved = json.load(f)
  assert saved["algo"] == "grpo"
  assert [h["config"]["algo"] for h in saved[setup.LAUNCHES_KEY]] == ["crpo", "grpo"]


def _tiny():
  from crpo_jax.model.config import get_preset

  return get_preset("tiny")


# ---------------------------------------------------------------- the loop, in-process


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  cache = jax.config.jax_compilation_cache_dir
  path = str(tmp_path_factory.mktemp("xla_cache"))
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  yield path
  jax.config.update("jax_compilation_cache_dir", cache)


@pytest.fixture(scope="module")
def reference(cache_dir, tmp_path_factory):
  """The uninterrupted run: per-step metrics and the final summary."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  return loop.run(_config(), workdir)


@pytest.fixture(scope="module")
def uninterrupted(cache_dir, tmp_path_factory):
  """The uninterrupted run as the same command in its own process: {step: metrics}
  and the summary's evals. Interrupted-and-resumed processes are compared with it,
  not with the in-process `reference`: an in-process run and a subprocess once
  differed by rounding (kl at step 6: 1.0e-8 on 6.4e-4, relative 1.6e-5; earlier
  grad_norm at 5e-4 relative), while every resumed subprocess has matched an
  uninterrupted one at rtol 1e-6."""
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  out = _launch(workdir, cache_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "summary.json")) as f:
    evals = json.load(f)["evals"]
  return {m["step"]: m for m in read_metrics(workdir)}, evals


def _launch(workdir, cache_dir, env=None, extra=()) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "crpo_jax.main", "--config=configs/demo.py:test",
         f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in OVERRIDES.items()), *extra]  # fmt: skip
  full_env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache_dir,
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5", **(env or {})}  # fmt: skip
  return subprocess.run(
    cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600, check=False
  )


def test_nonfinite_steps_are_skipped_then_stop_the_run(reference, tmp_path, monkeypatch):
  """RL steps 3 and 4 get a NaN in one micro-batch: step 3 is skipped (parameters and
  moments unchanged, logged and counted), step 4 is the second in a row and stops the
  run with max_nonfinite_steps=2; the last checkpoint (step 2) is kept whole."""
  monkeypatch.setenv("CRPO_NAN_AT", "3,4")
  workdir = str(tmp_path / "nan")
  with pytest.raises(loop.NonFiniteError, match=r"2 updates in a row \(steps 3..4\).*step 2"):
    loop.run(_config(max_nonfinite_steps=2), workdir)
  rows = {m["step"]: m for m in read_metrics(workdir)}
  assert sorted(rows) == [1, 2, 3]  # step 4 raised before its metrics were written
  assert rows[3]["skipped_updates"] == 1 and not np.isfinite(rows[3]["loss"])
  assert_same_metrics(rows[2], reference["history"][2], 2, scales(reference["history"]))
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.all_steps() == [2]
  ckpt.close()


# ---------------------------------------------------------------- processes: signals, kill -9


def test_signals_save_and_exit_with_the_preemption_code(uninterrupted, cache_dir, tmp_path):
  """Two phases. RL step: SIGINT saves that step and exits 75. Evaluation (no safe
  point before the grace time runs out): SIGTERM exits 75 within preempt_grace_s
  without saving, and the rerun resumes from the last checkpoint and finishes."""
  workdir = str(tmp_path / "sig")
  rl = _launch(workdir, cache_dir, {"CRPO_SIGNAL_AT": "rollout@3:SIGINT"})
  assert rl.returncode == ckpt_lib.PREEMPTED_EXIT_CODE, rl.stderr[-3000:]
  assert "received SIGINT" in rl.stderr and "preempted: saved step 3" in rl.stdout
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.latest_step() == 3
  ckpt.close()
  # rl_step_2's evaluation runs after step 4, before its checkpoint; it takes longer
  # than a 0.1 s grace (loading the clips alone does).
  ev = _launch(workdir, cache_dir, {"CRPO_SIGNAL_AT": "eval@4:SIGTERM"},
               ["--config.preempt_grace_s=0.1"])  # fmt: skip
  assert ev.returncode == ckpt_lib.PREEMPTED_EXIT_CODE, ev.stderr[-3000:]
  assert "received SIGTERM" in ev.stderr and "no safe point within 0.1 s" in ev.stderr
  done = _launch(workdir, cache_dir)
  assert done.returncode == 0, done.stderr[-3000:]
  assert re.search(r"resumed from \S+ at step 3", done.stdout), done.stdout
  want, _ = uninterrupted
  for m in read_metrics(workdir):
    assert_same_metrics(m, want[m["step"]], m["step"], scales(want))


# (kill point, global step): the rollout of step 3, the update of step 4, the
# evaluation after step 4, the asynchronous save of step 4, the export after step 6.
KILLS = [("rollout", 3), ("update", 4), ("eval", 4), ("checkpoint", 4), ("export", 6)]


@pytest.mark.slow
def test_kill_9_anywhere_resumes_exactly(uninterrupted, cache_dir, tmp_path):
  """SIGKILL at five points of one workdir, each rerun of the same command resuming:
  from the last complete checkpoint (never a half-written one), at most one
  checkpoint interval back, with the uninterrupted run's metrics (rtol 1e-6)."""
  want, want_evals = uninterrupted
  workdir = str(tmp_path / "kill")
  every = OVERRIDES["ckpt_every"]
  ckpt_dir = os.path.join(workdir, "checkpoints")
  half_written = None
  for point, step in KILLS:
    before = ckpt_lib.Checkpointer.has_checkpoint(ckpt_dir)
    out = _launch(workdir, cache_dir, {"CRPO_KILL_AT": f"{point}@{step}"})
    assert out.returncode == -9, (point, out.returncode, out.stderr[-3000:])
    assert f"killing the process at {point}@{step}" in out.stdout
    resumed = re.search(r"resumed from \S+ at step (\d+)", out.stdout)
    assert bool(resumed) == before, out.stdout
    if half_written is not None and resumed:  # the killed save is not what resumed
      assert int(resumed.group(1)) == 2, out.stdout
      half_written = None
    if point == "checkpoint":
      names = os.listdir(ckpt_dir)
      if any(n.startswith(f"{step}.") and "tmp" in n for n in names):
        half_written = step  # killed before Orbax finalized it
  final = _launch(workdir, cache_dir)
  assert final.returncode == 0, final.stderr[-3000:]
  assert "at step 6" in final.stdout  # the export kill came after the last checkpoint
  rows = read_metrics(workdir)
  assert sorted({m["step"] for m in rows}) == sorted(want) == list(range(1, 7))
  for m in rows:  # every step, each time it was computed, equals the uninterrupted run
    assert_same_metrics(m, want[m["step"]], m["step"], scales(want))
  # Work lost per kill: the steps computed again after it, at most one interval.
  steps = [m["step"] for m in rows]
  restarts = [i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]]
  for i in restarts:
    assert steps[i - 1] - steps[i] + 1 <= every, steps
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  assert summary["evals"] == want_evals
  assert os.path.exists(os.path.join(workdir, "hf", "tokenizer.json"))
