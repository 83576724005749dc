"""A random-weight model written straight into the runtime format (no Hugging Face checkpoint),
for GPU benchmarks of large shapes: the weights are drawn on the GPU with torch (seeded), so a
7B-shaped model is written in seconds instead of built, saved and exported."""

from __future__ import annotations

import json
import os

from fastattention.export import hf_config as hfmap
from fastattention.export.format import write_tensor


def llama_hf_config(
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    vocab: int,
    max_positions: int,
) -> dict:
    return dict(
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )


def write_random_llama(
    out_dir: str, hf_config: dict, dtype: str = "float16", seed: int = 0
) -> dict:
    """Writes config.json and rank0/*.fat for a tp=1 Llama with N(0, 0.02) weights and unit
    norms; returns the runtime config."""
    import torch

    os.makedirs(os.path.join(out_dir, "rank0"), exist_ok=True)
    with open(os.path.join(out_dir, "source_config.json"), "w") as f:
        json.dump(hf_config, f)
    cfg = hfmap.runtime_config(hf_config, out_dir, 1, dtype)
    cfg["source"] = {"type": "random", "seed": seed}
    h, d, i = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
    qkv = (cfg["num_heads"] + 2 * cfg["num_kv_heads"]) * d
    gen = torch.Generator(device="cuda").manual_seed(seed)
    tdtype = getattr(torch, dtype)

    def put(name, *shape, norm=False):
        if norm:
            t = torch.ones(shape, dtype=tdtype)
        else:
            t = (
                (torch.randn(shape, generator=gen, device="cuda", dtype=torch.float32) * 0.02)
                .to(tdtype)
                .cpu()
            )
        write_tensor(os.path.join(out_dir, "rank0", name + ".fat"), t, dtype)

    put("embed.weight", cfg["vocab_size"], h)
    for layer in range(cfg["num_layers"]):
        p = f"layers.{layer}."
        put(p + "attn_norm.weight", h, norm=True)
        put(p + "attn.qkv.weight", qkv, h)
        put(p + "attn.o.weight", h, cfg["num_heads"] * d)
        put(p + "ffn_norm.weight", h, norm=True)
        put(p + "ffn.gate_up.weight", 2 * i, h)
        put(p + "ffn.down.weight", h, i)
    put("final_norm.weight", h, norm=True)
    put("lm_head.weight", cfg["vocab_size"], h)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return cfg
