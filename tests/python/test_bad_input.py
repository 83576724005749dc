"""Bad input across the pipeline (HF checkpoint -> export -> Session -> ops), gathered in one place.

Each case must raise a Python exception whose message names the file, tensor, option or token at
fault. The per-area suites test their own layer's errors in depth (test_export_config.py: HF config
fields and tp splits; test_session.py: generate() arguments and hand-made broken .fat files); this
file covers what crosses the layers: real transformers checkpoints of unsupported architectures,
broken source checkpoints, exported models edited after export, boundary values of token ids and
lengths on models exported from transformers, and the attention op's shape checks.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

import fastattention
from fastattention.export import export_hf, read_tensor, write_tensor
from fastattention.session import Session


@pytest.fixture()
def exported_copy(exported_model_factory, tmp_path):
    """A private copy of the float32 export of the tiny transformers Llama (safe to damage)."""
    model = exported_model_factory("llama", dtype="float32")
    dst = tmp_path / "model"
    shutil.copytree(model.path, dst)
    return dst, json.loads((dst / "config.json").read_text())


# ------------------------------------------------------------------------------ architectures


def test_export_rejects_a_real_unsupported_checkpoint(tmp_path):
    """A GPT-2 checkpoint saved by transformers: the export names its architecture."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=32)
    hf_dir = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(config).save_pretrained(hf_dir)
    with pytest.raises(ValueError, match=r"unsupported architecture 'gpt2' in .*gpt2/config\.json"):
        export_hf(hf_dir, tmp_path / "out", dtype="float32", progress=False)
    assert not (tmp_path / "out" / "config.json").exists()


def test_session_rejects_an_unknown_architecture(exported_copy):
    path, cfg = exported_copy
    (path / "config.json").write_text(json.dumps(dict(cfg, architecture="falcon")))
    with pytest.raises(ValueError, match=r"config\.json.*architecture.*'falcon'"):
        Session(path)


# ------------------------------------------------------------------------- source checkpoint


def test_export_of_a_truncated_safetensors_file(hf_model_factory, tmp_path):
    src = hf_model_factory("llama")
    hf_dir = tmp_path / "hf"
    shutil.copytree(src.path, hf_dir)
    weights = hf_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=re.escape(str(weights))):
        export_hf(hf_dir, tmp_path / "out", dtype="float32", progress=False)
    assert not (tmp_path / "out" / "config.json").exists()


