"""Several processes on one machine: `crpo_jax.main` as 2 processes x 2 CPU devices.

The documented launch, exactly as a user starts it: `JAX_COORDINATOR_ADDRESS`,
`JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, plus `XLA_FLAGS` for the device count
(crpo_jax picks gloo for the CPU collectives itself). The run is compared with the
same config as 1 process x 4 devices, so the mesh is the same and only the process
layout differs. The 2-process run is preempted once, by SIGTERM to process 1 only,
and a second 2-process launch resumes it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from crpo_jax.train import checkpoint as ckpt_lib
from tests.tolerance import assert_close
from tests.train.run_metrics import assert_same_metrics, read_metrics, scales

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# configs/demo.py:test, with the compact vocabulary for speed (the real-id tiny preset
# spends most of its time in the 152k-way head) and checkpoints every 2 steps, so
# step 3 exists only through the preemption save.
FLAGS = ("--config=configs/demo.py:test", "--config.model.preset=tiny_compact",
         "--config.data.compact_vocab=True", "--config.ckpt_every=2")  # fmt: skip
TIMEOUT_S = 600


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _xla_flags(devices: int) -> str:
  """The user's XLA_FLAGS with this device count, first: XLA stops reading the
  variable at a bare word such as `intra_op_parallelism_threads=1`."""
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split()
          if not f.startswith("--xla_force_host_platform_device_count")]  # fmt: skip
  return " ".join([f"--xla_force_host_platform_device_count={devices}", *kept])


def _launch(workdir, processes: int, devices: int, cache_dir, env_of=None, name="launch",
            extra=()):  # fmt: skip
  """`python -m crpo_jax.main` as `processes` processes; [(returncode, log, exit_time)]."""
  port = _free_port()
  logs, procs = [], []
  for i in range(processes):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": _xla_flags(devices),
           "TPU_SKIP_MDS_QUERY": "1", "JAX_COMPILATION_CACHE_DIR": str(cache_dir),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}  # fmt: skip
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
      env.pop(k, None)
    if processes > 1:
      env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes),
                 JAX_PROCESS_ID=str(i))  # fmt: skip
    env.update((env_of or {}).get(i, {}))
    out = open(f"{workdir}.{name}.p{i}.log", "w+")  # noqa: SIM115 (closed below)
    logs.append(out)
    cmd = [sys.executable, "-m", "crpo_jax.main", *FLAGS, *extra, f"--workdir={workdir}"]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
  ended: dict[int, float] = {}
  deadline = time.monotonic() + TIMEOUT_S
  try:
    while len(ended) < len(procs) and time.monotonic() < deadline:
      for i, p in enumerate(procs):
        if i not in ended and p.poll() is not None:
          ended[i] = time.monotonic()
      time.sleep(0.1)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  results = []
  for i, (p, out) in enumerate(zip(procs, logs)):
    out.seek(0)
    results.append((p.returncode, out.read(), ended.get(i)))
    out.close()
  assert len(ended) == len(procs), f"a process was still running after {TIMEOUT_S} s"
  return results


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
  """One compilation cache for every launch of this module (it cannot change results)."""
  return tmp_path_factory.mktemp("xla_cache")


@pytest.mark.slow
def test_two_processes_equal_one_and_resume_after_sigterm_to_one(tmp_path, xla_cache):
  cache = xla_cache
  one = str(tmp_path / "one")
  [(rc, log, _)] = _launch(one, 1, 4, cache)
  assert rc == 0, log[-3000:]
  want = {m["step"]: m for m in read_metrics(one)}
  assert sorted(want) == [1, 2, 3, 4]  # 2 SFT + 2 RL steps

  # Launch 1: SIGTERM reaches process 1 alone, in the first RL step's rollout. Both
  # processes save step 3 (JAX's preemption sync point) and exit with code 75.
  two = str(tmp_path / "two")
  first = _launch(two, 2, 2, cache, {1: {"CRPO_SIGNAL_AT": "rollout@3:SIGTERM"}}, "first")
  for i, (rc, log, _) in enumerate(first):
    assert rc == ckpt_lib.PREEMPTED_EXIT_CODE, (i, rc, log[-3000:])
  assert "sending SIGTERM at rollout@3" in first[1][1]
  assert "preempted: saved step 3" in first[0][1]
  ckpt = ckpt_lib.Checkpointer(os.path.join(two, "checkpoints"))
  assert ckpt.all_steps() == [2, 3]  # one Orbax checkpoint, restorable by 1 process
  ckpt.close()

  # Launch 2: the same command resumes from step 3 and finishes.
  second = _launch(two, 2, 2, cache, name="second")
  for i, (rc, log, _) in enumerate(second):
    assert rc == 0, (i, rc, log[-3000:])
  assert re.search(r"resumed from \S+ at step 3", second[0][1]), second[0][1][-3000:]
  # Console lines come from process 0 only.
  assert "resumed from" not in second[1][1] and "rl 2/2" not in second[1][1]

  # Every logged metric of every step equals the 1-process run (rtol 1e-5: the
  # cross-device sums go through gloo across processes instead of in-process).
  rows = read_metrics(two)
  assert [m["step"] for m in rows] == [1, 2, 3, 4]
  for m in rows:
    assert_same_metrics(m, want[m["step"]], m["step"], scales(want), rtol=1e-5)
  with open(os.path.join(one, "summary.json")) as f1, open(os.path.join(two, "summary.json")) as f2:
    evals_one, evals_two = json.load(f1)["evals"], json.load(f2)["evals"]
  assert evals_two.keys() == evals_one.keys() == {"before_rl", "after_rl"}
  for tag in evals_one:
    assert evals_two[tag] == pytest.approx(evals_one[tag], rel=1e-5, abs=1e-6), tag

  # The HF export is written once (process 0: the files are the 1-process run's),
  # transformers loads it with no missing or unexpected keys, and its weights are
  # the trained ones: their global norm is the param_norm the last step reported in
  # memory (which equals the 1-process run's, above). The weights themselves are not
  # compared with the 1-process export: Adam turns rounding noise in a near-zero
  # gradient into a full-size step of either sign (a vision bias differed by 3e-4 of
  # its leaf's scale while every metric agreed to 1e-5).
  hf_one, hf_two = os.path.join(one, "hf"), os.path.join(two, "hf")
  assert sorted(os.listdir(hf_two)) == sorted(os.listdir(hf_one))
  import torch
  import transformers

  hf, info = transformers.Qwen3VLForConditionalGeneration.from_pretrained(
    hf_two, output_loading_info=True
  )
  assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
  with torch.no_grad():  # tied weights count once, as in the training step's norm
    norm = float(torch.sqrt(sum((p.double() ** 2).sum() for p in hf.parameters())))
  assert_close(norm, rows[-1]["param_norm"], rtol=1e-6, err_msg="param norm")

  _check_evaluate_two_processes(tmp_path, hf_two, os.path.join(two, "data", "eval.jsonl"))


@pytest.mark.slow
def test_sigint_to_one_process_stops_all_at_the_same_step(tmp_path, xla_cache):
  """Ctrl-C reaches one host only (JAX's preemption service watches SIGTERM alone):
  `PreemptionWatcher.should_stop` shares the request, so every process saves step 3."""
  two = str(tmp_path / "two")
  # A grace period longer than the first RL step's compilation on a loaded 2-core box.
  env = {1: {"CRPO_SIGNAL_AT": "rollout@3:SIGINT"}}
  results = _launch(two, 2, 2, xla_cache, env, "sigint", ("--config.preempt_grace_s=600",))
  for i, (rc, log, _) in enumerate(results):
    assert rc == ckpt_lib.PREEMPTED_EXIT_CODE, (i, rc, log[-3000:])
  assert "sending SIGINT at rollout@3" in results[1][1]
  assert "preempted: saved step 3" in results[0][1]
  ckpt = ckpt_lib.Checkpointer(os.path.join(two, "checkpoints"))
  assert ckpt.all_steps() == [2, 3]
  ckpt.close()


HEARTBEAT_S = 10


# What the surviving process logs when the other one is SIGKILLed: process 1's death
# is JAX's heartbeat check naming task 1; process 0 hosts JAX's coordination
# service, and its death ends the other at once (its error polling sees the closed
# socket; measured 0.2 s, SIGABRT).
LOST_PROCESS_ERRORS = {
  1: (r"tasks are unhealthy \(stopped sending heartbeats\):\s*\S*1\b",),
  0: (r"Failed to send RPC to coordination service", r"the leader task was preempted/died"),
}


@pytest.mark.slow
@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_process_ends_the_others_with_an_error(tmp_path, xla_cache, killed):
  """SIGKILL of one process mid-step: the other exits non-zero with JAX's error about
  the lost process within the heartbeat timeout plus JAX's error polling (bound
  asserted: 2x + 30 s), and the last committed checkpoint stays restorable."""
  two = str(tmp_path / "two")
  survivor = 1 - killed
  env = {killed: {"CRPO_KILL_AT": "rollout@3"}}
  extra = (f"--heartbeat_timeout_s={HEARTBEAT_S}",)
  results = _launch(two, 2, 2, xla_cache, env, f"kill{killed}", extra)
  (rc_k, log_k, end_k), (rc_s, log_s, end_s) = results[killed], results[survivor]
  assert rc_k == -9 and "killing the process at rollout@3" in log_k, log_k[-3000:]
  assert rc_s not in (0, ckpt_lib.PREEMPTED_EXIT_CODE), (rc_s, log_s[-3000:])
  for pattern in LOST_PROCESS_ERRORS[killed]:
    assert re.search(pattern, log_s), (pattern, log_s[-5000:])
  print(f"process {survivor} ended {end_s - end_k:.1f} s after process {killed} was killed")
  assert end_s - end_k < 2 * HEARTBEAT_S + 30, end_s - end_k
  ckpt = ckpt_lib.Checkpointer(os.path.join(two, "checkpoints"))
  assert ckpt.all_steps() == [2]  # the last committed checkpoint stays restorable
  ckpt.close()


def _evaluate(out, processes: int, devices: int, model, data, limit: int):
  """`python -m crpo_jax.evaluate` as `processes` processes; their outputs."""
  port = _free_port()
  procs = []
  for i in range(processes):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": _xla_flags(devices),
           "TPU_SKIP_MDS_QUERY": "1"}  # fmt: skip
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
      env.pop(k, None)
    if processes > 1:
      env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes),
                 JAX_PROCESS_ID=str(i))  # fmt: skip
    # data 2 x fsdp 2: the model is sharded across the processes, rows over both.
    cmd = [sys.executable, "-m", "crpo_jax.evaluate", "--config=configs/eval.py:cpu",
           "--config.benchmark=dybench", f"--config.data={data}", f"--config.model={model}",
           f"--config.limit={limit}", "--config.max_new_tokens=6", "--config.baselines=",
           "--config.batch_size=2", "--config.mesh.data=2", "--config.mesh.fsdp=2",
           f"--config.output_dir={out}"]  # fmt: skip
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, **pipe))
  logs = [p.communicate(timeout=300)[0] for p in procs]
  for i, (p, log) in enumerate(zip(procs, logs)):
    assert p.returncode == 0, (i, log[-3000:])
  return logs


def _check_evaluate_two_processes(tmp_path, model, data):
  """`crpo_jax.evaluate` as 2 processes x 2 devices writes one predictions file, the
  1-process x 4-device one, byte for byte; a second launch resumes it from process 0's
  file (the other process generates the same remaining batches and writes nothing)."""
  one, two = tmp_path / "eval_one", tmp_path / "eval_two"
  _evaluate(one, 1, 4, model, data, limit=4)
  first = _evaluate(two, 2, 2, model, data, limit=2)
  assert "0 items done, 2 to go" in first[1]  # process 1 generated too
  second = _evaluate(two, 2, 2, model, data, limit=4)
  assert "2 items done, 2 to go" in second[0] and "2 items done, 2 to go" in second[1]
  assert sorted(os.listdir(two)) == sorted(os.listdir(one))
  want = (one / "predictions.jsonl").read_text()
  assert len(want.splitlines()) == 4
  assert (two / "predictions.jsonl").read_text() == want
  assert "results.md" not in first[1] and "| n_items | 4 |" in second[0]
