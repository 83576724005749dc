"""Attention ops on numpy arrays and torch tensors: FlashAttention-2 (the C++ CPU kernel; on torch
CUDA tensors the CUDA kernels: FlashAttention-2 for prefill, split-KV decode for paged caches,
float32 and few queries per sequence).

Layouts follow FlashAttention:

    attention(q, k, v)                 q (batch, seqlen_q, Hq, D), k / v (batch, seqlen_k, Hk, D)
    attention_varlen(q, k, v, cu_q, cu_k)          q (total_q, Hq, D), k / v (total_k, Hk, D)
    attention_paged(q, k_cache, v_cache, cu_q, block_table, seqlens_k)
                                       k_cache / v_cache (num_blocks, block_size, Hk, D)

Hq must be a multiple of Hk (grouped-query / multi-query attention). Masks are aligned to the
bottom right, as with a KV cache: query i of a sequence with Sq queries and Sk keys sits at
position i + Sk - Sq, and `causal` lets it see keys j <= i + Sk - Sq. `window=(left, right)`
limits it to keys in [pos - left, pos + right] (-1 = unbounded). `alibi_slopes` (float32, [Hq]
or [batch, Hq]) adds -slope * |pos - j| to the scores. A query that sees no key gets a zero
output (and lse = -inf).

Arrays are passed to C++ without copies (DLPack): q / k / v may be strided views (for example
slices of a fused QKV buffer) as long as the head dim is contiguous. The output has the type and
dtype of q; q, k / v and the output may be float32, float16 or bfloat16. numpy has no bfloat16
type: bfloat16 works through torch tensors (torch.bfloat16). Read-only numpy arrays are copied
(DLPack cannot export them), torch tensors that require grad are detached (no autograd).

Bad arguments raise ValueError naming the argument.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from fastattention._native import _C

__all__ = ["attention", "attention_varlen", "attention_paged"]

_NUMPY_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))


def _torch():
    return sys.modules.get("torch")


def _is_torch(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _shape(x: Any) -> Tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _tensor(x: Any, name: str) -> Any:
    """A numpy array or torch tensor the C++ side can view; float data only."""
    if _is_torch(x):
        torch = _torch()
        if x.requires_grad:
            x = x.detach()
        if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(
                f"{name}: dtype {x.dtype} is not supported (expected float32, float16 or bfloat16)"
            )
        return x
    if isinstance(x, np.ndarray):
        if x.dtype not in _NUMPY_FLOATS:
            raise ValueError(
                f"{name}: dtype {x.dtype} is not supported (expected float32 or "
                "float16; bfloat16 through torch tensors)"
            )
        return x if x.flags.writeable else x.copy()
    raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")


def _int32(x: Any, name: str, ndim: int) -> Any:
    """Index arrays (cu_seqlens, block tables, lengths) as int32, converting lists / int64."""
    if _is_torch(x):
        torch = _torch()
        if x.dtype != torch.int32:
            if x.is_floating_point():
                raise ValueError(f"{name}: expected integers, got dtype {x.dtype}")
            x = x.to(torch.int32)
        arr = x
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{name}: expected integers, got dtype {arr.dtype}")
        if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
            raise ValueError(f"{name}: values do not fit in int32")
        arr = np.ascontiguousarray(arr, dtype=np.int32)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {_shape(arr)}")
    return arr


def _on_cuda(x: Any) -> bool:
    return _is_torch(x) and x.is_cuda


def _index_for(q: Any, arr: Any) -> Any:
    """An int32 index array on q's device (a torch CUDA tensor when q is on the GPU)."""
    if not _on_cuda(q):
        return arr.cpu().numpy() if _is_torch(arr) else arr
    torch = _torch()
    if _is_torch(arr):
        return arr.to(device=q.device, dtype=torch.int32)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int32)).to(q.device)


def _device_args(q: Any, impl: str) -> dict:
    """impl / stream arguments of _C.fmha_forward: CUDA tensors run on torch's current stream."""
    if not isinstance(impl, str):
        raise ValueError(f"impl: expected a string, got {impl!r}")
    if not _on_cuda(q):
        if impl != "auto":
            raise ValueError(
                f"impl: '{impl}' selects a CUDA kernel; q is not a CUDA tensor "
                "(the CPU kernel takes impl='auto')"
            )
        return {}
    return dict(impl=impl, stream=_torch().cuda.current_stream(q.device).cuda_stream)


