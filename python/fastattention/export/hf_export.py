"""Hugging Face checkpoint directory -> FastAttention model directory (docs/FORMAT.md)."""

from __future__ import annotations

import os

from fastattention.export import hf_config as hfmap
from fastattention.export import tokenizer_files
from fastattention.export import tp as tpsplit
from fastattention.export.checkpoint import Checkpoint
from fastattention.export.model_writer import Exporter, check_dtype, check_out_dir, write_model


def export_hf(hf_dir, out_dir, tp=1, dtype="float16", progress=True) -> dict:
    """Exports a Hugging Face checkpoint (llama / qwen2 / mistral) to the runtime format.

    hf_dir: a directory with config.json and model.safetensors (or a sharded
    model.safetensors.index.json, or pytorch_model.bin[.index.json] when torch is installed).
    out_dir: created if needed; gets config.json and rank0 .. rank{tp-1}/*.fat, and the
    tokenizer files (tokenizer.json, tokenizer_config.json, chat template) the checkpoint has,
    checked against its vocab_size before anything is written. config.json is written last, so
    an interrupted export leaves no config behind.
    tp: tensor-parallel size. dtype: float32 | float16 | bfloat16 (round to nearest even).
    Returns the written config dict. Bad input raises ValueError naming what is wrong.
    """
    hf_dir, out_dir = os.fspath(hf_dir), os.fspath(out_dir)
    check_dtype(dtype)
    tpsplit.check_tp_value(tp)
    tp = int(tp)
    check_out_dir(hf_dir, out_dir, tp)
    hf = hfmap.read_hf_config(hf_dir)
    cfg = hfmap.runtime_config(hf, hf_dir, tp, dtype, hfmap.read_generation_config(hf_dir))
    tpsplit.check_tp(tp, cfg["num_heads"], cfg["num_kv_heads"], cfg["intermediate_size"])
    ckpt = Checkpoint(hf_dir)
    tokenizer = tokenizer_files.read_tokenizer_files(hf_dir, cfg["vocab_size"])
    return write_model(Exporter(ckpt, cfg, out_dir), progress, tokenizer)
