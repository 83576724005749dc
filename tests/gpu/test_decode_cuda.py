"""CUDA split-KV decode attention vs a float64 reference (run on a GPU machine; skipped elsewhere).

Same rule as test_fmha_cuda.py: the kernel's max error against the float64 reference is at most
twice the error of a plain PyTorch implementation in the same precision, plus a small floor.
Outputs and lse are poisoned (NaN) before each call, and the unused slots of the paged caches
hold NaN and the unused block-table entries an out-of-range block, so a read past a sequence's
keys or an unwritten output shows. Covers paged (block sizes 16..256, also not powers of two)
and contiguous KV, GQA / MQA, KV lengths 1 .. 128K, 1 / 4 / 300 queries, fp16 / bf16 / fp32,
causal / window / ALiBi, lse, explicit split counts, and both copy paths (impl
"decode-regstage": the sm_70 / sm_75 one, also sm_90's default; "decode-async": cp.async).
"""

import pytest

torch = pytest.importorskip("torch")
from attention_reference import attention_reference_unbatched as reference  # noqa: E402
from cuda_instances import instance_runs_here  # noqa: E402

import fastattention  # noqa: E402
from fastattention import ops  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and getattr(fastattention._C, "cuda_built", False)),
    reason="needs a CUDA GPU and a CUDA build",
)

F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
BAD_BLOCK = 2**30  # unused block-table entries: a kernel that reads one faults


def eps_for(dtype):
    return 2e-5 if dtype == F32 else 1e-4


def check_sequence(
    out, lse, q, k, v, causal=False, window=(-1, -1), alibi=None, scale=None, what=""
):
    """out (Sq, Hq, D), lse (Hq, Sq) of one sequence against the references."""
    assert not torch.isnan(out).any(), f"{what}: unwritten (NaN) output elements"
    ref, ref_lse = reference(q, k, v, causal, window, alibi, upcast=True, scale=scale)
    pt, _ = reference(q, k, v, causal, window, alibi, upcast=False, scale=scale)
    err = (out.double() - ref).abs().max().item() if out.numel() else 0.0
    pt_err = (pt.double() - ref).abs().max().item() if out.numel() else 0.0
    assert err <= 2 * pt_err + eps_for(q.dtype), (
        f"{what}: error {err:.3g} > 2 x plain-PyTorch error {pt_err:.3g} + {eps_for(q.dtype):g}"
    )
    if lse is not None:
        assert not torch.isnan(lse).any(), f"{what}: unwritten (NaN) lse"
        finite = torch.isfinite(ref_lse)
        assert torch.equal(torch.isfinite(lse), finite), f"{what}: lse -inf pattern differs"
        if finite.any():
            lerr = (lse.double()[finite] - ref_lse[finite]).abs().max().item()
            assert lerr < 1e-3, f"{what}: lse error {lerr:.3g}"


def rand(*shape, dtype):
    return torch.randn(*shape, device="cuda", dtype=dtype)


