"""The inspection notebooks run headless, top to bottom, against the package."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ["reward_inspection.ipynb", "loss_inspection.ipynb"]


def _execute(name, monkeypatch, env=None):
  # Agg rendering, shown inline: headless, and the figures land in the outputs.
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  # The kernel is a fresh process: it must find the package from the repository root.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  for key, value in (env or {}).items():
    monkeypatch.setenv(key, value)
  nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
  NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
  ).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  errors = [o for o in outputs if o.output_type == "error"]
  assert not errors
  return outputs


def _images(outputs):
  return sum("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, monkeypatch):
  assert _images(_execute(name, monkeypatch)) >= 2, "each notebook draws at least two figures"


@pytest.mark.slow
def test_run_inspection_on_the_demo_run(demo_cli_run, monkeypatch):
  """notebooks/run_inspection.ipynb against the `:test` demo's workdir (CRPO_WORKDIR)."""
  workdir, _ = demo_cli_run
  outputs = _execute("run_inspection.ipynb", monkeypatch, {"CRPO_WORKDIR": str(workdir)})
  # Reward terms per branch, per route, CRR/accuracy/zero-spread, advantage histograms.
  assert _images(outputs) == 4
  (table,) = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
  steps = sorted(p.stem for p in (workdir / "rollouts").glob("step_*.jsonl"))
  assert steps == ["step_3", "step_4"]  # RL steps 3 and 4 of the :test run (log_every 1)
  assert "<h4>step 4</h4>" in table
  for column in ("orig_text", "orig_answer", "orig_terms", "cf_text", "cf_answer", "cf_terms"):
    assert f"<th>{column}</th>" in table
  # 2 prompts x G=2 rollouts of the :test run, each row original beside counterfactual.
  assert table.count("<tr>") == 1 + 2 * 2
