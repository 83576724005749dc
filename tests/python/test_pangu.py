"""The pangu architecture family, in-memory weights and the Pangu-38B example (single process).

  * random weights: the C++ fill against a numpy version of its hash; every tp split's shards are
    the tp=1 tensors cut as the exporter cuts them (fastattention.export.tp), padding rows zero;
  * the tiny Pangu preset's logits against a float64 numpy forward of the same random weights
    (pre-LayerNorm, rotary, GeLU FFN, biases), error at most twice a float32 numpy forward's;
  * Session.from_memory: zero-copy on the CPU, the same logits as the exported files, errors
    naming the tensor or key; the pangu family's key checks;
  * examples/pangu38b_infer.py: --model DIR gives the tokens --random-weights gives, a spilled KV
    cache gives the tokens an unspilled one gives, and its option errors.
(The mpirun -n 8 vs -n 1 check is tests/mpi/test_pangu_example.py.)
"""

from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import re
import sys

import numpy as np
import pytest

from fastattention import WeightFileError, random_weights
from fastattention._native import _C
from fastattention.export import tp as tp_split
from fastattention.session import Session

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pangu38b_infer.py"
TINY = json.loads((ROOT / "examples" / "configs" / "pangu_tiny.json").read_text())
FULL = json.loads((ROOT / "examples" / "configs" / "pangu_38b.json").read_text())
PROMPT = [5, 998, 17, 300, 42, 7, 1000, 64]


def small_config(**overrides) -> dict:
    """A pangu config small enough to split 8 ways in milliseconds."""
    cfg = dict(
        TINY,
        hidden_size=64,
        num_layers=2,
        num_heads=8,
        num_kv_heads=8,
        head_dim=8,
        intermediate_size=256,
        vocab_size=37,
        vocab_size_padded=37,
        dtype="float32",
        rope=dict(theta=10000.0, style="neox", rotary_dim=8, scaling=dict(type="none")),
    )
    cfg.update(overrides)
    return cfg


# ------------------------------------------------------------------------------------------------
# the hash, in numpy (the formula of cpp/fastattn/models/random_weights.h)


def splitmix64(z: np.ndarray) -> np.ndarray:
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def numpy_fill(seed, name, rows, logical_cols, col_offset, cols, scale, shift, dtype):
    h = 1469598103934665603
    for c in name.encode():
        h = ((h ^ c) * 1099511628211) % (1 << 64)
    key = splitmix64(np.array([seed ^ h], dtype=np.uint64))[0]
    rows = np.asarray(rows, dtype=np.int64)
    idx = (
        np.maximum(rows, 0)[:, None].astype(np.uint64) * np.uint64(logical_cols)
        + np.uint64(col_offset)
        + np.arange(cols, dtype=np.uint64)[None, :]
        + np.uint64(1)
    )
    bits = splitmix64(key + idx * np.uint64(0x9E3779B97F4A7C15))
    u = (bits >> np.uint64(40)).astype(np.float64) / 16777216.0
    v = np.float64(np.float32(shift)) + np.float64(np.float32(scale)) * (2.0 * u - 1.0)
    v = v.astype(np.float32)
    v[rows < 0] = 0.0
    return v.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_fill_matches_the_numpy_hash(dtype):
    rows = np.array([0, 7, -1, 3, 123456789], dtype=np.int64)
    out = np.full((5, 9), np.nan, dtype=dtype)
    _C.fill_random_weight(out, 42, "layers.3.attn.o.weight", rows, 50, 11, 0.37, 1.0)
    want = numpy_fill(42, "layers.3.attn.o.weight", rows, 50, 11, 9, 0.37, 1.0, dtype)
    assert np.array_equal(out, want)
    assert np.all(out[2] == 0) and np.all(np.abs(out[[0, 1, 3, 4]] - 1.0) <= 0.3701)
    # Another name or seed: another stream.
    other = np.empty_like(out)
    _C.fill_random_weight(other, 42, "layers.3.attn.o.bias", rows, 50, 11, 0.37, 1.0)
    assert not np.array_equal(other[0], out[0])


