"""Tolerances for float comparisons of results computed in different orders.

Two float32 computations that add the same terms in another order (sharded vs
unsharded, chunked vs whole, cached decode vs full forward, XLA vs torch) differ by a
few ulps of the largest partial sums. That error scales with the magnitude of the
values being compared, so a bare absolute tolerance set at the edge of one observed
error passes or fails at random as the values move. `assert_close` bounds each
element's error by `rtol * (|want| + max|want|)`: relative to the element and to the
array's own scale. Each call site picks `rtol` from its computation (its depth and
dtype) with a margin over the measured error, and says so when it is not obvious.

`CRPO_TOLERANCE_REPORT=1` prints each call's observed error in units of its bound's
scale, which is how the call sites' `rtol` values were measured.
"""

import os

import numpy as np


def observed_rtol(got, want) -> float:
  """The smallest `rtol` that `assert_close(got, want, rtol=...)` would accept."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  scale = np.abs(want) + np.abs(want).max()
  err = np.abs(got - want)
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = np.where(err == 0, 0.0, err / scale)
  return float(ratio.max()) if ratio.size else 0.0


def assert_close(got, want, *, rtol: float, err_msg: str = ""):
  """Asserts |got - want| <= rtol * (|want| + max|want|), elementwise.

  Args:
    got: the value under test.
    want: the reference; its largest magnitude sets the absolute part of the bound.
    rtol: the relative tolerance, chosen from the computation with a margin.
    err_msg: prefixed to the failure message.
  """
  got_a, want_a = np.asarray(got), np.asarray(want)
  assert got_a.shape == want_a.shape, f"{err_msg} shape {got_a.shape} != {want_a.shape}"
  assert np.all(np.isfinite(got_a) == np.isfinite(want_a)), f"{err_msg} non-finite values differ"
  finite = np.isfinite(want_a)
  seen = observed_rtol(got_a[finite], want_a[finite])
  if os.environ.get("CRPO_TOLERANCE_REPORT"):
    print(f"[tolerance] {err_msg or 'assert_close'}: observed {seen:.3g} vs rtol {rtol:.3g}")
  assert seen <= rtol, (
    f"{err_msg} max |got - want| / (|want| + max|want|) = {seen:.3g} > rtol {rtol:.3g}"
    f" (max|want| = {np.abs(want_a[finite]).max() if finite.any() else 0:.3g})"
  )
