"""The model writer the exporters share (Hugging Face, FasterTransformer, GGUF): Exporter reads each
source tensor once, converts and splits it over the ranks and writes it (docs/FORMAT.md);
write_model runs its plan and writes config.json last."""

from __future__ import annotations

import json
import os

import numpy as np

from fastattention.export import hf_config as hfmap
from fastattention.export import tokenizer_files
from fastattention.export import tp as tpsplit
from fastattention.export.checkpoint import Checkpoint
from fastattention.export.format import (
    FLOAT_DTYPES,
    bfloat16_bits_to_float32,
    convert_float,
    write_tensor,
)


def check_dtype(dtype) -> None:
    if dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"--dtype '{dtype}' is not supported; choose one of {', '.join(FLOAT_DTYPES)}"
        )


class Exporter:
    """Reads each source tensor once, converts it to the target dtype, splits it over the ranks
    and writes rank{r}/NAME.fat. Its plan (tasks) names tensors as Hugging Face does; the GGUF
    export maps its names to those, the FasterTransformer export overrides the plan."""

    def __init__(self, ckpt: Checkpoint, cfg: dict, out_dir: str):
        self.ckpt = ckpt
        self.cfg = cfg
        self.out_dir = out_dir
        self.tp = cfg["tp_size"]
        self.dtype = cfg["dtype"]

    # -- helpers --------------------------------------------------------------------------------
    def load(self, hf_name: str, shape) -> np.ndarray:
        """The source tensor converted to the storage dtype (bfloat16 as uint16 bits)."""
        src = self.ckpt.get(hf_name, expected_shape=shape)
        out = convert_float(src, self.dtype)
        if self.dtype != "float32":
            widened = bfloat16_bits_to_float32(out) if self.dtype == "bfloat16" else out
            if not np.isfinite(widened).all() and np.isfinite(src).all():
                biggest = float(np.abs(src).max())
                raise ValueError(
                    f"tensor '{hf_name}' in {self.ckpt.hf_dir} has values beyond "
                    f"the {self.dtype} range (largest magnitude {biggest:g}); export "
                    f"with a wider --dtype"
                )
        return out

    def write(self, name: str, per_rank) -> None:
        for rank, array in enumerate(per_rank):
            path = os.path.join(self.out_dir, f"rank{rank}", f"{name}.fat")
            write_tensor(path, np.ascontiguousarray(array), self.dtype)

    def replicated(self, name, hf_name, shape):
        array = self.load(hf_name, shape)
        self.write(name, [array] * self.tp)

    def vocab_parallel(self, name, hf_name):
        c = self.cfg
        full = tpsplit.pad_vocab(
            self.load(hf_name, (c["vocab_size"], c["hidden_size"])), c["vocab_size_padded"]
        )
        self.write(name, [tpsplit.vocab_shard(full, self.tp, r) for r in range(self.tp)])

    def qkv(self, name, names, suffix):
        c = self.cfg
        d, h = c["head_dim"], c["hidden_size"]
        tail = (h,) if suffix == "" else ()
        q = self.load(names["q" + suffix], (c["num_heads"] * d,) + tail)
        k = self.load(names["k" + suffix], (c["num_kv_heads"] * d,) + tail)
        v = self.load(names["v" + suffix], (c["num_kv_heads"] * d,) + tail)
        self.write(
            name,
            [
                tpsplit.qkv_shard(q, k, v, c["num_heads"], c["num_kv_heads"], d, self.tp, r)
                for r in range(self.tp)
            ],
        )

    def gate_up(self, name, names, suffix):
        c = self.cfg
        shape = (c["intermediate_size"],) + ((c["hidden_size"],) if suffix == "" else ())
        gate = self.load(names["gate" + suffix], shape)
        up = self.load(names["up" + suffix], shape)
        self.write(name, [tpsplit.gate_up_shard(gate, up, self.tp, r) for r in range(self.tp)])

    def row_parallel(self, name, hf_name, shape):
        w = self.load(hf_name, shape)
        self.write(name, [tpsplit.row_shard(w, self.tp, r) for r in range(self.tp)])

    # -- the plan -------------------------------------------------------------------------------
    def tasks(self) -> list:
        """(output name, method, args) for every output tensor, in file order; the method
        writes the tensor for every rank when called as method(name, *args)."""
        c = self.cfg
        h, d, i_size = c["hidden_size"], c["head_dim"], c["intermediate_size"]
        tasks = [("embed.weight", self.vocab_parallel, (hfmap.EMBED,))]
        for i in range(c["num_layers"]):
            n, p = hfmap.layer_names(i), f"layers.{i}."
            tasks.append((p + "attn_norm.weight", self.replicated, (n["attn_norm"], (h,))))
            tasks.append((p + "attn.qkv.weight", self.qkv, (n, "")))
            if c["qkv_bias"]:
                tasks.append((p + "attn.qkv.bias", self.qkv, (n, "_bias")))
            tasks.append(
                (p + "attn.o.weight", self.row_parallel, (n["o"], (h, c["num_heads"] * d)))
            )
            if c["o_bias"]:
                tasks.append((p + "attn.o.bias", self.replicated, (n["o_bias"], (h,))))
            tasks.append((p + "ffn_norm.weight", self.replicated, (n["ffn_norm"], (h,))))
            tasks.append((p + "ffn.gate_up.weight", self.gate_up, (n, "")))
            if c["mlp_bias"]:
                tasks.append((p + "ffn.gate_up.bias", self.gate_up, (n, "_bias")))
            tasks.append((p + "ffn.down.weight", self.row_parallel, (n["down"], (h, i_size))))
            if c["mlp_bias"]:
                tasks.append((p + "ffn.down.bias", self.replicated, (n["down_bias"], (h,))))
        tasks.append(("final_norm.weight", self.replicated, (hfmap.FINAL_NORM, (h,))))
        if not c["tie_word_embeddings"]:
            tasks.append(("lm_head.weight", self.vocab_parallel, (hfmap.LM_HEAD,)))
        return tasks