def test_fill_statistics_and_errors():
    out = np.empty((256, 512), np.float32)
    _C.fill_random_weight(out, 0, "w", np.arange(256), 512, 0, 2.0, 0.0)
    assert abs(out.mean()) < 0.02 and abs(out.std() - 2.0 / math.sqrt(3)) < 0.01
    assert len(np.unique(out)) > 0.99 * out.size
    with pytest.raises(ValueError, match=r"random weight 'w': columns 0 \.\. 512 do not fit.*100"):
        _C.fill_random_weight(out, 0, "w", np.arange(256), 100, 0)
    with pytest.raises(ValueError, match=r"logical_rows: .*shape"):
        _C.fill_random_weight(out, 0, "w", np.arange(3), 512, 0)
    with pytest.raises(ValueError, match=r"random weight 'w'.*not contiguous|contiguous"):
        _C.fill_random_weight(out[:, ::2], 0, "w", np.arange(256), 512, 0)


# ------------------------------------------------------------------------------------------------
# shards = splits of the logical tensors


def split_like_the_exporter(full: dict, cfg: dict, rank: int) -> dict:
    """Rank `rank`'s tensors cut from the tp=1 tensors with fastattention.export.tp."""
    N, D, I = cfg["tp_size"], cfg["head_dim"], cfg["intermediate_size"]
    nh, nkv = cfg["num_heads"], cfg["num_kv_heads"]
    out = {}
    for name, w in full.items():
        if name in ("embed.weight", "lm_head.weight"):
            out[name] = tp_split.vocab_shard(
                tp_split.pad_vocab(w, cfg["vocab_size_padded"]), N, rank
            )
        elif ".attn.qkv." in name:
            q, k, v = np.split(w, [nh * D, (nh + nkv) * D])
            out[name] = tp_split.qkv_shard(q, k, v, nh, nkv, D, N, rank)
        elif ".ffn.gate_up." in name:
            out[name] = tp_split.gate_up_shard(w[:I], w[I:], N, rank)
        elif ".ffn.up." in name:
            out[name] = tp_split.column_shard(w, N, rank)
        elif name.endswith("attn.o.weight") or name.endswith("ffn.down.weight"):
            out[name] = tp_split.row_shard(w, N, rank)
        else:  # norms and the row-parallel layers' biases: replicated
            out[name] = w
    return out


@pytest.mark.parametrize(
    "variant",
    [
        dict(),  # pangu: MHA, plain GeLU FFN, biases
        dict(num_kv_heads=2),  # GQA: KV heads replicated at tp 4, 8
        dict(
            architecture="llama",
            norm_type="rmsnorm",
            activation="silu",
            gated_ffn=True,
            qkv_bias=False,
            o_bias=False,
            mlp_bias=False,
            tie_word_embeddings=True,
        ),
    ],
)
def test_every_split_is_cut_from_the_same_model(variant):
    base = small_config(**variant)
    full = random_weights.logical_tensors(base, seed=7)
    for N in (2, 4, 8):
        cfg = random_weights.config_for_tp(base, N)
        for rank in range(N):
            shard = random_weights.shard_tensors(cfg, rank, seed=7)
            want = split_like_the_exporter(full, cfg, rank)
            assert sorted(shard) == sorted(want), (N, rank)
            for name in want:
                assert np.array_equal(shard[name], want[name]), (N, rank, name)
    # vocab 37 padded to 40 at tp 8: the last rank's last 3 rows are zero, the rest not.
    last = random_weights.shard_tensors(random_weights.config_for_tp(base, 8), 7, seed=7)
    assert np.all(last["embed.weight"][2:] == 0) and np.all(last["embed.weight"][:2] != 0)


def test_seed_changes_every_tensor_and_parameter_count():
    a = random_weights.logical_tensors(small_config(), seed=1)
    b = random_weights.logical_tensors(small_config(), seed=2)
    assert all(not np.array_equal(a[n], b[n]) for n in a)
    for cfg in (TINY, small_config(num_kv_heads=2, gated_ffn=True, activation="gelu_tanh")):
        shapes = random_weights._rank_specs(random_weights.config_for_tp(cfg, 1), 0)
        assert random_weights.parameter_count(cfg) == sum(
            math.prod(s.shape) for s in shapes.values()
        )
    assert 37.5e9 < random_weights.parameter_count(FULL) < 38.5e9
    assert random_weights.shard_bytes(random_weights.config_for_tp(FULL, 8)) == pytest.approx(
        2 * random_weights.parameter_count(FULL) / 8, rel=1e-3
    )


