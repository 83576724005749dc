"""NaN and inf inputs to ops.attention propagate as in the reference (issue 17, item 2).

The references (tests/nonfinite_reference.py) bound what a flash-style kernel may return. A NaN
in the strict reference must be NaN in ours (nothing swallowed: before the fix a NaN query row gave
zeros, a NaN key was dropped and +inf gave finite output), a NaN in ours must be NaN in the math
reference (nothing invented), and finite values match.
"""

from __future__ import annotations

import numpy as np
import pytest
from nonfinite_reference import check_nonfinite, poison

from fastattention import ops


def _check(q, k, v, causal, atol, **kw):
    check_nonfinite(ops.attention(q, k, v, causal=causal, **kw), q, k, v, causal, atol)


SHAPES = [(1, 100), (3, 70), (17, 17), (64, 64), (200, 300)]  # narrow and wide kernels


@pytest.mark.parametrize("sq, sk", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "tensor, what",
    [("q", "nan"), ("k", "nan"), ("v", "nan"), ("q", "inf"), ("k", "inf"), ("q", "-inf")],
)
def test_nonfinite_inputs_propagate(sq, sk, causal, tensor, what):
    rng = np.random.default_rng(sq * 1000 + sk)
    q = rng.standard_normal((1, sq, 4, 32)).astype(np.float32)
    k = rng.standard_normal((1, sk, 2, 32)).astype(np.float32)
    v = rng.standard_normal((1, sk, 2, 32)).astype(np.float32)
    arrays = {"q": q, "k": k, "v": v}
    rows = sq if tensor == "q" else sk
    arrays[tensor] = poison(arrays[tensor], what, (0, rows // 2, 1, 5))
    _check(arrays["q"], arrays["k"], arrays["v"], causal, atol=1e-4)


def test_nan_query_row_is_nan_not_zero():
    """The issue's reproduction: one NaN in a query row made that row's output all zeros."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 8, 2, 16)).astype(np.float32) for _ in range(3))
    q[0, 3, 0, 0] = np.nan
    out = ops.attention(q, k, v)
    assert np.isnan(out[0, 3, 0]).all()
    assert np.isfinite(np.delete(out[0], 3, axis=0)).all()


@pytest.mark.parametrize("num_splits", [4, 8])
@pytest.mark.parametrize("tensor", ["q", "k", "v"])
def test_nonfinite_through_split_kv_decode(num_splits, tensor):
    """Split-KV decode: a NaN in one split reaches the merged row (float16 inputs, GQA)."""
    rng = np.random.default_rng(num_splits)
    q = rng.standard_normal((1, 2, 4, 64)).astype(np.float16)
    k = rng.standard_normal((1, 3000, 2, 64)).astype(np.float16)
    v = rng.standard_normal((1, 3000, 2, 64)).astype(np.float16)
    arrays = {"q": q, "k": k, "v": v}
    arrays[tensor] = poison(arrays[tensor], "nan", (0, 1, 1, 7))
    _check(arrays["q"], arrays["k"], arrays["v"], True, atol=3e-3, num_splits=num_splits)


def test_lse_of_a_nan_row_is_nan():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 4, 2, 16)).astype(np.float32) for _ in range(3))
    q[0, 2, 1, 3] = np.nan
    _, lse = ops.attention(q, k, v, return_lse=True)
    assert np.isnan(lse[0, 1, 2]) and np.isfinite(np.delete(lse[0, 1], 2)).all()


def test_finite_inputs_still_give_finite_outputs_with_masks():
    """Rows with no visible key (a window that excludes every key) stay zeros, not NaN."""
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((1, 16, 2, 16)).astype(np.float32) for _ in range(3))
    out = ops.attention(q, k, v, causal=True, window=(0, 0))
    assert np.isfinite(out).all()
