"""CUDA FastAttention forward vs a float64 reference (run on a GPU machine; skipped elsewhere).

Rule (FlashAttention's): the kernel's max error against the float64 reference is at most twice
the error of a plain PyTorch implementation in the same precision (matmul and softmax in fp16 /
bf16), plus a small floor for cases where that plain error is ~0. Outputs are poisoned (NaN)
before each call so unwritten elements show. Every MMA path compiled into the build is tested
(on an sm_90 test machine, build with FASTATTN_CUDA_ALL_IMPLS=ON to get 884 / 1688 too).
"""

import pytest

torch = pytest.importorskip("torch")
from attention_reference import attention_reference as reference  # noqa: E402
from cuda_instances import instance_runs_here  # noqa: E402

import fastattention  # noqa: E402
from fastattention import ops  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and getattr(fastattention._C, "cuda_built", False)),
    reason="needs a CUDA GPU and a CUDA build",
)


def check(out, q, k, v, causal=False, window=(-1, -1), alibi=None, lse=None):
    assert not torch.isnan(out).any(), "unwritten (NaN) output elements"
    ref, ref_lse = reference(q, k, v, causal, window, alibi, upcast=True)
    pt, _ = reference(q, k, v, causal, window, alibi, upcast=False)
    err = (out.double() - ref).abs().max().item()
    pt_err = (pt.double() - ref).abs().max().item()
    assert err <= 2 * pt_err + 1e-4, f"error {err:.3g} > 2 x plain-PyTorch error {pt_err:.3g}"
    if lse is not None:
        finite = torch.isfinite(ref_lse)
        assert torch.equal(torch.isfinite(lse.double()), finite.permute(0, 1, 2))
        assert (lse.double()[finite] - ref_lse[finite]).abs().max().item() < 1e-3


def rand(*shape, dtype):
    return torch.randn(*shape, device="cuda", dtype=dtype)


IMPLS = ["16816", "1688", "884"]
DTYPES = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("d", [64, 80, 96, 128, 256])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_head_dims(impl, d, dtype, causal):
    if not instance_runs_here(impl, d, dtype):
        pytest.skip(f"{impl}/hd{d}/{dtype} not in this build")
    torch.manual_seed(d)
    q, k, v = (rand(2, 129, 4, d, dtype=dtype) for _ in range(3))
    out, lse = ops.attention(q, k, v, causal=causal, return_lse=True, impl=impl)
    check(out, q, k, v, causal=causal, lse=lse)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "sq,sk", [(1, 1), (7, 7), (1, 1000), (129, 1000), (1000, 1000), (1000, 129)]
)
@pytest.mark.parametrize("causal", [False, True])
def test_odd_lengths(impl, sq, sk, causal):
    if not instance_runs_here(impl, 128, torch.float16):
        pytest.skip("instance not built")
    torch.manual_seed(sq * 7 + sk)
    q = rand(1, sq, 8, 128, dtype=torch.float16)
    k, v = rand(1, sk, 8, 128, dtype=torch.float16), rand(1, sk, 8, 128, dtype=torch.float16)
    out = ops.attention(q, k, v, causal=causal, impl=impl)
    check(out, q, k, v, causal=causal)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("hq,hk", [(8, 2), (8, 1)])
@pytest.mark.parametrize("window", [(-1, -1), (64, 0), (100, 17)])
def test_gqa_window(impl, hq, hk, window):
    if not instance_runs_here(impl, 64, torch.float16):
        pytest.skip("instance not built")
    torch.manual_seed(hq * 31 + hk)
    q = rand(2, 300, hq, 64, dtype=torch.float16)
    k, v = rand(2, 333, hk, 64, dtype=torch.float16), rand(2, 333, hk, 64, dtype=torch.float16)
    out = ops.attention(q, k, v, window=window, impl=impl)
    check(out, q, k, v, window=window)


@pytest.mark.parametrize("impl", IMPLS)
def test_alibi(impl):
    if not instance_runs_here(impl, 128, torch.float16):
        pytest.skip("instance not built")
    torch.manual_seed(5)
    q, k, v = (rand(2, 200, 4, 128, dtype=torch.float16) for _ in range(3))
    slopes = torch.tensor([0.5, 0.25, 0.125, 0.0625], device="cuda")
    out = ops.attention(q, k, v, causal=True, alibi_slopes=slopes, impl=impl)
    check(out, q, k, v, causal=True, alibi=slopes)


@pytest.mark.parametrize("impl", IMPLS)
def test_varlen_mixed_batch(impl):
    if not instance_runs_here(impl, 128, torch.float16):
        pytest.skip("instance not built")
    torch.manual_seed(11)
    lens_q, lens_k = [1, 7, 129, 300, 64], [5, 7, 1000, 300, 64]
    hq, hk, d = 8, 2, 128
    q = rand(sum(lens_q), hq, d, dtype=torch.float16)
    k = rand(sum(lens_k), hk, d, dtype=torch.float16)
    v = rand(sum(lens_k), hk, d, dtype=torch.float16)
    cu_q = torch.tensor(
        [0] + list(torch.tensor(lens_q).cumsum(0)), dtype=torch.int32, device="cuda"
    )
    cu_k = torch.tensor(
        [0] + list(torch.tensor(lens_k).cumsum(0)), dtype=torch.int32, device="cuda"
    )
    out = ops.attention_varlen(
        q, k, v, cu_q, cu_k, max_seqlen_q=max(lens_q), causal=True, impl=impl
    )
    assert not torch.isnan(out).any()
    for b in range(len(lens_q)):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        check(out[qs][None], q[qs][None], k[ks][None], v[ks][None], causal=True)


def test_strided_qkv_views():
    """q / k / v as views into one fused QKV buffer, as the model produces them."""
    torch.manual_seed(3)
    hq, hk, d, s = 8, 2, 128, 257
    qkv = rand(1, s, (hq + 2 * hk) * d, dtype=torch.float16)
    q = qkv[..., : hq * d].view(1, s, hq, d)
    k = qkv[..., hq * d : (hq + hk) * d].view(1, s, hk, d)
    v = qkv[..., (hq + hk) * d :].view(1, s, hk, d)
    out = ops.attention(q, k, v, causal=True)
    check(out, q.contiguous(), k.contiguous(), v.contiguous(), causal=True)


def test_bad_input_on_cuda():
    q = rand(1, 16, 4, 128, dtype=torch.float16)
    k = rand(1, 16, 4, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="head dim"):
        ops.attention(q, k, k)
    with pytest.raises(ValueError, match="impl"):
        ops.attention(q, q, q, impl="999")
    with pytest.raises(ValueError, match="instance|head dim"):
        qq = rand(1, 16, 4, 48, dtype=torch.float16)
        ops.attention(qq, qq, qq)
