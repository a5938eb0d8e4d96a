"""The inspection notebooks run headless, top to bottom, against the package."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ["reward_inspection.ipynb", "loss_inspection.ipynb"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, monkeypatch):
  # Agg rendering, shown inline: headless, and the figures land in the outputs.
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  # The kernel is a fresh process: it must find the package from the repository root.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
  NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
  ).execute()
  errors = [
    o
    for c in nb.cells
    if c.cell_type == "code"
    for o in c.get("outputs", [])
    if o.output_type == "error"
  ]
  assert not errors
  images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
  assert images >= 2, "each notebook draws at least two figures"
