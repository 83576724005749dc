"""fastattention.ops attention against a float64 numpy reference and torch's SDPA."""

import threading
import time

import numpy as np
import pytest

from fastattention import _C
from fastattention.ops import attention, attention_paged, attention_varlen

torch = pytest.importorskip("torch")
F = torch.nn.functional

# Max abs error allowed against float64, by output dtype: float32 rounding noise, and for 16-bit
# outputs a little over one rounding of values of magnitude ~1.
TOL = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1.6e-2}


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def ref_seq(q, k, v, *, causal=False, window=(-1, -1), alibi=None, scale=None):
    """One sequence in float64: q [Sq, Hq, D], k / v [Sk, Hk, D], alibi [Hq] -> out, lse [Hq, Sq]."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sq, hq, d = q.shape
    sk, hk, _ = k.shape
    kk, vv = np.repeat(k, hq // hk, axis=1), np.repeat(v, hq // hk, axis=1)
    s = np.einsum("qhd,khd->hqk", q, kk) * (1 / np.sqrt(d) if scale is None else scale)
    pos = np.arange(sq)[:, None] + sk - sq
    j = np.arange(sk)[None, :]
    vis = np.ones((sq, sk), dtype=bool)
    if causal:
        vis &= j <= pos
    if window[0] >= 0:
        vis &= j >= pos - window[0]
    if window[1] >= 0:
        vis &= j <= pos + window[1]
    if alibi is not None:
        s = s - np.asarray(alibi, dtype=np.float64)[:, None, None] * np.abs(pos - j)[None]
    s = np.where(vis[None], s, -np.inf)
    m = s.max(-1, keepdims=True) if sk else np.full((hq, sq, 1), -np.inf)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    l = e.sum(-1, keepdims=True)
    out = np.einsum("hqk,khd->qhd", e / np.where(l > 0, l, 1.0), vv)
    lse = np.where(
        l[..., 0] > 0, np.log(np.where(l[..., 0] > 0, l[..., 0], 1.0)) + m[..., 0], -np.inf
    )
    return out, lse


def ref_packed(q, k, v, cu_q, cu_k, b, **options):
    """ref_seq of sequence b of packed q / k / v: rows cu_q[b] .. cu_q[b + 1] of q and
    cu_k[b] .. cu_k[b + 1] of k and v."""
    keys = slice(cu_k[b], cu_k[b + 1])
    return ref_seq(q[cu_q[b] : cu_q[b + 1]], k[keys], v[keys], **options)


def ref_batch(q, k, v, **kw):
    """(B, S, H, D) inputs -> out (B, Sq, Hq, D), lse (B, Hq, Sq)."""
    alibi = kw.pop("alibi", None)
    outs, lses = [], []
    for b in range(q.shape[0]):
        a = None if alibi is None else (alibi[b] if np.ndim(alibi) == 2 else alibi)
        o, l = ref_seq(q[b], k[b], v[b], alibi=a, **kw)
        outs.append(o)
        lses.append(l)
    return np.stack(outs), np.stack(lses)


def max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b))) if np.size(b) else 0.0


def to_np(x):
    return x.float().numpy() if isinstance(x, torch.Tensor) else x.astype(np.float32)


# ------------------------------------------------------------------------------ numerics
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("d", [64, 80, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_dense_matches_float64(dtype, d, causal):
    rng = np.random.default_rng(d + causal)
    q, k, v = (rand(rng, 2, 97, 4, d, dtype=dtype) for _ in range(3))
    out, lse = attention(q, k, v, causal=causal, return_lse=True)
    assert isinstance(out, np.ndarray) and out.dtype == np.dtype(dtype) and out.shape == q.shape
    assert lse.dtype == np.float32 and lse.shape == (2, 4, 97)
    ref, ref_lse = ref_batch(q, k, v, causal=causal)
    assert max_err(out, ref) < TOL[dtype]
    assert max_err(lse, ref_lse) < 1e-4


@pytest.mark.parametrize(
    "opts",
    [
        dict(causal=True, window=(32, 0)),
        dict(window=(16, 16)),
        dict(window=(-1, 3)),
        dict(causal=True, window=(100, -1)),
        dict(softmax_scale=0.3),
    ],
)
def test_masks_and_scale(opts):
    rng = np.random.default_rng(1)
    q, k, v = rand(rng, 1, 150, 2, 64), rand(rng, 1, 230, 2, 64), rand(rng, 1, 230, 2, 64)
    out, lse = attention(q, k, v, return_lse=True, **opts)
    kw = dict(opts)
    scale = kw.pop("softmax_scale", None)
    ref, ref_lse = ref_batch(q, k, v, scale=scale, **kw)
    assert max_err(out, ref) < TOL["float32"]
    assert max_err(lse, ref_lse) < 1e-4


def test_rows_without_keys_are_zero():
    # Causal with more queries than keys: the first 30 queries see nothing.
    rng = np.random.default_rng(2)
    q, k, v = rand(rng, 1, 50, 2, 32), rand(rng, 1, 20, 2, 32), rand(rng, 1, 20, 2, 32)
    out, lse = attention(q, k, v, causal=True, return_lse=True)
    assert np.all(out[0, :30] == 0) and np.all(np.isneginf(lse[0, :, :30]))
    ref, _ = ref_batch(q, k, v, causal=True)
    assert max_err(out, ref) < TOL["float32"]


@pytest.mark.parametrize("per_batch", [False, True])
def test_alibi(per_batch):
    rng = np.random.default_rng(3)
    q, k, v = (rand(rng, 2, 70, 4, 64) for _ in range(3))
    slopes = rng.uniform(0.05, 1.0, size=(2, 4) if per_batch else (4,)).astype(np.float32)
    out = attention(q, k, v, causal=True, alibi_slopes=slopes)
    ref, _ = ref_batch(q, k, v, causal=True, alibi=slopes)
    assert max_err(out, ref) < TOL["float32"]


@pytest.mark.parametrize("hk", [2, 1])
def test_gqa_mqa_matches_torch_sdpa(hk):
    rng = np.random.default_rng(4)
    q, k, v = rand(rng, 2, 130, 8, 64), rand(rng, 2, 130, hk, 64), rand(rng, 2, 130, hk, 64)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    out = attention(tq, tk, tv, causal=True)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    expected = F.scaled_dot_product_attention(
        tq.transpose(1, 2), tk.transpose(1, 2), tv.transpose(1, 2), is_causal=True, enable_gqa=True
    ).transpose(1, 2)
    assert max_err(out.numpy(), expected.double().numpy()) < TOL["float32"]
    ref, _ = ref_batch(q, k, v, causal=True)
    assert max_err(out.numpy(), ref) < TOL["float32"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torch_16bit_matches_sdpa(dtype):
    rng = np.random.default_rng(5)
    tdt = getattr(torch, dtype)
    q, k, v = (torch.from_numpy(rand(rng, 1, 200, 4, 128)).to(tdt) for _ in range(3))
    out = attention(q, k, v, causal=True)
    assert out.dtype == tdt and out.shape == q.shape
    ref, _ = ref_batch(*(x.float().numpy() for x in (q, k, v)), causal=True)
    assert max_err(out.float().numpy(), ref) < TOL[dtype]
    # torch's own 16-bit SDPA is no closer to float64 than twice our error.
    theirs = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
    ).transpose(1, 2)
    assert max_err(out.float().numpy(), ref) <= 2 * max_err(theirs.float().numpy(), ref) + 1e-6


def test_strided_views_and_layouts():
    rng = np.random.default_rng(6)
    # A fused QKV buffer [B, S, (Hq + 2 Hk) * D] viewed without copies.
    b, s, hq, hk, d = 2, 60, 4, 2, 32
    qkv = rand(rng, b, s, (hq + 2 * hk) * d)
    q = qkv[..., : hq * d].reshape(b, s, hq, d)
    k = qkv[..., hq * d : (hq + hk) * d].reshape(b, s, hk, d)
    v = qkv[..., (hq + hk) * d :].reshape(b, s, hk, d)
    assert np.shares_memory(q, qkv)
    out, lse = attention(q, k, v, causal=True, return_lse=True)
    ref, ref_lse = ref_batch(q, k, v, causal=True)
    assert max_err(out, ref) < TOL["float32"] and max_err(lse, ref_lse) < 1e-4
    # torch's (B, H, S, D) memory through a (B, S, H, D) view: batch and seqlen do not merge.
    tq, tk, tv = (torch.from_numpy(rand(rng, 3, 2, 40, 16)) for _ in range(3))
    out = attention(tq.transpose(1, 2), tk.transpose(1, 2), tv.transpose(1, 2))
    expected = F.scaled_dot_product_attention(tq, tk, tv).transpose(1, 2)
    assert max_err(out.numpy(), expected.double().numpy()) < TOL["float32"]


def test_read_only_and_grad_inputs():
    rng = np.random.default_rng(7)
    q, k, v = (rand(rng, 1, 20, 2, 16) for _ in range(3))
    for x in (q, k, v):
        x.flags.writeable = False
    out = attention(q, k, v)
    ref, _ = ref_batch(q, k, v)
    assert max_err(out, ref) < TOL["float32"]
    tq = torch.from_numpy(q.copy()).requires_grad_(True)
    out_t = attention(tq, torch.from_numpy(k.copy()), torch.from_numpy(v.copy()))
    assert max_err(out_t.numpy(), ref) < TOL["float32"]


# ------------------------------------------------------------------------------ varlen / paged
def test_varlen_mixed_lengths():
    rng = np.random.default_rng(8)
    lq, lk = [1, 7, 129, 0, 33], [1, 7, 129, 5, 300]
    cu_q, cu_k = np.cumsum([0] + lq), np.cumsum([0] + lk)
    q, k, v = rand(rng, cu_q[-1], 4, 80), rand(rng, cu_k[-1], 2, 80), rand(rng, cu_k[-1], 2, 80)
    slopes = rng.uniform(0.05, 1.0, size=(5, 4)).astype(np.float32)
    out, lse = attention_varlen(
        q,
        k,
        v,
        cu_q,
        cu_k,
        max_seqlen_q=129,
        max_seqlen_k=300,
        causal=True,
        alibi_slopes=slopes,
        return_lse=True,
    )
    assert out.shape == q.shape and lse.shape == (4, cu_q[-1])
    for b in range(5):
        ref, ref_lse = ref_packed(q, k, v, cu_q, cu_k, b, causal=True, alibi=slopes[b])
        assert max_err(out[cu_q[b] : cu_q[b + 1]], ref) < TOL["float32"]
        assert max_err(lse[:, cu_q[b] : cu_q[b + 1]], ref_lse) < 1e-4


@pytest.mark.parametrize("block_size", [16, 64])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_paged_decode_and_prefill(block_size, dtype):
    rng = np.random.default_rng(block_size)
    lq, lk = [1, 1, 20], [700, 3, 20]
    cu_q = np.cumsum([0] + lq)
    hq, hk, d = 8, 2, 64
    keys = [rand(rng, n, hk, d, dtype=dtype) for n in lk]
    vals = [rand(rng, n, hk, d, dtype=dtype) for n in lk]
    blocks = [(n + block_size - 1) // block_size for n in lk]
    num_blocks = sum(blocks) + 2
    perm = rng.permutation(num_blocks)
    k_cache = np.full((num_blocks, block_size, hk, d), np.nan, dtype=dtype)
    v_cache = np.full_like(k_cache, np.nan)
    table = np.full((3, max(blocks)), -1, dtype=np.int32)
    nxt = 0
    for b, n in enumerate(lk):
        for i in range(blocks[b]):
            table[b, i] = perm[nxt]
            nxt += 1
        for j in range(n):
            k_cache[table[b, j // block_size], j % block_size] = keys[b][j]
            v_cache[table[b, j // block_size], j % block_size] = vals[b][j]
    q = rand(rng, cu_q[-1], hq, d, dtype=dtype)
    out, lse = attention_paged(q, k_cache, v_cache, cu_q, table, lk, causal=True, return_lse=True)
    for b in range(3):
        ref, ref_lse = ref_seq(q[cu_q[b] : cu_q[b + 1]], keys[b], vals[b], causal=True)
        assert max_err(out[cu_q[b] : cu_q[b + 1]], ref) < TOL[dtype]
        assert max_err(lse[:, cu_q[b] : cu_q[b + 1]], ref_lse) < 1e-3


def test_decode_long_context_split_kv():
    # One sequence, one KV head, 8 threads: the key range is split and merged.
    rng = np.random.default_rng(9)
    q, k, v = rand(rng, 1, 1, 4, 128), rand(rng, 1, 5000, 1, 128), rand(rng, 1, 5000, 1, 128)
    out, lse = attention(q, k, v, causal=True, return_lse=True, num_threads=8)
    ref, ref_lse = ref_batch(q, k, v, causal=True)
    assert max_err(out, ref) < TOL["float32"] and max_err(lse, ref_lse) < 1e-4


# ------------------------------------------------------------------------------ raw binding
def test_fmha_forward_writes_every_output_element():
    rng = np.random.default_rng(10)
    q, k, v = rand(rng, 50, 4, 32), rand(rng, 80, 2, 32), rand(rng, 80, 2, 32)
    out = np.full((50, 4, 32), np.nan, dtype=np.float16)  # any float dtype for out
    lse = np.full((4, 50), np.nan, dtype=np.float32)
    cu_q, cu_k = np.array([0, 20, 50], np.int32), np.array([0, 30, 80], np.int32)
    _C.fmha_forward(
        q,
        k,
        v,
        out,
        lse,
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        causal=True,
        window_left=10,
        num_threads=2,
    )
    assert np.all(np.isfinite(out)) and not np.any(np.isnan(lse))
    for b in range(2):
        ref, ref_lse = ref_packed(q, k, v, cu_q, cu_k, b, causal=True, window=(10, -1))
        assert max_err(out[cu_q[b] : cu_q[b + 1]], ref) < TOL["float16"]
        assert max_err(lse[:, cu_q[b] : cu_q[b + 1]], ref_lse) < 1e-4


def test_kernel_releases_the_gil():
    rng = np.random.default_rng(11)
    q, k, v = rand(rng, 1, 1024, 8, 128), rand(rng, 1, 1024, 8, 128), rand(rng, 1, 1024, 8, 128)
    ticks = 0
    done = threading.Event()

    def work():
        for _ in range(3):
            attention(q, k, v, num_threads=1)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    time.sleep(0.01)
    while not done.is_set():
        ticks += 1
    t.join()
    # With the GIL held through the kernel this thread could not run while it computed.
    assert ticks > 1000


# ------------------------------------------------------------------------------ bad input
def test_bad_input_python_checks():
    rng = np.random.default_rng(12)
    q, k = rand(rng, 1, 8, 4, 16), rand(rng, 1, 8, 2, 16)
    with pytest.raises(ValueError, match="q: expected 4 dimensions"):
        attention(q[0], k, k)
    with pytest.raises(ValueError, match=r"head dims of q \(16\) and k \(8\) differ"):
        attention(q, k[..., :8], k[..., :8])
    with pytest.raises(ValueError, match="v: shape"):
        attention(q, k, k[:, :4])
    with pytest.raises(ValueError, match="k and v must have the same dtype"):
        attention(q, k, k.astype(np.float16))
    with pytest.raises(ValueError, match="not a multiple of the 3 KV heads"):
        kk = rand(rng, 1, 8, 3, 16)
        attention(q, kk, kk)
    with pytest.raises(ValueError, match="k: batch size 2 differs"):
        kk = rand(rng, 2, 8, 2, 16)
        attention(q, kk, kk)
    with pytest.raises(ValueError, match="q: dtype float64 is not supported"):
        attention(q.astype(np.float64), k, k)
    with pytest.raises(ValueError, match="window"):
        attention(q, k, k, window=(-2, 0))
    with pytest.raises(ValueError, match="softmax_scale"):
        attention(q, k, k, softmax_scale=-1.0)
    with pytest.raises(TypeError, match="q: expected a numpy array or torch tensor"):
        attention(q.tolist(), k, k)
    with pytest.raises(ValueError, match="max_seqlen_q: 3 is smaller than the longest"):
        attention_varlen(q[0], k[0], k[0], [0, 8], [0, 8], max_seqlen_q=3)


def test_bad_input_from_cpp():
    rng = np.random.default_rng(13)
    q, k = rand(rng, 12, 4, 16), rand(rng, 10, 2, 16)
    with pytest.raises(ValueError, match="cu_seqlens_q: last entry 10 != q rows 12"):
        attention_varlen(q, k, k, [0, 4, 10], [0, 5, 10])
    with pytest.raises(ValueError, match="cu_seqlens_k: entries must not decrease"):
        attention_varlen(q, k, k, [0, 6, 12], [0, 7, 5])
    with pytest.raises(ValueError, match="k: expected 3 dimensions"):
        attention_varlen(q, k[0], k[0], [0, 12], [0, 2])
    with pytest.raises(ValueError, match=r"head dims of q \(16\), k \(8\)"):
        attention_varlen(q, k[..., :8], k[..., :8], [0, 12], [0, 10])
    with pytest.raises(ValueError, match="q has 4 heads, not a multiple of the 3 KV heads"):
        kk = rand(rng, 10, 3, 16)
        attention_varlen(q, kk, kk, [0, 12], [0, 10])
    with pytest.raises(ValueError, match="q: head dim 300 is unsupported"):
        qq = rand(rng, 2, 1, 300)
        attention_varlen(qq, qq, qq, [0, 2], [0, 2])
    cache = rand(rng, 4, 8, 2, 16)
    with pytest.raises(ValueError, match=r"block_table\[0\]\[1\] = 9 is out of range"):
        attention_paged(q[:1], cache, cache, [0, 1], [[0, 9]], [12])
    with pytest.raises(ValueError, match=r"seqlens_k\[0\] = 17 exceeds the block table capacity"):
        attention_paged(q[:1], cache, cache, [0, 1], [[0, 1]], [17])

    def fmha_forward(*lse, **options):
        """_C.fmha_forward itself (past ops.py's checks) on q / k: 12 queries, 10 keys."""
        cu = dict(
            cu_seqlens_q=np.array([0, 12], np.int32), cu_seqlens_k=np.array([0, 10], np.int32)
        )
        _C.fmha_forward(q, k, k, np.empty_like(q), *lse, **cu, **options)

    with pytest.raises(ValueError, match="num_threads"):
        fmha_forward(num_threads=-1)
    with pytest.raises(ValueError, match="window_left"):
        fmha_forward(window_left=-3)
    with pytest.raises(ValueError, match="lse: expected shape"):
        fmha_forward(np.empty((12, 4), np.float32))


def test_impl_option_needs_cuda_tensors():
    """impl selects a CUDA MMA path: on CPU arrays anything but "auto" is a clear error."""
    q = np.random.default_rng(7).standard_normal((1, 8, 2, 16)).astype(np.float32)
    for bad in ("884", "16816", "cpu"):
        with pytest.raises(ValueError, match="impl"):
            attention(q, q, q, impl=bad)
    with pytest.raises(ValueError, match="impl"):
        attention(q, q, q, impl=884)
    cu = np.array([0, 8], dtype=np.int32)
    with pytest.raises(ValueError, match="impl"):
        attention_varlen(q[0], q[0], q[0], cu, cu, impl="1688")
    assert np.isfinite(attention(q, q, q, impl="auto")).all()
