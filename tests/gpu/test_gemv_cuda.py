"""The small-batch GEMV behind CUDA linear() for decode-sized M (kernels/cuda/gemv_small_batch.cu)
against a float64 reference, with the rule of test_kernels_cuda.py (error at most twice PyTorch's
F.linear in the same precision, plus a small floor); outputs poisoned (NaN) first. Also: which
calls it takes, that a token's result does not depend on the rest of the batch (CUDA-graph
buckets pad the batch), and that a forced impl="gemv" rejects what it cannot take."""

import pytest

torch = pytest.importorskip("torch")
from fastattention import _C  # noqa: E402

F = torch.nn.functional

pytestmark = pytest.mark.skipif(
    not (
        torch.cuda.is_available()
        and getattr(_C, "cuda_built", False)
        and torch.cuda.get_device_capability() >= (8, 0)
    ),
    reason="needs a CUDA GPU of sm_80+ and a CUDA build",
)

DTYPES = [torch.float16, torch.bfloat16]
# (K, N): a full 7B-like row, K % 32 == 8 (a partial last chunk), tiny K, N not a multiple of 16.
SHAPES = [(4096, 1000), (1000, 4096), (136, 17), (11008, 64)]


def stream():
    return torch.cuda.current_stream().cuda_stream


def randn(*shape, dtype, scale=1.0):
    return (scale * torch.randn(*shape, device="cuda", dtype=torch.float64)).to(dtype)


