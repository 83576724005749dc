"""Session end to end on tiny random models written here with numpy + the weight format.

The oracle is a straightforward float64 numpy implementation of the same decoder graph (RMSNorm or
LayerNorm, RoPE neox / interleaved with partial rotary, GQA attention with a causal and optional
sliding-window mask, SwiGLU / GeGLU / GeLU FFN), run on the weights as stored (16-bit weights are
widened exactly, as the runtime does).
"""

from __future__ import annotations

import json
import math
import os
import pathlib

import numpy as np
import pytest
from text_helpers import tiny_config

import fastattention
from fastattention.export.format import read_tensor, write_tensor
from fastattention.session import Session

# ------------------------------------------------------------------------------------------------
# tiny model writer

BASE = dict(
    format="fastattention",
    format_version=1,
    **tiny_config(97, max_position_embeddings=128),
)

VARIANTS = {
    # Llama: GQA, padded vocabulary (its padding rows must never produce logits)
    "llama": dict(vocab_size_padded=104),
    # Qwen2-like: QKV bias, tied embeddings, MHA
    "qwen2": dict(
        architecture="qwen2",
        qkv_bias=True,
        tie_word_embeddings=True,
        num_kv_heads=4,
        rope=dict(theta=1e6, style="neox", rotary_dim=16, scaling=dict(type="none")),
    ),
    # Mistral-like: MQA with a sliding window shorter than the prompts
    "mistral": dict(architecture="mistral", num_kv_heads=1, sliding_window=5),
    # GPT / Pangu-like: pre-LayerNorm, plain GeLU FFN 4x, every bias, tied, partial GPT-J rotary
    "gpt": dict(
        architecture="gpt",
        norm_type="layernorm",
        activation="gelu",
        gated_ffn=False,
        intermediate_size=256,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        tie_word_embeddings=True,
        num_kv_heads=4,
        rope=dict(theta=10000.0, style="interleaved", rotary_dim=8, scaling=dict(type="none")),
    ),
    # GeGLU (gated tanh-GeLU) with linear RoPE scaling
    "geglu": dict(
        activation="gelu_tanh",
        rope=dict(
            theta=10000.0, style="neox", rotary_dim=16, scaling=dict(type="linear", factor=2.0)
        ),
    ),
}


def make_config(variant="llama", **overrides):
    cfg = json.loads(json.dumps(BASE))
    cfg.update(json.loads(json.dumps(VARIANTS[variant])))
    cfg.update(overrides)
    return cfg


def random_weights(cfg, seed=0):
    """Float64 weights by tensor name (before rounding to the file dtype)."""
    rng = np.random.default_rng(seed)
    H, D, I = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
    hq, hk, V, Vp = (
        cfg["num_heads"],
        cfg["num_kv_heads"],
        cfg["vocab_size"],
        cfg["vocab_size_padded"],
    )
    layernorm = cfg["norm_type"] == "layernorm"

    def lin(out, inp):
        return rng.standard_normal((out, inp)) / math.sqrt(inp)

    def vec(n, scale=0.1):
        return scale * rng.standard_normal(n)

    w = {}
    embed = np.zeros((Vp, H))
    embed[:V] = rng.standard_normal((V, H))
    w["embed.weight"] = embed

    def norm(prefix):
        w[prefix + ".weight"] = 1.0 + 0.2 * rng.standard_normal(H)
        if layernorm:
            w[prefix + ".bias"] = vec(H)

    for i in range(cfg["num_layers"]):
        p = f"layers.{i}."
        norm(p + "attn_norm")
        w[p + "attn.qkv.weight"] = lin((hq + 2 * hk) * D, H)
        if cfg["qkv_bias"]:
            w[p + "attn.qkv.bias"] = vec((hq + 2 * hk) * D, 0.5)
        w[p + "attn.o.weight"] = lin(H, hq * D)
        if cfg["o_bias"]:
            w[p + "attn.o.bias"] = vec(H)
        norm(p + "ffn_norm")
        up = "ffn.gate_up" if cfg["gated_ffn"] else "ffn.up"
        rows = 2 * I if cfg["gated_ffn"] else I
        w[p + up + ".weight"] = lin(rows, H)
        if cfg["mlp_bias"]:
            w[p + up + ".bias"] = vec(rows)
        w[p + "ffn.down.weight"] = lin(H, I)
        if cfg["mlp_bias"]:
            w[p + "ffn.down.bias"] = vec(H)
    norm("final_norm")
    if not cfg["tie_word_embeddings"]:
        head = np.zeros((Vp, H))
        head[:V] = lin(V, H)
        w["lm_head.weight"] = head
    return w


