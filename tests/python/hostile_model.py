"""A tiny random model for the hostile-input tests (no transformers needed): its config and a
writer of the exported directory."""

from __future__ import annotations

import copy

TINY_CONFIG = {
    "format": "fastattention",
    "format_version": 1,
    "architecture": "llama",
    "dtype": "float32",
    "tp_size": 1,
    "vocab_size": 64,
    "vocab_size_padded": 64,
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "num_kv_heads": 2,
    "head_dim": 16,
    "intermediate_size": 48,
    "max_position_embeddings": 128,
    "norm_type": "rmsnorm",
    "norm_eps": 1e-5,
    "activation": "silu",
    "gated_ffn": True,
    "qkv_bias": False,
    "o_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "rope": {"theta": 10000.0, "style": "neox"},
}


def tiny_config() -> dict:
    return copy.deepcopy(TINY_CONFIG)


def write_tiny_model(path, seed: int = 0) -> dict:
    from fastattention import random_weights

    cfg = tiny_config()
    random_weights.write_model(cfg, path, seed=seed)
    return cfg