def nan(*shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")


def check(out, ref, plain):
    assert not torch.isnan(out).any(), "unwritten (NaN) output elements"
    err = (out.double() - ref).abs().max().item()
    plain_err = (plain.double() - ref).abs().max().item()
    floor = 2.0**-20 * ref.abs().max().item()
    assert err <= 2 * plain_err + floor, (
        f"error {err:.3g} > 2 x F.linear's {plain_err:.3g} + {floor:.2g}"
    )


def linear(x, w, b, y, **kw):
    _C.kernel_linear(x, w, b, y, stream=stream(), **kw)
    return y


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k,n", SHAPES)
@pytest.mark.parametrize("m", [1, 2, 5, 8, 9, 16])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("out", ["same", "float32"])
def test_gemv(dtype, k, n, m, bias, out):
    torch.manual_seed(k + n + m)
    buf = randn(m, k + 8, dtype=dtype)  # rows 8 elements apart: strided, still 16-byte aligned
    x = buf[:, :k] if m % 2 else randn(m, k, dtype=dtype)
    w = randn(n, k, dtype=dtype, scale=k**-0.5)
    b = randn(n, dtype=dtype) if bias else None
    y = linear(x, w, b, nan(m, n, dtype=dtype if out == "same" else torch.float32), impl="gemv")
    ref = x.double() @ w.double().T + (b.double() if bias else 0)
    check(y, ref, F.linear(x, w, b))


@pytest.mark.parametrize("warps", [1, 2, 4, 8])
@pytest.mark.parametrize("stages", [1, 2, 3])
@pytest.mark.parametrize("m", [3, 12])
@pytest.mark.parametrize("k", [11008, 1000, 64])
def test_gemv_every_warp_and_stage_count(warps, stages, m, k):
    torch.manual_seed(warps * 10 + stages + k)
    x = randn(m, k, dtype=torch.float16)
    w = randn(300, k, dtype=torch.float16, scale=k**-0.5)
    y = linear(
        x,
        w,
        None,
        nan(m, 300, dtype=torch.float16),
        impl="gemv",
        gemv_warps=warps,
        gemv_stages=stages,
    )
    check(y, x.double() @ w.double().T, F.linear(x, w))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_token_result_does_not_depend_on_the_batch(dtype):
    """Bit for bit: each row of an M = 16 call equals the same row alone, and M = 3 equals the
    first 3 rows of M = 4 (a decode batch padded to a CUDA-graph bucket)."""
    torch.manual_seed(7)
    x = randn(16, 4096, dtype=dtype)
    w = randn(1000, 4096, dtype=dtype, scale=4096**-0.5)
    whole = linear(x, w, None, nan(16, 1000, dtype=dtype), impl="gemv")
    for i in (0, 7, 8, 15):
        alone = linear(x[i : i + 1], w, None, nan(1, 1000, dtype=dtype), impl="gemv")
        assert torch.equal(alone[0], whole[i]), f"row {i}"
    three = linear(x[:3], w, None, nan(3, 1000, dtype=dtype))  # auto: the GEMV (M <= 8)
    four = linear(x[:4], w, None, nan(4, 1000, dtype=dtype))
    assert torch.equal(three, four[:3])


def test_auto_takes_the_gemv_up_to_8_rows_then_cublas():
    """The automatic choice: the GEMV for M <= 8 (its measured end-to-end range), else cuBLAS."""
    torch.manual_seed(3)
    w = randn(512, 1024, dtype=torch.float16, scale=1024**-0.5)
    for m in (1, 8, 9, 16, 17):
        x = randn(m, 1024, dtype=torch.float16)
        auto = linear(x, w, None, nan(m, 512, dtype=torch.float16))
        expected = "gemv" if m <= 8 else "cublas"
        forced = linear(x, w, None, nan(m, 512, dtype=torch.float16), impl=expected)
        assert torch.equal(auto, forced), f"M = {m}: auto differs from {expected}"
    x = randn(4, 1024, dtype=torch.float32)  # float32: cuBLAS (pedantic float32)
    auto = linear(x, w.float(), None, nan(4, 512, dtype=torch.float32))
    assert torch.equal(
        auto, linear(x, w.float(), None, nan(4, 512, dtype=torch.float32), impl="cublas")
    )


def test_forced_gemv_rejects_what_it_cannot_take():
    w = randn(64, 1000, dtype=torch.float16)
    cases = [
        (randn(17, 1000, dtype=torch.float16), w),  # M > 16
        (randn(2, 997, dtype=torch.float16), randn(64, 997, dtype=torch.float16)),  # K % 8
        (randn(2, 1000, dtype=torch.float32), w.float()),  # float32
        (randn(2, 1003, dtype=torch.float16)[:, :1000], w),  # row stride not a multiple of 8
        (randn(2, 1001, dtype=torch.float16)[:, 1:], w),  # x not 16-byte aligned
    ]
    for x, wt in cases:
        with pytest.raises(ValueError, match="small-batch GEMV needs"):
            linear(x, wt, None, nan(x.shape[0], wt.shape[0], dtype=x.dtype), impl="gemv")
    with pytest.raises(ValueError, match="impl: expected 'auto', 'cublas' or 'gemv'"):
        linear(
            randn(2, 1000, dtype=torch.float16),
            w,
            None,
            nan(2, 64, dtype=torch.float16),
            impl="fast",
        )
    with pytest.raises(ValueError, match="warps must be 1..8"):
        linear(
            randn(2, 1000, dtype=torch.float16),
            w,
            None,
            nan(2, 64, dtype=torch.float16),
            impl="gemv",
            gemv_warps=9,
        )
    with pytest.raises(ValueError, match="stages must be 1, 2 or 3"):
        linear(
            randn(2, 1000, dtype=torch.float16),
            w,
            None,
            nan(2, 64, dtype=torch.float16),
            impl="gemv",
            gemv_stages=4,
        )


def _linear_in_subprocess(env_value: str) -> str:
    import os
    import subprocess
    import sys

    code = (
        "import torch; from fastattention import _C\n"
        "x = torch.randn(2, 1024, device='cuda', dtype=torch.float16)\n"
        "w = torch.randn(512, 1024, device='cuda', dtype=torch.float16)\n"
        "auto, cublas = (torch.empty(2, 512, device='cuda', dtype=torch.float16) for _ in range(2))\n"
        "try:\n"
        "    _C.kernel_linear(x, w, None, auto)\n"
        "    _C.kernel_linear(x, w, None, cublas, impl='cublas')\n"
        "    print('equal to cublas:', torch.equal(auto, cublas))\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FASTATTN_SMALL_BATCH_GEMV": env_value},
    )
    return res.stdout + res.stderr


def test_environment_switch_keeps_auto_on_cublas():
    """FASTATTN_SMALL_BATCH_GEMV=0: auto runs cuBLAS (bit for bit); a value other than 0 / 1 is a
    clear error naming the variable."""
    assert "equal to cublas: True" in _linear_in_subprocess("0")
    assert (
        "environment variable FASTATTN_SMALL_BATCH_GEMV: expected 0 or 1, got 'off'"
        in _linear_in_subprocess("off")
    )
