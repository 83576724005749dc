"""llama.cpp GGUF checkpoint -> FastAttention model directory (docs/FORMAT.md).

    from fastattention.export.gguf import export_gguf
    config = export_gguf("model.Q4_K_M.gguf", "out", dtype="bfloat16")

Reads the file with the `gguf` package (llama.cpp's own Python reader). Families: llama (which is
also how llama.cpp writes Mistral models: a "mistral" in general.name makes the architecture
mistral, as transformers does) and qwen2. Tensor types F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K,
Q5_K and Q6_K are de-quantised (gguf.quants) to float32 and rounded to the chosen dtype: the
runtime has no quantised kernels, so a Q4 model runs at the size of its 16-bit weights.

llama.cpp's converter permutes the rows of Llama's q and k projections for its interleaved
rotary (convert_hf_to_gguf.py, LlamaModel.permute); export undoes that so the weights are in
Hugging Face's rotate-halves order again (Qwen2 files are not permuted). The tokenizer stored in
the metadata becomes a tokenizer.json (export/gguf_tokenizer.py). Everything (metadata, tensor
names, shapes and types, the tokenizer) is checked before anything is written.
"""

from __future__ import annotations

import os

import numpy as np

from fastattention.export import hf_config as hfmap
from fastattention.export import tp as tpsplit
from fastattention.export.model_writer import Exporter, check_dtype, write_model

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")  # llama.cpp writes Mistral models as llama
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K")
_GLOBAL_NAMES = {
    "token_embd.weight": hfmap.EMBED,
    "output_norm.weight": hfmap.FINAL_NORM,
    "output.weight": hfmap.LM_HEAD,
}
_LAYER_NAMES = {  # GGUF blk.{i}.X -> Hugging Face role (hf.layer_names)
    "attn_norm.weight": "attn_norm",
    "ffn_norm.weight": "ffn_norm",
    "attn_q.weight": "q",
    "attn_k.weight": "k",
    "attn_v.weight": "v",
    "attn_output.weight": "o",
    "attn_q.bias": "q_bias",
    "attn_k.bias": "k_bias",
    "attn_v.bias": "v_bias",
    "attn_output.bias": "o_bias",
    "ffn_gate.weight": "gate",
    "ffn_up.weight": "up",
    "ffn_down.weight": "down",
}
_REFUSED = {
    "rope_freqs.weight": "per-frequency rope factors (Llama 3.1 rope scaling as a "
    "tensor) are not supported"
}


def _open(path: str):
    import gguf

    if not os.path.isfile(path):
        raise ValueError(f"GGUF file not found: {path}")
    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as e:  # the reader raises ValueError, struct.error, IndexError, ...
        raise ValueError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e
    size = os.path.getsize(path)
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise ValueError(
                f"{path}: truncated: tensor '{t.name}' ends at byte "
                f"{t.data_offset + t.n_bytes}, the file has {size}"
            )
    return reader


class GgufMetadata:
    """The key-value metadata of a GGUF file, with errors naming the key."""

    def __init__(self, reader, path: str):
        self.reader, self.path = reader, path

    def get(self, key, default=None):
        field = self.reader.fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except Exception as e:
            raise ValueError(f"{self.path}: cannot read metadata '{key}': {e}") from e

    def require(self, key, kind=int):
        value = self.get(key)
        if value is None:
            raise ValueError(f"{self.path}: metadata '{key}' is missing")
        if kind is int and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(
                f"{self.path}: metadata '{key}' must be a positive integer, got {value!r}"
            )
        if kind is float and not isinstance(value, (int, float)):
            raise ValueError(f"{self.path}: metadata '{key}' must be a number, got {value!r}")
        return value


def architecture_of(meta: GgufMetadata) -> tuple[str, str]:
    """(GGUF architecture, runtime architecture)."""
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{meta.path}: unsupported architecture '{arch}'; supported: "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} (Mistral files are llama)"
        )
    name = str(meta.get("general.name") or "").lower()
    return arch, "mistral" if arch == "llama" and "mistral" in name else arch