def write_model(path, cfg, weights):
    """Writes config.json and rank0/*.fat; returns the weights as stored, widened to float64."""
    path = pathlib.Path(path)
    (path / "rank0").mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg, indent=1))
    stored = {}
    for name, value in weights.items():
        f = path / "rank0" / f"{name}.fat"
        write_tensor(f, value.astype(np.float32), dtype=cfg["dtype"])
        stored[name] = read_tensor(f, upcast_bf16=True).astype(np.float64)
    return stored


@pytest.fixture(scope="module")
def model_factory(tmp_path_factory):
    cache = {}

    def make(variant="llama", seed=0, **overrides):
        key = json.dumps([variant, seed, overrides], sort_keys=True)
        if key not in cache:
            cfg = make_config(variant, **overrides)
            path = tmp_path_factory.mktemp(f"tiny-{variant}")
            stored = write_model(path, cfg, random_weights(cfg, seed))
            cache[key] = (path, cfg, stored)
        return cache[key]

    return make


# ------------------------------------------------------------------------------------------------
# float64 reference


def _norm(cfg, x, w, b):
    if cfg["norm_type"] == "rmsnorm":
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + cfg["norm_eps"]) * w
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + cfg["norm_eps"]) * w + b


def _rope(cfg, x, pos):
    """x: [T, heads, D] float64."""
    r = cfg["rope"]
    rd = r["rotary_dim"]
    inv = r["theta"] ** (-np.arange(0, rd, 2) / rd)
    p = pos.astype(np.float64)
    if r["scaling"]["type"] == "linear":
        p = p / r["scaling"]["factor"]
    ang = p[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = x.copy()
    if r["style"] == "neox":
        x1, x2 = x[..., : rd // 2], x[..., rd // 2 : rd]
        out[..., : rd // 2] = x1 * cos - x2 * sin
        out[..., rd // 2 : rd] = x2 * cos + x1 * sin
    else:
        x1, x2 = x[..., 0:rd:2], x[..., 1:rd:2]
        out[..., 0:rd:2] = x1 * cos - x2 * sin
        out[..., 1:rd:2] = x2 * cos + x1 * sin
    return out


_erf = np.frompyfunc(math.erf, 1, 1)


def _act(cfg, x):
    if cfg["activation"] == "silu":
        return x / (1.0 + np.exp(-x))
    if cfg["activation"] == "gelu":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def reference_logits(cfg, w, tokens):
    T = len(tokens)
    D, I = cfg["head_dim"], cfg["intermediate_size"]
    hq, hk = cfg["num_heads"], cfg["num_kv_heads"]
    pos = np.arange(T)
    window = cfg["sliding_window"]
    i_idx, j_idx = np.meshgrid(pos, pos, indexing="ij")
    visible = j_idx <= i_idx
    if window:
        visible &= j_idx >= i_idx - (window - 1)
    x = w["embed.weight"][np.asarray(tokens)]
    get = w.get
    for layer in range(cfg["num_layers"]):
        p = f"layers.{layer}."
        h = _norm(cfg, x, w[p + "attn_norm.weight"], get(p + "attn_norm.bias"))
        qkv = h @ w[p + "attn.qkv.weight"].T
        if cfg["qkv_bias"]:
            qkv = qkv + w[p + "attn.qkv.bias"]
        q = _rope(cfg, qkv[:, : hq * D].reshape(T, hq, D), pos)
        k = _rope(cfg, qkv[:, hq * D : (hq + hk) * D].reshape(T, hk, D), pos)
        v = qkv[:, (hq + hk) * D :].reshape(T, hk, D)
        attn = np.empty((T, hq, D))
        for head in range(hq):
            kv = head // (hq // hk)
            s = q[:, head] @ k[:, kv].T / math.sqrt(D)
            s = np.where(visible, s, -np.inf)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            attn[:, head] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kv]
        o = attn.reshape(T, hq * D) @ w[p + "attn.o.weight"].T
        if cfg["o_bias"]:
            o = o + w[p + "attn.o.bias"]
        x = x + o
        h = _norm(cfg, x, w[p + "ffn_norm.weight"], get(p + "ffn_norm.bias"))
        up_name = "ffn.gate_up" if cfg["gated_ffn"] else "ffn.up"
        u = h @ w[p + up_name + ".weight"].T
        if cfg["mlp_bias"]:
            u = u + w[p + up_name + ".bias"]
        a = _act(cfg, u[:, :I]) * u[:, I:] if cfg["gated_ffn"] else _act(cfg, u)
        f = a @ w[p + "ffn.down.weight"].T
        if cfg["mlp_bias"]:
            f = f + w[p + "ffn.down.bias"]
        x = x + f
    x = _norm(cfg, x, w["final_norm.weight"], get("final_norm.bias"))
    head = w["embed.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ head[: cfg["vocab_size"]].T


def prompt_of(n, seed, vocab=97):
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab, n)]


def max_rel_err(ours, ref):
    return float(np.max(np.abs(ours - ref)) / max(1.0, float(np.max(np.abs(ref)))))


# ------------------------------------------------------------------------------------------------
# numerics


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_match_float64_reference(model_factory, variant):
    path, cfg, w = model_factory(variant)
    s = Session(path, max_seq_len=64)
    for n, seed in ((1, 1), (13, 2), (40, 3)):
        tokens = prompt_of(n, seed)
        ours = s.logits(tokens)
        assert ours.dtype == np.float32 and ours.shape == (n, cfg["vocab_size"])
        assert np.isfinite(ours).all()
        ref = reference_logits(cfg, w, tokens)
        assert max_rel_err(ours, ref) <= 1e-4, (variant, n)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16bit_weights_match_reference(model_factory, dtype):
    path, cfg, w = model_factory("llama", dtype=dtype)
    tokens = prompt_of(21, 5)
    ours = Session(path, max_seq_len=64).logits(tokens)
    assert max_rel_err(ours, reference_logits(cfg, w, tokens)) <= 1e-4


@pytest.mark.parametrize("kv_dtype, tol", [("float16", 5e-3), ("bfloat16", 3e-2)])
def test_16bit_kv_cache_close_to_reference(model_factory, kv_dtype, tol):
    path, cfg, w = model_factory("llama")
    tokens = prompt_of(30, 6)
    ours = Session(path, max_seq_len=64, kv_dtype=kv_dtype).logits(tokens)
    err = max_rel_err(ours, reference_logits(cfg, w, tokens))
    assert 0 < err <= tol  # 0 would mean the cache was not 16-bit after all


@pytest.mark.parametrize("variant", ["llama", "mistral"])
def test_chunked_and_token_by_token_prefill_match_full(model_factory, variant):
    """logits() with a prefill budget of 1 token runs the incremental decode path (each token
    attends to the paged cache); it must match one full-prompt pass at every position."""
    path, cfg, _ = model_factory(variant)
    tokens = prompt_of(23, 7)
    full = Session(path, max_seq_len=64).logits(tokens)
    for chunk in (1, 3, 16):
        s = Session(path, max_seq_len=64, prefill_chunk_tokens=chunk, kv_block_size=4)
        np.testing.assert_allclose(s.logits(tokens), full, atol=2e-5, rtol=0)


@pytest.mark.parametrize("variant", ["llama", "mistral", "gpt"])
def test_greedy_decode_follows_full_prompt_logits(model_factory, variant):
    """Each greedily decoded token is the argmax of the full-prompt logits at its position."""
    path, cfg, _ = model_factory(variant)
    s = Session(path, max_seq_len=64, kv_block_size=4)
    prompt = prompt_of(9, 8)
    new = s.generate([prompt], max_new_tokens=12)[0]
    assert len(new) == 12
    full = s.logits(prompt + new[:-1])
    for i, tok in enumerate(new):
        row = full[len(prompt) - 1 + i]
        assert row[tok] >= row.max() - 1e-4, (i, tok, int(row.argmax()))


# ------------------------------------------------------------------------------------------------
# batching, determinism, sampling, stop tokens


def test_batch_of_different_lengths_equals_one_at_a_time(model_factory):
    path, _, _ = model_factory("llama")
    prompts = [prompt_of(n, 10 + n) for n in (3, 17, 1, 8)]
    single = Session(path, max_seq_len=64, max_batch=4)
    alone = [single.generate([p], max_new_tokens=10)[0] for p in prompts]
    for chunk in (2048, 5):  # one prefill pass, or chunks that split prompts and mix sequences
        s = Session(path, max_seq_len=64, max_batch=4, prefill_chunk_tokens=chunk)
        assert s.generate(prompts, max_new_tokens=10) == alone


def test_greedy_is_deterministic_and_session_reusable(model_factory):
    path, _, _ = model_factory("qwen2")
    prompts = [prompt_of(12, 20), prompt_of(5, 21)]
    # Room for one call's KV only: a leak of blocks between calls would raise MemoryError.
    s = Session(
        path,
        max_seq_len=64,
        max_batch=2,
        kv_block_size=4,
        max_cache_tokens=(12 + 15 + 3) // 4 * 4 + (5 + 15 + 3) // 4 * 4,
    )
    first = s.generate(prompts, max_new_tokens=16)
    for _ in range(3):
        assert s.generate(prompts, max_new_tokens=16) == first
    assert all(len(o) == 16 for o in first)


def test_sampling_is_reproducible_per_request(model_factory):
    path, cfg, _ = model_factory("llama")
    s = Session(path, max_seq_len=64)
    prompts = [prompt_of(6, 30), prompt_of(9, 31)]
    kw = dict(temperature=1.5, top_k=40, top_p=0.95)
    a = s.generate(prompts, 20, seed=123, **kw)
    assert a == s.generate(prompts, 20, seed=123, **kw)
    assert a != s.generate(prompts, 20, seed=124, **kw)
    # request i of a batch samples with seed + i, independently of the rest of the batch
    assert s.generate([prompts[1]], 20, seed=124, **kw)[0] == a[1]
    greedy = s.generate(prompts, 20)
    assert a != greedy
    assert all(0 <= t < cfg["vocab_size"] for o in a for t in o)


def test_top_k_one_is_greedy(model_factory):
    path, _, _ = model_factory("llama")
    s = Session(path, max_seq_len=64)
    prompts = [prompt_of(7, 40)]
    assert s.generate(prompts, 10, temperature=1.0, top_k=1, seed=5) == s.generate(prompts, 10)


def test_stop_tokens(model_factory):
    path, _, _ = model_factory("llama")
    s = Session(path, max_seq_len=64)
    p0, p1 = prompt_of(6, 50), prompt_of(10, 51)
    full0, full1 = s.generate([p0, p1], max_new_tokens=12)
    stop = full0[4]
    k = full0.index(stop)
    assert stop not in full1, "pick prompts whose outputs differ"
    out0, out1 = s.generate([p0, p1], max_new_tokens=12, stop_tokens=[stop])
    assert out0 == full0[: k + 1]  # the stop token is included
    assert out1 == full1  # the other sequence runs on to max_new_tokens
    assert s.generate([p0], max_new_tokens=12, stop_tokens={stop, 96})[0] == full0[: k + 1]


def test_zero_new_tokens_and_timings(model_factory):
    path, cfg, _ = model_factory("llama")
    s = Session(path, max_seq_len=64)
    assert s.generate([[1, 2, 3], [4]], max_new_tokens=0) == [[], []]
    out = s.generate([prompt_of(10, 60), prompt_of(4, 61)], max_new_tokens=5)
    t = s.timings
    assert set(t) == {
        "prefill_tokens",
        "prefill_seconds",
        "prefill_tokens_per_s",
        "decode_steps",
        "decode_seconds",
        "decode_ms_per_step",
        "spill_stream_steps",
        "spill_cpu_steps",
        "decode_graph_steps",
        "decode_graph_captures",
    }
    assert t["prefill_tokens"] == 14 and t["decode_steps"] == 4
    assert t["decode_graph_steps"] == 0 and t["decode_graph_captures"] == 0  # CPU: no graphs
    assert t["spill_stream_steps"] == 0 and t["spill_cpu_steps"] == 0  # no host KV pool
    assert t["prefill_seconds"] > 0 and t["decode_seconds"] > 0
    assert t["prefill_tokens_per_s"] == pytest.approx(14 / t["prefill_seconds"])
    assert t["decode_ms_per_step"] == pytest.approx(1e3 * t["decode_seconds"] / 4)
    assert all(len(o) == 5 for o in out)
    s.logits([1, 2, 3])
    assert s.timings["prefill_tokens"] == 3 and s.timings["decode_steps"] == 0


def test_config_and_options(model_factory):
    path, cfg, _ = model_factory("mistral")
    s = Session(path, max_batch=3)
    c = s.config
    for key in (
        "vocab_size",
        "hidden_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "intermediate_size",
        "max_position_embeddings",
        "sliding_window",
        "architecture",
        "dtype",
        "eos_token_id",
        "bos_token_id",
    ):
        assert c[key] == cfg[key], key
    assert c["rope"]["style"] == "neox" and c["rope"]["scaling"] == {"type": "none"}
    assert s.options.max_seq_len == cfg["max_position_embeddings"]
    assert s.options.max_cache_tokens == 3 * cfg["max_position_embeddings"]
    assert s.kv_cache_bytes == (
        2
        * cfg["num_layers"]
        * cfg["num_kv_heads"]
        * cfg["head_dim"]
        * 4
        * s.options.max_cache_tokens
    )


# ------------------------------------------------------------------------------------------------
# bad input


def test_bad_generate_input(model_factory):
    path, cfg, _ = model_factory("llama")
    s = Session(path, max_batch=2, max_seq_len=32)
    ok = [1, 2, 3]
    cases = [
        (([], 4), ValueError, "empty list"),
        (([[]], 4), ValueError, "prompt 0 is empty"),
        (([ok, [1, 97, 2]], 4), ValueError, r"prompt 1, position 1: token id 97 is out of range"),
        (([[5, -3]], 4), ValueError, r"prompt 0, position 1: token id -3"),
        (([list(range(33))], 0), ValueError, r"prompt 0 has 33 tokens, more than max_seq_len = 32"),
        (
            ([ok] * 1 + [list(range(30))], 3),
            ValueError,
            r"prompt 1 \(30 tokens\) \+ max_new_tokens \(3\) = 33 exceeds max_seq_len = 32",
        ),
        (([ok], -1), ValueError, "max_new_tokens must be >= 0"),
        (([ok, ok, ok], 4), ValueError, "batch of 3 prompts exceeds max_batch = 2"),
        (([ok], 4.0), TypeError, "max_new_tokens must be an int"),
        ((ok, 4), TypeError, "flat list of ints"),
        (("hello", 4), ValueError, "a text prompt needs a tokenizer"),  # no tokenizer.json
        ((b"hello", 4), TypeError, "prompts must be a list"),
        (([ok, "abc"], 4), TypeError, "mix of strings and token ids"),
        (([ok, b"abc"], 4), TypeError, "prompt 1 must be a list of token ids"),
        (([[1, 2.5]], 4), TypeError, "prompt 0, position 1: token ids must be ints"),
        (([[1, True]], 4), TypeError, "prompt 0, position 1"),
        (([[1, None]], 4), TypeError, "prompt 0, position 1"),
    ]
    for args, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            s.generate(*args)
    with pytest.raises(ValueError, match="temperature"):
        s.generate([ok], 2, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        s.generate([ok], 2, top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        s.generate([ok], 2, top_k=-2)
    with pytest.raises(ValueError, match="seed"):
        s.generate([ok], 2, seed=-1)
    with pytest.raises(ValueError, match="stop_tokens: token id 500"):
        s.generate([ok], 2, stop_tokens=[500])
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        s.logits([])
    with pytest.raises(ValueError, match="position 2: token id 1000"):
        s.logits([1, 2, 1000])
    with pytest.raises(TypeError, match="prompt must be a 1-D integer array"):
        s.logits(np.zeros((2, 2), dtype=np.int64))
    # still usable after all of that
    assert len(s.generate([ok], 3)[0]) == 3
    assert s.logits(np.array([1, 2, 3])).shape == (3, cfg["vocab_size"])


def test_bad_session_options(model_factory, tmp_path):
    path, cfg, _ = model_factory("llama")
    with pytest.raises(ValueError, match="no CUDA"):
        Session(path, device="cuda")
    with pytest.raises(ValueError, match="device: 'tpu' is not a valid device"):
        Session(path, device="tpu")
    with pytest.raises(ValueError, match="kv_dtype"):
        Session(path, kv_dtype="int8")
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        Session(path, max_batch=0)
    with pytest.raises(TypeError, match="num_threads must be an int"):
        Session(path, num_threads="2")
    # KV pool too small for the batch: MemoryError naming tokens needed vs held
    s = Session(path, max_seq_len=64, max_cache_tokens=32, kv_block_size=16)
    with pytest.raises(MemoryError, match="needs 48 tokens of cache .* holds 32"):
        s.generate([prompt_of(20, 1), prompt_of(5, 2)], max_new_tokens=10)
    assert len(s.generate([prompt_of(20, 1)], max_new_tokens=10)[0]) == 10  # nothing leaked
    # tensor parallelism is not available in one process
    tp = tmp_path / "tp2"
    write_model(tp, make_config("llama", tp_size=2, vocab_size_padded=98), {})
    with pytest.raises(ValueError, match="tp_size = 2: tensor parallelism needs `mpirun`"):
        Session(tp)


# ------------------------------------------------------------------------------------------------
# broken weight files


@pytest.fixture()
def model_copy(model_factory, tmp_path):
    src, cfg, _ = model_factory("llama")
    dst = tmp_path / "model"
    (dst / "rank0").mkdir(parents=True)
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())
    for f in (src / "rank0").iterdir():
        (dst / "rank0" / f.name).write_bytes(f.read_bytes())
    return dst, cfg


def test_missing_and_truncated_weight_files(model_copy):
    path, _ = model_copy
    target = path / "rank0" / "layers.1.attn.o.weight.fat"
    data = target.read_bytes()
    target.write_bytes(data[:-10])
    with pytest.raises(
        fastattention.WeightFileError, match=r"layers\.1\.attn\.o\.weight\.fat: truncated"
    ):
        Session(path)
    target.write_bytes(data[:30])
    with pytest.raises(
        fastattention.WeightFileError, match=r"layers\.1\.attn\.o\.weight\.fat: truncated"
    ):
        Session(path)
    target.write_bytes(data + b"\0" * 4)
    with pytest.raises(fastattention.WeightFileError, match="4 unexpected trailing bytes"):
        Session(path)
    target.unlink()
    with pytest.raises(
        fastattention.WeightFileError,
        match=r"layers\.1\.attn\.o\.weight\.fat: weight file is missing",
    ):
        Session(path)
    (path / "rank0" / "embed.weight.fat").unlink()
    with pytest.raises(fastattention.WeightFileError, match=r"embed\.weight\.fat"):
        Session(path)


def test_wrong_shape_dtype_magic(model_copy):
    path, cfg = model_copy
    name = path / "rank0" / "layers.0.ffn.down.weight.fat"
    original = name.read_bytes()
    write_tensor(name, np.ones((cfg["hidden_size"], cfg["intermediate_size"] + 1), np.float32))
    with pytest.raises(
        fastattention.WeightFileError,
        match=r"ffn\.down\.weight\.fat: shape \[64, 97\], but the config implies \[64, 96\]",
    ):
        Session(path)
    write_tensor(name, np.ones((cfg["hidden_size"], cfg["intermediate_size"]), np.float16))
    with pytest.raises(
        fastattention.WeightFileError,
        match=r"ffn\.down\.weight\.fat: dtype float16, but the config says float32",
    ):
        Session(path)
    name.write_bytes(b"GGUF" + original[4:])
    with pytest.raises(fastattention.WeightFileError, match=r"ffn\.down\.weight\.fat: bad magic"):
        Session(path)
    name.write_bytes(original)
    Session(path)  # intact again


def test_broken_config(model_copy, tmp_path):
    path, cfg = model_copy
    with pytest.raises(fastattention.WeightFileError, match="config.json: cannot open"):
        Session(tmp_path / "nowhere")
    bad = dict(cfg)
    del bad["num_kv_heads"]
    (path / "config.json").write_text(json.dumps(bad))
    with pytest.raises(fastattention.WeightFileError, match="key 'num_kv_heads' is missing"):
        Session(path)
    (path / "config.json").write_text(json.dumps(dict(cfg, hidden_size="64")))
    with pytest.raises(fastattention.WeightFileError, match="key 'hidden_size' must be an integer"):
        Session(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(fastattention.WeightFileError, match="not valid JSON"):
        Session(path)
    # a config that implies different shapes than the files hold
    (path / "config.json").write_text(json.dumps(dict(cfg, intermediate_size=128)))
    with pytest.raises(fastattention.WeightFileError, match=r"gate_up\.weight\.fat: shape"):
        Session(path)


def test_weights_are_memory_mapped_not_copied(model_factory):
    path, cfg, _ = model_factory("llama")
    s = Session(path, max_seq_len=16)
    total = sum(os.path.getsize(f) for f in (path / "rank0").iterdir())
    assert s._session.weight_bytes == total


def test_concurrent_calls_are_serialised(model_factory):
    """generate() releases the GIL; calls from several threads must not interfere."""
    import threading

    path, _, _ = model_factory("llama")
    s = Session(path, max_seq_len=64, max_batch=2)
    prompts = [[prompt_of(5 + i, 70 + i), prompt_of(9, 80 + i)] for i in range(4)]
    expected = [s.generate(p, 8) for p in prompts]
    results = [None] * 4

    def work(i):
        results[i] = s.generate(prompts[i], 8)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_verbose_reports_kv_memory(model_factory, capfd):
    path, cfg, _ = model_factory("llama")
    s = Session(path, max_seq_len=32, max_batch=2, verbose=True)
    err = capfd.readouterr().err
    assert f"KV cache {s.kv_cache_bytes / (1 << 20):.2f} MiB for 64 tokens" in err


def test_on_step_reports_every_token_and_can_stop(model_factory):
    path, _, _ = model_factory("llama")
    s = Session(path, max_seq_len=64)
    p0, p1 = prompt_of(6, 60), prompt_of(9, 61)
    full = s.generate([p0, p1], max_new_tokens=8)
    seen = [[], []]

    def record(tokens):
        for i, t in tokens:
            seen[i].append(t)

    assert s.generate([p0, p1], max_new_tokens=8, on_step=record) == full
    assert seen == full
    steps = []

    def stop_after_three(tokens):
        steps.append(tokens)
        return len(steps) < 3

    out = s.generate([p0, p1], max_new_tokens=8, on_step=stop_after_three)
    assert out == [full[0][:3], full[1][:3]]  # the tokens so far are returned
    assert s.generate([p0, p1], max_new_tokens=8) == full  # the session is whole afterwards


def test_on_step_exception_propagates_and_session_stays_usable(model_factory):
    path, _, _ = model_factory("llama")
    s = Session(path, max_seq_len=64)
    p = prompt_of(5, 62)
    full = s.generate([p], max_new_tokens=6)

    class Stop(Exception):
        pass

    def boom(tokens):
        raise Stop("from the hook")

    with pytest.raises(Stop, match="from the hook"):
        s.generate([p], max_new_tokens=6, on_step=boom)
    assert s.generate([p], max_new_tokens=6) == full
    with pytest.raises(TypeError, match="on_step"):
        s.generate([p], max_new_tokens=6, on_step=3)


def test_cuda_graphs_option_is_checked_and_ignored_on_cpu(model_factory):
    path, _, _ = model_factory("llama")
    p = prompt_of(5, 63)
    eager = Session(path, max_seq_len=64, cuda_graphs=False)
    graphed = Session(path, max_seq_len=64, cuda_graphs=True)
    assert not graphed.uses_cuda_graphs and graphed.cuda_graphs_off_reason == ""
    assert eager.generate([p], 6) == graphed.generate([p], 6)
    assert graphed.timings["decode_graph_steps"] == 0
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match="cuda_graphs"):
            Session(path, max_seq_len=64, cuda_graphs=bad)


def test_step_logits_are_each_steps_logits(model_factory):
    path, _, _ = model_factory("llama")
    s = Session(path, max_seq_len=64)
    p0, p1 = prompt_of(6, 64), prompt_of(4, 65)
    seen = []
    out = s.generate([p0, p1], 4, on_step=lambda toks: seen.append((toks, s.step_logits())))
    for toks, logits in seen:
        assert logits.shape == (len(toks), s.config["vocab_size"])
        for row, (i, t) in enumerate(toks):
            assert int(np.argmax(logits[row])) == t  # greedy: the token is the row's argmax
    # The last step's logits equal those of the full sequence at its last position.
    full = s.logits(p0 + out[0][:-1])
    np.testing.assert_allclose(seen[-1][1][0], full[-1], rtol=1e-4, atol=1e-4)
