"""export_hf on tiny random Hugging Face models: every exported tensor, reassembled from the rank
files with code independent of the exporter, must equal the HF tensor rounded by torch to the
target dtype, bit for bit."""

import json
import os
import shutil
import struct

import numpy as np
import pytest

from fastattention.export import export_hf, read_header, read_tensor

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TORCH_DTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BITS = {"float32": np.uint32, "float16": np.uint16, "bfloat16": np.uint16}
FORMAT_KEYS = {
    "format",
    "format_version",
    "architecture",
    "dtype",
    "tp_size",
    "vocab_size",
    "vocab_size_padded",
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "intermediate_size",
    "max_position_embeddings",
    "norm_type",
    "norm_eps",
    "activation",
    "gated_ffn",
    "qkv_bias",
    "o_bias",
    "mlp_bias",
    "tie_word_embeddings",
    "rope",
    "sliding_window",
    "bos_token_id",
    "eos_token_id",
    "source",
}


def expected_bits(array: np.ndarray, dtype: str) -> np.ndarray:
    """The HF tensor rounded to `dtype` by torch, as raw bits."""
    t = torch.from_numpy(np.ascontiguousarray(array)).to(TORCH_DTYPE[dtype])
    view = torch.int32 if dtype == "float32" else torch.int16
    return t.view(view).numpy().view(BITS[dtype])


def read_bits(path, dtype) -> np.ndarray:
    return read_tensor(path).view(BITS[dtype])


def check_file_header(path, cfg):
    raw = open(path, "rb").read()
    assert raw[:8] == b"FASTATTN"
    version, code, ndim, offset = struct.unpack("<4I", raw[8:24])
    shape = struct.unpack(f"<{ndim}Q", raw[24 : 24 + 8 * ndim])
    assert version == 1 and code == {"float32": 0, "float16": 1, "bfloat16": 2}[cfg["dtype"]]
    assert offset % 64 == 0 and offset >= 24 + 8 * ndim
    assert len(raw) == offset + int(np.prod(shape)) * (4 if cfg["dtype"] == "float32" else 2)


def expected_files(cfg):
    names = ["embed.weight", "final_norm.weight"]
    if not cfg["tie_word_embeddings"]:
        names.append("lm_head.weight")
    for i in range(cfg["num_layers"]):
        p = f"layers.{i}."
        names += [
            p + n
            for n in (
                "attn_norm.weight",
                "attn.qkv.weight",
                "attn.o.weight",
                "ffn_norm.weight",
                "ffn.gate_up.weight",
                "ffn.down.weight",
            )
        ]
        names += [p + "attn.qkv.bias"] * cfg["qkv_bias"] + [p + "attn.o.bias"] * cfg["o_bias"]
        names += [p + n for n in ("ffn.gate_up.bias", "ffn.down.bias")] * cfg["mlp_bias"]
    return sorted(n + ".fat" for n in names)


