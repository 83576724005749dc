"""The float64 reference of the NaN / inf attention tests (tests/python/test_ops_nonfinite.py on
the CPU, tests/gpu/test_nonfinite_cuda.py on the GPU).

The textbook computation: scores masked to -inf outside the visible key range, softmax, then
P @ V. Two variants bound what a flash-style kernel may return:
  * strict: only the keys a row sees contribute (a NaN there must make the row NaN);
  * math: P @ V over all keys, as PyTorch's math backend does (0 * NaN = NaN spreads a NaN value
    to rows that mask it).
"""

from __future__ import annotations

import numpy as np


def reference(q, k, v, causal: bool, strict: bool) -> np.ndarray:
    _, sq, h, d = q.shape
    sk = k.shape[1]
    group = h // k.shape[2]
    q64 = q.astype(np.float64)
    k64 = np.repeat(k.astype(np.float64), group, axis=2)
    v64 = np.repeat(v.astype(np.float64), group, axis=2)
    visible = np.ones((sq, sk), bool)
    if causal:  # bottom-right aligned, as the kernels
        visible = np.arange(sk)[None, :] <= np.arange(sq)[:, None] + sk - sq
    with np.errstate(all="ignore"):
        s = np.einsum("bqhd,bkhd->bhqk", q64, k64) / np.sqrt(d)
        s = np.where(visible, s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p = p / p.sum(-1, keepdims=True)
        if not strict:
            return np.einsum("bhqk,bkhd->bqhd", p, v64)
        out = np.zeros(q.shape, np.float64)
        for i in range(sq):
            keys = np.nonzero(visible[i])[0]
            out[:, i] = np.einsum("bhk,bkhd->bhd", p[:, :, i, keys], v64[:, keys])
        return out


def check_nonfinite(out, q, k, v, causal: bool, atol: float) -> None:
    """A NaN in the strict reference must be NaN in out (nothing swallowed), a NaN in out must be
    NaN in the math reference (nothing invented), and finite values match."""
    out = np.asarray(out, dtype=np.float32)
    strict, math = reference(q, k, v, causal, True), reference(q, k, v, causal, False)
    must, may = np.isnan(strict), np.isnan(math)
    got = np.isnan(out)
    assert (got | ~must).all(), f"{int((must & ~got).sum())} outputs should be NaN but are not"
    assert (may | ~got).all(), f"{int((got & ~may).sum())} outputs are NaN but should not be"
    np.testing.assert_allclose(out[~may], math[~may], atol=atol)


def poison(x, what, where):
    x = x.copy()
    x[where] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[what]
    return x
