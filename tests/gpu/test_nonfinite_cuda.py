"""NaN and inf inputs to the CUDA attention kernels propagate as in the float64 reference (issue 17,
item 2; the CPU twin is tests/python/test_ops_nonfinite.py). Prefill (the MMA kernels), split-KV
decode with its fused merge, and merge_attention's LSE path; float16 and bfloat16. The inputs are
rounded to the dtype first and the reference computed from the rounded values."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from nonfinite_reference import check_nonfinite, poison  # noqa: E402

from fastattention import _C, ops  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and getattr(_C, "cuda_built", False)),
    reason="needs a CUDA GPU and a CUDA build",
)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
ATOL = {"float16": 4e-3, "bfloat16": 3e-2}


def _run(arrays, dtype, causal, **kw):
    """ops.attention on CUDA tensors of dtype; returns (out as float32 numpy, the rounded inputs)."""
    t = {n: torch.from_numpy(a).to("cuda", DTYPES[dtype]) for n, a in arrays.items()}
    out = ops.attention(t["q"], t["k"], t["v"], causal=causal, **kw)
    rounded = {n: x.float().cpu().numpy() for n, x in t.items()}
    return out.float().cpu().numpy(), rounded


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("sq, sk", [(1, 100), (3, 70), (64, 64), (200, 300)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "tensor, what",
    [("q", "nan"), ("k", "nan"), ("v", "nan"), ("q", "inf"), ("k", "inf"), ("q", "-inf")],
)
def test_nonfinite_inputs_propagate_cuda(dtype, sq, sk, causal, tensor, what):
    rng = np.random.default_rng(sq * 1000 + sk)
    arrays = {
        "q": rng.standard_normal((1, sq, 4, 64)).astype(np.float32),
        "k": rng.standard_normal((1, sk, 2, 64)).astype(np.float32),
        "v": rng.standard_normal((1, sk, 2, 64)).astype(np.float32),
    }
    rows = sq if tensor == "q" else sk
    arrays[tensor] = poison(arrays[tensor], what, (0, rows // 2, 1, 5))
    out, r = _run(arrays, dtype, causal)
    check_nonfinite(out, r["q"], r["k"], r["v"], causal, ATOL[dtype])


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("num_splits", [1, 4, 8])
@pytest.mark.parametrize("tensor", ["q", "k", "v"])
def test_nonfinite_through_split_kv_decode_cuda(dtype, num_splits, tensor):
    """One query token per sequence over 3000 keys: a NaN in one split reaches the merged row."""
    rng = np.random.default_rng(num_splits)
    arrays = {
        "q": rng.standard_normal((2, 1, 8, 128)).astype(np.float32),
        "k": rng.standard_normal((2, 3000, 2, 128)).astype(np.float32),
        "v": rng.standard_normal((2, 3000, 2, 128)).astype(np.float32),
    }
    where = (0, 0, 3, 7) if tensor == "q" else (0, 1234, 1, 7)
    arrays[tensor] = poison(arrays[tensor], "nan", where)
    out, r = _run(arrays, dtype, True, impl="decode", num_splits=num_splits)
    check_nonfinite(out, r["q"], r["k"], r["v"], True, ATOL[dtype])


@pytest.mark.parametrize("impl", ["auto", "decode"])
def test_lse_of_a_nan_row_is_nan_cuda(impl):
    rng = np.random.default_rng(1)
    sq = 1 if impl == "decode" else 4
    q = torch.from_numpy(rng.standard_normal((1, sq, 2, 64)).astype(np.float32)).to(
        "cuda", torch.float16
    )
    k, v = (
        torch.from_numpy(rng.standard_normal((1, 40, 2, 64)).astype(np.float32)).to(
            "cuda", torch.float16
        )
        for _ in range(2)
    )
    q[0, sq - 1, 1, 3] = float("nan")
    _, lse = ops.attention(q, k, v, return_lse=True, impl=impl)
    lse = lse.cpu().numpy()
    assert np.isnan(lse[0, 1, sq - 1]) and np.isfinite(lse[0, 0]).all()
