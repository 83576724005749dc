"""CUDA rope, KV-cache write, fused rope + cache write and sampling (run on a GPU machine;
skipped elsewhere).

rope: every style and scaling, float32 / float16 / bfloat16 strided views into a fused QKV
buffer, against a float64 reference with transformers' float32 angles (the library's own
inv_freq): error at most one rounding of the output dtype plus a few float32 ulp of the inputs.
Cache writes: exact, into NaN-poisoned caches (unwritten slots must stay NaN), block sizes 16
and 64, T = 1, 3, 257, GQA-like head counts. The fused kernel equals the unfused calls bit for bit.
Sampling: the GPU picks the CPU's token; greedy rows must all agree, seeded rows may differ only
at a near-tie that a float64 replay of the CPU sampler confirms (the draw or the top-p target
within 1e-5 of a boundary between the two tokens), and such rows must stay rare.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastattention  # noqa: E402
from fastattention import _C  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and getattr(fastattention._C, "cuda_built", False)),
    reason="needs a CUDA GPU and a CUDA build",
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MANTISSA = {torch.float32: 23, torch.float16: 10, torch.bfloat16: 7}
ROPES = {
    "neox": {},
    "interleaved": {"style": "interleaved", "theta": 500000.0},
    "partial_linear": {"rotary_dim": 32, "scaling": "linear", "factor": 4.0},
    "llama3": {
        "scaling": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position": 256,
        "theta": 500000.0,
    },
    "dynamic": {"scaling": "dynamic", "factor": 2.0, "original_max_position": 100},
}


def stream():
    return torch.cuda.current_stream().cuda_stream


def gen(seed):
    g = torch.Generator(device="cuda")
    g.manual_seed(seed)
    return g


def qkv(T, hq, hk, d, dv, dtype, g):
    """q, k, v as strided views into one fused projection buffer (the attention layer's layout)."""
    buf = torch.randn(T, (hq + hk) * d + hk * dv, device="cuda", generator=g).to(dtype)
    q = buf[:, : hq * d].view(T, hq, d)
    k = buf[:, hq * d : (hq + hk) * d].view(T, hk, d)
    v = buf[:, (hq + hk) * d :].view(T, hk, dv)
    return buf, q, k, v


def rope_ref(x, pos, rope, seq_len):
    """float64 rotation of x with float32 angles position.float() * inv_freq (transformers')."""
    d = x.shape[-1]
    inv = torch.tensor(_C.kernel_rope_inv_freq(d, rope=rope, seq_len=seq_len), device="cuda")
    ang = (pos.float()[:, None] * inv[None, :]).double()[:, None, :]
    c, s = ang.cos(), ang.sin()
    out = x.double().clone()
    half = inv.numel()
    if rope.get("style", "neox") == "neox":
        i0, i1 = torch.arange(half), torch.arange(half, 2 * half)
    else:
        i0, i1 = torch.arange(0, 2 * half, 2), torch.arange(1, 2 * half, 2)
    a, b = out[..., i0], out[..., i1]
    out[..., i0], out[..., i1] = a * c - b * s, b * c + a * s
    mag = torch.zeros_like(out)  # |a| + |b| of each element's pair: the float32 work's scale
    mag[..., i0] = mag[..., i1] = a.abs() + b.abs()
    return out, mag, 2 * half


def check_rope(out, x_in, pos, rope, seq_len):
    ref, mag, rot = rope_ref(x_in, pos, rope, seq_len)
    got = out.double()
    assert not torch.isnan(got).any()
    tol = 2.0 ** -MANTISSA[out.dtype] * ref.abs() + 2.0**-21 * mag + 1e-7
    err = (got - ref).abs()
    assert (err[..., :rot] <= tol[..., :rot]).all(), f"max error {err.max().item():.3g}"
    assert torch.equal(out[..., rot:], x_in[..., rot:]), "dims past rotary_dim changed"


def positions(T, pos_dtype, g, high=4000):
    return torch.randint(0, high, (T,), device="cuda", generator=g, dtype=pos_dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rope_name", list(ROPES))
@pytest.mark.parametrize("T", [1, 3, 257])
def test_rope(dtype, rope_name, T):
    g = gen(T)
    rope = ROPES[rope_name]
    buf, q, k, _ = qkv(T, 8, 2, 64, 64, dtype, g)
    pos = positions(T, torch.int32 if dtype == torch.float16 else torch.int64, g)
    seq_len = int(pos.max()) + 1 if rope_name == "dynamic" else 0
    before = buf.clone()
    q_in = q.clone()
    _C.kernel_rope(q, pos, rope=rope, seq_len=seq_len, stream=stream())
    torch.cuda.synchronize()
    check_rope(q, q_in, pos, rope, seq_len)
    hq_cols = 8 * 64
    assert torch.equal(buf[:, hq_cols:], before[:, hq_cols:]), "rope wrote outside q"


def test_rope_fp32_matches_cpu_kernel():
    g = gen(11)
    for name, rope in ROPES.items():
        x = torch.randn(33, 4, 64, device="cuda", generator=g)
        pos = positions(33, torch.int32, g, high=100000)
        seq_len = int(pos.max()) + 1 if name == "dynamic" else 0
        cpu = x.cpu().numpy().copy()
        _C.kernel_rope(cpu, pos.cpu().numpy(), rope=rope)
        _C.kernel_rope(x, pos, rope=rope, seq_len=seq_len, stream=stream())
        torch.cuda.synchronize()
        # Same angles and cos / sin; only the float32 rotation's contraction may differ.
        np.testing.assert_allclose(
            x.cpu().numpy(), cpu, rtol=0, atol=2e-6 * np.abs(cpu).max(), err_msg=name
        )


def poisoned_caches(blocks, bs, hk, d, dv, dtype):
    nan = float("nan")
    return (
        torch.full((blocks, bs, hk, d), nan, device="cuda", dtype=dtype),
        torch.full((blocks, bs, hk, dv), nan, device="cuda", dtype=dtype),
    )


def slot_mapping(T, blocks, bs, g):
    """A random permutation of the slots with a few tokens skipped (-1) and, on the GPU, a few
    out of range (skipped too)."""
    n = blocks * bs
    slots = torch.randperm(n, device="cuda", generator=g)[:T].to(torch.int32)
    if T >= 3:
        slots[1] = -1
        slots[-1] = n + 7
    return slots


def expected_cache(cache_like, src, slots):
    ref = torch.full_like(cache_like, float("nan"))
    flat = ref.view(-1, *ref.shape[2:])
    live = (slots >= 0) & (slots < flat.shape[0])
    flat[slots[live].long()] = src[live].to(ref.dtype)
    return ref


@pytest.mark.parametrize("src_dtype", DTYPES)
@pytest.mark.parametrize("cache_dtype", DTYPES)
@pytest.mark.parametrize("bs", [16, 64])
@pytest.mark.parametrize("T", [1, 3, 257])
def test_kv_cache_write(src_dtype, cache_dtype, bs, T):
    g = gen(bs + T)
    hk, d, dv = 2, 64, 48
    _, _, k, v = qkv(T, 8, hk, d, dv, src_dtype, g)
    blocks = T * 3 // bs + 2
    kc, vc = poisoned_caches(blocks, bs, hk, d, dv, cache_dtype)
    slots = slot_mapping(T, blocks, bs, g)
    _C.kernel_kv_cache_write(k, v, kc, vc, slots, stream=stream())
    torch.cuda.synchronize()
    torch.testing.assert_close(kc, expected_cache(kc, k, slots), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(vc, expected_cache(vc, v, slots), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cache_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("rope_name", ["neox", "interleaved", "partial_linear", "dynamic"])
@pytest.mark.parametrize("bs, T", [(16, 1), (64, 3), (16, 257)])
def test_fused_equals_unfused(dtype, cache_dtype, rope_name, bs, T):
    g = gen(T * 7 + bs)
    rope = ROPES[rope_name]
    hq, hk, d, dv = 8, 2, 64, 64
    buf, q, k, v = qkv(T, hq, hk, d, dv, dtype, g)
    buf2 = buf.clone()
    q2, k2 = buf2[:, : hq * d].view(T, hq, d), buf2[:, hq * d : (hq + hk) * d].view(T, hk, d)
    v2 = buf2[:, (hq + hk) * d :].view(T, hk, dv)
    pos = positions(T, torch.int32, g)
    seq_len = int(pos.max()) + 1 if rope_name == "dynamic" else 0
    blocks = T * 2 // bs + 2
    kc, vc = poisoned_caches(blocks, bs, hk, d, dv, cache_dtype)
    kc2, vc2 = kc.clone(), vc.clone()
    slots = slot_mapping(T, blocks, bs, g)
    q_in, k_in = q.clone(), k.clone()
    _C.kernel_rope_kv_cache_write(
        q, k, v, pos, kc, vc, slots, rope=rope, seq_len=seq_len, stream=stream()
    )
    _C.kernel_rope(q2, pos, rope=rope, seq_len=seq_len, stream=stream())
    _C.kernel_rope(k2, pos, rope=rope, seq_len=seq_len, stream=stream())
    _C.kernel_kv_cache_write(k2, v2, kc2, vc2, slots, stream=stream())
    torch.cuda.synchronize()
    assert torch.equal(buf, buf2), "fused q / k differ from apply_rope's"
    torch.testing.assert_close(kc, kc2, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(vc, vc2, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(kc, expected_cache(kc, k, slots), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(vc, expected_cache(vc, v, slots), rtol=0, atol=0, equal_nan=True)
    check_rope(q, q_in, pos, rope, seq_len)
    check_rope(k, k_in, pos, rope, seq_len)


def test_rope_kv_bad_input():
    g = gen(5)
    T, hq, hk, d = 4, 4, 2, 64
    _, q, k, v = qkv(T, hq, hk, d, d, torch.float16, g)
    pos = torch.arange(T, device="cuda", dtype=torch.int32)
    kc, vc = poisoned_caches(2, 16, hk, d, d, torch.float16)
    slots = torch.arange(T, device="cuda", dtype=torch.int32)
    s = stream()
    with pytest.raises(ValueError, match="dynamic NTK scaling on CUDA needs seq_len > 0"):
        _C.kernel_rope(q, pos, rope=ROPES["dynamic"], stream=s)
    with pytest.raises(ValueError, match="positions is on cpu but x is on cuda"):
        _C.kernel_rope(q, pos.cpu(), stream=s)
    with pytest.raises(ValueError, match="rotates at most 512 dims"):
        _C.kernel_rope(torch.zeros(1, 1, 1024, device="cuda"), pos[:1], stream=s)
    with pytest.raises(ValueError, match="positions: expected int32 or int64"):
        _C.kernel_rope(q, pos.float(), stream=s)
    with pytest.raises(ValueError, match="x: the CUDA kernels take float32, float16 or bfloat16"):
        _C.kernel_rope(torch.zeros(T, 2, 8, device="cuda", dtype=torch.int32), pos, stream=s)
    with pytest.raises(ValueError, match="k_cache is on cpu but k_new is on cuda"):
        _C.kernel_kv_cache_write(k, v, kc.cpu(), vc, slots, stream=s)
    with pytest.raises(ValueError, match="slot_mapping: expected dtype int32"):
        _C.kernel_kv_cache_write(k, v, kc, vc, slots.long(), stream=s)
    with pytest.raises(ValueError, match="k_cache: expected shape"):
        _C.kernel_kv_cache_write(k, v, kc[..., :32], vc, slots, stream=s)
    with pytest.raises(ValueError, match="must have the same number of tokens and head dim"):
        _C.kernel_rope_kv_cache_write(q[:, :, :32], k, v, pos, kc, vc, slots, stream=s)
    with pytest.raises(ValueError, match="v is on cpu but q is on cuda"):
        _C.kernel_rope_kv_cache_write(q, k, v.cpu(), pos, kc, vc, slots, stream=s)


# ---------------------------------------------------------------------------------------------
# Sampling


def logits_rows(kind, B, V, g):
    x = torch.randn(B, V, device="cuda", generator=g)
    if kind == "gauss":
        return x * 3.0
    if kind == "ties":  # few distinct values: thousands of tokens tie at each
        return torch.round(x * 2.0)
    if kind == "masked":  # half the vocabulary masked
        return torch.where(
            torch.rand(B, V, device="cuda", generator=g) < 0.5, float("-inf"), x * 4.0
        )
    if kind == "peaked":
        x = x * 2.0
        x[:, 7] += 25.0
        return x
    if kind == "flat":
        return x * 0.05
    raise ValueError(kind)


def cpu_tokens(logits, **kw):
    out = np.full(logits.shape[0], -7, np.int32)
    _C.kernel_sample(logits.cpu().numpy(), out, **kw)
    return out


def gpu_tokens(logits, **kw):
    out = torch.full((logits.shape[0],), -7, device="cuda", dtype=torch.int32)
    _C.kernel_sample(logits, out, stream=stream(), **kw)
    torch.cuda.synchronize()
    return out.cpu().numpy()


def replay_kept(l, temp, k, p, p_scale):
    """float64 replay of the CPU sampler's kept set (sampling.cc): (ids in id order, cumsum)."""
    finite = np.isfinite(l)
    mx = np.float32(l[finite].max())
    inv_t = np.float32(1.0) / np.float32(temp)
    with np.errstate(over="ignore", invalid="ignore"):
        w = np.exp((l - mx).astype(np.float32) * inv_t).astype(np.float64)
    w[~finite] = 0.0
    ids = np.arange(l.size)
    order = np.lexsort((ids, -np.where(finite, l, -np.inf)))  # logit desc, id asc
    kept = order[w[order] > 0]
    if 0 < k < kept.size:
        kept = kept[:k]
    if p < 1.0:
        cum = np.cumsum(w[kept])
        idx = min(int(np.searchsorted(cum, p * cum[-1] * p_scale, side="left")), kept.size - 1)
        kept = kept[: idx + 1]
    kept = np.sort(kept)
    return kept, np.cumsum(w[kept])


def near_tie_tokens(l, temp, k, p, u, rel=1e-5):
    """Tokens the CPU sampler could give if its sums were off by `rel`: the draw and the top-p
    target each moved by that much."""
    tokens = set()
    for p_scale in (1 - rel, 1.0, 1 + rel):
        kept, cum = replay_kept(l, temp, k, p, p_scale)
        for du in (-rel, 0.0, rel):
            x = min(max(u + du, 0.0), 1.0) * cum[-1]
            tokens.add(int(kept[min(int(np.searchsorted(cum, x, side="right")), kept.size - 1)]))
    return tokens


def uniform(seed, step):
    """uniform_from_counter(seed, step) (sampling.cc), in Python."""
    m = (1 << 64) - 1

    def mix(x):
        x = (x + 0x9E3779B97F4A7C15) & m
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
        return x ^ (x >> 31)

    bits = mix(mix(seed) ^ ((step * 0xD1B54A32D192ED03) & m))
    return np.float32(bits >> 40) * np.float32(1.0 / 16777216.0)


CONFIGS = [  # temperature, top_k, top_p
    (1.0, 0, 1.0),
    (0.7, 0, 0.9),
    (0.8, 50, 1.0),
    (1.0, 40, 0.95),
    (0.5, 5000, 0.99),
    (1.3, 0, 0.5),
    (2.0, 3, 1.0),
    (0.9, 2000, 0.8),
]


@pytest.mark.parametrize("V", [32000, 1000])
@pytest.mark.parametrize("kind", ["gauss", "ties", "masked", "peaked", "flat"])
def test_sample_greedy_equals_cpu(V, kind):
    logits = logits_rows(kind, 64, V, gen(V))
    logits[3, [5, 9]] = logits[3].max() + 1.0  # tied maxima: the lower id
    for kw in ({}, {"temperature": 1.0, "top_k": 1}):
        got = gpu_tokens(logits, **kw)
        np.testing.assert_array_equal(got, cpu_tokens(logits, **kw))
    assert got[3] == 5


@pytest.mark.parametrize("V", [32000, 1000])
@pytest.mark.parametrize("kind", ["gauss", "ties", "masked", "peaked", "flat"])
def test_sample_seeded_equals_cpu(V, kind):
    B = 64
    logits = logits_rows(kind, B, V, gen(V + len(kind)))
    host = logits.cpu().numpy()
    mismatches = 0
    for c, (temp, k, p) in enumerate(CONFIGS):
        seeds = [1000 * c + b for b in range(B)]
        steps = [b * 3 + c for b in range(B)]
        kw = dict(temperature=temp, top_k=k, top_p=p, seed=seeds, step=steps)
        got, want = gpu_tokens(logits, **kw), cpu_tokens(logits, **kw)
        for b in np.nonzero(got != want)[0]:
            ok = near_tie_tokens(host[b], temp, k, p, float(uniform(seeds[b], steps[b])))
            assert {int(got[b]), int(want[b])} <= ok, (
                f"row {b} ({temp}, {k}, {p}): GPU {got[b]} vs CPU {want[b]} is no near-tie {ok}"
            )
            mismatches += 1
    assert mismatches <= 2, f"{mismatches} near-tie mismatches in {B * len(CONFIGS)} draws"


def test_sample_many_rows_and_batch_independence():
    V, B = 1000, 300  # more rows than one launch takes (128)
    logits = logits_rows("gauss", B, V, gen(3))
    kw = dict(temperature=0.9, top_k=100, top_p=0.9, seed=list(range(B)), step=7)
    got = gpu_tokens(logits, **kw)
    np.testing.assert_array_equal(got, cpu_tokens(logits, **kw))
    np.testing.assert_array_equal(got, gpu_tokens(logits, **kw))  # deterministic
    alone = gpu_tokens(
        logits[200:201].clone(), temperature=0.9, top_k=100, top_p=0.9, seed=200, step=7
    )
    assert alone[0] == got[200]


def test_sample_nan_and_inf_are_masked_on_gpu():
    V = 1000
    logits = logits_rows("gauss", 8, V, gen(4))
    logits[0, 3] = float("nan")
    logits[1, 5] = float("inf")
    logits[1, 6] = float("nan")
    logits[2, :] = float("nan")
    logits[3, :] = float("-inf")
    logits[4, :] = float("inf")
    clean = torch.where(torch.isnan(logits) | (logits == float("inf")), float("-inf"), logits)
    live = [0, 1, 5, 6, 7]
    for kw in ({}, dict(temperature=0.8, top_k=20, top_p=0.9, step=2)):
        got = gpu_tokens(logits, seed=list(range(8)), **kw)
        assert (got[2:5] == 0).all(), "a row with no finite logit gives token 0"
        want = cpu_tokens(clean[live], seed=live, **kw)  # the same rows with -inf in their place
        np.testing.assert_array_equal(got[live], want)


def test_sample_bad_input():
    logits = torch.randn(2, 100, device="cuda")
    out = torch.zeros(2, device="cuda", dtype=torch.int32)
    s = stream()
    with pytest.raises(ValueError, match="temperature -1 of row 0"):
        _C.kernel_sample(logits, out, temperature=-1.0, stream=s)
    with pytest.raises(ValueError, match="top_p 0 of row 0 must lie in"):
        _C.kernel_sample(logits, out, temperature=1.0, top_p=0.0, stream=s)
    with pytest.raises(ValueError, match="top_k -2 of row 0"):
        _C.kernel_sample(logits, out, temperature=1.0, top_k=-2, stream=s)
    with pytest.raises(ValueError, match="out is on cpu but logits is on cuda"):
        _C.kernel_sample(logits, out.cpu(), stream=s)
    with pytest.raises(ValueError, match="out: expected dtype int32"):
        _C.kernel_sample(logits, out.long(), stream=s)
    with pytest.raises(ValueError, match="logits: expected dtype float32"):
        _C.kernel_sample(logits.half(), out, stream=s)
    with pytest.raises(ValueError, match="out: expected shape"):
        _C.kernel_sample(logits, out[:1], stream=s)
