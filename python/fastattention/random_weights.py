"""Seeded random weights for any model config (docs/FORMAT.md), built per tensor-parallel rank in
memory, identical whatever the split.

    from fastattention import random_weights
    cfg = random_weights.config_for_tp(base_config, tp=8)       # tp_size, vocab_size_padded
    shard = random_weights.shard_tensors(cfg, rank=3, seed=0)   # {name: np.ndarray}, rank 3's shard
    session = Session.from_memory(cfg, shard)                    # under mpirun, rank 3 of 8

Every element of a logical (unsplit) tensor is a counter-based hash of (seed, tensor name,
logical row, logical column) (cpp/fastattn/models/random_weights.h has the formula), so a rank
computes exactly the elements of its shard, in any order and without building the rest: the tp=8
shards of a seed are the tp=1 tensors split as the exporter splits them (fastattention.export.tp:
fused QKV rows = this rank's q heads, then its k heads, then its v heads; fused gate/up rows; o and
down columns; vocabulary rows, with zero padding rows), and `mpirun -n 8` generates the same tokens
as one process. Nothing is written to disk (write_model does that, for testing the file path).
llama_config(vocab_size=..., hidden_size=..., ...) builds a Llama config of a given shape to start
from.

Values are uniform: linear weights with standard deviation 1 / sqrt(fan_in) of the logical
tensor, biases in [-0.1, 0.1), norm weights in [0.8, 1.2), norm biases in [-0.1, 0.1), the
embedding in [-1, 1). They make a numerically well-behaved model whose tokens mean nothing.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from fastattention._native import _C
from fastattention.export.tp import check_tp, kv_head_range

# Weight dtypes numpy can hold (bfloat16 has no numpy type).
DTYPES = {"float32": np.float32, "float16": np.float16}


def llama_config(
    *,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    intermediate_size: int,
    max_position_embeddings: int,
    dtype: str = "float32",
    tie_word_embeddings: bool = False,
) -> dict:
    """A Llama config (docs/FORMAT.md) of the given shape: tp 1 with the vocabulary unpadded,
    RMSNorm (eps 1e-5), a SwiGLU FFN, no biases, RoPE (theta 10000, neox, over the whole head, no
    scaling), no sliding window, bos 1 and eos [2]."""
    return dict(
        architecture="llama",
        dtype=dtype,
        tp_size=1,
        vocab_size=vocab_size,
        vocab_size_padded=vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        norm_type="rmsnorm",
        norm_eps=1e-5,
        activation="silu",
        gated_ffn=True,
        qkv_bias=False,
        o_bias=False,
        mlp_bias=False,
        tie_word_embeddings=tie_word_embeddings,
        rope=dict(theta=10000.0, style="neox", rotary_dim=head_dim, scaling=dict(type="none")),
        sliding_window=None,
        bos_token_id=1,
        eos_token_id=[2],
    )


def config_for_tp(config: dict, tp: int) -> dict:
    """A copy of `config` with tp_size = tp and vocab_size_padded = vocab_size rounded up to a
    multiple of tp. ValueError if tp does not split the heads or the FFN evenly."""
    check_tp(
        tp, int(config["num_heads"]), int(config["num_kv_heads"]), int(config["intermediate_size"])
    )
    out = dict(config)
    out["tp_size"] = int(tp)
    out["vocab_size_padded"] = -(-int(config["vocab_size"]) // tp) * tp
    return out


def parameter_count(config: dict) -> int:
    """Parameters of the logical model (tp-independent; vocabulary padding not counted)."""
    H, D, I, V = (
        int(config[k]) for k in ("hidden_size", "head_dim", "intermediate_size", "vocab_size")
    )
    nh, nkv = int(config["num_heads"]), int(config["num_kv_heads"])
    norm = H * (2 if config["norm_type"] == "layernorm" else 1)
    up_rows = 2 * I if config["gated_ffn"] else I
    layer = (
        2 * norm
        + (nh + 2 * nkv) * D * H
        + nh * D * H
        + up_rows * H
        + H * I
        + ((nh + 2 * nkv) * D if config["qkv_bias"] else 0)
        + (H if config["o_bias"] else 0)
        + ((up_rows + H) if config["mlp_bias"] else 0)
    )
    head = 0 if config["tie_word_embeddings"] else V * H
    return V * H + int(config["num_layers"]) * layer + norm + head


class _Spec:
    """One tensor of a rank: local shape, the logical row of each local row (-1: zero padding),
    logical column count and the shard's first logical column, value scale and shift."""

    def __init__(self, shape, rows, logical_cols=1, col_offset=0, scale=1.0, shift=0.0):
        self.shape = tuple(int(s) for s in shape)
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)
        self.logical_cols = int(logical_cols)
        self.col_offset = int(col_offset)
        self.scale = float(scale)
        self.shift = float(shift)


