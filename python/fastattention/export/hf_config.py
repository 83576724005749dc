"""Hugging Face config.json -> the runtime config (docs/FORMAT.md), and HF tensor names.

Llama, Qwen2 and Mistral share one layout: pre-norm decoder layers with RMSNorm, rotary embeddings
(rotate-halves, "neox" style), grouped-query attention and a gated (SwiGLU) FFN. They differ in
biases (Qwen2: q/k/v bias, no o bias; Llama: attention_bias for q/k/v/o and mlp_bias), sliding
windows (Mistral; Qwen2 when use_sliding_window) and defaults.

Both spellings of the rotary settings are read: transformers 4.x's top-level `rope_theta` plus a
`rope_scaling` dict ({"type" or "rope_type": ..., "factor": ...}), and transformers 5.x's
`rope_parameters` dict (which also carries rope_theta).
"""

from __future__ import annotations

import json
import os

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "mistral")
_ARCH_BY_CLASS = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "MistralForCausalLM": "mistral",
}
# Hugging Face hidden_act -> runtime activation. The tanh forms of GELU are one function.
_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_accurate": "gelu_tanh",
}
_LAYER_TYPE_KEYS = ("full_attention", "sliding_attention")
# Qwen2Config's default: layers at or past this index use the window when use_sliding_window.
_QWEN2_DEFAULT_MAX_WINDOW_LAYERS = 28


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise ValueError(f"{what} not found: {path}") from e
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} is not a JSON object")
    return data


def read_hf_config(hf_dir: str) -> dict:
    """The checkpoint's config.json as a dict."""
    return _read_json(os.path.join(hf_dir, "config.json"), "Hugging Face config")


def read_generation_config(hf_dir: str) -> dict:
    """generation_config.json if the checkpoint has one, else {}."""
    path = os.path.join(hf_dir, "generation_config.json")
    return _read_json(path, "generation config") if os.path.isfile(path) else {}


def architecture_of(hf: dict, config_path: str) -> str:
    """llama | qwen2 | mistral, from model_type (or architectures); anything else: ValueError."""
    model_type = hf.get("model_type")
    if model_type is None and hf.get("architectures"):
        model_type = _ARCH_BY_CLASS.get(hf["architectures"][0], hf["architectures"][0])
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"unsupported architecture '{model_type}' in {config_path}; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return model_type


def _required_int(hf: dict, key: str, config_path: str) -> int:
    value = hf.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{config_path}: '{key}' must be a positive integer, got {value!r}")
    return value


def _rope(hf: dict, head_dim: int, max_positions: int, config_path: str) -> dict:
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    nested = [k for k in params if k in _LAYER_TYPE_KEYS]
    if nested:  # transformers 5 per-layer-type form: fine as long as every layer type agrees
        variants = {json.dumps(params[k], sort_keys=True) for k in nested}
        if len(variants) > 1:
            raise ValueError(
                f"{config_path}: rope_parameters differ between layer types "
                f"({', '.join(nested)}); the runtime format has one rotary setting"
            )
        params = params[nested[0]] or {}
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ValueError(
            f"{config_path}: partial_rotary_factor {partial} is not supported for "
            f"this architecture (its attention rotates the whole head)"
        )
    kind = params.get("rope_type", params.get("type", "default"))

    def number(key):
        if not isinstance(params.get(key), (int, float)):
            raise ValueError(f"{config_path}: rope scaling '{kind}' needs a numeric '{key}'")
        return float(params[key])

    if kind in ("default", "none", None):
        scaling = {"type": "none"}
    elif kind == "linear":
        scaling = {"type": "linear", "factor": number("factor")}
    elif kind == "dynamic":
        # Hugging Face's dynamic NTK scales the base once the sequence exceeds
        # max_position_embeddings (the config's, not an original_* field).
        scaling = {
            "type": "dynamic",
            "factor": number("factor"),
            "original_max_position": max_positions,
        }
    elif kind == "llama3":
        original = params.get("original_max_position_embeddings", max_positions)
        scaling = {
            "type": "llama3",
            "factor": number("factor"),
            "low_freq_factor": number("low_freq_factor"),
            "high_freq_factor": number("high_freq_factor"),
            "original_max_position": int(original),
        }
    else:
        raise ValueError(
            f"{config_path}: rope scaling type '{kind}' is not supported; "
            f"supported: default, linear, dynamic, llama3"
        )
    return {"theta": float(theta), "style": "neox", "rotary_dim": head_dim, "scaling": scaling}


