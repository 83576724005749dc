"""Rope, KV-cache write and sampling bindings (_C.kernel_rope, kernel_kv_cache_write, kernel_rope_kv_cache_write,
kernel_sample) on CPU arrays.

The same bindings take CUDA tensors (tests/gpu/test_rope_kv_sampling_cuda.py). Here: rope against a
float64 reference (float32 angles, as transformers computes them), the fused rope + cache write
against the unfused calls bit for bit, the cache write against numpy indexing, sampling's
argmax and determinism, and bad input (ValueError naming the argument; nothing written).
Caches are poisoned (NaN) first so unwritten slots show; inputs are fresh random values.
"""

import numpy as np
import pytest

from fastattention import _C

torch = pytest.importorskip("torch")

ROPES = [
    {},
    {"style": "interleaved", "theta": 500000.0},
    {"rotary_dim": 8, "scaling": "linear", "factor": 4.0},
    {
        "scaling": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position": 64,
        "theta": 500000.0,
    },
    {"scaling": "dynamic", "factor": 2.0, "original_max_position": 16},
]


def rope_ref(x, positions, rope, seq_len=0):
    """float64 rotation with transformers' float32 angles: position.float() * inv_freq."""
    d = x.shape[-1]
    n = seq_len if seq_len else int(positions.max()) + 1
    inv = np.asarray(_C.kernel_rope_inv_freq(d, rope=rope, seq_len=n), dtype=np.float32)
    ang = (positions.astype(np.float32)[:, None] * inv[None, :]).astype(np.float64)
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = x.astype(np.float64).copy()
    half = inv.size
    if rope.get("style", "neox") == "neox":
        a, b = out[..., :half].copy(), out[..., half : 2 * half].copy()
        out[..., :half], out[..., half : 2 * half] = a * c - b * s, b * c + a * s
    else:
        a, b = out[..., 0 : 2 * half : 2].copy(), out[..., 1 : 2 * half : 2].copy()
        out[..., 0 : 2 * half : 2], out[..., 1 : 2 * half : 2] = a * c - b * s, b * c + a * s
    return out


def qkv_views(rng, T, hq, hk, d, dv=None):
    """q, k, v as strided views into one fused projection buffer (as the attention layer does)."""
    dv = dv or d
    buf = rng.standard_normal((T, hq * d + hk * d + hk * dv)).astype(np.float32)
    q = buf[:, : hq * d].reshape(T, hq, d)
    k = buf[:, hq * d : (hq + hk) * d].reshape(T, hk, d)
    v = buf[:, (hq + hk) * d :].reshape(T, hk, dv)
    return buf, q, k, v


@pytest.mark.parametrize("rope", ROPES)
@pytest.mark.parametrize("pos_dtype", [np.int32, np.int64])
def test_rope_matches_float64_reference(rope, pos_dtype):
    rng = np.random.default_rng(1)
    T, H, D = 5, 3, 16
    x = rng.standard_normal((T, H, D)).astype(np.float32)
    pos = rng.integers(0, 40, T).astype(pos_dtype)
    ref = rope_ref(x, pos, rope)
    _C.kernel_rope(x, pos, rope=rope)
    np.testing.assert_allclose(x, ref, rtol=0, atol=4e-6 * np.abs(ref).max())


