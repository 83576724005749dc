"""Kernel-level bindings (_C.kernel_*) on CPU arrays against float64 numpy references.

The same bindings take CUDA tensors (tests/gpu/test_kernels_cuda.py); here they run the CPU
kernels: float32 activations, weights / biases / tables of any float dtype. Outputs are poisoned
(NaN) before each call so unwritten elements show; inputs are fresh random values (never zeros).
"""

import math

import numpy as np
import pytest

from fastattention import _C

RTOL = 3e-6  # float32 kernels against float64: a few ulp


def rand(rng, *shape, dtype=np.float32, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def nan_like(shape, dtype=np.float32):
    return np.full(shape, np.nan, dtype=dtype)


def assert_close(got, ref, rtol=RTOL):
    got = np.asarray(got, dtype=np.float64)
    assert not np.isnan(got).any(), "unwritten (NaN) output elements"
    err = np.abs(got - ref).max()
    assert err <= rtol * max(1.0, np.abs(ref).max()), f"max error {err:.3g}"


def rms_ref(x, w, eps):
    x = x.astype(np.float64)
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w.astype(np.float64)


def layer_ref(x, w, b, eps):
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w.astype(np.float64)
    return y if b is None else y + b.astype(np.float64)


_erf = np.vectorize(math.erf)


def gelu_ref(x, approximate):
    x = x.astype(np.float64)
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def silu_ref(x):
    x = x.astype(np.float64)
    return x / (1 + np.exp(-x))


@pytest.mark.parametrize("kind", ["rms", "layer", "layer_bias"])
@pytest.mark.parametrize("wdtype", [np.float32, np.float16])
def test_norm(kind, wdtype):
    rng = np.random.default_rng(1)
    t, h, eps = 5, 37, 1e-5
    buf = rand(rng, t, h + 3, scale=2.0)
    x = buf[:, :h]  # strided rows
    w = (1 + 0.2 * rand(rng, h)).astype(wdtype)
    b = rand(rng, h).astype(wdtype) if kind == "layer_bias" else None
    out = nan_like((t, h))
    typ = "rms" if kind == "rms" else "layer"
    _C.kernel_norm(x, w, b, out, type=typ, eps=eps)
    ref = rms_ref(x, w, eps) if typ == "rms" else layer_ref(x, w, b, eps)
    assert_close(out, ref)
    # in place (out is x)
    _C.kernel_norm(x, w, b, x, type=typ, eps=eps)
    np.testing.assert_array_equal(x, out)


@pytest.mark.parametrize("typ", ["rms", "layer"])
def test_add_norm(typ):
    rng = np.random.default_rng(2)
    t, h = 4, 64
    residual, x = rand(rng, t, h), rand(rng, t, h)
    w = 1 + 0.2 * rand(rng, h)
    expected_sum = residual.astype(np.float64) + x
    out = nan_like((t, h))
    _C.kernel_add_norm(residual, x, w, None, out, type=typ, eps=1e-6)
    assert_close(residual, expected_sum)
    s = residual.copy()
    ref = rms_ref(s, w, 1e-6) if typ == "rms" else layer_ref(s, w, None, 1e-6)
    assert_close(out, ref)


@pytest.mark.parametrize("m", [1, 3, 40])
@pytest.mark.parametrize("wdtype", [np.float32, np.float16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear(m, wdtype, with_bias):
    rng = np.random.default_rng(m)
    k, n = 50, 33
    x = rand(rng, m, k + 5)[:, :k]  # strided rows
    w = rand(rng, n, k).astype(wdtype)
    b = rand(rng, n).astype(wdtype) if with_bias else None
    y = nan_like((m, n))
    _C.kernel_linear(x, w, b, y)
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    if with_bias:
        ref += b.astype(np.float64)
    assert_close(y, ref, rtol=2e-5)


@pytest.mark.parametrize("bdtype", [np.float32, np.float16])
def test_add_bias(bdtype):
    rng = np.random.default_rng(3)
    buf = rand(rng, 6, 20)
    y = buf[:, :17]  # strided rows; the padding must stay untouched
    pad_before = buf[:, 17:].copy()
    b = rand(rng, 17).astype(bdtype)
    ref = y.astype(np.float64) + b.astype(np.float64)
    _C.kernel_add_bias(b, y)
    assert_close(y, ref)
    np.testing.assert_array_equal(buf[:, 17:], pad_before)


def test_swiglu():
    rng = np.random.default_rng(4)
    t, i = 3, 45
    gu = rand(rng, t, 2 * i, scale=3.0)
    out = nan_like((t, i))
    _C.kernel_swiglu(gu, out)
    assert_close(out, silu_ref(gu[:, :i]) * gu[:, i:], rtol=5e-6)


@pytest.mark.parametrize("approximate", ["erf", "tanh"])
def test_geglu_and_gelu(approximate):
    rng = np.random.default_rng(5)
    t, i = 3, 45
    gu = rand(rng, t, 2 * i, scale=3.0)
    out = nan_like((t, i))
    _C.kernel_geglu(gu, out, approximate=approximate)
    assert_close(out, gelu_ref(gu[:, :i], approximate) * gu[:, i:], rtol=5e-6)
    x = rand(rng, 2, 3, 17, scale=3.0)
    out = nan_like(x.shape)
    _C.kernel_gelu(x, out, approximate=approximate)
    assert_close(out, gelu_ref(x, approximate), rtol=5e-6)


def test_add():
    rng = np.random.default_rng(6)
    a, b = rand(rng, 4, 33), rand(rng, 4, 33)
    out = nan_like(a.shape)
    _C.kernel_add(a, b, out)
    np.testing.assert_array_equal(out, a + b)


@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("tdtype", [np.float32, np.float16])
def test_embedding(id_dtype, tdtype):
    rng = np.random.default_rng(7)
    table = rand(rng, 11, 24).astype(tdtype)
    ids = np.array([3, 0, 10, 3], dtype=id_dtype)
    out = nan_like((4, 24))
    _C.kernel_embedding(ids, table, out)
    np.testing.assert_array_equal(out, table[ids].astype(np.float32))
    # A tensor-parallel shard of rows [8, 19): ids outside give zero rows.
    out = nan_like((4, 24))
    _C.kernel_embedding(
        np.array([8, 2, 18, 19], dtype=id_dtype), table, out, vocab_start=8, vocab_parallel=True
    )
    np.testing.assert_array_equal(out[0], table[0].astype(np.float32))
    np.testing.assert_array_equal(out[2], table[10].astype(np.float32))
    assert not out[1].any() and not out[3].any()


# ---- bad input: ValueError naming the argument at fault ----


def test_bad_shapes_name_the_tensor():
    rng = np.random.default_rng(8)
    x, w = rand(rng, 3, 8), rand(rng, 8)
    with pytest.raises(ValueError, match="out"):
        _C.kernel_norm(x, w, None, nan_like((3, 7)))
    with pytest.raises(ValueError, match="weight"):
        _C.kernel_norm(x, rand(rng, 9), None, nan_like((3, 8)))
    with pytest.raises(ValueError, match="bias: RMSNorm takes no bias"):
        _C.kernel_norm(x, w, w, nan_like((3, 8)), type="rms")
    with pytest.raises(ValueError, match="type"):
        _C.kernel_norm(x, w, None, nan_like((3, 8)), type="batch")
    with pytest.raises(ValueError, match="w: expected"):
        _C.kernel_linear(x, rand(rng, 4, 7), None, nan_like((3, 4)))
    with pytest.raises(ValueError, match="y"):
        _C.kernel_linear(x, rand(rng, 4, 8), None, nan_like((3, 5)))
    with pytest.raises(
        ValueError, match="impl / gemv_warps / gemv_stages choose a CUDA kernel; x is on cpu"
    ):
        _C.kernel_linear(x, rand(rng, 4, 8), None, nan_like((3, 4)), impl="gemv")
    with pytest.raises(ValueError, match="impl: expected 'auto', 'cublas' or 'gemv'"):
        _C.kernel_linear(x, rand(rng, 4, 8), None, nan_like((3, 4)), impl="blas")
    with pytest.raises(ValueError, match="gemv_warps: expected >= 0"):
        _C.kernel_linear(x, rand(rng, 4, 8), None, nan_like((3, 4)), gemv_warps=-1)
    with pytest.raises(ValueError, match="gemv_stages: expected >= 0"):
        _C.kernel_linear(x, rand(rng, 4, 8), None, nan_like((3, 4)), gemv_stages=-1)
    with pytest.raises(ValueError, match="bias"):
        _C.kernel_add_bias(rand(rng, 7), nan_like((3, 8)))
    with pytest.raises(ValueError, match="gate_up"):
        _C.kernel_swiglu(rand(rng, 3, 9), nan_like((3, 4)))
    with pytest.raises(ValueError, match="out"):
        _C.kernel_geglu(rand(rng, 3, 8), nan_like((3, 3)))
    with pytest.raises(ValueError, match="approximate"):
        _C.kernel_gelu(x, nan_like(x.shape), approximate="sigmoid")
    with pytest.raises(ValueError, match="b"):
        _C.kernel_add(x, rand(rng, 3, 9), nan_like(x.shape))


def test_bad_dtypes_name_the_tensor():
    rng = np.random.default_rng(9)
    x16 = rand(rng, 3, 8).astype(np.float16)
    with pytest.raises(ValueError, match="x: expected dtype float32"):
        _C.kernel_norm(x16, rand(rng, 8), None, nan_like((3, 8)))
    with pytest.raises(ValueError, match="y: expected dtype float32"):
        _C.kernel_linear(rand(rng, 3, 8), rand(rng, 4, 8), None, nan_like((3, 4), np.float16))
    with pytest.raises(ValueError, match="ids"):
        _C.kernel_embedding(np.array([1.0], np.float32), rand(rng, 4, 8), nan_like((1, 8)))


def test_bad_ids_raise_on_cpu_and_leave_out_untouched():
    table = np.arange(32, dtype=np.float32).reshape(4, 8)
    out = nan_like((2, 8))
    with pytest.raises(ValueError, match="token id 4 at position 1"):
        _C.kernel_embedding(np.array([1, 4], np.int64), table, out)
    with pytest.raises(ValueError, match="negative"):
        _C.kernel_embedding(np.array([-1, 0], np.int32), table, out)
    assert np.isnan(out).all()


def test_bfloat16_weights():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    x = rand(rng, 2, 40)
    w = torch.from_numpy(rand(rng, 40)).to(torch.bfloat16)
    out = nan_like((2, 40))
    _C.kernel_norm(x, w, None, out)
    assert_close(out, rms_ref(x, w.float().numpy(), 1e-6))
    wl = torch.from_numpy(rand(rng, 6, 40)).to(torch.bfloat16)
    y = nan_like((2, 6))
    _C.kernel_linear(x, wl, None, y)
    assert_close(y, x.astype(np.float64) @ wl.float().numpy().astype(np.float64).T, rtol=2e-5)
