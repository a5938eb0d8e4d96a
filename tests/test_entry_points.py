"""A plain `pip install -e .` in a fresh venv runs every entry point (issue 15 items 3, 8).

One module fixture copies the tracked files, makes a venv without system site
packages and installs the project with no extra; then, from another directory,
each CLI answers `--help` and makes a small real call: generate, route, validate
and convert a synthetic world, start a `:runlocal` run from an absolute config
path, and render a chat template (jinja2). About 2-4 minutes on 2 shared cores,
almost all of it pip; CRPO_SKIP_FRESH_VENV=1 skips it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

pytestmark = [
  pytest.mark.slow,
  pytest.mark.skipif(
    os.environ.get("CRPO_SKIP_FRESH_VENV") == "1", reason="CRPO_SKIP_FRESH_VENV=1"
  ),
]

ENTRY_POINTS = {
  "crpo_jax.main": "--workdir",
  "crpo_jax.evaluate": "--config",
  "crpo_jax.export": "--workdir",
  "crpo_jax.data.router": "--overwrite",
  "crpo_jax.data.validate": "--default-route",
  "crpo_jax.data.arrayrecord": "--overwrite",
  "crpo_jax.data.synthetic": "--pairs",
}


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
  """(python of a fresh venv holding `pip install -e <copy of the repo>`, a run dir)."""
  root = tmp_path_factory.mktemp("fresh")
  src = root / "src"
  tracked = subprocess.run(
    ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
  ).stdout.split(b"\0")
  for name in filter(None, tracked):
    path = REPO / name.decode()
    if path.is_file():  # tracked files deleted in the work tree are not copied
      (src / name.decode()).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(path, src / name.decode())
  subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
  python = str(root / "venv" / "bin" / "python")
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  subprocess.run(
    [python, "-m", "pip", "install", "-q", "-e", str(src)],
    check=True,
    env=env,
    timeout=1200,
  )
  run_dir = root / "elsewhere"
  run_dir.mkdir()
  return python, run_dir, src, env


def _run(venv, *args, check=True):
  python, run_dir, _, env = venv
  proc = subprocess.run(
    [python, *args],
    cwd=run_dir,
    env=dict(env, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  if check:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_help(venv, module):
  proc = _run(venv, "-m", module, "--help", check=False)
  # argparse exits 0 after --help, absl 1; either way the flags are listed, no traceback.
  assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert ENTRY_POINTS[module] in proc.stdout + proc.stderr


def test_export_of_a_real_run(venv, demo_cli_run):
  """export in the plain install: restores the demo run's checkpoint, writes an HF dir."""
  workdir, _ = demo_cli_run
  _, run_dir, _, _ = venv
  copy = run_dir / "demo_copy"  # export logs into its workdir: keep the shared run's logs/ as is
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("logs"))
  _run(venv, "-m", "crpo_jax.export", f"--workdir={copy}", "--out=hf_out")
  with open(run_dir / "hf_out" / "config.json") as f:
    assert "text_config" in json.load(f)


def test_small_real_calls(venv):
  _, run_dir, src, _ = venv
  _run(venv, "-m", "crpo_jax.data.synthetic", "--out", "w", "--num", "3")
  proc = _run(
    venv, "-m", "crpo_jax.data.router", "--input", "w/train.jsonl", "--output", "w/r.jsonl"
  )
  assert json.loads(proc.stdout.splitlines()[-1])["records"] == 3
  assert "3 of 3 records usable" in _run(venv, "-m", "crpo_jax.data.validate", "w/r.jsonl").stdout
  proc = _run(venv, "-m", "crpo_jax.data.arrayrecord", "w/r.jsonl", "ar")
  assert "train: 3 records" in proc.stdout
  # jinja2: transformers' apply_chat_template, as evaluate and the local router use it.
  code = (
    "from crpo_jax.data import tokenizer as t\n"
    "tok = t.load_tokenizer(t.build_word_tokenizer(['what is it'], 'tk'))\n"
    "m = [{'role': 'user', 'content': [{'type': 'text', 'text': 'what is it'}]}]\n"
    "print(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True))\n"
  )
  assert "<|im_start|>assistant" in _run(venv, "-c", code).stdout
  # Item 8: an absolute --config path from another directory loads (it imports
  # configs.common); the run then stops at its first check, the missing data file.
  config = f"--config={src}/configs/qwen3vl_8b.py:runlocal"
  proc = _run(
    venv, "-m", "crpo_jax.main", config, "--config.data.train=nope.jsonl", "--workdir=wd",
    check=False,
  )  # fmt: skip
  assert proc.returncode != 0 and "config.data.train=nope.jsonl: file not found" in proc.stderr
  assert "ModuleNotFoundError" not in proc.stderr
  proc = _run(venv, "-m", "crpo_jax.evaluate", f"--config={src}/configs/eval.py:cpu",
              "--config.data=w/r.jsonl", "--config.model=nowhere", check=False)  # fmt: skip
  assert proc.returncode != 0 and "neither an HF checkpoint" in proc.stderr
  assert not (run_dir / "eval_results").exists()
