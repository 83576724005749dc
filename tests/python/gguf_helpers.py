"""Small GGUF files written with the `gguf` package, laid out as llama.cpp's converter writes them
(convert_hf_to_gguf.py): tensor names, metadata keys, Llama's q / k rows permuted for its
interleaved rotary, norms in F32, the tokenizer as tokenizer.ggml.* keys."""

from __future__ import annotations

import json

import numpy as np
from text_helpers import CHAT_TEMPLATE

# Types gguf.quants can quantize; the K-quants it cannot are written as random blocks with small
# finite scales (any bytes are valid K-quant blocks, except non-finite float16 scales).
QUANTIZABLE = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0")
# (offset of each float16 scale in a block, block bytes) for the K-quants used here.
_K_SCALES = {
    "Q4_K": ((0, 2), 144),
    "Q5_K": ((0, 2), 176),
    "Q6_K": ((208,), 210),
    "Q2_K": ((80, 82), 84),
}
_K_SCALE = {"Q4_K": 2e-3, "Q5_K": 1e-3, "Q6_K": 2e-4, "Q2_K": 4e-3}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute (Hugging Face rotate-halves rows -> interleaved)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def encode_tensor(w: np.ndarray, kind: str, rng: np.random.Generator):
    """(data, raw_dtype) for GGUFWriter.add_tensor; K-quants: random blocks of w's shape."""
    import gguf

    qtype = gguf.GGMLQuantizationType[kind]
    if kind == "F32":
        return np.ascontiguousarray(w, np.float32), None
    if kind == "F16":
        return np.ascontiguousarray(w, np.float16), None
    if kind in QUANTIZABLE:
        return gguf.quants.quantize(np.ascontiguousarray(w, np.float32), qtype), qtype
    offsets, block = _K_SCALES[kind]
    rows, cols = w.shape
    blocks = rng.integers(0, 256, size=(rows, cols // 256, block), dtype=np.uint8)
    for off in offsets:
        scale = rng.uniform(0.5, 1.0, size=(rows, cols // 256)) * _K_SCALE[kind]
        blocks[:, :, off : off + 2] = (
            scale.astype(np.float16)[..., None].view(np.uint8).reshape(rows, cols // 256, 2)
        )
    return blocks.reshape(rows, -1), qtype


def byte_level_vocab(tok):
    """(tokens, token types, merges) of a byte-level BPE `tokenizers.Tokenizer`, as llama.cpp
    stores them (control = 3 for the special added tokens)."""
    model = json.loads(tok.to_str())["model"]
    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    types = [3 if t in special else 1 for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, types, merges


def sentencepiece_vocab(tok):
    """(tokens, token types, scores) of a SentencePiece-style BPE, as llama.cpp stores a Llama 2
    vocabulary (no merges; scores rank the pieces; byte tokens have type 6)."""
    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}

    def kind(t):
        if t == "<unk>":
            return 2
        if t in special:
            return 3
        return 6 if t.startswith("<0x") and len(t) == 6 else 1

    types = [kind(t) for t in tokens]
    scores = [0.0 if k != 1 else -float(i) for i, k in enumerate(types)]
    return tokens, types, scores


def write_gguf(
    path,
    arch: str,
    config: dict,
    state: dict,
    kinds: dict | str,
    *,
    tokenizer: dict | None = None,
    name: str = "tiny",
    extra_tensors=None,
    seed: int = 0,
) -> None:
    """Writes a GGUF file of a Hugging Face llama / qwen2 model.

    config: the HF config dict; state: {HF name: float32 array}; kinds: one GGUF type name for
    every 2-D weight, or {gguf tensor name: type} (default F32; norms and biases are F32).
    tokenizer: {"model": "gpt2" | "llama", "tokens", "types", "merges" | "scores", "pre",
    "bos", "eos", "add_bos", "chat_template"}."""
    import gguf

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hidden = config["hidden_size"]
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(config["vocab_size"])
    if tokenizer is not None:
        w.add_tokenizer_model(tokenizer["model"])
        w.add_tokenizer_pre(tokenizer.get("pre", "default"))
        w.add_token_list(tokenizer["tokens"])
        w.add_token_types(tokenizer["types"])
        if "merges" in tokenizer:
            w.add_token_merges(tokenizer["merges"])
        if "scores" in tokenizer:
            w.add_token_scores(tokenizer["scores"])
        w.add_bos_token_id(tokenizer["bos"])
        w.add_eos_token_id(tokenizer["eos"])
        w.add_add_bos_token(tokenizer.get("add_bos", False))
        if tokenizer.get("chat_template"):
            w.add_chat_template(tokenizer["chat_template"])
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    roles = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    tensors = {}
    for hf_name, value in state.items():
        if hf_name in names:
            tensors[names[hf_name]] = value
            continue
        _, _, i, rest = hf_name.split(".", 3)
        role, suffix = rest.rsplit(".", 1)
        if arch == "llama" and role in ("self_attn.q_proj", "self_attn.k_proj"):
            value = permute(value, heads if role == "self_attn.q_proj" else kv)
        tensors[f"blk.{i}.{roles[role]}.{suffix}"] = value
    tensors.update(extra_tensors or {})
    for gname, value in tensors.items():
        kind = (
            "F32"
            if value.ndim == 1
            else (kinds if isinstance(kinds, str) else kinds.get(gname, "F32"))
        )
        data, raw = encode_tensor(value, kind, rng)
        w.add_tensor(gname, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# hidden and intermediate 256: every row is whole blocks of the K-quants (256 values)
BASE = dict(
    hidden_size=256,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
)


def random_state(arch: str, vocab: int, tied: bool, seed: int = 0) -> tuple[dict, dict]:
    """(HF config dict, {HF name: float32 array}) of a random llama / qwen2 model."""
    rng = np.random.default_rng(seed)
    c = dict(BASE, vocab_size=vocab, tie_word_embeddings=tied)
    hd = c["hidden_size"] // c["num_attention_heads"]
    hid, inter = c["hidden_size"], c["intermediate_size"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd

    def w(*shape, scale=0.08):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    state = {
        "model.embed_tokens.weight": w(vocab, hid, scale=0.5),
        "model.norm.weight": 1 + w(hid, scale=0.1),
    }
    if not tied:
        state["lm_head.weight"] = w(vocab, hid)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        state.update(
            {
                p + "input_layernorm.weight": 1 + w(hid, scale=0.1),
                p + "post_attention_layernorm.weight": 1 + w(hid, scale=0.1),
                p + "self_attn.q_proj.weight": w(q, hid),
                p + "self_attn.k_proj.weight": w(kv, hid),
                p + "self_attn.v_proj.weight": w(kv, hid),
                p + "self_attn.o_proj.weight": w(hid, q),
                p + "mlp.gate_proj.weight": w(inter, hid),
                p + "mlp.up_proj.weight": w(inter, hid),
                p + "mlp.down_proj.weight": w(hid, inter),
            }
        )
        if arch == "qwen2":
            state.update(
                {
                    p + "self_attn.q_proj.bias": w(q),
                    p + "self_attn.k_proj.bias": w(kv),
                    p + "self_attn.v_proj.bias": w(kv),
                }
            )
    return c, state


def byte_tokenizer_meta(tok, pre="qwen2"):
    tokens, types, merges = byte_level_vocab(tok)
    return dict(
        model="gpt2",
        tokens=tokens,
        types=types,
        merges=merges,
        pre=pre,
        bos=1,
        eos=2,
        chat_template=CHAT_TEMPLATE,
    )
