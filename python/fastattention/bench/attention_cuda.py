"""GPU attention benchmark: FastAttention's CUDA kernels vs PyTorch SDPA backends, same run.

    fastattention bench attention --device cuda [--quick] [--impl 16816]

For each shape (batch, heads, seqlen, head dim, causal, dtype) it times, with CUDA events
(median of several runs after warm-up, rotating between input sets so L2 does not hold them):
ours (the chosen MMA path), SDPA flash (FlashAttention-2), SDPA efficient (xformers' CUTLASS
kernel), SDPA cudnn, and a naive matmul-softmax-matmul; TFLOP/s counts 4 * B * H * Sq * Sk * D
multiply-adds x 2 / 2 for causal (the FlashAttention convention). A backend that cannot run a
shape prints '-'.
"""

from __future__ import annotations

import math
from typing import List, Optional

from fastattention.bench.cuda_timing import median_ms_per_call


def _flops(b, h, s, d, causal):
    f = 4.0 * b * h * s * s * d
    return f / 2 if causal else f


def _sdpa(backend_name: str):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }[backend_name]

    def run(q, k, v, causal):
        with sdpa_kernel([backend]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return run


def _naive(q, k, v, causal):
    import torch

    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        n = s.shape[-1]
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def shapes(quick: bool):
    total = 16384 if quick else 32768  # tokens per batch: batch = total / seqlen
    seqlens = [512, 2048, 8192] if quick else [512, 1024, 2048, 4096, 8192, 16384, 32768]
    dims = [128] if quick else [64, 128]
    for d in dims:
        heads = 2048 // d
        for s in seqlens:
            for causal in (False, True):
                yield max(1, total // s), heads, s, d, causal


def run(args) -> List[dict]:
    import torch

    from fastattention import ops

    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    dtype_names = [args.dtype] if getattr(args, "dtype", None) else ["float16", "bfloat16"]
    impl = getattr(args, "impl", None) or "auto"
    rows = []
    for dname in dtype_names:
        dtype = dtypes[dname]
        for b, h, s, d, causal in shapes(getattr(args, "quick", False)):
            sets = 2
            inputs = [
                [torch.randn(b, s, h, d, device="cuda", dtype=dtype) for _ in range(3)]
                for _ in range(sets)
            ]
            bhsd = [[x.transpose(1, 2) for x in xs] for xs in inputs]
            row = {
                "dtype": dname,
                "batch": b,
                "heads": h,
                "seqlen": s,
                "head_dim": d,
                "causal": causal,
            }
            flops = _flops(b, h, s, d, causal)

            def ours(i):
                q, k, v = inputs[i]
                return ops.attention(q, k, v, causal=causal, impl=impl)

            candidates = {"ours": ours}
            for name in ("flash", "efficient", "cudnn"):
                fn = _sdpa(name)
                candidates[name] = (lambda f: lambda i: f(*bhsd[i], causal))(fn)
            if s <= 8192:
                candidates["naive"] = lambda i: _naive(*bhsd[i], causal)
            for name, fn in candidates.items():
                try:
                    ms = median_ms_per_call(lambda n, fn=fn: fn(n % sets), repeats=10)
                    row[name] = flops / (ms * 1e-3) / 1e12
                except Exception:  # backend unavailable for this shape / dtype
                    row[name] = None
            rows.append(row)
            # Not `del`: ruff's F821 misreads a del of names used by a closure above
            # (astral-sh/ruff#9858). Dropping the references frees the memory.
            inputs = bhsd = None
            torch.cuda.empty_cache()
            _print_row(row)
    return rows


_COLS = ["ours", "flash", "efficient", "cudnn", "naive"]


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.0f}"


def _print_row(row) -> None:
    r_flash = row["ours"] / row["flash"] if row.get("flash") and row.get("ours") else None
    r_eff = row["ours"] / row["efficient"] if row.get("efficient") and row.get("ours") else None
    print(
        f"| {row['dtype']} | {row['batch']}x{row['heads']} | {row['seqlen']} | {row['head_dim']} | "
        f"{'yes' if row['causal'] else 'no'} | "
        + " | ".join(_fmt(row.get(c)) for c in _COLS)
        + f" | {'-' if r_flash is None else f'{r_flash:.2f}'} | {'-' if r_eff is None else f'{r_eff:.2f}'} |",
        flush=True,
    )


def print_header(device_name: str, impl: str) -> None:
    print(f"FastAttention CUDA attention (impl {impl}) on {device_name}; TFLOP/s")
    print(
        "| dtype | batch x heads | seqlen | head dim | causal | ours | SDPA flash | SDPA efficient "
        "| SDPA cudnn | naive | ours/flash | ours/efficient |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
