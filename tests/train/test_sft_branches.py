"""`sft.branches`: the warm start trains on the original branch only unless asked."""

from __future__ import annotations

import numpy as np
import pytest

from configs import common, demo
from crpo_jax.data import transforms
from crpo_jax.train import sft


def _batch():
  routes = ["temporal", "static", "spatial"]
  return {
    "route": np.array([transforms.ROUTES.index(r) for r in routes]),
    "answer_letter": np.array(["A", "B", "C"]),
    "answer_cf_letter": np.array(["B", "D", ""]),  # the spatial row has no y_cf
  }


def test_default_is_original_branch_only_for_every_algorithm():
  assert common.get_base_config().sft.branches == "orig"
  assert demo.get_config().sft.branches == "orig"
  assert sft.branch_targets(_batch()) == [("orig", 0, "A"), ("orig", 1, "B"), ("orig", 2, "C")]
  assert sft.branch_targets(_batch(), sft.parse_branches("orig")) == sft.branch_targets(_batch())


def test_cf_branch_when_asked_uses_each_routes_own_target():
  got = sft.branch_targets(_batch(), sft.parse_branches("orig,cf"))
  # temporal: y_cf; static: y (never y_cf); no y_cf: no cf row.
  assert got == [
    ("orig", 0, "A"),
    ("cf", 0, "B"),
    ("orig", 1, "B"),
    ("cf", 1, "B"),
    ("orig", 2, "C"),
  ]
  assert sft.branch_targets(_batch(), ("cf",)) == [("cf", 0, "B"), ("cf", 1, "B")]


@pytest.mark.parametrize("bad", ["", "orig,orig", "original", "orig,cf,x"])
def test_bad_branches_raise_naming_the_field(bad):
  with pytest.raises(ValueError, match="sft.branches"):
    sft.parse_branches(bad)
