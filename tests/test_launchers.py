"""The cluster launchers' signal paths, run here with stand-ins for the cluster tools.

`launch/slurm_gpu.sbatch` runs with stand-in `srun` (which becomes a fake trainer that
saves on SIGTERM and exits 75, as `crpo_jax.main` does), `scancel` (which delivers the
signal to the tasks, as SLURM does) and `scontrol` (which records the requeue).
`launch/tpu_pod.sh` runs with a stand-in `gcloud` that executes the workers' command in
a local shell, so `train` and `stop` act on a real (fake-trainer) process.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PREEMPTED = 75  # crpo_jax.train.checkpoint.PREEMPTED_EXIT_CODE


def _script(path: pathlib.Path, text: str) -> pathlib.Path:
  path.write_text("#!/usr/bin/env bash\n" + text)
  path.chmod(0o755)
  return path


def _wait_for(predicate, timeout_s: float = 20.0) -> None:
  deadline = time.monotonic() + timeout_s
  while not predicate():
    if time.monotonic() > deadline:
      raise AssertionError("timed out waiting")
    time.sleep(0.05)


def _kill_if_ours(pid: int, marker: str) -> None:
  """SIGKILL `pid` if it still runs a stand-in (its command line names `marker`): a
  finished trainer's pid may since belong to another process."""
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      if marker.encode() in f.read():
        os.kill(pid, signal.SIGKILL)
  except (FileNotFoundError, ProcessLookupError):
    pass


def _fake_trainer(path: pathlib.Path, log: pathlib.Path, pid_file: pathlib.Path, on_term: int):
  """A trainer that logs its arguments, and on SIGTERM logs it and exits `on_term`."""
  return _script(
    path,
    f'echo "args $*" >> {log}\n'
    f"trap 'echo \"TERM $$\" >> {log}; exit {on_term}' TERM\n"
    f"echo $$ > {pid_file}\n"
    f"echo $$ >> {pid_file}.all\n"
    "while true; do sleep 0.05; done\n",
  )


