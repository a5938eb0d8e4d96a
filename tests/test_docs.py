"""Every command and flag in README.md and launch/README.md is checked and executed.

The commands are parsed out of the READMEs (fenced blocks, and inline code that runs
`python -m crpo_jax...`), so a new command is checked without editing this file:
  - every `python -m crpo_jax.X` module exists and accepts every `--flag` shown
    (its `--help` / `--helpfull` lists it), optional `[--flag ...]` groups included;
  - every `--config.a.b` override names a real field of the config the command loads
    (ml_collections, with the command's `:arg`), and inline `--config.a.b` mentions
    name a field of the training or the evaluation config;
  - every command runs: `crpo_jax.main` with `--dry_run` (flags and config parsed,
    nothing trained: the 8B and pod commands cannot run here), the data tools and
    export for real on a small synthetic world and the `:test` demo run, the TPU-pod
    and SLURM launchers with stand-ins for gcloud and srun whose recorded
    `crpo_jax.main` arguments then run with `--dry_run`. The few commands that need
    the network, a cluster or a second install run in the tests `_ELSEWHERE` names.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from tests.train.test_console import library_lines

ROOT = pathlib.Path(__file__).resolve().parents[1]
READMES = ("README.md", "launch/README.md")

# Placeholders of the READMEs' commands -> values here (whole tokens or token parts).
# `{...}` is filled per run (the demo workdir, a temporary directory).
_PLACEHOLDERS = {
  "DIR": "{tmp}/world",
  "N": "4",
  "S": "0",
  "P": "0.5",
  "train.jsonl": "{tmp}/world/train.jsonl",
  "train.routed.jsonl": "{tmp}/world/train.routed.jsonl",
  "DATA": "{tmp}/world/train.routed.jsonl",
  "FILE": "{tmp}/world/train.routed.jsonl",
  "SPLIT": "train",
  "PATH": "{tmp}/report.jsonl",
  "OUT_DIR": "{tmp}/arrayrecord",
  "HF_DIR": "{tmp}/hf_export",
  "$WORKDIR": "{workdir}",
  "WORKDIR": "{workdir}",
  "heldout.jsonl": "{tmp}/world/train.jsonl",
}

# Commands run by other tests (they need a fresh install, the network, a cluster, or
# a long run): program or module -> the test that runs it.
_ELSEWHERE = {
  "python3 -m venv": "tests/test_entry_points.py (a fresh venv, pip install -e .)",
  ".venv/bin/pip": "tests/test_entry_points.py",
  "pip": "tests/test_entry_points.py",
  ".venv/bin/python -m pytest": "the suite itself (.ci/run)",
  ".ci/run": "the suite itself",
  "crpo_jax.evaluate": "tests/train/test_loop.py::test_evaluate_cli_takes_the_workdir",
  "crpo_jax.plan": "tests/test_plan.py (an 8B plan compiles for ~15 min on 2 cores)",
  "tensorboard": "pyproject's [tensorboard] extra (tensorboard is not installed here)",
  "gcloud compute tpus tpu-vm create": "needs a Google Cloud project",
  "git clone": "needs the network",
  "srun": "needs a SLURM cluster (launch/slurm_gpu.sbatch runs here with a stand-in srun)",
}


def _blocks(text: str) -> list[str]:
  """Shell commands of the fenced blocks (not python ones): continuations joined,
  comments dropped, `a && b` split."""
  out = []
  for lang, body in re.findall(r"^\s*```(\w*)\n(.*?)^\s*```", text, flags=re.MULTILINE | re.DOTALL):
    if lang == "python":
      continue
    body = re.sub(r"\\\n\s*", " ", body)
    for line in body.splitlines():
      line = line.strip()
      line = re.sub(r"(^|\s+)#.*$", "", line).strip()
      out += [part.strip() for part in line.split("&&") if part.strip()]
  return out


def _inline(text: str) -> list[str]:
  """Inline code spans that run a crpo_jax module (they may span lines)."""
  text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.MULTILINE | re.DOTALL)
  spans = [re.sub(r"\s+", " ", s).strip() for s in re.findall(r"`([^`]+)`", text)]
  runs = r"python3? -m crpo_jax|^([A-Z_]+=\S+ )*launch/\S+\.sh "
  return [s for s in spans if re.search(runs, s)]


def _inline_config_fields(text: str) -> list[str]:
  text = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.MULTILINE | re.DOTALL)
  return [f.rstrip(".") for f in re.findall(r"`--config\.([\w.]+)", text)]


# `--config.x=y` and the like stand for any field.
_GENERIC_FIELDS = {"x", "x.y", "field", "a.b"}


def readme_commands() -> list[tuple[str, str]]:
  out = []
  for name in READMES:
    text = (ROOT / name).read_text()
    out += [(name, c) for c in (*_blocks(text), *_inline(text))]
  return out


def _module(command: str) -> str | None:
  m = re.search(r"-m (crpo_jax[\w.]*)", command)
  return m[1] if m else None


def _flags(command: str) -> list[str]:
  """The flag names a command shows, optional groups included: '--config.x', '--out'
  (not the value of a variable: `XLA_FLAGS=--xla_...` is XLA's)."""
  return re.findall(r"(?<![\w=-])(--[\w.-]+)", command)


@functools.cache
def _help(module: str) -> str:
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  text = ""
  for flag in ("--help", "--helpfull"):
    proc = subprocess.run(
      [sys.executable, "-m", module, flag], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=120, check=False,
    )  # fmt: skip
    text += proc.stdout + proc.stderr
    if "--helpfull" not in text:  # argparse: --help is everything
      break
  return text


def _accepts(help_text: str, flag: str) -> bool:
  name = flag[2:]
  candidates = [f"--{name}", f"--[no]{name}"]
  if name.startswith("no"):
    candidates.append(f"--[no]{name[2:]}")
  return any(re.search(re.escape(c) + r"(?![\w-])", help_text) for c in candidates)


def _load_config(spec: str):
  """ml_collections config of `--config=FILE[:ARG]`."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_readme_config", ROOT / path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None) if arg else module.get_config()


def _has_field(config, dotted: str) -> bool:
  value = config
  for part in dotted.split("."):
    if not hasattr(value, "keys") or part not in value:
      return False
    value = value[part]
  return True


COMMANDS = readme_commands()


def test_the_readmes_have_commands():
  modules = {_module(c) for _, c in COMMANDS}
  assert {
    "crpo_jax.main",
    "crpo_jax.export",
    "crpo_jax.evaluate",
    "crpo_jax.data.router",
  } <= modules
  assert any("launch/tpu_pod.sh" in c for _, c in COMMANDS)
  assert any(c.startswith("sbatch") for _, c in COMMANDS)


@pytest.mark.parametrize(("readme", "command"), COMMANDS, ids=[c[:60] for _, c in COMMANDS])
def test_module_and_flags_exist(readme, command):
  module = _module(command)
  if module is None:
    return  # not a crpo_jax module (launchers: executed below)
  assert importlib.util.find_spec(module) is not None, f"{readme}: no module {module}"
  config_spec = re.search(r"--config=(\S+)", command)
  config = _load_config(config_spec[1]) if config_spec else None
  help_text = _help(module)
  for flag in _flags(command):
    if flag.startswith("--config."):
      assert config is not None, f"{readme}: {flag} without --config= in {command!r}"
      field = flag[len("--config.") :]
      if field in _GENERIC_FIELDS:
        continue
      assert _has_field(config, field), f"{readme}: {flag} is no field of {config_spec[1]}"
    else:
      assert _accepts(help_text, flag), f"{readme}: {module} does not accept {flag}"


def test_inline_config_fields_exist():
  from configs import common

  train = common.get_base_config()
  evaluate = _load_config("configs/eval.py")
  for name in READMES:
    for field in _inline_config_fields((ROOT / name).read_text()):
      if field in _GENERIC_FIELDS:
        continue
      assert _has_field(train, field) or _has_field(evaluate, field), f"{name}: --config.{field}"


def test_smoke_config_variants_exist():
  """Every `--config=FILE:ARG` the READMEs name loads (`:runlocal`, `:test`, `:cpu`)."""
  for name in READMES:
    for spec in set(
      re.findall(r"--config=(configs/[\w.]+\.py(?::\w+)?)", (ROOT / name).read_text())
    ):
      _load_config(spec)


def _substitute(command: str, values: dict[str, str]) -> list[str]:
  """Tokens of a README command with its placeholders filled and optional groups
  `[--flag X|Y]` expanded (first alternative); `FILE...` becomes one file."""
  command = re.sub(r"<[^>]*>", "placeholder", command)  # <git url>
  command = re.sub(r"\[([^\]]*)\]", r"\1", command)
  if _module(command) == "crpo_jax.export":
    command = re.sub(r"(?<=--out )DIR\b", "{tmp}/hf_export_step", command)
  command = command.replace("...", "")
  tokens = []
  for token in shlex.split(command):
    if token.startswith("--config.") and token[9:].partition("=")[0] in _GENERIC_FIELDS:
      continue  # `[--config.x=y ...]` stands for any override
    if "|" in token and not token.startswith("-"):
      token = token.split("|")[0]
    key, eq, value = token.partition("=")
    if eq and value in _PLACEHOLDERS:
      token = f"{key}={_PLACEHOLDERS[value]}"
    elif eq and key in _PLACEHOLDERS and not key.startswith("-"):  # SPLIT=FILE
      token = f"{_PLACEHOLDERS[key]}={_PLACEHOLDERS.get(value, value)}"
    elif token in _PLACEHOLDERS:
      token = _PLACEHOLDERS[token]
    else:
      for name in ("$WORKDIR", "WORKDIR"):
        token = token.replace(name, "{workdir}")
    tokens.append(token.format(**values))
  return tokens


def _python(tokens: list[str]) -> list[str]:
  i = tokens.index("-m")
  return [sys.executable, *tokens[i:]]


def _run(args, cwd, **kw):
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS="")
  env.update(kw.pop("env", {}))
  proc = subprocess.run(
    args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False, **kw
  )
  assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
  return proc


def _elsewhere(command: str) -> str | None:
  module = _module(command)
  for key, where in _ELSEWHERE.items():
    if command.startswith(key) or module == key:
      return where
  return None


# The order the data flows in: each command's output is the next one's input.
_ORDER = ("crpo_jax.data.synthetic", "crpo_jax.data.router", "crpo_jax.data.validate",
          "crpo_jax.data.arrayrecord", "crpo_jax.export", "crpo_jax.main")  # fmt: skip


def _stand_in(bin_dir: pathlib.Path, name: str, log: pathlib.Path) -> None:
  """A program `name` on PATH that records its arguments (one line, shell-quoted)."""
  script = bin_dir / name
  script.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {log}\necho >> {log}\n')
  script.chmod(0o755)


def _dry_run_main(args: list[str], cwd) -> None:
  proc = _run([sys.executable, "-m", "crpo_jax.main", *args, "--dry_run"], cwd)
  assert "dry run (config parsed" in proc.stdout


@pytest.mark.slow
def test_every_command_runs(demo_cli_run, tmp_path):
  workdir, _ = demo_cli_run
  values = {"tmp": str(tmp_path), "workdir": str(workdir)}
  commands = sorted(
    {c for _, c in COMMANDS}, key=lambda c: _ORDER.index(m) if (m := _module(c)) in _ORDER else 99
  )
  ran = []
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for command in commands:
    module = _module(command)
    if module and command.endswith(f"-m {module}"):
      continue  # a mention ("`python -m crpo_jax.main` exits with:"), not a command
    if module == "crpo_jax.main" and "configs/demo.py " in command and "--config." not in command:
      ran.append(command)  # the demo itself: demo_cli_run ran it (as `:test`); variants dry-run
      continue
    if module == "crpo_jax.main" and not _elsewhere(command):
      tokens = _substitute(command, values)
      _dry_run_main(_python(tokens)[3:], ROOT)
    elif module == "crpo_jax.experiments.shortcut":  # six arms train for about an hour
      proc = _run([*_python(_substitute(command, values)), "--dry-run"], ROOT)
      assert proc.stdout.startswith("dry run: seeds"), proc.stdout
    elif module and not _elsewhere(command):
      proc = _run(_python(_substitute(command, values)), ROOT)
      if module == "crpo_jax.export":  # Orbax's INFO lines go to WORKDIR/logs/
        assert not library_lines(proc.stdout + proc.stderr), proc.stderr[-2000:]
    elif "launch/tpu_pod.sh" in command:
      log = tmp_path / "gcloud.log"
      _stand_in(bin_dir, "gcloud", log)
      tokens = _substitute(command, values)
      env_vars = dict(t.split("=", 1) for t in tokens if re.fullmatch(r"[A-Z_]+=.*", t))
      argv = [t for t in tokens if not re.fullmatch(r"[A-Z_]+=.*", t)]
      env = {"TPU_NAME": "my-tpu", "ZONE": "zone-a", **env_vars}
      env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
      log.write_text("")
      _run(["bash", *argv], ROOT, env=env)
      recorded = log.read_text()
      assert f"tpu-vm ssh {env['TPU_NAME']}" in recorded, recorded
      if argv[1] == "train":  # the workers' command: check its crpo_jax.main flags
        remote = shlex.split(shlex.split(recorded.strip())[-1])
        i = remote.index("crpo_jax.main")
        main_args = remote[i + 1 : next(j for j, t in enumerate(remote) if t in (">", ">>"))]
        _dry_run_main(main_args, ROOT)
    elif command.startswith("sbatch launch/slurm_gpu.sbatch"):
      log = tmp_path / "srun.log"
      _stand_in(bin_dir, "srun", log)
      venv = tmp_path / "venv"
      (venv / "bin").mkdir(parents=True)
      (venv / "bin" / "activate").write_text("")
      tokens = _substitute(command, values)[1:]  # sbatch runs the script
      env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "VENV": str(venv), "REPO_DIR": str(ROOT)}
      _run(["bash", *tokens], ROOT, env=env)
      srun_args = shlex.split(log.read_text())
      _dry_run_main(srun_args[srun_args.index("crpo_jax.main") + 1 :], ROOT)
    else:
      assert _elsewhere(command), f"no test runs the README command {command!r}"
      continue
    ran.append(command)
  assert any(_module(c) == "crpo_jax.export" for c in ran)
  assert (tmp_path / "hf_export" / "config.json").exists()
  assert (tmp_path / "hf_export_step" / "config.json").exists()
  assert (tmp_path / "arrayrecord").exists()