def cumulative(lengths):
    return torch.tensor(
        [0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32, device="cuda"
    )


class Case:
    """A batch: q (total_q, Hq, D), per-sequence K / V (Sk, Hk, D), and both cache layouts."""

    def __init__(self, lens_q, lens_k, hq, hk, d, dtype, block_size=16, seed=0):
        torch.manual_seed(seed)
        self.lens_q, self.lens_k, self.dtype = list(lens_q), list(lens_k), dtype
        self.q = rand(sum(lens_q), hq, d, dtype=dtype)
        self.ks = [rand(n, hk, d, dtype=dtype) for n in lens_k]
        self.vs = [rand(n, hk, d, dtype=dtype) for n in lens_k]
        self.cu_q = cumulative(lens_q)
        self.lens = torch.tensor(lens_k, dtype=torch.int32, device="cuda")
        self.block_size = block_size
        # Paged: blocks in a shuffled order, two spare blocks, NaN in every unused slot.
        bs = block_size
        need = [(n + bs - 1) // bs for n in lens_k]
        total = sum(need) + 2
        self.k_cache = torch.full((total, bs, hk, d), float("nan"), device="cuda", dtype=dtype)
        self.v_cache = torch.full_like(self.k_cache, float("nan"))
        self.table = torch.full(
            (len(lens_k), max(need + [1]) + 1), BAD_BLOCK, dtype=torch.int32, device="cuda"
        )
        order = torch.randperm(total).tolist()
        for b, n in enumerate(lens_k):
            for i in range(need[b]):
                blk = order.pop()
                self.table[b, i] = blk
                rows = slice(i * bs, min(n, (i + 1) * bs))
                count = rows.stop - rows.start
                self.k_cache[blk, :count] = self.ks[b][rows]
                self.v_cache[blk, :count] = self.vs[b][rows]
        # Contiguous: packed K / V with cu_seqlens_k.
        self.k = torch.cat(self.ks) if self.ks else rand(0, hk, d, dtype=dtype)
        self.v = torch.cat(self.vs) if self.vs else rand(0, hk, d, dtype=dtype)
        self.cu_k = cumulative(lens_k)

    def run(self, paged, max_q=0, max_k=0, window=(-1, -1), **kw):
        """fmha_forward into NaN-poisoned out / lse; kw: its options (causal, impl, ...)."""
        out = torch.full_like(self.q, float("nan"))
        lse = torch.full((self.q.shape[1], self.q.shape[0]), float("nan"), device="cuda")
        layout = (
            dict(block_table=self.table, seqlens_k=self.lens)
            if paged
            else dict(cu_seqlens_k=self.cu_k)
        )
        k, v = (self.k_cache, self.v_cache) if paged else (self.k, self.v)
        fastattention._C.fmha_forward(
            self.q,
            k,
            v,
            out,
            lse,
            cu_seqlens_q=self.cu_q,
            max_seqlen_q=max_q,
            max_seqlen_k=max_k,
            window_left=window[0],
            window_right=window[1],
            stream=torch.cuda.current_stream().cuda_stream,
            **layout,
            **kw,
        )
        return out, lse

    def check(self, out, lse, causal=False, window=(-1, -1), alibi=None, scale=None, what=""):
        q0 = 0
        for b, (sq, sk) in enumerate(zip(self.lens_q, self.lens_k)):
            rows = slice(q0, q0 + sq)
            slopes = alibi[b] if alibi is not None and alibi.dim() == 2 else alibi
            check_sequence(
                out[rows],
                lse[:, rows],
                self.q[rows],
                self.ks[b],
                self.vs[b],
                causal,
                window,
                slopes,
                scale,
                what=f"{what} sequence {b} (sq {sq}, sk {sk})",
            )
            q0 += sq


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
@pytest.mark.parametrize("block_size", [16, 64, 256])
@pytest.mark.parametrize("group", [1, 2, 4, 8])
def test_paged_decode(dtype, block_size, group):
    c = Case(
        [1, 1, 1],
        [1, 129, 1000],
        hq=2 * group,
        hk=2,
        d=128,
        dtype=dtype,
        block_size=block_size,
        seed=block_size + group,
    )
    out, lse = c.run(True, causal=True, impl="auto")
    c.check(out, lse, causal=True, what="paged")


@pytest.mark.parametrize("block_size", [17, 48, 100, 1])
def test_odd_block_sizes(block_size):
    c = Case([1, 4], [7, 300], hq=8, hk=2, d=64, dtype=F16, block_size=block_size, seed=block_size)
    out, lse = c.run(True, causal=True)
    c.check(out, lse, causal=True, what=f"block {block_size}")


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
@pytest.mark.parametrize("group", [1, 2, 4, 8])
@pytest.mark.parametrize("sq", [1, 4])
@pytest.mark.parametrize("impl", ["auto", "decode"])
def test_contiguous(dtype, group, sq, impl):
    c = Case([sq, sq, sq], [7, 1000, 129], hq=2 * group, hk=2, d=128, dtype=dtype, seed=sq + group)
    out, lse = c.run(False, max_q=sq, causal=True, impl=impl)
    c.check(out, lse, causal=True, what="contiguous")


@pytest.mark.parametrize("d", [64, 80, 96, 128, 256])
@pytest.mark.parametrize("dtype", [F16, BF16, F32])
def test_head_dims(d, dtype):
    if not instance_runs_here("decode-regstage", d, dtype):
        pytest.skip(f"no decode instance for head dim {d}, {dtype} in this build")
    # GQA 4 with 4 queries = 16 rows: one tile of 16, or two of 8 at head dim 256.
    c = Case([1, 4, 4], [7, 300, 1000], hq=8, hk=2, d=d, dtype=dtype, seed=d)
    out, lse = c.run(True, causal=True)
    c.check(out, lse, causal=True, what=f"hd{d}")


@pytest.mark.parametrize("dtype", [F16, F32])
def test_kv_lengths(dtype):
    lens = [1, 7, 129, 1000, 8192]
    c = Case([1] * len(lens), lens, hq=32, hk=8, d=128, dtype=dtype, block_size=64, seed=1)
    for paged in (True, False):
        out, lse = c.run(paged, causal=True)
        c.check(out, lse, causal=True, what=f"paged={paged}")


def test_long_128k():
    c = Case([1], [131072], hq=8, hk=2, d=128, dtype=BF16, block_size=256, seed=2)
    out, lse = c.run(True, causal=True, impl="auto", max_k=131072)
    c.check(out, lse, causal=True, what="128K")


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
def test_many_queries(dtype):
    """Chunked prefill over a paged cache: 300 queries loop over many query tiles."""
    c = Case([300, 17, 1], [1000, 17, 300], hq=8, hk=2, d=128, dtype=dtype, seed=3)
    out, lse = c.run(True, causal=True, impl="auto")
    c.check(out, lse, causal=True, what="300 queries")
    out, lse = c.run(False, causal=True)  # contiguous through the decode kernel too
    c.check(out, lse, causal=True, what="300 queries contiguous")


@pytest.mark.parametrize("window", [(64, 0), (100, 17), (5, -1), (-1, 3)])
@pytest.mark.parametrize("sq", [1, 4])
def test_windows(window, sq):
    c = Case([sq, sq], [1000, 50], hq=8, hk=2, d=128, dtype=F16, seed=sq)
    out, lse = c.run(True, window=window)
    c.check(out, lse, window=window, what=f"window {window}")


@pytest.mark.parametrize("per_batch", [False, True])
def test_alibi(per_batch):
    c = Case([1, 4], [700, 129], hq=8, hk=2, d=128, dtype=F16, seed=4)
    slopes = torch.tensor([2.0 ** -(i + 1) for i in range(8)], device="cuda")
    if per_batch:
        slopes = torch.stack([slopes, slopes.flip(0)])
    out, lse = c.run(True, causal=True, alibi_slopes=slopes)
    c.check(out, lse, causal=True, alibi=slopes, what="alibi")


def test_scale_and_empty_sequences():
    """A custom softmax scale; a sequence with no keys (zero output, lse -inf) and one with no
    queries; Sq > Sk (queries before the first key see nothing under causal)."""
    c = Case([1, 0, 6, 2], [0, 5, 3, 9], hq=4, hk=1, d=64, dtype=F16, seed=5)
    for paged in (True, False):
        out, lse = c.run(paged, causal=True, softmax_scale=0.3)
        c.check(out, lse, causal=True, scale=0.3, what=f"paged={paged}")


@pytest.mark.parametrize("dtype", [F16, BF16, F32])
def test_split_counts_agree(dtype):
    """num_splits 1 (no merge), the heuristic, and explicit counts give the same result within
    rounding, and each is correct."""
    c = Case([1, 4], [8192, 3000], hq=16, hk=4, d=128, dtype=dtype, seed=6)
    one, lse_one = c.run(True, causal=True, num_splits=1)
    c.check(one, lse_one, causal=True, what="1 split")
    tol = {F32: 1e-5, F16: 2e-3, BF16: 1.6e-2}[dtype]
    for splits in (0, 3, 64, 1024):
        out, lse = c.run(True, causal=True, num_splits=splits)
        c.check(out, lse, causal=True, what=f"{splits} splits")
        assert (out.float() - one.float()).abs().max().item() <= tol
        assert (lse - lse_one).abs().max().item() <= 1e-4


@pytest.mark.parametrize("impl", ["decode-regstage", "decode-async"])
@pytest.mark.parametrize("dtype", [F16, BF16, F32])
@pytest.mark.parametrize("d", [80, 128, 256])
def test_copy_paths(impl, dtype, d):
    """Both global -> shared copy paths, whichever the GPU picks by default: the register-staged
    one (sm_70 / sm_75, and sm_90) and the cp.async one (sm_80 .. sm_89)."""
    if impl == "decode-async" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("cp.async needs sm_80+")
    if not instance_runs_here(impl, d, dtype):
        pytest.skip(f"no {impl} instance for head dim {d}, {dtype} in this build")
    c = Case([1, 4, 300], [1000, 129, 700], hq=8, hk=2, d=d, dtype=dtype, seed=d + 7)
    for paged in (True, False):
        out, lse = c.run(paged, causal=True, impl=impl)
        c.check(out, lse, causal=True, what=f"{impl} paged={paged}")
    out, lse = c.run(True, window=(100, 17), impl=impl, num_splits=3)
    c.check(out, lse, window=(100, 17), what=f"{impl} window")
    out, lse = c.run(True, causal=True, impl=impl, num_splits=1)
    c.check(out, lse, causal=True, what=f"{impl} one split")


@pytest.mark.parametrize("impl", ["decode-regstage", "decode-async"])
@pytest.mark.parametrize("dtype", [F16, BF16, F32])
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("group", [1, 2])
def test_small_row_tiles(impl, dtype, d, group):
    """One query of a multi-head (1 row) or GQA-2 (2 rows) model takes the 1- or 2-row tile
    (P and the merge state read as a float / float2 instead of float4 groups), on both copy
    paths, paged and contiguous, split and not, with ALiBi and a window."""
    if impl == "decode-async" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("cp.async needs sm_80+")
    if not instance_runs_here(impl, d, dtype):
        pytest.skip(f"no {impl} instance for head dim {d}, {dtype} in this build")
    c = Case([1, 1, 1], [1, 130, 2000], hq=3 * group, hk=3, d=d, dtype=dtype, seed=d + group)
    for paged in (True, False):
        for splits in (1, 4):
            out, lse = c.run(paged, causal=True, impl=impl, num_splits=splits)
            c.check(out, lse, causal=True, what=f"{impl} paged={paged} splits={splits}")
    slopes = torch.tensor([2.0 ** -(i + 1) for i in range(3 * group)], device="cuda")
    out, lse = c.run(True, window=(100, 0), impl=impl, alibi_slopes=slopes)
    c.check(out, lse, window=(100, 0), alibi=slopes, what=f"{impl} window + alibi")


def test_merge_kernel_path():
    """Launches with more (sequence, KV head, query tile) groups than the last-CTA merge has
    counters for (4096) merge in a separate kernel: 64 x 8 x 10 = 5120 here."""
    c = Case([40] * 64, [300] * 64, hq=32, hk=8, d=64, dtype=F16, seed=12)
    for paged in (True, False):
        out, lse = c.run(paged, causal=True, num_splits=3, impl="decode")
        c.check(out, lse, causal=True, what=f"merge kernel paged={paged}")


def test_mqa_and_strided_q():
    """MQA (32 query heads on one KV head: rows span several tiles) with q / k / v as views into
    one fused QKV buffer, as the model produces them."""
    torch.manual_seed(8)
    hq, hk, d, s = 32, 1, 128, 300
    qkv = rand(s, (hq + 2 * hk) * d, dtype=F16)
    q = qkv[:, : hq * d].view(s, hq, d)[-2:]  # the last two tokens query
    k = qkv[:, hq * d : (hq + hk) * d].view(s, hk, d)
    v = qkv[:, (hq + hk) * d :].view(s, hk, d)
    cu_q, cu_k = cumulative([2]), cumulative([s])
    out = torch.full((2, hq, d), float("nan"), device="cuda", dtype=F16)
    lse = torch.full((hq, 2), float("nan"), device="cuda")
    fastattention._C.fmha_forward(
        q,
        k,
        v,
        out,
        lse,
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        causal=True,
        impl="decode",
        stream=torch.cuda.current_stream().cuda_stream,
    )
    check_sequence(
        out, lse, q.contiguous(), k.contiguous(), v.contiguous(), causal=True, what="mqa strided"
    )


def test_ops_paged_and_routing():
    """ops.attention_paged on torch CUDA tensors (index arrays given as lists), and the automatic
    routing of ops.attention around the decode / prefill threshold."""
    c = Case([1, 1], [33, 500], hq=8, hk=2, d=128, dtype=BF16, seed=9)
    out, lse = ops.attention_paged(
        c.q,
        c.k_cache,
        c.v_cache,
        [0, 1, 2],
        c.table.cpu().tolist(),
        [33, 500],
        causal=True,
        return_lse=True,
    )
    c.check(out, lse, causal=True, what="ops.attention_paged")
    for sq in (1, 16, 17, 64):
        torch.manual_seed(sq)
        q = rand(2, sq, 8, 128, dtype=F16)
        k, v = rand(2, 200, 2, 128, dtype=F16), rand(2, 200, 2, 128, dtype=F16)
        out = ops.attention(q, k, v, causal=True)
        for b in range(2):
            check_sequence(out[b], None, q[b], k[b], v[b], causal=True, what=f"auto sq {sq}")
    q = rand(1, 129, 4, 64, dtype=F32)  # float32 prefill runs on the decode kernel
    k, v = rand(1, 1000, 4, 64, dtype=F32), rand(1, 1000, 4, 64, dtype=F32)
    check_sequence(
        ops.attention(q, k, v, causal=True)[0],
        None,
        q[0],
        k[0],
        v[0],
        causal=True,
        what="fp32 prefill",
    )


def test_bad_input():
    c = Case([1, 1], [10, 20], hq=4, hk=2, d=128, dtype=F16, seed=10)
    out = torch.empty_like(c.q)
    stream = torch.cuda.current_stream().cuda_stream

    def call(q=c.q, k_cache=c.k_cache, v_cache=c.v_cache, out=out, **changes):
        """fmha_forward over c's paged cache, `changes` replacing its keyword arguments."""
        paged = dict(cu_seqlens_q=c.cu_q, block_table=c.table, seqlens_k=c.lens, stream=stream)
        fastattention._C.fmha_forward(q, k_cache, v_cache, out, **{**paged, **changes})

    with pytest.raises(ValueError, match="block_table"):  # one row per sequence
        call(block_table=c.table[:1])
    with pytest.raises(ValueError, match="block_table"):
        call(block_table=c.table[0])
    with pytest.raises(ValueError, match="dtype"):
        kf = c.k_cache.float()
        call(k_cache=kf, v_cache=kf)
    with pytest.raises(ValueError, match="head dim"):
        q48 = rand(2, 4, 48, dtype=F32)
        k48 = rand(4, 16, 2, 48, dtype=F32)
        call(q=q48, k_cache=k48, v_cache=k48, out=torch.empty_like(q48))
    with pytest.raises(ValueError, match="num_splits"):
        c.run(True, num_splits=-1)
    with pytest.raises(ValueError, match="num_splits"):
        c.run(True, num_splits=100000)
    with pytest.raises(ValueError, match="aligned"):
        q_odd = torch.empty(2 * 4 * 128 + 1, device="cuda", dtype=F16)[1:].view(2, 4, 128)
        call(q=q_odd, out=torch.empty_like(c.q))
    with pytest.raises(ValueError, match="seqlens_k"):
        call(seqlens_k=c.lens[:1])


def test_split_launch_under_graph_capture():
    """A split launch captured in a CUDA graph: on a stream that never ran one, a clear error (its
    arrival counters cannot be set up inside a capture) and the stream stays usable; after one
    eager call there, the captured graph replays to the eager result, many times over (the
    counters return to zero after every launch)."""
    c = Case(
        [1, 1, 1, 1], [900, 1000, 37, 700], hq=8, hk=2, d=128, dtype=F16, block_size=64, seed=5
    )
    stream = torch.cuda.Stream()
    out = torch.full_like(c.q, float("nan"))
    lse = torch.full((c.q.shape[1], c.q.shape[0]), float("nan"), device="cuda")

    def call():
        fastattention._C.fmha_forward(
            c.q,
            c.k_cache,
            c.v_cache,
            out,
            lse,
            cu_seqlens_q=c.cu_q,
            max_seqlen_q=1,
            max_seqlen_k=1000,
            causal=True,
            block_table=c.table,
            seqlens_k=c.lens,
            num_splits=4,
            stream=stream.cuda_stream,
        )

    graph = torch.cuda.CUDAGraph()
    with pytest.raises(ValueError, match="arrival counters"):
        with torch.cuda.graph(graph, stream=stream):
            call()
    with torch.cuda.stream(stream):
        call()  # eager: sets the stream's counters up
    stream.synchronize()
    c.check(out, lse, causal=True, what="eager on the capture stream")
    eager_out, eager_lse = out.clone(), lse.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        call()
    for _ in range(5):
        out.fill_(float("nan"))
        lse.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, eager_out) and torch.equal(lse, eager_lse)