def _slurm(tmp_path: pathlib.Path, on_term: int, signal_to_shell: int):
  """Runs the batch script to its end; the signal goes to the batch shell."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log, pid_file = tmp_path / "trainer.log", tmp_path / "trainer.pid"
  trainer = _fake_trainer(tmp_path / "trainer.sh", log, pid_file, on_term)
  _script(bin_dir / "srun", f'echo "$*" > {tmp_path}/srun.args\nexec {trainer} "$@"\n')
  # SLURM's scancel --signal=TERM JOB delivers SIGTERM to every task of the job.
  _script(
    bin_dir / "scancel", f'echo "$*" > {tmp_path}/scancel.args\nkill -TERM $(cat {pid_file})\n'
  )
  _script(bin_dir / "scontrol", f'echo "$*" > {tmp_path}/scontrol.args\n')
  venv = tmp_path / "venv"
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "activate").write_text("")
  env = {
    **os.environ,
    "PATH": f"{bin_dir}:{os.environ['PATH']}",
    "VENV": str(venv),
    "REPO_DIR": str(ROOT),
    "SLURM_JOB_ID": "42",
  }
  shell = subprocess.Popen(
    ["bash", "launch/slurm_gpu.sbatch", "--config=configs/demo.py", "--workdir=/shared/run"],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  try:
    _wait_for(pid_file.exists)
    time.sleep(0.2)  # the batch shell is in its `wait` loop
    shell.send_signal(signal_to_shell)
    if signal_to_shell == signal.SIGTERM:  # a scheduler preemption signals the tasks too
      os.kill(int(pid_file.read_text()), signal.SIGTERM)
    out, _ = shell.communicate(timeout=30)
  finally:
    if shell.poll() is None:
      shell.kill()
    if pid_file.exists():  # the trainer, should a failed test have left it running
      _kill_if_ours(int(pid_file.read_text()), str(trainer))

  def read(name: str) -> str | None:
    return (tmp_path / name).read_text().strip() if (tmp_path / name).exists() else None

  return shell.returncode, out, log.read_text(), read("scancel.args"), read("scontrol.args")


def test_slurm_time_limit_saves_then_requeues(tmp_path):
  rc, out, trainer_log, scancel, scontrol = _slurm(tmp_path, PREEMPTED, signal.SIGUSR1)
  assert scancel == "--signal=TERM 42", out  # SIGTERM to the tasks, not to srun
  assert "TERM" in trainer_log, trainer_log  # the trainer saw SIGTERM (it was not SIGKILLed)
  assert "python -m crpo_jax.main --config=configs/demo.py --workdir=/shared/run" in trainer_log
  assert scontrol == "requeue 42", out  # a time limit requeues only through the script
  assert rc == 0, out


def test_slurm_scheduler_preemption_waits_for_the_save(tmp_path):
  rc, out, trainer_log, scancel, scontrol = _slurm(tmp_path, PREEMPTED, signal.SIGTERM)
  assert "waiting for the tasks to save" in out, out
  assert "TERM" in trainer_log and scancel is None
  assert scontrol == "requeue 42" and rc == 0, out


@pytest.mark.parametrize("exit_code", [0, 1])
def test_slurm_other_exits_are_not_requeued(tmp_path, exit_code):
  rc, out, _, _, scontrol = _slurm(tmp_path, exit_code, signal.SIGUSR1)
  assert scontrol is None, out
  assert rc == exit_code, out


@pytest.fixture
def tpu_worker(tmp_path):
  """A stand-in gcloud whose `tpu-vm ssh --command C` runs C in a local shell (one worker)."""
  home, bin_dir, fake_bin = tmp_path / "home", tmp_path / "bin", tmp_path / "fake_bin"
  for d in (home, bin_dir, fake_bin):
    d.mkdir()
  log, pid_file = tmp_path / "trainer.log", tmp_path / "trainer.pid"
  _fake_trainer(fake_bin / "python", log, pid_file, PREEMPTED)
  repo = tmp_path / "repo"
  (repo / ".venv" / "bin").mkdir(parents=True)
  (repo / ".venv" / "bin" / "activate").write_text(f'export PATH="{fake_bin}:$PATH"\n')
  _script(
    bin_dir / "gcloud",
    'while [ $# -gt 0 ]; do [ "$1" = --command ] && cmd="$2"; shift; done\nexec bash -c "$cmd"\n',
  )
  env = {
    **os.environ,
    "PATH": f"{bin_dir}:{os.environ['PATH']}",
    "HOME": str(home),
    "TPU_NAME": "my-tpu",
    "ZONE": "zone-a",
    "REPO_DIR": str(repo),
  }

  def launch(*args: str) -> str:
    proc = subprocess.run(
      ["bash", "launch/tpu_pod.sh", *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout

  def trainer_pid() -> int:
    _wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
    return int(pid_file.read_text())

  yield launch, trainer_pid, log, home
  # Every fake trainer started, even by a test that failed half-way.
  all_pids = pathlib.Path(f"{pid_file}.all")
  for pid in all_pids.read_text().split() if all_pids.exists() else []:
    _kill_if_ours(int(pid), str(fake_bin))


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  # A zombie (exited, not yet reaped) counts as gone.
  with open(f"/proc/{pid}/stat") as f:
    return f.read().split(")")[-1].split()[0] != "Z"


def test_tpu_pod_train_then_stop(tpu_worker):
  launch, trainer_pid, log, home = tpu_worker
  out = launch("train", "--config=configs/demo.py", "--workdir=/mnt/shared/run")
  assert "started on" in out, out
  pid = trainer_pid()
  assert _alive(pid)
  assert (home / "crpo_train.pid").read_text().strip() == str(pid)
  _wait_for(lambda: "args -m crpo_jax.main --config=configs/demo.py" in log.read_text())
  out = launch("stop")  # must not kill its own shell: it returns 0 and says so
  assert f"stopping {pid}" in out, out
  _wait_for(lambda: not _alive(pid))
  assert f"TERM {pid}" in log.read_text()  # SIGTERM, so the trainer saved


def test_tpu_pod_train_stops_the_earlier_run(tpu_worker, tmp_path):
  launch, trainer_pid, log, _ = tpu_worker
  launch("train", "--config=configs/demo.py", "--workdir=/mnt/shared/run")
  first = trainer_pid()
  (tmp_path / "trainer.pid").unlink()
  out = launch("train", "--config=configs/demo.py", "--workdir=/mnt/shared/run")
  assert f"stopping the earlier run {first}" in out, out
  second = trainer_pid()
  assert second != first and _alive(second) and not _alive(first)
  assert f"TERM {first}" in log.read_text()
  assert "rm -f /tmp/libtpu_lockfile" in (ROOT / "launch" / "tpu_pod.sh").read_text()


def test_tpu_pod_stop_without_a_run(tpu_worker):
  launch, _, _, _ = tpu_worker
  assert "no crpo_jax run on" in launch("stop")