def test_rope_seq_len_picks_the_dynamic_frequencies():
    rng = np.random.default_rng(2)
    rope = ROPES[-1]
    x = rng.standard_normal((4, 2, 16)).astype(np.float32)
    pos = np.array([0, 3, 7, 9], np.int32)
    derived, given, longer = x.copy(), x.copy(), x.copy()
    _C.kernel_rope(derived, pos, rope=rope)
    _C.kernel_rope(given, pos, rope=rope, seq_len=10)  # = max + 1: the same frequencies
    np.testing.assert_array_equal(derived, given)
    _C.kernel_rope(longer, pos, rope=rope, seq_len=40)  # past original_max_position 16
    ref = rope_ref(x, pos, rope, seq_len=40)
    np.testing.assert_allclose(longer, ref, rtol=0, atol=4e-6 * np.abs(ref).max())
    assert np.abs(longer - derived).max() > 1e-3


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block_size", [16, 64])
def test_kv_cache_write_matches_indexing(cache_dtype, block_size):
    rng = np.random.default_rng(3)
    T, hk, d, dv, blocks = 37, 2, 16, 8, 5
    _, _, k, v = qkv_views(rng, T, 4, hk, d, dv)
    slots = rng.permutation(blocks * block_size)[:T].astype(np.int32)
    slots[::5] = -1
    kc = torch.full((blocks, block_size, hk, d), float("nan"), dtype=cache_dtype)
    vc = torch.full((blocks, block_size, hk, dv), float("nan"), dtype=cache_dtype)
    _C.kernel_kv_cache_write(k, v, kc, vc, slots)
    kref = torch.full_like(kc, float("nan")).view(-1, hk, d)
    vref = torch.full_like(vc, float("nan")).view(-1, hk, dv)
    live = slots >= 0
    kref[torch.from_numpy(slots[live]).long()] = torch.from_numpy(k[live]).to(cache_dtype)
    vref[torch.from_numpy(slots[live]).long()] = torch.from_numpy(v[live]).to(cache_dtype)
    torch.testing.assert_close(kc.view(-1, hk, d), kref, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(vc.view(-1, hk, dv), vref, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("rope", ROPES)
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_fused_equals_unfused(rope, cache_dtype):
    rng = np.random.default_rng(4)
    T, hq, hk, d, dv, blocks, bs = 9, 4, 2, 16, 12, 3, 16
    buf, q, k, v = qkv_views(rng, T, hq, hk, d, dv)
    pos = rng.integers(0, 30, T).astype(np.int64)
    slots = rng.permutation(blocks * bs)[:T].astype(np.int32)
    slots[2] = -1
    buf2 = buf.copy()
    q2, k2 = buf2[:, : hq * d].reshape(T, hq, d), buf2[:, hq * d : (hq + hk) * d].reshape(T, hk, d)
    caches = [torch.full((blocks, bs, hk, n), float("nan"), dtype=cache_dtype) for n in (d, dv)]
    caches2 = [c.clone() for c in caches]
    ref = rope_ref(np.concatenate([q, k], 1), pos, rope)
    _C.kernel_rope_kv_cache_write(q, k, v, pos, caches[0], caches[1], slots, rope=rope)
    _C.kernel_rope(q2, pos, rope=rope)
    _C.kernel_rope(k2, pos, rope=rope)
    _C.kernel_kv_cache_write(k2, v, caches2[0], caches2[1], slots)
    np.testing.assert_array_equal(buf, buf2)
    for c, c2 in zip(caches, caches2):
        torch.testing.assert_close(c, c2, rtol=0, atol=0, equal_nan=True)
    assert not torch.isnan(
        caches[0].view(-1, hk, d)[torch.from_numpy(slots[slots >= 0]).long()]
    ).any()
    # q and k really were rotated
    np.testing.assert_allclose(
        np.concatenate([q, k], 1), ref, rtol=0, atol=4e-6 * np.abs(ref).max()
    )


def fused_args(rng, T=4, hq=2, hk=1, d=8, blocks=2, bs=16):
    _, q, k, v = qkv_views(rng, T, hq, hk, d)
    q, k, v = q.copy(), k.copy(), v.copy()
    pos = np.arange(T, dtype=np.int32)
    kc = np.full((blocks, bs, hk, d), np.nan, np.float32)
    vc = np.full((blocks, bs, hk, d), np.nan, np.float32)
    slots = np.arange(T, dtype=np.int32)
    return dict(q=q, k=k, v=v, positions=pos, k_cache=kc, v_cache=vc, slot_mapping=slots)


@pytest.mark.parametrize(
    "change, match",
    [
        (
            lambda a: a["slot_mapping"].__setitem__(1, 32),
            "slot_mapping: slot 32 at position 1 is out of range",
        ),
        (lambda a: a["slot_mapping"].__setitem__(0, -2), "slot_mapping: slot -2"),
        (
            lambda a: a["positions"].__setitem__(2, -1),
            "positions: position -1 at index 2 is negative",
        ),
        (lambda a: a.__setitem__("k", a["k"].astype(np.float16)), "k: expected dtype float32"),
        (lambda a: a.__setitem__("q", a["q"].astype(np.float16)), "q: expected dtype float32"),
        (
            lambda a: a.__setitem__("q", a["q"][:, :, :4].copy()),
            "must have the same number of tokens and head dim",
        ),
        (lambda a: a.__setitem__("v", a["v"][:3].copy()), "v: expected shape"),
        (
            lambda a: a.__setitem__("k_cache", a["k_cache"][:, :, :, :4].copy()),
            "k_cache: expected shape",
        ),
        (
            lambda a: a.__setitem__("slot_mapping", a["slot_mapping"].astype(np.int64)),
            "slot_mapping: expected dtype int32",
        ),
        (
            lambda a: a.__setitem__("positions", a["positions"][:3].copy()),
            "positions: expected shape",
        ),
    ],
)
def test_fused_bad_input_writes_nothing(change, match):
    args = fused_args(np.random.default_rng(5))
    change(args)
    before = {n: np.array(a, copy=True) for n, a in args.items()}
    with pytest.raises(ValueError, match=match):
        _C.kernel_rope_kv_cache_write(**args)
    for n, a in args.items():
        np.testing.assert_array_equal(a, before[n], err_msg=f"{n} was modified")


def test_rope_bad_input():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 2, 8)).astype(np.float32)
    pos = np.array([0, 1, 5], np.int32)
    with pytest.raises(ValueError, match="rope.style: 'gptj' is not one of neox, interleaved"):
        _C.kernel_rope(x, pos, rope={"style": "gptj"})
    with pytest.raises(ValueError, match="rope.scaling: 'yarn'"):
        _C.kernel_rope(x, pos, rope={"scaling": "yarn"})
    with pytest.raises(ValueError, match="rope: unknown key 'base'"):
        _C.kernel_rope(x, pos, rope={"base": 10.0})
    with pytest.raises(ValueError, match="rotary_dim 10 must lie in"):
        _C.kernel_rope(x, pos, rope={"rotary_dim": 10})
    with pytest.raises(ValueError, match="seq_len must be >= 0"):
        _C.kernel_rope(x, pos, seq_len=-1)
    with pytest.raises(ValueError, match="position 5 at index 2 is not below seq_len 4"):
        _C.kernel_rope(x, pos, seq_len=4)
    with pytest.raises(ValueError, match="num_threads"):
        _C.kernel_rope(x, pos, num_threads=-1)


