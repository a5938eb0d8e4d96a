"""The whole run: the shortened CPU demo, resume-equals-uninterrupted, and export.

One uninterrupted run of `configs/demo.py:test` (module fixture) serves all three
tests: it is the demo, the reference for the resumed run, and the export source.
"""

import os

import jax
import numpy as np
import pytest
import torch
import transformers

from configs import demo
from crpo_jax import export
from crpo_jax.train import loop
from tests.model import hf_reference as R
from tests.tolerance import assert_close

# Timings differ between runs; everything else must not.
_NONDETERMINISTIC = ("step_time", "time_sample", "time_update", "rollout_tokens_per_s")


def _config():
  c = demo.get_config("test")
  c.async_ckpt = True
  return c


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  # The resumed runs compile the same programs again; XLA's persistent cache turns
  # those compilations into lookups (it cannot change results).
  cache = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  workdir = str(tmp_path_factory.mktemp("demo"))
  yield workdir, loop.run(_config(), workdir)
  jax.config.update("jax_compilation_cache_dir", cache)


def test_demo_runs_end_to_end(full_run):
  _, summary = full_run
  assert summary["status"] == "finished" and summary["step"] == 4
  for tag in ("before_rl", "after_rl"):
    assert 0.0 <= summary["evals"][tag]["acc"] <= 1.0
    assert 0.0 <= summary["evals"][tag]["p_acc"] <= summary["evals"][tag]["acc"] + 1e-9
  rl = summary["history"][4]
  for key in ("loss", "kl", "entropy", "clip_frac", "response_length", "grad_norm"):
    assert np.isfinite(rl[key]), key
  assert "reward/original/unweighted/crr" in rl and "reward/counterfactual/weighted/format" in rl
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(summary["tensorboard"]))
  assert max(os.listdir(summary["checkpoints"]), key=int) == "4"
  assert os.path.exists(os.path.join(summary["hf"], "config.json"))


def test_resume_equals_uninterrupted(full_run, tmp_path):
  _, reference = full_run
  workdir = str(tmp_path / "resumed")
  interrupted = _config()
  interrupted.ckpt_every = 100  # no periodic save reaches step 3: the preemption save must
  first = loop.run(interrupted, workdir, stop_after=3)
  assert first["status"] == "preempted" and first["step"] == 3
  assert max(os.listdir(first["checkpoints"]), key=int) == "3"
  second = loop.run(_config(), workdir)
  assert second["status"] == "finished" and sorted(second["history"]) == [4]
  for step, got in [(3, first["history"][3]), (4, second["history"][4])]:
    want = reference["history"][step]
    keys = sorted(set(want) - set(_NONDETERMINISTIC))
    assert keys == sorted(set(got) - set(_NONDETERMINISTIC))
    np.testing.assert_allclose([got[k] for k in keys], [want[k] for k in keys], rtol=1e-6)
  assert second["evals"]["after_rl"] == reference["evals"]["after_rl"]


def test_time_cadence_saves_between_step_saves(full_run, tmp_path):
  """`ckpt_every_s` saves when the step cadence would not (here: every step)."""
  config = _config()
  config.ckpt_every, config.ckpt_every_s, config.keep_ckpts = 100, 1e-9, 10
  summary = loop.run(config, str(tmp_path / "timed"), stop_after=2)
  assert sorted(os.listdir(summary["checkpoints"]), key=int) == ["1", "2"]
  config.ckpt_every_s = 0.0  # off: only the preemption save
  summary = loop.run(config, str(tmp_path / "untimed"), stop_after=2)
  assert os.listdir(summary["checkpoints"]) == ["2"]


def test_export_gives_trained_logits(full_run, tmp_path):
  workdir, summary = full_run
  out = export.export(workdir, str(tmp_path / "hf"))
  ours, step = export.restore_model(workdir)
  assert step == 4
  hf = transformers.Qwen3VLForConditionalGeneration.from_pretrained(
    out, dtype=torch.float32, attn_implementation="eager"
  ).eval()
  # The exported weights are the trained ones: their global norm equals the norm the
  # training step itself reported for the parameters it had just updated (in memory,
  # independent of any restore or export code). Tied weights count once on both sides.
  with torch.no_grad():
    norm = float(torch.sqrt(sum((p.double() ** 2).sum() for p in hf.parameters())))
  assert_close(norm, summary["history"][4]["param_norm"], rtol=1e-6, err_msg="param norm")
  assert summary["history"][4]["param_norm"] != summary["history"][3]["param_norm"]
  inputs = R.video_inputs(0, ours.config)
  want = np.asarray(ours(**inputs))
  got = R.hf_logits(hf, inputs)
  assert_close(got, want, rtol=1e-5, err_msg="export vs restore")
  assert transformers.AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("<think>") == 151667


def test_evaluate_cli_takes_the_workdir(full_run, tmp_path):
  """`python -m crpo_jax.evaluate --config.model=WORKDIR` evaluates the latest checkpoint."""
  import json
  import subprocess
  import sys

  workdir, _ = full_run
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  cmd = [sys.executable, "-m", "crpo_jax.evaluate", f"--config={repo}/configs/eval.py:cpu"]
  cmd += ["--config.benchmark=dybench", f"--config.data={workdir}/data/eval.jsonl"]
  cmd += [f"--config.model={workdir}", "--config.limit=2", "--config.max_new_tokens=4"]
  cmd += ["--config.baselines=", "--config.mesh.data=2", "--config.mesh.fsdp=4"]
  env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  exported = os.path.join(workdir, "export", "step_4")
  assert f"model: {exported}" in proc.stdout
  out = tmp_path / "eval_results" / "dybench" / os.path.basename(workdir)
  results = json.loads((out / "results.json").read_text())
  assert results["n_items"] == 2 and results["model"] == exported