def _slopes(x: Any, q: Any) -> Any:
    """ALiBi slopes as contiguous float32 where q lives (a torch CUDA tensor for GPU q)."""
    if x is None:
        return None
    if _is_torch(x):
        x = x.detach().float().contiguous()
    else:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if _on_cuda(q):
        x = (x if _is_torch(x) else _torch().from_numpy(x)).to(q.device)
    return x


def _empty_like_q(q: Any, shape: Sequence[int]) -> Any:
    if _is_torch(q):
        return _torch().empty(tuple(shape), dtype=q.dtype, device=q.device)
    return np.empty(tuple(shape), dtype=q.dtype)


def _empty_f32(q: Any, shape: Sequence[int]) -> Any:
    if _is_torch(q):
        torch = _torch()
        return torch.empty(tuple(shape), dtype=torch.float32, device=q.device)
    return np.empty(tuple(shape), dtype=np.float32)


_INT32_MAX = 2**31 - 1


def _small_int(name: str, value: Any, minimum: int) -> int:
    """An int argument that the kernels keep in an int32: TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if not minimum <= value <= _INT32_MAX:
        raise ValueError(f"{name}: must be in {minimum}..{_INT32_MAX}, got {value}")
    return value


def _options(
    causal: bool,
    window: Sequence[int],
    softmax_scale: Optional[float],
    num_threads: Any = 0,
    num_splits: Any = 0,
) -> dict:
    try:
        left, right = (int(w) for w in window)
    except (TypeError, ValueError):
        raise ValueError(f"window: expected a pair (left, right) of ints, got {window!r}") from None
    if left < -1 or right < -1:
        raise ValueError(f"window: sizes must be >= -1 (-1 = unbounded), got {tuple(window)}")
    if left > _INT32_MAX or right > _INT32_MAX:  # any size past the longest sequence is unbounded
        left, right = min(left, _INT32_MAX), min(right, _INT32_MAX)
    num_threads = _small_int("num_threads", num_threads, 0)
    num_splits = _small_int("num_splits", num_splits, 0)
    scale = 0.0
    if softmax_scale is not None:
        scale = float(softmax_scale)
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(
                f"softmax_scale: expected a finite value > 0 (or None for "
                f"1/sqrt(head dim)), got {softmax_scale}"
            )
        # The kernels take the scale as a float32: refuse what float32 would turn into 0, a
        # denormal or inf rather than compute with another scale than the one asked for.
        if not _F32_TINY <= scale <= _F32_MAX:
            raise ValueError(
                f"softmax_scale: {softmax_scale} is outside float32's normal range "
                f"[{_F32_TINY:.3g}, {_F32_MAX:.3g}]"
            )
    return dict(
        causal=bool(causal),
        window_left=left,
        window_right=right,
        softmax_scale=scale,
        num_threads=num_threads,
        num_splits=num_splits,
    )


_F32_TINY = float(np.finfo(np.float32).tiny)
_F32_MAX = float(np.finfo(np.float32).max)


def _check_qkv_heads(q: Any, k: Any, v: Any) -> None:
    """Shape / dtype agreement of q, k, v (heads and head dim are the last two dims)."""
    if _shape(k) != _shape(v):
        raise ValueError(f"v: shape {_shape(v)} differs from k's {_shape(k)}")
    if k.dtype != v.dtype:
        raise ValueError(f"k and v must have the same dtype, got {k.dtype} and {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"head dims of q ({q.shape[-1]}) and k ({k.shape[-1]}) differ")
    if k.shape[-2] == 0 or q.shape[-2] % k.shape[-2] != 0:
        raise ValueError(
            f"q has {q.shape[-2]} heads, not a multiple of the {k.shape[-2]} KV heads of k"
        )


def _mergeable(x: Any) -> bool:
    """True if the (batch, seqlen) dims of x can be viewed as one token dim without a copy."""
    b, s = x.shape[0], x.shape[1]
    stride = x.stride() if _is_torch(x) else tuple(st // x.itemsize for st in x.strides)
    return b == 1 or s == 1 or stride[0] == s * stride[1]


def _merge(x: Any) -> Any:
    return x.reshape((x.shape[0] * x.shape[1],) + tuple(x.shape[2:]))


def attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool = False,
    window: Sequence[int] = (-1, -1),
    alibi_slopes: Any = None,
    softmax_scale: Optional[float] = None,
    return_lse: bool = False,
    num_threads: int = 0,
    impl: str = "auto",
    num_splits: int = 0,
) -> Any:
    """Attention over batches of equal-length sequences.

    q: (batch, seqlen_q, Hq, D); k, v: (batch, seqlen_k, Hk, D). Returns out (batch, seqlen_q, Hq, D)
    of q's type and dtype, and with return_lse also lse float32 (batch, Hq, seqlen_q) (natural log
    of the softmax denominators of the scaled scores). On torch CUDA tensors the GPU kernels run on
    the current stream; impl ("auto" | "884" | "1688" | "16816" | "decode" | "decode-async" |
    "decode-regstage") forces a kernel, so every path can be tested on one GPU; num_splits fixes the split-KV decode
    kernel's split count (0 = heuristic, 1 = no split).
    """
    q, k, v = _tensor(q, "q"), _tensor(k, "k"), _tensor(v, "v")
    dev = _device_args(q, impl)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(
                f"{name}: expected 4 dimensions (batch, seqlen, heads, headdim), "
                f"got shape {_shape(x)}"
            )
    _check_qkv_heads(q, k, v)
    if k.shape[0] != q.shape[0]:
        raise ValueError(f"k: batch size {k.shape[0]} differs from q's {q.shape[0]}")
    opts = _options(causal, window, softmax_scale, num_threads, num_splits)
    batch, sq, hq, d = _shape(q)
    sk = int(k.shape[1])
    slopes = _slopes(alibi_slopes, q)
    out = _empty_like_q(q, (batch, sq, hq, d))
    lse = _empty_f32(q, (batch, hq, sq)) if return_lse else None
    if batch == 0 or sq == 0:
        return (out, lse) if return_lse else out

    if all(_mergeable(x) for x in (q, k, v)) and (lse is None or batch == 1):
        # One call over all sequences: (batch, seqlen) viewed as the token dim.
        cu_q = _index_for(q, np.arange(batch + 1, dtype=np.int32) * sq)
        cu_k = _index_for(q, np.arange(batch + 1, dtype=np.int32) * sk)
        _C.fmha_forward(
            _merge(q),
            _merge(k),
            _merge(v),
            _merge(out),
            lse[0] if lse is not None else None,
            cu_seqlens_q=cu_q,
            cu_seqlens_k=cu_k,
            alibi_slopes=slopes,
            max_seqlen_q=sq,
            max_seqlen_k=sk,
            **dev,
            **opts,
        )
    else:
        # Views that cannot merge their batch and token dims (or a per-sequence LSE layout): one
        # call per sequence, still without copies.
        cu_q = _index_for(q, np.array([0, sq], dtype=np.int32))
        cu_k = _index_for(q, np.array([0, sk], dtype=np.int32))
        if slopes is not None and slopes.ndim == 2 and slopes.shape[0] != batch:
            raise ValueError(
                f"alibi_slopes: expected shape ({hq},) or ({batch}, {hq}), got {_shape(slopes)}"
            )
        for b in range(batch):
            sl = slopes[b] if slopes is not None and slopes.ndim == 2 else slopes
            _C.fmha_forward(
                q[b],
                k[b],
                v[b],
                out[b],
                lse[b] if lse is not None else None,
                cu_seqlens_q=cu_q,
                cu_seqlens_k=cu_k,
                alibi_slopes=sl,
                max_seqlen_q=sq,
                max_seqlen_k=sk,
                **dev,
                **opts,
            )
    return (out, lse) if return_lse else out


def _packed_outputs(q: Any, return_lse: bool) -> Tuple[Any, Any]:
    """out like packed q (total_q, Hq, D) and, with return_lse, lse float32 (Hq, total_q)."""
    out = _empty_like_q(q, _shape(q))
    lse = _empty_f32(q, (q.shape[1], q.shape[0])) if return_lse and q.ndim == 3 else None
    return out, lse


def _check_max_seqlen(value: Optional[int], cu: Any, name: str) -> None:
    if value is None:
        return
    lengths = np.diff(np.asarray(cu.cpu() if _is_torch(cu) else cu, dtype=np.int64))
    longest = int(lengths.max()) if lengths.size else 0
    if int(value) < longest:
        raise ValueError(f"{name}: {value} is smaller than the longest sequence ({longest})")


def attention_varlen(
    q: Any,
    k: Any,
    v: Any,
    cu_seqlens_q: Any,
    cu_seqlens_k: Any,
    *,
    max_seqlen_q: Optional[int] = None,
    max_seqlen_k: Optional[int] = None,
    causal: bool = False,
    window: Sequence[int] = (-1, -1),
    alibi_slopes: Any = None,
    softmax_scale: Optional[float] = None,
    return_lse: bool = False,
    num_threads: int = 0,
    impl: str = "auto",
    num_splits: int = 0,
) -> Any:
    """Attention over a batch of sequences of different lengths, packed along the token dim.

    q: (total_q, Hq, D), k / v: (total_k, Hk, D); sequence b owns q rows cu_seqlens_q[b] ..
    cu_seqlens_q[b + 1] and k / v rows cu_seqlens_k[b] .. cu_seqlens_k[b + 1] (int arrays of
    batch + 1 entries starting at 0). max_seqlen_q / max_seqlen_k are accepted for FlashAttention
    compatibility and checked (on CUDA tensors they spare device-to-host copies of the cu_seqlens).
    impl / num_splits: as in attention(). Returns out (total_q, Hq, D), and with return_lse also
    lse float32 (Hq, total_q).
    """
    q, k, v = _tensor(q, "q"), _tensor(k, "k"), _tensor(v, "v")
    dev = _device_args(q, impl)
    cu_q = _int32(cu_seqlens_q, "cu_seqlens_q", 1)
    cu_k = _int32(cu_seqlens_k, "cu_seqlens_k", 1)
    if not _on_cuda(q):  # on the GPU this would be a synchronising copy per call
        _check_max_seqlen(max_seqlen_q, cu_q, "max_seqlen_q")
        _check_max_seqlen(max_seqlen_k, cu_k, "max_seqlen_k")
    cu_q, cu_k = _index_for(q, cu_q), _index_for(q, cu_k)
    slopes = _slopes(alibi_slopes, q)
    opts = _options(causal, window, softmax_scale, num_threads, num_splits)
    out, lse = _packed_outputs(q, return_lse)
    _C.fmha_forward(
        q,
        k,
        v,
        out,
        lse,
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        alibi_slopes=slopes,
        max_seqlen_q=int(max_seqlen_q or 0),
        max_seqlen_k=int(max_seqlen_k or 0),
        **dev,
        **opts,
    )
    return (out, lse) if return_lse else out


def attention_paged(
    q: Any,
    k_cache: Any,
    v_cache: Any,
    cu_seqlens_q: Any,
    block_table: Any,
    seqlens_k: Any,
    *,
    max_seqlen_q: Optional[int] = None,
    max_seqlen_k: Optional[int] = None,
    causal: bool = False,
    window: Sequence[int] = (-1, -1),
    alibi_slopes: Any = None,
    softmax_scale: Optional[float] = None,
    return_lse: bool = False,
    num_threads: int = 0,
    impl: str = "auto",
    num_splits: int = 0,
) -> Any:
    """Attention of packed queries against a paged KV cache (prefill chunks and decode).

    q: (total_q, Hq, D); k_cache / v_cache: (num_blocks, block_size, Hk, D); block_table
    (batch, max_blocks) int: key j of sequence b lives in block block_table[b][j // block_size];
    seqlens_k (batch,) int: keys per sequence (the queries are the last ones, so decode is
    seqlen_q = 1 with causal=True). On torch CUDA tensors the split-KV decode kernel runs on the
    current stream (index arrays are moved to q's device); max_seqlen_q / max_seqlen_k spare
    reading the index arrays back there, num_splits fixes its split count (0 = heuristic), impl
    "decode-async" / "decode-regstage" force its cp.async / register-staged copy path. Returns
    out (total_q, Hq, D), and with return_lse also lse float32 (Hq, total_q).
    """
    q, k_cache, v_cache = _tensor(q, "q"), _tensor(k_cache, "k_cache"), _tensor(v_cache, "v_cache")
    dev = _device_args(q, impl)
    cu_q = _int32(cu_seqlens_q, "cu_seqlens_q", 1)
    table = _int32(block_table, "block_table", 2)
    lengths = _int32(seqlens_k, "seqlens_k", 1)
    if not _on_cuda(q):
        _check_max_seqlen(max_seqlen_q, cu_q, "max_seqlen_q")
    cu_q, table, lengths = _index_for(q, cu_q), _index_for(q, table), _index_for(q, lengths)
    opts = _options(causal, window, softmax_scale, num_threads, num_splits)
    out, lse = _packed_outputs(q, return_lse)
    _C.fmha_forward(
        q,
        k_cache,
        v_cache,
        out,
        lse,
        cu_seqlens_q=cu_q,
        block_table=table,
        seqlens_k=lengths,
        alibi_slopes=_slopes(alibi_slopes, q),
        max_seqlen_q=int(max_seqlen_q or 0),
        max_seqlen_k=int(max_seqlen_k or 0),
        **dev,
        **opts,
    )
    return (out, lse) if return_lse else out