def test_sample_cpu_binding():
    rng = np.random.default_rng(7)
    B, V = 6, 1000
    logits = rng.standard_normal((B, V)).astype(np.float32) * 3
    logits[0, [10, 20]] = logits[0].max() + 1  # a tie at the top: the lower id wins
    out = np.full(B, -7, np.int32)
    _C.kernel_sample(logits, out)  # greedy
    expect = logits.argmax(1)
    assert expect[0] == 10
    np.testing.assert_array_equal(out, expect)
    a, b = np.full(B, -7, np.int32), np.full(B, -7, np.int32)
    _C.kernel_sample(logits, a, temperature=0.8, top_k=50, top_p=0.9, seed=123, step=4)
    _C.kernel_sample(
        logits,
        b,
        temperature=[0.8] * B,
        top_k=[50] * B,
        top_p=[0.9] * B,
        seed=[123] * B,
        step=[4] * B,
    )
    np.testing.assert_array_equal(a, b)
    assert ((a >= 0) & (a < V)).all()
    with pytest.raises(ValueError, match="temperature -1 of row 0"):
        _C.kernel_sample(logits, a, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k: expected 6 values"):
        _C.kernel_sample(logits, a, top_k=[1, 2])
    with pytest.raises(ValueError, match="out: expected dtype int32"):
        _C.kernel_sample(logits, a.astype(np.int64))
    logits[2, 5] = np.nan
    with pytest.raises(ValueError, match="logits: row 2 has nan at token 5"):
        _C.kernel_sample(logits, a)