def _linear_scale(fan_in: int) -> float:
    return math.sqrt(3.0 / fan_in)  # U(-a, a) with a = sqrt(3 / fan_in): std 1 / sqrt(fan_in)


def _rank_specs(c: dict, rank: int) -> dict:
    """{name: _Spec} of rank `rank` (docs/FORMAT.md "Tensors of rank r")."""
    N = int(c["tp_size"])
    if not 0 <= rank < N:
        raise ValueError(f"rank {rank} out of range for tp_size {N}")
    H, D, I = int(c["hidden_size"]), int(c["head_dim"]), int(c["intermediate_size"])
    nh, nkv = int(c["num_heads"]), int(c["num_kv_heads"])
    V, Vp = int(c["vocab_size"]), int(c["vocab_size_padded"])
    if Vp < V or Vp % N:
        raise ValueError(
            f"vocab_size_padded {Vp} must be >= vocab_size {V} and a multiple of "
            f"tp_size {N} (use config_for_tp)"
        )
    hq, Ir, Vr = nh // N, I // N, Vp // N
    kv = kv_head_range(nkv, N, rank)
    vocab_rows = np.arange(rank * Vr, (rank + 1) * Vr)
    vocab_rows[vocab_rows >= V] = -1  # padding rows are zero
    qkv_rows = np.concatenate(
        [
            np.arange(rank * hq * D, (rank + 1) * hq * D),
            nh * D + np.arange(kv.start * D, kv.stop * D),
            (nh + nkv) * D + np.arange(kv.start * D, kv.stop * D),
        ]
    )
    ffn_rows = np.arange(rank * Ir, (rank + 1) * Ir)
    if c["gated_ffn"]:
        ffn_rows = np.concatenate([ffn_rows, I + ffn_rows])
    hidden_rows = np.arange(H)
    layernorm = c["norm_type"] == "layernorm"

    def norm(prefix):
        out = {prefix + ".weight": _Spec([H], hidden_rows, scale=0.2, shift=1.0)}
        if layernorm:
            out[prefix + ".bias"] = _Spec([H], hidden_rows, scale=0.1)
        return out

    specs = {"embed.weight": _Spec([Vr, H], vocab_rows, H)}
    up = "ffn.gate_up" if c["gated_ffn"] else "ffn.up"
    for i in range(int(c["num_layers"])):
        p = f"layers.{i}."
        specs.update(norm(p + "attn_norm"))
        specs[p + "attn.qkv.weight"] = _Spec(
            [len(qkv_rows), H], qkv_rows, H, scale=_linear_scale(H)
        )
        if c["qkv_bias"]:
            specs[p + "attn.qkv.bias"] = _Spec([len(qkv_rows)], qkv_rows, scale=0.1)
        specs[p + "attn.o.weight"] = _Spec(
            [H, hq * D], hidden_rows, nh * D, rank * hq * D, scale=_linear_scale(nh * D)
        )
        if c["o_bias"]:
            specs[p + "attn.o.bias"] = _Spec([H], hidden_rows, scale=0.1)
        specs.update(norm(p + "ffn_norm"))
        specs[p + up + ".weight"] = _Spec([len(ffn_rows), H], ffn_rows, H, scale=_linear_scale(H))
        if c["mlp_bias"]:
            specs[p + up + ".bias"] = _Spec([len(ffn_rows)], ffn_rows, scale=0.1)
        specs[p + "ffn.down.weight"] = _Spec(
            [H, Ir], hidden_rows, I, rank * Ir, scale=_linear_scale(I)
        )
        if c["mlp_bias"]:
            specs[p + "ffn.down.bias"] = _Spec([H], hidden_rows, scale=0.1)
    specs.update(norm("final_norm"))
    if c.get("position_embedding") == "learned":
        positions = int(c["max_position_embeddings"])
        specs["pos_embed.weight"] = _Spec([positions, H], np.arange(positions), H, scale=0.1)
    if not c["tie_word_embeddings"]:
        specs["lm_head.weight"] = _Spec([Vr, H], vocab_rows, H, scale=_linear_scale(H))
    return specs