def check_out_dir(src_dir: str, out_dir: str, tp: int) -> None:
    """Refuses an output directory whose writes would land among the source checkpoint's files:
    the source itself (however spelled: symbolic links, '..', bind mounts), or an output whose
    rank folders are the source or hold it. Raises ValueError naming both, before anything is
    written. (An output in a subfolder of the source is fine: the export writes only
    out_dir/config.json and out_dir/rank*/.)"""
    src, out = os.path.realpath(src_dir), os.path.realpath(out_dir)
    if out == src or (os.path.isdir(out) and os.path.isdir(src) and os.path.samefile(out, src)):
        raise ValueError(
            f"out_dir {out_dir!r} is the source checkpoint directory {src_dir!r}: "
            f"the export would overwrite its config.json; choose another directory"
        )
    for rank in range(tp):
        rank_dir = os.path.join(out, f"rank{rank}")
        if os.path.commonpath([rank_dir, src]) == rank_dir:
            raise ValueError(
                f"the source checkpoint {src_dir!r} is inside {rank_dir!r}, which "
                f"the export writes to; choose another out_dir"
            )


def write_model(exporter: Exporter, progress: bool = True, extra_files=None) -> dict:
    """Runs every task of `exporter` into its out_dir (rank{r}/NAME.fat), writes extra_files
    ({file name: text}, e.g. the tokenizer's), then writes its config as config.json, last and
    atomically, so a directory with a config.json is complete. Shared by the exporters (Hugging
    Face, FasterTransformer, GGUF). Returns the config dict."""
    cfg, out_dir, tp = exporter.cfg, exporter.out_dir, exporter.tp
    config_path = os.path.join(out_dir, "config.json")
    if os.path.exists(config_path):
        os.remove(config_path)  # a stale config must not describe half-rewritten tensors
    tokenizer_files.remove_stale(out_dir)  # nor a tokenizer of another model
    for rank in range(tp):
        os.makedirs(os.path.join(out_dir, f"rank{rank}"), exist_ok=True)

    tasks = exporter.tasks()
    from tqdm.auto import tqdm

    with tqdm(
        total=len(tasks),
        desc=f"export tp={tp} {exporter.dtype}",
        unit="tensor",
        disable=not progress,
    ) as bar:
        for name, method, args in tasks:
            bar.set_postfix_str(name, refresh=False)
            method(name, *args)
            bar.update(1)

    tokenizer_files.write_files(out_dir, extra_files or {})
    tmp = f"{config_path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.replace(tmp, config_path)
    return cfg
