"""The planner compiles a run's programs for a TPU topology on this CPU-only machine.

The TPU compiler is libtpu; without it these tests are skipped (install it with
`pip install -e ".[tpu]"`).
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("libtpu", reason='TPU compiler missing: pip install -e ".[tpu]"')

from configs import demo
from crpo_jax import plan as plan_lib
from crpo_jax.plan import topology as topology_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config():
  c = demo.get_config("test")  # tiny preset, SFT and RL, beta > 0 (reference model)
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 2, 2
  return c


@pytest.fixture(scope="module")
def tiny_report():
  return plan_lib.plan(_tiny_config(), "v5e:2x2")


@pytest.mark.slow  # ~80 s of TPU compiles on 2 idle cores
def test_tiny_preset_compiles_every_program(tiny_report):
  r = tiny_report
  names = [p.name for p in r.programs]
  assert names == ["init", "sft_step", "rollout", "update", "eval_sampler"]
  assert r.devices == 4 and r.mesh == {"data": 1, "fsdp": 2, "tensor": 2}
  assert r.hbm_bytes == int(15.75 * 2**30)
  for p in r.programs:
    assert p.fits and p.peak_bytes > 0 and p.compile_s > 0, p
    assert p.peak_bytes >= p.temp_bytes
  # The optimiser state (two fp32 moments) is alive during rollouts, not an argument.
  rollout = r.programs[2]
  assert rollout.resident_bytes >= r.shapes["opt_state_bytes_per_device"]
  assert r.fits
  table = r.table()
  assert all(n in table for n in names) and "FITS" in table
  d = r.to_json()
  json.dumps(d)
  assert {"topology", "devices", "hbm_bytes", "fits", "programs"} <= set(d)
  for prog in d["programs"].values():
    assert {
      "argument_bytes",
      "output_bytes",
      "temp_bytes",
      "peak_bytes",
      "fits",
      "compile_s",
    } <= set(prog)


def test_known_topologies_resolve():
  for name in ("v4-8", "v5e-8", "v5e-16", "v5p-8", "v5p-16", "v5p-32", "v6e-8", "v5e:4x4"):
    topo = topology_lib.get_topology(name)
    assert len(topo.devices) == {
      "v4-8": 4,
      "v5p-8": 4,
      "v5e-16": 16,
      "v5p-32": 16,
      "v5e:4x4": 16,
    }.get(name, 8), name
  with pytest.raises(ValueError, match="v5p-16.*local"):
    topology_lib.get_topology("v9-8")


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=_ROOT)
  return subprocess.run(
    [sys.executable, "-m", "crpo_jax.plan", *args],
    check=False,
    capture_output=True,
    text=True,
    cwd=_ROOT,
    env=env,
    timeout=600,
  )


def test_overflow_exits_nonzero_and_names_the_program(tmp_path):
  # 32B fp32 parameters and moments cannot fit 4 chips of 16 GiB.
  out = tmp_path / "plan.json"
  proc = _cli(
    "--config=configs/qwen3vl_8b.py",
    "--topology=v5e:2x2",
    "--config.model.preset=qwen3vl_32b",
    "--config.mesh.fsdp=4",
    "--config.mesh.tensor=1",
    "--only=init",
    f"--json={out}",
  )
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "init" in proc.stdout and "DOES NOT FIT" in proc.stdout
  assert "RESOURCE_EXHAUSTED" in proc.stdout
  report = json.loads(out.read_text())
  assert report["fits"] is False and report["programs"]["init"]["fits"] is False
  assert report["programs"]["init"]["peak_bytes"] > report["hbm_bytes"]


def test_unknown_topology_lists_known_ones():
  proc = _cli("--config=configs/demo.py:test", "--topology=v9-8")
  assert proc.returncode == 2
  assert "unknown topology 'v9-8'" in proc.stderr and "v5p-16" in proc.stderr
