"""Tensor-parallel splitting of full (unsplit) weights into the per-rank tensors of docs/FORMAT.md.

Weights are [out_features, in_features]. Column-parallel layers (QKV, gate/up) split their output
rows, row-parallel layers (o, down) split their input columns and are all-reduced after, the
embedding and LM head split the (padded) vocabulary rows.

Attention heads: with N ranks, rank r owns query heads r*hq .. (r+1)*hq - 1 (hq = num_heads / N).
When N <= num_kv_heads it owns KV heads r*hk .. (r+1)*hk - 1 (hk = num_kv_heads / N), which are
exactly the KV heads its query heads read (query head j reads KV head j // (num_heads /
num_kv_heads)). When N > num_kv_heads (N a multiple of it) each KV head is replicated on
N / num_kv_heads consecutive ranks: rank r holds KV head r // (N / num_kv_heads), the one all of
its query heads read.
"""

from __future__ import annotations

import numpy as np


def check_tp_value(tp) -> None:
    if not isinstance(tp, (int, np.integer)) or isinstance(tp, bool) or tp < 1:
        raise ValueError(f"tp must be a positive integer, got {tp!r}")


def check_tp(tp, num_heads: int, num_kv_heads: int, intermediate_size: int) -> None:
    """ValueError unless tp splits the heads and the FFN evenly."""
    check_tp_value(tp)
    if num_heads % tp:
        raise ValueError(f"tp={tp} does not divide num_heads={num_heads}")
    if num_kv_heads % tp and tp % num_kv_heads:
        raise ValueError(
            f"tp={tp} neither divides nor is a multiple of num_kv_heads={num_kv_heads}"
        )
    if intermediate_size % tp:
        raise ValueError(f"tp={tp} does not divide intermediate_size={intermediate_size}")


def kv_head_range(num_kv_heads: int, tp: int, rank: int) -> range:
    """The KV heads rank `rank` holds (one replicated head when tp > num_kv_heads)."""
    if tp <= num_kv_heads:
        hk = num_kv_heads // tp
        return range(rank * hk, (rank + 1) * hk)
    first = rank // (tp // num_kv_heads)
    return range(first, first + 1)


def column_shard(w: np.ndarray, tp: int, rank: int) -> np.ndarray:
    """Rows rank*n/tp .. (rank+1)*n/tp of a weight or bias (axis 0 = output features)."""
    rows = w.shape[0] // tp
    return w[rank * rows : (rank + 1) * rows]


def row_shard(w: np.ndarray, tp: int, rank: int) -> np.ndarray:
    """Input columns rank*n/tp .. (rank+1)*n/tp of a [out, in] weight."""
    cols = w.shape[1] // tp
    return w[:, rank * cols : (rank + 1) * cols]


def qkv_shard(
    q, k, v, num_heads: int, num_kv_heads: int, head_dim: int, tp: int, rank: int
) -> np.ndarray:
    """Rank's fused QKV rows: its q heads, then its k heads, then its v heads.

    q: [num_heads * head_dim, ...], k and v: [num_kv_heads * head_dim, ...] (weights or biases).
    """
    q_part = column_shard(q, tp, rank)
    kv = kv_head_range(num_kv_heads, tp, rank)
    rows = slice(kv.start * head_dim, kv.stop * head_dim)
    return np.concatenate([q_part, k[rows], v[rows]], axis=0)


def gate_up_shard(gate: np.ndarray, up: np.ndarray, tp: int, rank: int) -> np.ndarray:
    """Rank's gate rows followed by its up rows."""
    return np.concatenate([column_shard(gate, tp, rank), column_shard(up, tp, rank)], axis=0)


def pad_vocab(w: np.ndarray, vocab_size_padded: int) -> np.ndarray:
    """Appends zero rows up to vocab_size_padded."""
    extra = vocab_size_padded - w.shape[0]
    if extra == 0:
        return w
    return np.concatenate([w, np.zeros((extra,) + w.shape[1:], dtype=w.dtype)], axis=0)


def vocab_shard(w_padded: np.ndarray, tp: int, rank: int) -> np.ndarray:
    """Rows rank*Vr .. (rank+1)*Vr of the padded embedding / LM head."""
    return column_shard(w_padded, tp, rank)
