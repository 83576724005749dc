"""CUDA norm / linear / bias / activation / embedding kernels against float64 references (run on a
GPU machine; skipped elsewhere).

Rule (as for attention): the kernel's max abs error against the float64 reference is at most twice
that of a plain PyTorch implementation in the same precision, plus a small floor (2^-20 of the
largest reference value) for cases where the plain error is ~0. Outputs are poisoned (NaN) before
each call so unwritten elements show. Sizes: hidden 4096, 5120, 1000 and 997 (odd: the scalar,
non-vector path), tokens 1, 3, 257; strided (padded) rows where the kernel allows them.
"""

import math

import pytest

torch = pytest.importorskip("torch")
import fastattention  # noqa: E402,F401  (loads the BLAS the extension needs)
from fastattention import _C  # noqa: E402

F = torch.nn.functional

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and getattr(_C, "cuda_built", False)),
    reason="needs a CUDA GPU and a CUDA build",
)

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
HIDDEN = [4096, 5120, 1000, 997]
TOKENS = [1, 3, 257]


def dtype_id(d):
    return str(d).replace("torch.", "")


def stream():
    return torch.cuda.current_stream().cuda_stream


def nan(*shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")


def randn(*shape, dtype, scale=1.0):
    return (scale * torch.randn(*shape, device="cuda", dtype=torch.float64)).to(dtype)


def padded(t, pad):
    """t's values in a [rows, cols + pad] buffer: a view with strided rows (pad 0: t itself)."""
    if pad == 0:
        return t
    buf = torch.randn(t.shape[0], t.shape[1] + pad, device=t.device).to(t.dtype)
    buf[:, : t.shape[1]] = t
    return buf[:, : t.shape[1]]


def check(out, ref, plain, what="out"):
    assert not torch.isnan(out).any(), f"{what}: unwritten (NaN) output elements"
    err = (out.double() - ref).abs().max().item()
    plain_err = (plain.double() - ref).abs().max().item()
    floor = 2.0**-20 * ref.abs().max().item()
    assert err <= 2 * plain_err + floor, (
        f"{what}: error {err:.3g} > 2 x plain-PyTorch error {plain_err:.3g} + {floor:.2g}"
    )
    return err, plain_err


# ---- references (float64) and plain same-precision implementations ----


def rms_ref(x, w, eps):
    x = x.double()
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w.double()


def rms_plain(x, w, eps):
    """Hugging Face's LlamaRMSNorm in the input dtype."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w.to(x.dtype) * h.to(x.dtype)


def layer_ref(x, w, b, eps):
    x = x.double()
    mu = x.mean(-1, keepdim=True)
    y = (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps) * w.double()
    return y if b is None else y + b.double()


def layer_plain(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w.to(x.dtype), None if b is None else b.to(x.dtype), eps)


def gelu_ref(x, approximate):
    x = x.double()
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def silu_ref(x):
    x = x.double()
    return x / (1 + torch.exp(-x))


def plain_approx(approximate):
    return "none" if approximate == "erf" else "tanh"


# ---- norm / add_norm ----


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("h", HIDDEN)
@pytest.mark.parametrize("t", TOKENS)
@pytest.mark.parametrize("kind", ["rms", "layer", "layer_bias"])
def test_norm(dtype, h, t, kind):
    torch.manual_seed(h + t)
    eps = 1e-5
    x = padded(randn(t, h, dtype=dtype, scale=2.0), 8 if t == 3 else 0)
    w = randn(h, dtype=dtype) * 0.2 + 1
    b = randn(h, dtype=dtype) if kind == "layer_bias" else None
    typ = "rms" if kind == "rms" else "layer"
    out = nan(t, h, dtype=dtype)
    _C.kernel_norm(x, w, b, out, type=typ, eps=eps, stream=stream())
    if typ == "rms":
        check(out, rms_ref(x, w, eps), rms_plain(x, w, eps))
    else:
        check(out, layer_ref(x, w, b, eps), layer_plain(x, w, b, eps))
    # In place (out is x) gives the same values.
    _C.kernel_norm(x, w, b, x, type=typ, eps=eps, stream=stream())
    assert torch.equal(x, out)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
def test_norm_float32_weights(dtype):
    """Weights / bias in float32 with 16-bit activations (any float dtype is accepted)."""
    torch.manual_seed(3)
    x = randn(5, 1000, dtype=dtype)
    w, b = randn(1000, dtype=torch.float32) * 0.2 + 1, randn(1000, dtype=torch.float32)
    out = nan(5, 1000, dtype=dtype)
    _C.kernel_norm(x, w, b, out, type="layer", eps=1e-6, stream=stream())
    plain = F.layer_norm(x.float(), (1000,), w, b, 1e-6).to(dtype)
    check(out, layer_ref(x, w, b, 1e-6), plain)
    out = nan(5, 1000, dtype=dtype)
    _C.kernel_norm(x, w, None, out, type="rms", eps=1e-6, stream=stream())
    check(out, rms_ref(x, w, 1e-6), (rms_ref(x, w, 1e-6)).to(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("h", HIDDEN)
@pytest.mark.parametrize("t", TOKENS)
@pytest.mark.parametrize("typ", ["rms", "layer"])
def test_add_norm(dtype, h, t, typ):
    torch.manual_seed(h * 3 + t)
    eps = 1e-6
    residual = padded(randn(t, h, dtype=dtype), 8 if t == 3 else 0)
    x = randn(t, h, dtype=dtype)
    w = randn(h, dtype=dtype) * 0.2 + 1
    exact_sum = residual.double() + x.double()
    plain_sum = residual + x
    out = nan(t, h, dtype=dtype)
    _C.kernel_add_norm(residual, x, w, None, out, type=typ, eps=eps, stream=stream())
    check(residual, exact_sum, plain_sum, "residual")
    if typ == "rms":
        check(out, rms_ref(exact_sum, w, eps), rms_plain(plain_sum, w, eps))
    else:
        check(out, layer_ref(exact_sum, w, None, eps), layer_plain(plain_sum, w, None, eps))


# ---- linear / add_bias ----

SHAPES = [(4096, 1000), (1000, 5120), (997, 333)]  # (K, N)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("k,n", SHAPES)
@pytest.mark.parametrize("m", TOKENS)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("pad", [0, 3])
def test_linear(dtype, k, n, m, bias, pad):
    torch.manual_seed(k + n + m)
    x = padded(randn(m, k, dtype=dtype), pad)  # pad 3: rows not 16-byte aligned
    w = randn(n, k, dtype=dtype, scale=k**-0.5)
    b = randn(n, dtype=dtype) if bias else None
    y = nan(m, n, dtype=dtype)
    _C.kernel_linear(x, w, b, y, stream=stream())
    ref = x.double() @ w.double().T + (b.double() if bias else 0)
    check(y, ref, F.linear(x, w, b))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("k,n", SHAPES)
@pytest.mark.parametrize("m", TOKENS)
@pytest.mark.parametrize("bias", [False, True])
def test_linear_float32_output(dtype, k, n, m, bias):
    """float32 y from 16-bit x / w (the LM head's logits): not rounded to the 16-bit dtype."""
    torch.manual_seed(k * 7 + n + m)
    x = randn(m, k, dtype=dtype)
    w = randn(n, k, dtype=dtype, scale=k**-0.5)
    b = randn(n, dtype=dtype) if bias else None
    y = nan(m, n, dtype=torch.float32)
    _C.kernel_linear(x, w, b, y, stream=stream())
    ref = x.double() @ w.double().T + (b.double() if bias else 0)
    err, plain_err = check(y, ref, F.linear(x, w, b))
    assert err <= 0.25 * plain_err, f"float32 output error {err:.3g} is that of 16-bit rounding"


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("bias_dtype", ["same", torch.float32], ids=["same", "bias_float32"])
@pytest.mark.parametrize("n", [4096, 1000, 997])
@pytest.mark.parametrize("m", TOKENS)
def test_add_bias(dtype, bias_dtype, n, m):
    torch.manual_seed(n + m)
    y = padded(randn(m, n, dtype=dtype), 8 if m == 3 else 0)
    b = randn(n, dtype=dtype if bias_dtype == "same" else bias_dtype)
    before = y.clone()
    pad_before = (
        y.as_strided((m, 8), (y.stride(0), 1), y.storage_offset() + n).clone() if m == 3 else None
    )
    _C.kernel_add_bias(b, y, stream=stream())
    check(y, before.double() + b.double(), before + b.to(dtype))
    if pad_before is not None:  # the row padding stays untouched
        assert torch.equal(
            y.as_strided((m, 8), (y.stride(0), 1), y.storage_offset() + n), pad_before
        )


# ---- activations ----


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("i", HIDDEN)
@pytest.mark.parametrize("t", TOKENS)
@pytest.mark.parametrize("op", ["swiglu", "geglu_erf", "geglu_tanh"])
def test_gated(dtype, i, t, op):
    torch.manual_seed(i + t)
    gate_up = padded(randn(t, 2 * i, dtype=dtype, scale=3.0), 8 if t == 3 else 0)
    g, u = gate_up[:, :i], gate_up[:, i:]
    out = nan(t, i, dtype=dtype)
    if op == "swiglu":
        _C.kernel_swiglu(gate_up, out, stream=stream())
        check(out, silu_ref(g) * u.double(), F.silu(g) * u)
    else:
        approx = op.split("_")[1]
        _C.kernel_geglu(gate_up, out, approximate=approx, stream=stream())
        check(
            out, gelu_ref(g, approx) * u.double(), F.gelu(g, approximate=plain_approx(approx)) * u
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("h", HIDDEN)
@pytest.mark.parametrize("t", TOKENS)
@pytest.mark.parametrize("approx", ["erf", "tanh"])
def test_gelu(dtype, h, t, approx):
    torch.manual_seed(h + t + 1)
    x = randn(t, h, dtype=dtype, scale=3.0)
    out = nan(t, h, dtype=dtype)
    _C.kernel_gelu(x, out, approximate=approx, stream=stream())
    check(out, gelu_ref(x, approx), F.gelu(x, approximate=plain_approx(approx)))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_gelu_3d_in_place_and_extremes(dtype):
    torch.manual_seed(8)
    x = randn(2, 3, 1000, dtype=dtype, scale=3.0)
    big = torch.tensor([0.0, -0.0, 10.0, -10.0, 30.0, -30.0, 1e4, -1e4], device="cuda")
    x[0, 0, :8] = big.to(dtype)
    ref, plain = gelu_ref(x, "tanh"), F.gelu(x, approximate="tanh")
    _C.kernel_gelu(x, x, approximate="tanh", stream=stream())
    check(x, ref, plain)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("h", HIDDEN)
@pytest.mark.parametrize("t", TOKENS)
def test_add(dtype, h, t):
    torch.manual_seed(h + t + 2)
    a = padded(randn(t, h, dtype=dtype), 8 if t == 3 else 0)
    b = randn(t, h, dtype=dtype)
    out = nan(t, h, dtype=dtype)
    _C.kernel_add(a, b, out, stream=stream())
    check(out, a.double() + b.double(), a + b)
    _C.kernel_add(a, b, a, stream=stream())  # in place
    assert torch.equal(a, out)


# ---- embedding ----


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("out_float32", [False, True])
@pytest.mark.parametrize("id_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("h", [4096, 1000, 997])
@pytest.mark.parametrize("t", TOKENS)
def test_embedding(dtype, out_float32, id_dtype, h, t):
    torch.manual_seed(h + t)
    vocab = 301
    table = randn(vocab, h, dtype=dtype)
    ids = torch.randint(0, vocab, (t,), device="cuda", dtype=id_dtype)
    out_dtype = torch.float32 if out_float32 else dtype
    out = nan(t, h, dtype=out_dtype)
    _C.kernel_embedding(ids, table, out, stream=stream())
    assert torch.equal(out, table[ids.long()].to(out_dtype))


@pytest.mark.parametrize("vocab_parallel", [False, True])
def test_embedding_out_of_range_ids_give_zero_rows(vocab_parallel):
    """A shard of rows [100, 200): ids outside it (negative ones too) give zero rows on the GPU."""
    table = randn(100, 1000, dtype=torch.float16)
    ids = torch.tensor([100, 5, 199, 200, -3, 150], device="cuda", dtype=torch.int64)
    out = nan(6, 1000, dtype=torch.float16)
    _C.kernel_embedding(
        ids, table, out, vocab_start=100, vocab_parallel=vocab_parallel, stream=stream()
    )
    for row, id_ in enumerate(ids.tolist()):
        expected = table[id_ - 100] if 100 <= id_ < 200 else torch.zeros_like(table[0])
        assert torch.equal(out[row], expected), f"row {row} (id {id_})"


# ---- streams ----


def test_runs_on_the_given_stream():
    """Work goes to the stream passed in: after synchronising that stream alone, results are there."""
    torch.manual_seed(9)
    side = torch.cuda.Stream()
    x = randn(257, 4096, dtype=torch.float16)
    w = randn(5120, 4096, dtype=torch.float16, scale=4096**-0.5)
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        y = nan(257, 5120, dtype=torch.float16)
        out = nan(257, 5120, dtype=torch.float16)
        _C.kernel_linear(x, w, None, y, stream=side.cuda_stream)
        _C.kernel_gelu(y, out, stream=side.cuda_stream)
    side.synchronize()
    ref = gelu_ref(x.double() @ w.double().T, "erf")
    check(out, ref, F.gelu(F.linear(x, w)))


# ---- bad input: ValueError naming the tensor ----


def test_device_mismatch_names_the_tensor():
    x = randn(3, 64, dtype=torch.float16)
    w = randn(64, dtype=torch.float16)
    out = nan(3, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="weight is on cpu but x is on cuda"):
        _C.kernel_norm(x, w.cpu(), None, out)
    with pytest.raises(ValueError, match="out is on cpu"):
        _C.kernel_norm(x, w, None, out.cpu())
    with pytest.raises(ValueError, match="w is on cpu but x is on cuda"):
        _C.kernel_linear(
            x, randn(8, 64, dtype=torch.float16).cpu(), None, nan(3, 8, dtype=torch.float16)
        )
    with pytest.raises(ValueError, match="bias is on cpu"):
        _C.kernel_linear(
            x,
            randn(8, 64, dtype=torch.float16),
            torch.zeros(8, dtype=torch.float16),
            nan(3, 8, dtype=torch.float16),
        )
    with pytest.raises(ValueError, match="bias is on cpu but y is on cuda"):
        _C.kernel_add_bias(torch.zeros(64, dtype=torch.float16), out)
    with pytest.raises(ValueError, match="out is on cpu but gate_up is on cuda"):
        _C.kernel_swiglu(x, torch.empty(3, 32, dtype=torch.float16))
    with pytest.raises(ValueError, match="b is on cpu but a is on cuda"):
        _C.kernel_add(x, x.cpu(), out)
    with pytest.raises(ValueError, match="table is on cpu but ids is on cuda"):
        _C.kernel_embedding(
            torch.zeros(3, dtype=torch.int32, device="cuda"),
            torch.zeros(10, 64, dtype=torch.float16),
            out,
        )


def test_dtype_mismatch_names_the_tensor():
    x = randn(3, 64, dtype=torch.float16)
    w = randn(64, dtype=torch.float16)
    with pytest.raises(ValueError, match="out and x must have the same dtype"):
        _C.kernel_norm(x, w, None, nan(3, 64, dtype=torch.float32))
    with pytest.raises(ValueError, match="x and residual must have the same dtype"):
        _C.kernel_add_norm(x, x.float(), w, None, nan(3, 64, dtype=torch.float16))
    with pytest.raises(ValueError, match="w and x must have the same dtype"):
        _C.kernel_linear(
            x, randn(8, 64, dtype=torch.bfloat16), None, nan(3, 8, dtype=torch.float16)
        )
    with pytest.raises(ValueError, match="y: expected x's dtype"):
        _C.kernel_linear(
            x, randn(8, 64, dtype=torch.float16), None, nan(3, 8, dtype=torch.bfloat16)
        )
    with pytest.raises(ValueError, match="out and gate_up must have the same dtype"):
        _C.kernel_geglu(x, nan(3, 32, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="out: expected the table's dtype"):
        _C.kernel_embedding(
            torch.zeros(3, dtype=torch.int32, device="cuda"),
            randn(10, 64, dtype=torch.bfloat16),
            nan(3, 64, dtype=torch.float16),
        )
    with pytest.raises(ValueError, match="ids: expected int32 or int64"):
        _C.kernel_embedding(
            torch.zeros(3, dtype=torch.float32, device="cuda"),
            randn(10, 64, dtype=torch.float16),
            nan(3, 64, dtype=torch.float16),
        )


def test_shape_mismatch_names_the_tensor():
    x = randn(3, 64, dtype=torch.float16)
    w = randn(64, dtype=torch.float16)
    with pytest.raises(ValueError, match="out: expected shape"):
        _C.kernel_norm(x, w, None, nan(3, 63, dtype=torch.float16))
    with pytest.raises(ValueError, match="weight: expected shape"):
        _C.kernel_norm(x, randn(65, dtype=torch.float16), None, nan(3, 64, dtype=torch.float16))
    with pytest.raises(ValueError, match="bias: RMSNorm takes no bias"):
        _C.kernel_norm(x, w, w, nan(3, 64, dtype=torch.float16), type="rms")
    with pytest.raises(ValueError, match="w: expected"):
        _C.kernel_linear(x, randn(8, 65, dtype=torch.float16), None, nan(3, 8, dtype=torch.float16))
    with pytest.raises(ValueError, match="y: expected shape"):
        _C.kernel_linear(x, randn(8, 64, dtype=torch.float16), None, nan(3, 9, dtype=torch.float16))
    with pytest.raises(ValueError, match="bias: expected shape"):
        _C.kernel_add_bias(randn(63, dtype=torch.float16), x)
    with pytest.raises(ValueError, match="gate_up: expected"):
        _C.kernel_swiglu(randn(3, 63, dtype=torch.float16), nan(3, 31, dtype=torch.float16))
    with pytest.raises(ValueError, match="out: expected shape"):
        _C.kernel_gelu(x, nan(3, 65, dtype=torch.float16))
    with pytest.raises(ValueError, match="y: must not overlap x"):
        buf = randn(3, 128, dtype=torch.float16)
        _C.kernel_linear(buf[:, :64], randn(64, 64, dtype=torch.float16), None, buf[:, 64:])