# ------------------------------------------------------------------------------------------------
# the tiny preset against a float64 numpy forward


def gelu(x):
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)


def reference_logits(cfg: dict, w: dict, tokens, dt=np.float64) -> np.ndarray:
    """Pre-LayerNorm decoder: x += o(attn(rope(qkv(LN(x))))); x += down(gelu(up(LN(x)))); logits
    = LN(x) @ lm_head.T. Computed in `dt` throughout."""
    D, nh, nkv = cfg["head_dim"], cfg["num_heads"], cfg["num_kv_heads"]
    rd, eps, T = cfg["rope"]["rotary_dim"], cfg["norm_eps"], len(tokens)
    W = {k: v.astype(dt) for k, v in w.items()}

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + dt(eps)) * W[p + ".weight"] + W[p + ".bias"]

    inv = 1.0 / cfg["rope"]["theta"] ** (np.arange(0, rd, 2, dtype=np.float64) / rd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang).astype(dt)[:, None, :], np.sin(ang).astype(dt)[:, None, :]

    def rope(t):  # neox: rotate the two halves of the rotary dims
        t = t.copy()
        a, b = t[..., : rd // 2].copy(), t[..., rd // 2 : rd].copy()
        t[..., : rd // 2], t[..., rd // 2 : rd] = a * cos - b * sin, b * cos + a * sin
        return t

    x = W["embed.weight"][tokens]
    causal = np.triu(np.ones((T, T), bool), 1)
    for i in range(cfg["num_layers"]):
        p = f"layers.{i}."
        qkv = ln(x, p + "attn_norm") @ W[p + "attn.qkv.weight"].T + W[p + "attn.qkv.bias"]
        q = rope(qkv[:, : nh * D].reshape(T, nh, D))
        k = rope(qkv[:, nh * D : (nh + nkv) * D].reshape(T, nkv, D)).repeat(nh // nkv, axis=1)
        v = qkv[:, (nh + nkv) * D :].reshape(T, nkv, D).repeat(nh // nkv, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / dt(math.sqrt(D))
        s[:, causal] = -np.inf
        pr = np.exp(s - s.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", pr, v).reshape(T, nh * D)
        x = x + o @ W[p + "attn.o.weight"].T + W[p + "attn.o.bias"]
        u = gelu(ln(x, p + "ffn_norm") @ W[p + "ffn.up.weight"].T + W[p + "ffn.up.bias"])
        x = x + u @ W[p + "ffn.down.weight"].T + W[p + "ffn.down.bias"]
    return (ln(x, "final_norm") @ W["lm_head.weight"].T)[:, : cfg["vocab_size"]]


@pytest.fixture(scope="module")
def tiny_fp32():
    cfg = random_weights.config_for_tp(dict(TINY, dtype="float32"), 1)
    return cfg, random_weights.shard_tensors(cfg, 0, seed=3)


def test_tiny_pangu_logits_match_float64_reference(tiny_fp32):
    cfg, w = tiny_fp32
    got = Session.from_memory(cfg, w, num_threads=2, max_batch=1).logits(PROMPT)
    want = reference_logits(cfg, w, PROMPT)
    fp32 = reference_logits(cfg, w, PROMPT, np.float32)
    err, fp32_err = np.abs(got - want).max(), np.abs(fp32 - want).max()
    assert got.shape == (len(PROMPT), cfg["vocab_size"]) and np.isfinite(got).all()
    assert want.std() > 0.3  # logits spread out: the comparison means something
    assert err <= 2 * fp32_err + 1e-5 * np.abs(want).max(), (err, fp32_err)


def test_from_memory_is_zero_copy_and_matches_the_files(tiny_fp32, tmp_path):
    cfg, w = tiny_fp32
    w = {k: v.copy() for k, v in w.items()}
    s = Session.from_memory(cfg, w, num_threads=2, max_batch=1)
    assert s.weight_bytes == sum(a.nbytes for a in w.values())
    before = s.logits(PROMPT[:3])
    random_weights.write_model(cfg, tmp_path / "m", seed=3)
    files = Session(tmp_path / "m", num_threads=2, max_batch=1)
    assert np.array_equal(files.logits(PROMPT[:3]), before)
    w["final_norm.weight"] *= 2.0  # the session reads the caller's array in place
    assert not np.allclose(s.logits(PROMPT[:3]), before)
    assert repr(s).startswith("Session(in-memory weights, pangu, 2 layers")


def test_from_memory_errors(tiny_fp32):
    cfg, w = tiny_fp32
    missing = {k: v for k, v in w.items() if k != "layers.1.ffn.up.bias"}
    with pytest.raises(
        WeightFileError,
        match=r"in-memory weights of rank 0: tensor 'layers\.1"
        r"\.ffn\.up\.bias' is missing.*float32\[4096\]",
    ):
        Session.from_memory(cfg, missing)
    with pytest.raises(WeightFileError, match=r"'final_norm\.weight' has shape \[1023\].*\[1024\]"):
        Session.from_memory(cfg, dict(w, **{"final_norm.weight": w["final_norm.weight"][:1023]}))
    with pytest.raises(
        WeightFileError,
        match=r"'embed\.weight' is float16, but the config says "
        r"float32",
    ):
        Session.from_memory(cfg, dict(w, **{"embed.weight": w["embed.weight"].astype(np.float16)}))
    strided = np.repeat(w["final_norm.weight"], 2)[::2]
    with pytest.raises(WeightFileError, match=r"'final_norm\.weight' is not contiguous"):
        Session.from_memory(cfg, dict(w, **{"final_norm.weight": strided}))
    with pytest.raises(
        WeightFileError,
        match=r"in-memory config: key 'hidden_size' must be an "
        r"integer",
    ):
        Session.from_memory(dict(cfg, hidden_size="big"), w)
    with pytest.raises(TypeError, match="config must be a dict"):
        Session.from_memory("config.json", w)
    with pytest.raises(TypeError, match=r"tensors: keys must be tensor names \(str\)"):
        Session.from_memory(cfg, {1: w["embed.weight"]})
    with pytest.raises(ValueError, match=r"tensors\['embed\.weight'\]: expected a numpy array"):
        Session.from_memory(cfg, dict(w, **{"embed.weight": [1.0, 2.0]}))
    with pytest.raises(TypeError, match="max_batch must be an int"):
        Session.from_memory(cfg, w, max_batch=1.5)
    with pytest.raises(ValueError, match=r"tp_size = 2 .*mpirun|mpirun.*tp_size"):
        Session.from_memory(random_weights.config_for_tp(cfg, 2), w)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("norm_type", "rmsnorm", r"'norm_type' must be 'layernorm' for architecture 'pangu'"),
        ("gated_ffn", True, r"'gated_ffn' must be false for architecture 'pangu'"),
        (
            "activation",
            "silu",
            r"'activation' must be 'gelu' or 'gelu_tanh' for architecture 'pangu'",
        ),
    ],
)
def test_pangu_family_keys(key, value, message):
    cfg = small_config(**{key: value})
    w = random_weights.shard_tensors(random_weights.config_for_tp(small_config(), 1), 0)
    with pytest.raises(WeightFileError, match=message):
        Session.from_memory(cfg, w)


# ------------------------------------------------------------------------------------------------
# the example, in this process


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("pangu38b_infer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pangu38b_infer"] = module
    spec.loader.exec_module(module)
    return module


def generated(stdout: str) -> list:
    return [
        [int(t) for t in m.group(1).split()]
        for m in re.finditer(r"^\[\d+\] \d+ prompt tokens -> \d+ new: (.*)$", stdout, re.M)
    ]


def run_example(example, capsys, *args):
    rc = example.run(["--threads", "2", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_example_model_dir_gives_the_random_weights_tokens(example, capsys, tmp_path):
    rc, out, _ = run_example(
        example,
        capsys,
        "--preset",
        "tiny",
        "--random-weights",
        "--seed",
        5,
        "--batch",
        2,
        "--new-tokens",
        6,
    )
    assert rc == 0, out
    assert "weights: RANDOM (seed 5), built in memory" in out
    assert re.search(
        r"pangu: 2 layers, hidden 1024, 8 heads x 128 \(MHA\), FFN 4096 \(4x, gelu\)"
        r", layernorm \(pre-norm\), rotary \(neox, theta 10000\), biases on "
        r"QKV/output/FFN, vocab 1001, float16: 27\.2 M parameters",
        out,
    ), out
    assert re.search(r"^memory plan \(rank 0, cpu\): weights .* KV cache", out, re.M), out
    assert re.search(
        r"^prefill: 128 tokens \(batch 2 x 64\) in [\d.]+ s = [\d.]+ tokens/s$", out, re.M
    ), out
    assert re.search(
        r"^decode:  5 steps \(batch 2\) in [\d.]+ s = [\d.]+ ms/step, [\d.]+ "
        r"tokens/s",
        out,
        re.M,
    ), out
    ids = generated(out)
    assert len(ids) == 2 and all(len(x) == 6 and all(0 <= t < 1001 for t in x) for x in ids)

    cfg = random_weights.config_for_tp(dict(TINY, dtype="float16"), 1)
    random_weights.write_model(cfg, tmp_path / "tiny", seed=5)
    rc, out2, _ = run_example(
        example, capsys, "--model", tmp_path / "tiny", "--seed", 5, "--batch", 2, "--new-tokens", 6
    )
    assert rc == 0, out2
    assert f"weights: loaded from {tmp_path / 'tiny'}" in out2
    assert generated(out2) == ids


def test_example_spilled_kv_gives_the_same_tokens(example, capsys):
    args = (
        "--preset",
        "tiny",
        "--dtype",
        "float32",
        "--batch",
        2,
        "--prompt-len",
        40,
        "--new-tokens",
        12,
        "--prefill-chunk",
        16,
        "--warmup",
        0,
    )
    rc, plain, _ = run_example(example, capsys, *args)
    assert rc == 0, plain
    rc, spilled, _ = run_example(
        example, capsys, *args, "--max-context", 262144, "--kv-pool-tokens", 64
    )
    assert rc == 0, spilled
    assert re.search(r"host KV [\d.]+ GiB \(524288 tokens\)", spilled), spilled
    assert re.search(r"^spilled KV: [1-9]\d* blocks moved to the host pool", spilled, re.M)
    assert generated(spilled) == generated(plain) and len(generated(plain)) == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--preset", "huge"], r"argument --preset: invalid choice: 'huge'"),
        (
            ["--preset", "tiny", "--tp", "3"],
            r"--tp 3 does not divide the model's 8 attention heads",
        ),
        (
            ["--preset", "tiny", "--max-context", "262145"],
            r"--max-context 262145 is beyond 262144 \(256K\)",
        ),
        (["--preset", "tiny", "--max-context", "50"], r"--max-context 50 is shorter than"),
        (["--preset", "tiny", "--tp", "2"], r"--tp 2 must equal the number of MPI processes \(1\)"),
        (["--model", "x", "--preset", "tiny"], r"--preset and --num-layers shape random weights"),
        (["--model", "x", "--random-weights"], r"not allowed with argument"),
        (
            ["--model", "/nonexistent"],
            r"--model /nonexistent: cannot read /nonexistent/config\.json",
        ),
        (["--preset", "tiny", "--batch", "0"], r"--batch must be positive"),
        (["--preset", "tiny", "--host-kv-tokens", "-1"], r"--host-kv-tokens must be >= 0"),
    ],
)
def test_example_option_errors(example, capsys, args, message):
    try:
        rc = example.run(args)
    except SystemExit as e:
        rc = e.code
    _, err = capsys.readouterr()
    assert rc == 2 and re.search(message, err), err


def test_example_host_memory_check(example, capsys):
    """38B random weights are refused, before any allocation, where the host cannot hold them."""
    shard = random_weights.shard_bytes(random_weights.config_for_tp(FULL, 8))
    with pytest.raises(
        MemoryError,
        match=r"need 9\.4 GB of host memory per rank, 75\.2 GB for "
        r"the 8 rank\(s\) on this host, which has 64\.0 GB",
    ):
        example.check_host_memory(shard, 8, 64 * 10**9)
    example.check_host_memory(shard, 8, 100 * 10**9)  # fits
    example.check_host_memory(shard, 8, None)  # unknown: not refused
    available = example.host_available_bytes()
    if available is None or available > 80e9:
        pytest.skip("this host could hold the full preset: not run here")
    rc, _, err = run_example(example, capsys, "--random-weights", "--new-tokens", 1)
    assert rc == 1 and re.search(
        r"MemoryError: the random weights need 75\.1 GB of host memory "
        r"per rank.*use --preset tiny",
        err,
    ), err
