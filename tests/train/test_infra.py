"""Optimizer schedule, train step accumulation, checkpoints, preemption, progress."""

import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crpo_jax import sharding
from crpo_jax.train import checkpoint, optimizer, progress
from crpo_jax.train import state as state_lib


class _Tiny(nnx.Module):
  """Stand-in policy: two sharded linear layers with odd sizes."""

  def __init__(self, rngs: nnx.Rngs):
    self.a = nnx.Linear(5, 24, rngs=rngs, kernel_metadata={"logical_axes": ("embed", "mlp")})
    self.b = nnx.Linear(24, 7, rngs=rngs, kernel_metadata={"logical_axes": ("mlp", "vocab")})

  def __call__(self, x):
    return self.b(jnp.tanh(self.a(x)))


def _loss_fn(graphdef):
  def loss_fn(params, mb, aux):
    del aux
    out = state_lib.merge_model(graphdef, params)(mb["x"])
    err = jnp.sum((out - mb["y"]) ** 2, -1) * mb["w"]
    return jnp.sum(err), (jnp.sum(mb["w"]), {"count": jnp.sum(mb["w"])})

  return loss_fn


def _setup(seed=0, lr=1e-2):
  mesh = sharding.make_mesh({"fsdp": 2, "tensor": 4})
  graphdef, params, _ = state_lib.split_model(_Tiny(nnx.Rngs(seed)))
  tx, sched = optimizer.make_optimizer(lr, 10, warmup_steps=2, max_grad_norm=1.0)
  st, shardings = state_lib.create_train_state(params, tx, seed, mesh)
  step = state_lib.make_train_step(_loss_fn(graphdef), tx, shardings)
  return mesh, graphdef, st, shardings, step, sched


def _batch(n=8, seed=1):
  r = np.random.default_rng(seed)
  w = (r.random(n) > 0.3).astype(np.float32)
  return {
    "x": r.normal(size=(n, 5)).astype(np.float32),
    "y": r.normal(size=(n, 7)).astype(np.float32),
    "w": w,
  }