def check_export(out_dir, cfg, state):
    """Reassembles every tensor from the rank files and compares it with the HF state dict."""
    tp, dt, d = cfg["tp_size"], cfg["dtype"], cfg["head_dim"]
    nh, nkv, vocab = cfg["num_heads"], cfg["num_kv_heads"], cfg["vocab_size"]
    hq, hk = nh // tp, max(nkv // tp, 1)

    def ranks(name):
        return [read_bits(os.path.join(out_dir, f"rank{r}", name + ".fat"), dt) for r in range(tp)]

    def same(got, hf_name):
        want = expected_bits(state[hf_name], dt)
        assert got.shape == want.shape, hf_name
        assert np.array_equal(got, want), hf_name

    def replicated(name, hf_name):
        for part in ranks(name):
            same(part, hf_name)

    def vocab_parallel(name, hf_name):
        parts = ranks(name)
        assert all(p.shape[0] == cfg["vocab_size_padded"] // tp for p in parts)
        full = np.concatenate(parts)
        same(full[:vocab], hf_name)
        assert not full[vocab:].any(), f"{name}: padding rows must be zero"

    def qkv(name, prefix, suffix):
        q_parts, hf_q = [], expected_bits(state[prefix + "q_proj" + suffix], dt)
        hf_k = expected_bits(state[prefix + "k_proj" + suffix], dt)
        hf_v = expected_bits(state[prefix + "v_proj" + suffix], dt)
        for r, part in enumerate(ranks(name)):
            assert part.shape[0] == (hq + 2 * hk) * d
            q, k, v = part[: hq * d], part[hq * d : (hq + hk) * d], part[(hq + hk) * d :]
            q_parts.append(q)
            # GQA inside the rank: local query head j reads local KV head j // (hq / hk); it must
            # be the KV head that global query head r*hq + j reads in the HF model.
            for j in range(hq):
                local, glob = j // (hq // hk), (r * hq + j) // (nh // nkv)
                assert np.array_equal(
                    k[local * d : (local + 1) * d], hf_k[glob * d : (glob + 1) * d]
                )
                assert np.array_equal(
                    v[local * d : (local + 1) * d], hf_v[glob * d : (glob + 1) * d]
                )
        assert np.array_equal(np.concatenate(q_parts), hf_q), name

    def gate_up(name, prefix, suffix):
        parts = ranks(name)
        i_r = cfg["intermediate_size"] // tp
        same(np.concatenate([p[:i_r] for p in parts]), prefix + "gate_proj" + suffix)
        same(np.concatenate([p[i_r:] for p in parts]), prefix + "up_proj" + suffix)

    def row_parallel(name, hf_name):
        same(np.concatenate(ranks(name), axis=1), hf_name)

    for r in range(tp):
        assert sorted(os.listdir(os.path.join(out_dir, f"rank{r}"))) == expected_files(cfg)
        for f in expected_files(cfg):
            check_file_header(os.path.join(out_dir, f"rank{r}", f), cfg)
    vocab_parallel("embed.weight", "model.embed_tokens.weight")
    if not cfg["tie_word_embeddings"]:
        vocab_parallel("lm_head.weight", "lm_head.weight")
    replicated("final_norm.weight", "model.norm.weight")
    for i in range(cfg["num_layers"]):
        p, hp = f"layers.{i}.", f"model.layers.{i}."
        replicated(p + "attn_norm.weight", hp + "input_layernorm.weight")
        replicated(p + "ffn_norm.weight", hp + "post_attention_layernorm.weight")
        qkv(p + "attn.qkv.weight", hp + "self_attn.", ".weight")
        row_parallel(p + "attn.o.weight", hp + "self_attn.o_proj.weight")
        gate_up(p + "ffn.gate_up.weight", hp + "mlp.", ".weight")
        row_parallel(p + "ffn.down.weight", hp + "mlp.down_proj.weight")
        if cfg["qkv_bias"]:
            qkv(p + "attn.qkv.bias", hp + "self_attn.", ".bias")
        if cfg["o_bias"]:
            replicated(p + "attn.o.bias", hp + "self_attn.o_proj.bias")
        if cfg["mlp_bias"]:
            gate_up(p + "ffn.gate_up.bias", hp + "mlp.", ".bias")
            replicated(p + "ffn.down.bias", hp + "mlp.down_proj.bias")


# (model, tp): plain splits, vocab padding (llama: 301 rows), tp == num_kv_heads, and KV
# replication (llama tp=4 > 2 KV heads, llama_kv4 tp=8 > 4, mistral tp=2 > 1).
CASES = [
    ("llama", 1),
    ("llama", 2),
    ("llama", 4),
    ("llama_kv4", 4),
    ("llama_kv4", 8),
    ("llama_bias", 2),
    ("qwen2", 1),
    ("qwen2", 2),
    ("mistral", 1),
    ("mistral", 2),
]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name, tp", CASES)
def test_export_matches_hf(exported_model_factory, name, tp, dtype):
    exp = exported_model_factory(name, tp=tp, dtype=dtype)
    cfg = json.loads((exp.path / "config.json").read_text())
    assert cfg == exp.config
    assert set(cfg) == FORMAT_KEYS
    assert cfg["tp_size"] == tp and cfg["dtype"] == dtype
    assert cfg["vocab_size_padded"] % tp == 0
    assert cfg["vocab_size"] <= cfg["vocab_size_padded"] < cfg["vocab_size"] + tp
    check_export(exp.path, cfg, exp.hf.state_dict())


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_bfloat16_checkpoint(exported_model_factory, dtype):
    exp = exported_model_factory("llama", tp=2, dtype=dtype, hf_dtype="bfloat16")
    assert exp.hf.config["dtype"] == "bfloat16"
    check_export(exp.path, exp.config, exp.hf.state_dict())


def test_float16_checkpoint(exported_model_factory):
    exp = exported_model_factory("qwen2", tp=2, dtype="bfloat16", hf_dtype="float16")
    check_export(exp.path, exp.config, exp.hf.state_dict())


def _same_files(a, b, tp):
    for r in range(tp):
        names = sorted(os.listdir(a / f"rank{r}"))
        assert names == sorted(os.listdir(b / f"rank{r}"))
        for n in names:
            assert (a / f"rank{r}" / n).read_bytes() == (b / f"rank{r}" / n).read_bytes(), n


def test_sharded_checkpoint(exported_model_factory):
    plain = exported_model_factory("mistral", tp=2, dtype="float16")
    sharded = exported_model_factory("mistral", tp=2, dtype="float16", sharded=True)
    index = json.loads((sharded.hf.path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    check_export(sharded.path, sharded.config, sharded.hf.state_dict())
    _same_files(plain.path, sharded.path, 2)


def test_pytorch_bin_checkpoints(hf_model_factory, exported_model_factory, tmp_path):
    hf = hf_model_factory("qwen2")
    reference = exported_model_factory("qwen2", tp=2, dtype="bfloat16")
    state = {k: torch.from_numpy(v) for k, v in hf.state_dict().items()}
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    for d in (single, sharded):
        d.mkdir()
        shutil.copy(hf.path / "config.json", d / "config.json")
    torch.save(state, single / "pytorch_model.bin")
    names = sorted(state)
    halves = {
        "pytorch_model-00001-of-00002.bin": names[::2],
        "pytorch_model-00002-of-00002.bin": names[1::2],
    }
    weight_map = {}
    for file, keys in halves.items():
        torch.save({k: state[k] for k in keys}, sharded / file)
        weight_map.update({k: file for k in keys})
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for d in (single, sharded):
        export_hf(d, tmp_path / f"out-{d.name}", tp=2, dtype="bfloat16", progress=False)
        _same_files(reference.path, tmp_path / f"out-{d.name}", 2)


def test_config_values(exported_model_factory):
    llama = exported_model_factory("llama", tp=2).config
    assert llama["architecture"] == "llama" and llama["source"]["model_type"] == "llama"
    assert (llama["vocab_size"], llama["vocab_size_padded"]) == (301, 302)
    assert (llama["num_heads"], llama["num_kv_heads"], llama["head_dim"]) == (4, 2, 16)
    assert llama["norm_type"] == "rmsnorm" and llama["norm_eps"] == 1e-5
    assert llama["activation"] == "silu" and llama["gated_ffn"] is True
    assert not (llama["qkv_bias"] or llama["o_bias"] or llama["mlp_bias"])
    assert llama["rope"] == {
        "theta": 10000.0,
        "style": "neox",
        "rotary_dim": 16,
        "scaling": {"type": "none"},
    }
    assert llama["sliding_window"] is None and llama["max_position_embeddings"] == 256
    assert (llama["bos_token_id"], llama["eos_token_id"]) == (1, [2])

    kv4 = exported_model_factory("llama_kv4", tp=4).config
    assert kv4["rope"] == {
        "theta": 500000.0,
        "style": "neox",
        "rotary_dim": 8,
        "scaling": {
            "type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position": 64,
        },
    }
    bias = exported_model_factory("llama_bias", tp=2).config
    assert bias["qkv_bias"] and bias["o_bias"] and bias["mlp_bias"] and bias["tie_word_embeddings"]
    assert bias["rope"]["scaling"] == {"type": "linear", "factor": 2.0}

    qwen = exported_model_factory("qwen2", tp=2).config
    assert qwen["qkv_bias"] and not qwen["o_bias"] and qwen["tie_word_embeddings"]
    assert qwen["rope"]["theta"] == 1e6 and qwen["sliding_window"] is None
    assert (qwen["bos_token_id"], qwen["eos_token_id"]) == (None, [3])
    assert exported_model_factory("qwen2_swa").config["sliding_window"] == 8
    mistral = exported_model_factory("mistral").config
    assert mistral["sliding_window"] == 8 and mistral["num_kv_heads"] == 1


def test_reexport_and_progress(hf_model_factory, tmp_path, capsys):
    hf = hf_model_factory("llama")
    out = tmp_path / "out"
    export_hf(hf.path, out, tp=2, dtype="float32", progress=False)
    assert capsys.readouterr().err == ""
    cfg = export_hf(hf.path, out, tp=2, dtype="bfloat16", progress=True)
    assert "export" in capsys.readouterr().err
    assert read_header(out / "rank1" / "embed.weight.fat").dtype == "bfloat16"
    check_export(out, cfg, hf.state_dict())