def _rope_scaling(meta: GgufMetadata, a: str):
    kind = meta.get(f"{a}.rope.scaling.type")
    factor = meta.get(f"{a}.rope.scaling.factor")
    if kind is None and meta.get(f"{a}.rope.scale_linear") is not None:
        kind, factor = "linear", meta.get(f"{a}.rope.scale_linear")
    if kind in (None, "none"):
        return None
    if kind != "linear":
        raise ValueError(
            f"{meta.path}: rope scaling '{kind}' ({a}.rope.scaling.type) is not "
            f"supported; supported: none, linear"
        )
    return {
        "rope_type": "linear",
        "factor": float(
            meta.require(f"{a}.rope.scaling.factor", float) if factor is None else factor
        ),
    }


def hf_like_config(meta: GgufMetadata, tensors: dict, vocab_size: int) -> dict:
    """The GGUF metadata as a Hugging Face config dict (for hf.runtime_config)."""
    a, arch = architecture_of(meta)
    heads = meta.require(f"{a}.attention.head_count")
    hidden = meta.require(f"{a}.embedding_length")
    head_dim = meta.get(f"{a}.attention.key_length") or hidden // heads
    rotary = meta.get(f"{a}.rope.dimension_count") or head_dim
    if rotary != head_dim:
        raise ValueError(
            f"{meta.path}: {a}.rope.dimension_count {rotary} differs from the head "
            f"dim {head_dim}; partial rotary is not supported for {arch}"
        )
    window = meta.get(f"{a}.attention.sliding_window")
    eos = [meta.get(k) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")]
    hf = {
        "model_type": arch,
        "hidden_size": hidden,
        "num_hidden_layers": meta.require(f"{a}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": meta.get(f"{a}.attention.head_count_kv") or heads,
        "head_dim": head_dim,
        "intermediate_size": meta.require(f"{a}.feed_forward_length"),
        "vocab_size": vocab_size,
        "max_position_embeddings": meta.require(f"{a}.context_length"),
        "rms_norm_eps": float(meta.require(f"{a}.attention.layer_norm_rms_epsilon", float)),
        "rope_theta": float(meta.get(f"{a}.rope.freq_base") or 10000.0),
        "rope_scaling": _rope_scaling(meta, a),
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "sliding_window": window,
        "use_sliding_window": window is not None,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": sorted({e for e in eos if e is not None}),
    }
    if arch == "qwen2" and window is not None:
        hf["max_window_layers"] = 0
    return hf


class GgufCheckpoint:
    """The tensors of a GGUF file by Hugging Face name, de-quantised to float32 (the reader
    interface Exporter uses; hf_dir is the file, for error messages)."""

    def __init__(self, reader, path: str, permute_qk: bool, num_heads: int, num_kv_heads: int):
        self.hf_dir = path
        self.permute_qk = permute_qk
        self.heads = {"q": num_heads, "k": num_kv_heads}
        self.tensors = {t.name: t for t in reader.tensors}
        self.by_hf_name = {}
        for name in self.tensors:
            hf_name = hf_name_of(name)
            if hf_name is not None:
                self.by_hf_name[hf_name] = name

    def get(self, hf_name: str, expected_shape=None) -> np.ndarray:
        import gguf

        name = self.by_hf_name.get(hf_name)
        if name is None:
            raise ValueError(f"{self.hf_dir}: tensor for '{hf_name}' not found")
        t = self.tensors[name]
        shape = tuple(int(n) for n in reversed(t.shape))
        data = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        data = np.asarray(data, dtype=np.float32).reshape(shape)
        if expected_shape is not None and shape != tuple(expected_shape):
            raise ValueError(
                f"{self.hf_dir}: tensor '{name}' has shape {list(shape)}; the "
                f"metadata implies {list(expected_shape)}"
            )
        role = name.split(".")[2] if name.startswith("blk.") else ""
        if self.permute_qk and role in ("attn_q", "attn_k"):
            data = unpermute_rotary(data, self.heads[role[-1]])
        return data


def hf_name_of(name: str):
    """The Hugging Face name of a GGUF tensor name, or None if it has none."""
    if name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return hfmap.layer_names(int(parts[1]))[_LAYER_NAMES[parts[2]]]
    return None


def unpermute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undoes llama.cpp's LlamaModel.permute of q / k rows (weights or biases): within each
    head, rows (pairs interleaved) go back to rotate-halves order."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _check_tensors(ckpt: GgufCheckpoint, cfg: dict) -> None:
    """Every tensor known, of a supported type and of the shape the metadata implies; none
    missing."""
    c = cfg
    h, d, i_size, v = c["hidden_size"], c["head_dim"], c["intermediate_size"], c["vocab_size"]
    expected = {"token_embd.weight": (v, h), "output_norm.weight": (h,)}
    if not c["tie_word_embeddings"]:
        expected["output.weight"] = (v, h)
    for i in range(c["num_layers"]):
        p = f"blk.{i}."
        expected.update(
            {
                p + "attn_norm.weight": (h,),
                p + "ffn_norm.weight": (h,),
                p + "attn_q.weight": (c["num_heads"] * d, h),
                p + "attn_k.weight": (c["num_kv_heads"] * d, h),
                p + "attn_v.weight": (c["num_kv_heads"] * d, h),
                p + "attn_output.weight": (h, c["num_heads"] * d),
                p + "ffn_gate.weight": (i_size, h),
                p + "ffn_up.weight": (i_size, h),
                p + "ffn_down.weight": (h, i_size),
            }
        )
        if c["qkv_bias"]:
            expected.update(
                {
                    p + "attn_q.bias": (c["num_heads"] * d,),
                    p + "attn_k.bias": (c["num_kv_heads"] * d,),
                    p + "attn_v.bias": (c["num_kv_heads"] * d,),
                }
            )
        if c["o_bias"]:
            expected[p + "attn_output.bias"] = (h,)
    path = ckpt.hf_dir
    for name, t in ckpt.tensors.items():
        if name in _REFUSED:
            raise ValueError(f"{path}: tensor '{name}': {_REFUSED[name]}")
        if name not in expected:
            raise ValueError(
                f"{path}: unexpected tensor '{name}' for this {c['architecture']} "
                f"model (an unsupported variant)"
            )
        kind = t.tensor_type.name
        if kind not in SUPPORTED_TYPES:
            raise ValueError(
                f"{path}: tensor '{name}' has type {kind}, which export cannot "
                f"de-quantise; supported: {', '.join(SUPPORTED_TYPES)}"
            )
        shape = tuple(int(n) for n in reversed(t.shape))
        if shape != expected[name]:
            raise ValueError(
                f"{path}: tensor '{name}' has shape {list(shape)}; the metadata "
                f"implies {list(expected[name])}"
            )
    missing = sorted(set(expected) - set(ckpt.tensors))
    if missing:
        raise ValueError(
            f"{path}: tensor '{missing[0]}' is missing"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )


def export_gguf(gguf_path, out_dir, tp=1, dtype="float16", progress=True) -> dict:
    """Exports a llama (Llama, Mistral) or qwen2 GGUF file to the runtime format (with its
    tokenizer).

    dtype: float32 | float16 | bfloat16 for the de-quantised weights. tp: tensor-parallel size.
    Returns the written config dict. Bad input (not a GGUF file, a truncated one, an
    unsupported architecture, tensor type or rope scaling, a tokenizer that does not fit the
    vocabulary) raises ValueError naming it, before anything is written.
    """
    from fastattention.export.gguf_tokenizer import tokenizer_files_from_gguf

    gguf_path, out_dir = os.fspath(gguf_path), os.fspath(out_dir)
    check_dtype(dtype)
    tpsplit.check_tp_value(tp)
    tp = int(tp)
    reader = _open(gguf_path)
    meta = GgufMetadata(reader, gguf_path)
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ValueError(f"{gguf_path}: tensor 'token_embd.weight' is missing")
    vocab_size = int(tensors["token_embd.weight"].shape[1])
    hf = hf_like_config(meta, tensors, vocab_size)
    cfg = hfmap.runtime_config(hf, os.path.dirname(os.path.abspath(gguf_path)), tp, dtype)
    cfg["qkv_bias"] = "blk.0.attn_q.bias" in tensors
    cfg["o_bias"] = "blk.0.attn_output.bias" in tensors
    cfg["source"] = {
        "type": "gguf",
        "path": os.path.abspath(gguf_path),
        "model_type": hf["model_type"],
    }
    tpsplit.check_tp(tp, cfg["num_heads"], cfg["num_kv_heads"], cfg["intermediate_size"])
    ckpt = GgufCheckpoint(
        reader,
        gguf_path,
        permute_qk=hf["model_type"] != "qwen2",
        num_heads=cfg["num_heads"],
        num_kv_heads=cfg["num_kv_heads"],
    )
    _check_tensors(ckpt, cfg)
    files = tokenizer_files_from_gguf(meta, vocab_size)
    return write_model(Exporter(ckpt, cfg, out_dir), progress, files)
