"""runtimes/erf.py (Cody's erf, the numpy runtime's GELU) agrees with the libraries' erf.

``math.erf`` (the C library's, always there) is the reference in float64; ``scipy.special.erf`` (the
function the numpy runtime used before, installed with jax and the test extra) in float32, where the
runtime computes. The core install has no scipy: those tests skip there.
"""

from __future__ import annotations

import importlib.util
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from electra_bridge.runtimes.erf import erf

needs_scipy = pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy is not installed")


def _ulps_from_math(x: np.ndarray) -> np.ndarray:
    want = np.array([math.erf(v) for v in x.tolist()])
    got = erf(x)
    return np.abs(got - want) / np.maximum(np.spacing(np.abs(want)), np.finfo(np.float64).tiny)


def test_within_four_ulp_of_math_erf_on_a_dense_float64_grid():
    # every interval, both signs, each boundary (0.46875, 4, and 6 where |x| saturates) from both sides,
    # and the tiny arguments where erf(x) ~ 2x/sqrt(pi)
    grid = np.concatenate([np.linspace(-30.0, 30.0, 600_001),
                           np.geomspace(1e-300, 30.0, 20_001), -np.geomspace(1e-300, 30.0, 20_001),
                           *(np.nextafter(b, [-np.inf, np.inf]) for b in (0.46875, 4.0, 6.0)),
                           [0.46875, 4.0, 6.0, 5e-324]])
    ulps = _ulps_from_math(grid)
    worst = int(np.argmax(ulps))
    assert ulps[worst] <= 4.0, f"erf({grid[worst]!r}) is {ulps[worst]:.1f} ulp from math.erf"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=50))
def test_within_four_ulp_of_math_erf_for_any_float64(values):
    assert _ulps_from_math(np.array(values, np.float64)).max() <= 4.0


def test_special_values_and_signs():
    got = erf(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-320, -1e-320, 100.0, -100.0]))
    assert got[0] == 0.0 and not np.signbit(got[0])
    assert got[1] == 0.0 and np.signbit(got[1])
    assert got[2] == 1.0 and got[3] == -1.0 and np.isnan(got[4])
    assert got[5] > 0 > got[6] and got[7] == 1.0 and got[8] == -1.0
    assert np.array_equal(erf(-np.linspace(0, 8, 1001)), -erf(np.linspace(0, 8, 1001)))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64])
def test_keeps_dtype_and_shape_and_rounds_once(dtype):
    x = np.linspace(-6, 6, 3 * 5 * 7, dtype=np.float64).astype(dtype).reshape(3, 5, 7)
    got = erf(x)
    assert got.dtype == np.dtype(dtype) and got.shape == x.shape
    if dtype == np.float64:
        return                      # the ulp tests above
    # computed in float64, rounded once to the input dtype
    want = np.array([math.erf(v) for v in x.astype(np.float64).ravel().tolist()]).astype(dtype).reshape(x.shape)
    assert np.array_equal(got, want)


def test_integer_input_gives_float64():
    assert erf(np.array([0, 1, -2])).dtype == np.float64


def test_blocks_do_not_change_the_result():
    # more than one 65536-element block, and a non-contiguous view
    x = np.random.default_rng(0).standard_normal((3, 70_001)) * 3
    whole = erf(x)
    assert np.array_equal(whole, np.concatenate([erf(row) for row in x]).reshape(x.shape))
    assert np.array_equal(erf(x.T), whole.T)


@needs_scipy
def test_float32_results_equal_scipy_on_gelu_like_inputs():
    from scipy.special import erf as scipy_erf
    rng = np.random.default_rng(0)
    for scale in (0.02, 1.0, 3.0, 10.0):
        x = (rng.standard_normal(400_000) * scale).astype(np.float32)
        assert np.array_equal(erf(x), scipy_erf(x)), scale


def _assert_equal_but_at_midpoints(x: np.ndarray, got: np.ndarray, want: np.ndarray) -> int:
    """got == want except where erf(x) in float64 lies within 4 float64 ulp of the midpoint of two
    adjacent float32 values, got and want being those two; returns how many such exceptions."""
    bad = np.flatnonzero(got != want)
    if bad.size == 0:
        return 0
    g, w = got[bad].astype(np.float64), want[bad].astype(np.float64)
    assert np.array_equal(np.nextafter(got[bad], want[bad]), want[bad]), "more than one float32 ulp apart"
    midpoint = (g + w) / 2
    exact = erf(x[bad].astype(np.float64))
    assert np.all(np.abs(exact - midpoint) <= 4 * np.spacing(midpoint)), x[bad]
    return int(bad.size)


@needs_scipy
def test_float32_equals_scipy_except_at_rounding_midpoints():
    # every 13th float32 bit pattern from 1e-6 to 10 (where erf reaches 1.0f), both signs: 15M values
    # with every low mantissa bit pattern (13 is odd); 1 differs by a float32 ulp (x = 1.839803e-4)
    from scipy.special import erf as scipy_erf
    low, high = np.array([1e-6, 10.0], np.float32).view(np.int32)
    x = np.arange(low, high, 13, dtype=np.int32).view(np.float32)
    exceptions = 0
    for part in np.array_split(x, 16):
        got, want = erf(part), scipy_erf(part)
        exceptions += _assert_equal_but_at_midpoints(part, got, want)
        assert np.array_equal(erf(-part), -got)
    assert exceptions <= x.size // 1_000_000, exceptions