def _sliding_window(hf: dict, arch: str, num_layers: int, config_path: str):
    """One window for every layer, or None; a window on only some layers is refused."""
    if arch == "llama":
        return None
    window = hf.get("sliding_window")
    if arch == "qwen2":
        # Qwen2Config drops the window unless use_sliding_window, and then applies it to the
        # layers whose layer_types entry is "sliding_attention" (by default: the layers at index
        # max_window_layers and after).
        if not hf.get("use_sliding_window", False) or window is None:
            return None
        layer_types = hf.get("layer_types")
        if not layer_types:
            first = hf.get("max_window_layers", _QWEN2_DEFAULT_MAX_WINDOW_LAYERS)
            layer_types = [
                "sliding_attention" if i >= first else "full_attention" for i in range(num_layers)
            ]
        sliding = [i for i, t in enumerate(layer_types) if t == "sliding_attention"]
        if not sliding:
            return None
        if len(sliding) != num_layers:
            raise ValueError(
                f"{config_path}: the sliding window ({window}) applies to {len(sliding)} of "
                f"{num_layers} layers only (layer_types / max_window_layers="
                f"{hf.get('max_window_layers')}); the runtime format has one sliding_window for "
                f"all layers, so per-layer windows are not supported yet"
            )
    if window is None:
        return None
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        raise ValueError(
            f"{config_path}: 'sliding_window' must be a positive integer or null, got {window!r}"
        )
    return window


def _token_ids(hf: dict, generation: dict):
    """bos id (int or None) and eos ids (list), as Hugging Face generate() would use them:
    generation_config.json's values where it sets them, else config.json's."""

    def pick(key):
        value = generation.get(key)
        return value if value is not None else hf.get(key)

    eos = pick("eos_token_id")
    if eos is None:
        eos = []
    elif isinstance(eos, int):
        eos = [eos]
    return pick("bos_token_id"), [int(e) for e in eos]


def runtime_config(
    hf: dict, hf_dir: str, tp: int, dtype: str, generation: dict | None = None
) -> dict:
    """The runtime config.json (every key of docs/FORMAT.md) for a Hugging Face config dict."""
    config_path = os.path.join(hf_dir, "config.json")
    arch = architecture_of(hf, config_path)
    hidden = _required_int(hf, "hidden_size", config_path)
    num_layers = _required_int(hf, "num_hidden_layers", config_path)
    num_heads = _required_int(hf, "num_attention_heads", config_path)
    intermediate = _required_int(hf, "intermediate_size", config_path)
    vocab = _required_int(hf, "vocab_size", config_path)
    num_kv_heads = hf.get("num_key_value_heads") or num_heads
    head_dim = hf.get("head_dim") or hidden // num_heads
    if not hf.get("head_dim") and hidden % num_heads:
        raise ValueError(
            f"{config_path}: hidden_size {hidden} is not a multiple of "
            f"num_attention_heads {num_heads} and head_dim is not given"
        )
    max_positions = _required_int(hf, "max_position_embeddings", config_path)
    act = hf.get("hidden_act", "silu")
    if act not in _ACTIVATIONS:
        raise ValueError(
            f"{config_path}: hidden_act '{act}' is not supported; supported: "
            f"{', '.join(sorted(_ACTIVATIONS))}"
        )
    if arch == "llama":
        qkv_bias = o_bias = bool(hf.get("attention_bias", False))
        mlp_bias = bool(hf.get("mlp_bias", False))
    else:
        qkv_bias, o_bias, mlp_bias = arch == "qwen2", False, False
    bos, eos = _token_ids(hf, generation or {})
    return {
        "format": "fastattention",
        "format_version": 1,
        "architecture": arch,
        "dtype": dtype,
        "tp_size": tp,
        "vocab_size": vocab,
        "vocab_size_padded": -(-vocab // tp) * tp,
        "hidden_size": hidden,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "head_dim": head_dim,
        "intermediate_size": intermediate,
        "max_position_embeddings": max_positions,
        "norm_type": "rmsnorm",
        "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        "activation": _ACTIVATIONS[act],
        "gated_ffn": True,
        "qkv_bias": qkv_bias,
        "o_bias": o_bias,
        "mlp_bias": mlp_bias,
        "tie_word_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "rope": _rope(hf, head_dim, max_positions, config_path),
        "sliding_window": _sliding_window(hf, arch, num_layers, config_path),
        "bos_token_id": bos,
        "eos_token_id": eos,
        "source": {"type": "hf", "path": os.path.abspath(hf_dir), "model_type": arch},
    }


# ---------------------------------------------------------------------------------------------
# tensor names (the same for the three architectures)

EMBED = "model.embed_tokens.weight"
FINAL_NORM = "model.norm.weight"
LM_HEAD = "lm_head.weight"


def layer_names(i: int) -> dict:
    """Hugging Face names of layer i's tensors, by role."""
    p = f"model.layers.{i}."
    names = {
        "attn_norm": p + "input_layernorm.weight",
        "ffn_norm": p + "post_attention_layernorm.weight",
    }
    for proj in ("q", "k", "v", "o"):
        names[proj] = p + f"self_attn.{proj}_proj.weight"
        names[proj + "_bias"] = p + f"self_attn.{proj}_proj.bias"
    for proj in ("gate", "up", "down"):
        names[proj] = p + f"mlp.{proj}_proj.weight"
        names[proj + "_bias"] = p + f"mlp.{proj}_proj.bias"
    return names