def _numpy_dtype(config: dict):
    name = config.get("dtype", "float32")
    if name not in DTYPES:
        raise ValueError(
            f"random weights: dtype {name!r} is not supported (numpy has no "
            f"bfloat16): use one of {', '.join(DTYPES)}"
        )
    return DTYPES[name]


def shard_bytes(config: dict) -> int:
    """Bytes of one rank's shard (rank 0; every rank's is the same size)."""
    item = np.dtype(_numpy_dtype(config)).itemsize
    return sum(math.prod(s.shape) * item for s in _rank_specs(config, 0).values())


def shard_tensors(
    config: dict,
    rank: int,
    seed: int = 0,
    *,
    num_threads: int | None = None,
    progress: bool = False,
) -> dict:
    """Rank `rank`'s tensors {name: np.ndarray} for `config` (a config.json dict with tp_size and
    vocab_size_padded set; its dtype float32 or float16), from `seed`. progress: a tqdm bar."""
    return dict(iter_shard_tensors(config, rank, seed, num_threads=num_threads, progress=progress))


def iter_shard_tensors(
    config: dict,
    rank: int,
    seed: int = 0,
    *,
    num_threads: int | None = None,
    progress: bool = False,
):
    """shard_tensors one tensor at a time: yields (name, np.ndarray), each built when asked for,
    so that a caller writing them out holds one tensor at a time, not the whole shard."""
    seed = int(seed)
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    dtype = _numpy_dtype(config)
    specs = _rank_specs(config, rank)
    items = specs.items()
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"random weights (rank {rank})", unit="tensor")
    for name, s in items:
        arr = np.empty(s.shape, dtype=dtype)
        _C.fill_random_weight(
            arr,
            seed,
            name,
            s.rows,
            s.logical_cols,
            s.col_offset,
            s.scale,
            s.shift,
            0 if num_threads is None else int(num_threads),
        )
        yield name, arr


def logical_tensors(config: dict, seed: int = 0) -> dict:
    """The unsplit (tp = 1) tensors of the model: what every split of `seed` is cut from."""
    return shard_tensors(config_for_tp(config, 1), 0, seed)


def write_model(config: dict, out_dir, seed: int = 0) -> None:
    """Writes the random model as an exported model directory (config.json, rank0/ ...) for
    config's tp_size: the files hold exactly what shard_tensors builds in memory. One tensor is
    in memory at a time (a 7B float16 model: 13.5 GB of files, at most its largest tensor, the
    embedding, 262 MB, in memory); config.json is written last."""
    from fastattention.export.format import write_tensor

    cfg = {"format": "fastattention", "format_version": 1, **config}
    os.makedirs(out_dir, exist_ok=True)
    for rank in range(int(cfg["tp_size"])):
        rank_dir = os.path.join(out_dir, f"rank{rank}")
        os.makedirs(rank_dir, exist_ok=True)
        for name, arr in iter_shard_tensors(cfg, rank, seed):
            write_tensor(os.path.join(rank_dir, name + ".fat"), arr)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
