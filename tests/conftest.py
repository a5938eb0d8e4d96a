"""Test set-up shared by the whole suite.

Eight fake CPU devices are requested before jax is imported anywhere, so sharding
tests run on a (data, fsdp, tensor) mesh on a laptop or CI machine.
"""

import os
import sys
import types

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  # First: XLA stops reading flags at a bare word such as the commonly used
  # `intra_op_parallelism_threads=1`, so a flag appended after one is ignored.
  os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 " + _flags).strip()
# Hugging Face must never try the network: every reference model is built by the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _stub_cuda_only_torchvision_registrations():
  """Lets the CUDA-linked torchvision wheel import next to the CPU torch wheel.

  The only torchvision wheel that pairs with torch 2.13 links CUDA ops; importing it
  with CPU torch dies in `_meta_registrations`. Those modules only register detection
  ops (nms, roi_align), which the Qwen3-VL processors never use, so empty stand-ins
  are safe (reference/qwen3vl.md section 0).
  """
  try:
    import torch
  except ImportError:
    return
  if torch.version.cuda is None:
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
      sys.modules.setdefault(name, types.ModuleType(name))


_stub_cuda_only_torchvision_registrations()


import pytest


@pytest.fixture(scope="session")
def demo_cli_run(tmp_path_factory):
  """The README's demo command, shortened to `:test`, run once for the whole session.

  `python -m crpo_jax.main --config=configs/demo.py:test --workdir=WORKDIR` in a
  subprocess from the repository root, as a user runs it: its console
  (tests/train/test_console.py), its workdir (tests/test_notebooks.py's run
  inspection) and the README's command (tests/test_docs.py) are checked on it.
  Returns (workdir, CompletedProcess).
  """
  import pathlib
  import subprocess

  root = pathlib.Path(__file__).resolve().parents[1]
  workdir = tmp_path_factory.mktemp("demo_cli") / "run"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
  env["XLA_FLAGS"] = ""  # one CPU device, as on a user's machine
  cmd = [sys.executable, "-m", "crpo_jax.main", "--config=configs/demo.py:test"]
  proc = subprocess.run(
    [*cmd, f"--workdir={workdir}"], cwd=root, env=env, capture_output=True, text=True,
    timeout=1200, check=False,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir, proc