def test_export_of_an_unsupported_tensor_dtype(hf_model_factory, tmp_path):
    from safetensors.numpy import load_file, save_file

    src = hf_model_factory("llama")
    hf_dir = tmp_path / "hf"
    shutil.copytree(src.path, hf_dir)
    tensors = load_file(hf_dir / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    tensors[name] = (tensors[name] * 100).astype(np.int32)
    save_file(tensors, hf_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=re.escape(f"tensor '{name}'") + ".*I32.*floating-point"):
        export_hf(hf_dir, tmp_path / "out", dtype="float32", progress=False)


# ---------------------------------------------------------------------------- exported model


def test_missing_tensor_file(exported_copy):
    path, _ = exported_copy
    (path / "rank0" / "layers.1.ffn.gate_up.weight.fat").unlink()
    with pytest.raises(
        fastattention.WeightFileError,
        match=r"layers\.1\.ffn\.gate_up\.weight\.fat: weight file is missing",
    ):
        Session(path)


def test_truncated_tensor_file(exported_copy):
    path, _ = exported_copy
    f = path / "rank0" / "final_norm.weight.fat"
    f.write_bytes(f.read_bytes()[:-1])
    with pytest.raises(fastattention.WeightFileError, match=r"final_norm\.weight\.fat: truncated"):
        Session(path)


def test_config_dtype_disagrees_with_the_files(exported_copy):
    """config.json says bfloat16 but the files hold float32: the first file checked is named."""
    path, cfg = exported_copy
    (path / "config.json").write_text(json.dumps(dict(cfg, dtype="bfloat16")))
    with pytest.raises(
        fastattention.WeightFileError, match=r"\.fat: dtype float32, but the config says bfloat16"
    ):
        Session(path)


def test_tensor_of_the_wrong_shape(exported_copy):
    path, cfg = exported_copy
    f = path / "rank0" / "layers.0.attn.qkv.weight.fat"
    w = read_tensor(f)
    write_tensor(f, np.ascontiguousarray(w[:-1]))  # one output row short
    with pytest.raises(
        fastattention.WeightFileError,
        match=r"layers\.0\.attn\.qkv\.weight\.fat: shape \[" + str(w.shape[0] - 1),
    ):
        Session(path)


def test_config_with_an_inconsistent_head_dim(exported_copy):
    """num_heads * head_dim that disagrees with the stored QKV weight."""
    path, cfg = exported_copy
    (path / "config.json").write_text(json.dumps(dict(cfg, head_dim=cfg["head_dim"] * 2)))
    with pytest.raises(ValueError, match=r"head_dim|qkv\.weight\.fat: shape"):
        Session(path)


# ------------------------------------------------------------------------ tokens and lengths


def test_token_ids_at_the_vocabulary_boundary(exported_model_factory):
    model = exported_model_factory("llama", dtype="float32")
    vocab = model.config["vocab_size"]
    s = Session(model.path, max_seq_len=64)
    assert s.logits([0, vocab - 1]).shape == (2, vocab)  # both ends of the vocabulary are valid
    with pytest.raises(ValueError, match=f"prompt 0, position 1: token id {vocab} is out of range"):
        s.generate([[3, vocab]], 2)
    with pytest.raises(ValueError, match="position 0: token id -1"):
        s.logits([-1, 3])
    with pytest.raises(ValueError, match=f"stop_tokens: token id {vocab}"):
        s.generate([[3]], 2, stop_tokens=[vocab])


def test_empty_prompts(exported_model_factory):
    model = exported_model_factory("qwen2", dtype="float32")
    s = Session(model.path, max_seq_len=64, max_batch=2)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        s.generate([[1, 2], []], 2)
    with pytest.raises(ValueError, match="empty"):
        s.logits([])
    with pytest.raises(ValueError, match="empty list"):
        s.generate([], 2)


def test_prompt_longer_than_max_seq_len(exported_model_factory):
    """The default max_seq_len is the model's max_position_embeddings."""
    model = exported_model_factory("llama", dtype="float32")
    limit = model.config["max_position_embeddings"]
    s = Session(model.path, max_batch=1)
    assert s.logits([5] * limit).shape[0] == limit  # exactly at the limit is fine
    with pytest.raises(
        ValueError, match=f"prompt 0 has {limit + 1} tokens, more than max_seq_len = {limit}"
    ):
        s.logits([5] * (limit + 1))
    with pytest.raises(
        ValueError,
        match=rf"prompt 0 \({limit - 2} tokens\) \+ max_new_tokens "
        rf"\(3\) = {limit + 1} exceeds max_seq_len = {limit}",
    ):
        s.generate([[5] * (limit - 2)], 3)


# ------------------------------------------------------------------------------- attention op


def test_attention_head_dim_mismatch():
    import fastattention.ops as ops

    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 8, 4, 64), dtype=np.float32)
    k = rng.standard_normal((1, 8, 4, 32), dtype=np.float32)
    with pytest.raises(ValueError, match=r"head dims of q \(64\) and k \(32\) differ"):
        ops.attention(q, k, k.copy())
    # The same mismatch through the varlen entry point, which the C++ side checks itself.
    cu = np.array([0, 8], np.int32)
    with pytest.raises(ValueError, match=r"head dim|headdim|head_dim"):
        ops.attention_varlen(q[0], k[0], k[0].copy(), cu, cu)


def test_attention_bad_heads_dtypes_and_lengths():
    import fastattention.ops as ops

    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, 8, 6, 16), dtype=np.float32)
    k = rng.standard_normal((1, 8, 4, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="q has 6 heads, not a multiple of the 4 KV heads"):
        ops.attention(q, k, k.copy())
    k3 = rng.standard_normal((1, 8, 3, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="k and v must have the same dtype"):
        ops.attention(q, k3, k3.astype(np.float16))
    with pytest.raises(ValueError, match=r"q: dtype int64 is not supported"):
        ops.attention(q.astype(np.int64), k3, k3.copy())
    with pytest.raises(ValueError, match="q: expected 4 dimensions"):
        ops.attention(q[0], k3, k3.copy())
    # cu_seqlens that run past the tokens
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        ops.attention_varlen(
            q[0], k3[0], k3[0].copy(), np.array([0, 8], np.int32), np.array([0, 9], np.int32)
        )