def _micro(batch, m):
  return jax.tree.map(lambda x: x.reshape(m, x.shape[0] // m, *x.shape[1:]), batch)


def test_schedule_warmup_then_cosine():
  s = optimizer.make_schedule(1.0, 10, warmup_steps=2, final_lr_fraction=0.1)
  np.testing.assert_allclose([s(0), s(1), s(2)], [0.0, 0.5, 1.0], atol=1e-6)
  np.testing.assert_allclose(s(10), 0.1, atol=1e-6)
  # Halfway through the cosine part the rate is halfway between peak and end.
  np.testing.assert_allclose(s(6), 0.55, atol=1e-6)
  c = optimizer.make_schedule(2.0, 10, warmup_steps=4, kind="constant")
  np.testing.assert_allclose([c(2), c(4), c(9)], [1.0, 2.0, 2.0], atol=1e-6)
  with pytest.raises(ValueError):
    optimizer.make_schedule(1.0, 10, kind="linear")


def test_accumulation_is_exact_and_state_is_sharded():
  _, _, st1, _, step, _ = _setup()
  _, _, st4, _, _, _ = _setup()
  kernel = st1.params["a"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "tensor")
  batch = _batch()
  new1, m1 = step(st1, _micro(batch, 1), None)
  new4, m4 = step(st4, _micro(batch, 4), None)
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-6)
  np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(new1.params), jax.tree.leaves(new4.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert int(new1.step) == 1
  assert float(m1["count"]) == float(batch["w"].sum())
  assert new1.params["a"]["kernel"].sharding.spec == kernel.sharding.spec


def test_checkpoint_roundtrip_and_resume_equals_uninterrupted(tmp_path):
  _, _, st, _, step, _ = _setup()
  batches = [_micro(_batch(seed=i), 2) for i in range(4)]
  ref_losses = []
  for i, b in enumerate(batches):
    st, m = step(st, b, None)
    ref_losses.append(float(m["loss"]))
    if i == 1:
      ckpt = checkpoint.Checkpointer(tmp_path / "ckpt", max_to_keep=2)
      ckpt.save_reference(st.params)
      ckpt.save(2, st, data_state={"pos": 2}, meta={"phase": "rl"})
      ckpt.wait()
      ckpt.save_reference(jax.tree.map(lambda x: x + 1, st.params))  # kept: written once
      items = set(os.listdir(tmp_path / "ckpt" / "2"))
      assert {"state", "data", "meta"} <= items and "ref" not in items, items
  # A fresh process would rebuild a template and restore onto it.
  _, _, template, shardings2, step2, _ = _setup(seed=5)
  ckpt2 = checkpoint.Checkpointer(tmp_path / "ckpt", max_to_keep=2)
  assert ckpt2.latest_step() == 2
  restored, ref, data_state, meta = ckpt2.restore(
    template, shardings2, target_ref=template.params, ref_shardings=shardings2.params
  )
  assert data_state == {"pos": 2} and meta == {"phase": "rl"}
  assert int(restored.step) == 2
  assert restored.params["a"]["kernel"].sharding == shardings2.params["a"]["kernel"]
  np.testing.assert_array_equal(ref["b"]["bias"], restored.params["b"]["bias"])
  resumed = []
  for b in batches[2:]:
    restored, m = step2(restored, b, None)
    resumed.append(float(m["loss"]))
  assert resumed == ref_losses[2:]
  ckpt.close()
  ckpt2.close()


def test_keep_last_n_and_bytes_iterator_state(tmp_path):
  _, _, st, _, _, _ = _setup()
  ckpt = checkpoint.Checkpointer(tmp_path / "c", max_to_keep=2, async_save=False)
  for s in (1, 2, 3):
    ckpt.save(s, st, data_state=b"\x00grain-state", meta={})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 3]
  _, shardings = state_lib.create_train_state(
    state_lib.split_model(_Tiny(nnx.Rngs(0)))[1],
    optimizer.make_optimizer(1e-2, 10)[0],
    0,
    sharding.make_mesh({"fsdp": 2, "tensor": 4}),
  )
  _, ref, data_state, _ = ckpt.restore(st, shardings, step=2)
  assert data_state == b"\x00grain-state" and ref is None
  ckpt.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_set_stop_flag(sig):
  previous = signal.getsignal(sig)
  watcher = checkpoint.PreemptionWatcher(grace_s=600)
  try:
    assert not watcher.should_stop(0)
    os.kill(os.getpid(), sig)  # SIGINT would raise KeyboardInterrupt without the watcher
    assert watcher.should_stop(1)
  finally:
    watcher.restore_handlers()
  assert signal.getsignal(sig) is previous


_WATCHER_RACE = """
import os, signal, sys, time
from crpo_jax.train import checkpoint
for i in range(int(sys.argv[1])):
  watcher = checkpoint.PreemptionWatcher(grace_s=0.3)
  os.kill(os.getpid(), signal.SIGTERM)
  assert watcher.should_stop(i)
  watcher.restore_handlers()  # the run is over, maybe before the thread read the pipe
time.sleep(1.0)  # past every grace time a late timer could have started
print("survived")
"""


def test_signal_handled_at_the_end_of_a_run_never_ends_the_process_later():
  """The watcher thread can read a signal's byte after restore_handlers ran (the
  main thread's handler already acted on it); it must not start a grace timer then,
  or the process that outlives the run (a test session, a notebook) exits 75
  grace_s seconds later. This killed a CI run: 600 s after
  test_sigterm_and_sigint_set_stop_flag, in a test far away."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TPU_SKIP_MDS_QUERY": "1"}
  out = subprocess.run(
    [sys.executable, "-c", _WATCHER_RACE, "200"],
    check=False,
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
  )
  assert out.returncode == 0 and "survived" in out.stdout, (out.returncode, out.stderr[-2000:])


def test_progress_eta_skips_compile_step():
  t = iter([0.0, 10.0, 11.0, 12.0])
  lines = []
  p = progress.Progress("rl", 5, every=1, printer=lines.append, clock=lambda: next(t))
  p.update(1)
  p.update(2)
  p.update(3, {"loss": 0.5})
  assert p.seconds_per_step() == pytest.approx(1.0)
  assert p.eta() == pytest.approx(2.0)
  assert "rl 3/5" in lines[-1] and "ETA 2s" in lines[-1] and "loss=0.5" in lines[-1]
  assert progress.format_seconds(4000) == "1h06m40s"
