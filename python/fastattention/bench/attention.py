"""Attention kernel speed: FastAttention's CPU kernel vs torch's scaled_dot_product_attention.

    fastattention bench attention --device cpu [--seqlens 512,1024,2048,4096] [--heads 16]
                                  [--kv-heads H] [--head-dim 128] [--batch 1] [--dtype float32]
                                  [--causal both|yes|no] [--layout bhsd|bshd] [--threads N]
                                  [--warmup 2] [--repeats 5]
    python -m fastattention.bench.attention [same options]

Both run in this process on the same input tensors and the same number of threads (torch's
set_num_threads and our num_threads). Calls alternate (ours, torch, ours, torch, ...) after a
warm-up, so background load hits both alike; each time is the median of --repeats calls.

Layouts: `bhsd` (default) holds q / k / v as torch's native (batch, heads, seqlen, headdim)
contiguous tensors, and FastAttention reads the very same memory through a (batch, seqlen, heads,
headdim) view; `bshd` holds them as FlashAttention's (batch, seqlen, heads, headdim) and torch reads
a transposed view. Prints a markdown table with ms per call and the ratio torch_ms / ours_ms (> 1:
FastAttention is faster), plus the largest difference between the two outputs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

from fastattention.bench.arguments import int_list

DTYPES = ("float32", "bfloat16", "float16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cpu: this table; cuda: the GPU grid of bench/attention_cuda.py "
        "(TFLOP/s vs SDPA flash / efficient / cudnn / naive)",
    )
    parser.add_argument(
        "--impl", default="auto", help="cuda only: MMA path auto | 884 | 1688 | 16816"
    )
    parser.add_argument("--quick", action="store_true", help="cuda only: a small grid")
    parser.add_argument(
        "--seqlens",
        type=int_list,
        default="512,1024,2048,4096",
        help="comma-separated sequence lengths (queries = keys)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=16, help="query heads")
    parser.add_argument(
        "--kv-heads",
        type=int,
        default=None,
        help="KV heads (default: --heads; fewer = GQA, passed to torch with enable_gqa)",
    )
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--causal", choices=["both", "yes", "no"], default="both")
    parser.add_argument(
        "--layout",
        choices=["bhsd", "bshd"],
        default="bhsd",
        help="memory layout of the shared inputs (see the module help)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for both (default: all cores)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each first")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each (median kept)")


def _inputs(torch, args: argparse.Namespace, seqlen: int, kv_heads: int):
    """q, k, v as torch (batch, heads, seqlen, dim) tensors, and the (batch, seqlen, heads, dim)
    views of the same memory."""
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(seqlen)

    def make(heads: int):
        if args.layout == "bhsd":
            t = torch.randn(args.batch, heads, seqlen, args.head_dim, generator=gen).to(dtype)
            return t, t.transpose(1, 2)
        t = torch.randn(args.batch, seqlen, heads, args.head_dim, generator=gen).to(dtype)
        return t.transpose(1, 2), t

    (q, q4), (k, k4), (v, v4) = make(args.heads), make(kv_heads), make(kv_heads)
    return (q, k, v), (q4, k4, v4)


def _time_pair(ours, theirs, warmup: int, repeats: int):
    for _ in range(warmup):
        ours()
        theirs()
    t_ours: List[float] = []
    t_theirs: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs()
        t_theirs.append(time.perf_counter() - t0)
    return statistics.median(t_ours), statistics.median(t_theirs)


def _run_cuda(args: argparse.Namespace) -> List[Dict]:
    import torch

    from fastattention import _C
    from fastattention.bench import attention_cuda

    if not getattr(_C, "cuda_built", False):
        raise ValueError(
            "--device cuda: this build of FastAttention has no CUDA kernels "
            "(rebuild on a machine with a GPU, or with FASTATTN_CUDA=ON)"
        )
    if not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA GPU")
    args.dtype = None if args.dtype == "float32" else args.dtype  # default: float16 and bfloat16
    attention_cuda.print_header(torch.cuda.get_device_name(), args.impl)
    return attention_cuda.run(args)


def run(args: argparse.Namespace) -> List[Dict]:
    """Runs the benchmark, prints the table, returns one dict per (seqlen, causal) row."""
    if args.device == "cuda":
        return _run_cuda(args)
    import os

    import torch
    import torch.nn.functional as F

    from fastattention import _C
    from fastattention.ops import attention

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    kv_heads = args.kv_heads or args.heads
    if args.heads % kv_heads:
        raise ValueError(f"--kv-heads: {kv_heads} does not divide --heads {args.heads}")
    seqlens = args.seqlens  # int_list: argparse applies the type to the string default too
    causals = {"both": [False, True], "yes": [True], "no": [False]}[args.causal]
    gqa = kv_heads != args.heads

    print(
        f"attention, {args.dtype}, batch {args.batch}, heads {args.heads} (kv {kv_heads}), "
        f"head dim {args.head_dim}, layout {args.layout}, {threads} threads; "
        f"torch {torch.__version__}; FastAttention BLAS: {_C.blas_name()}",
        flush=True,
    )
    rows: List[Dict] = []
    for seqlen in seqlens:
        (q, k, v), (q4, k4, v4) = _inputs(torch, args, seqlen, kv_heads)
        for causal in causals:

            def ours():
                return attention(q4, k4, v4, causal=causal, num_threads=threads)

            def theirs():
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

            with torch.inference_mode():
                diff = (ours().float() - theirs().transpose(1, 2).float()).abs().max().item()
                ours_s, torch_s = _time_pair(ours, theirs, args.warmup, args.repeats)
            row = dict(
                seqlen=seqlen,
                causal=causal,
                batch=args.batch,
                heads=args.heads,
                kv_heads=kv_heads,
                head_dim=args.head_dim,
                dtype=args.dtype,
                layout=args.layout,
                threads=threads,
                ours_ms=ours_s * 1e3,
                torch_ms=torch_s * 1e3,
                ratio=torch_s / ours_s,
                max_abs_diff=diff,
            )
            rows.append(row)
            print(
                f"  seqlen {seqlen} causal {causal}: ours {row['ours_ms']:.2f} ms, "
                f"torch {row['torch_ms']:.2f} ms",
                flush=True,
            )
    print()
    print(format_table(rows))
    return rows


def format_table(rows: Sequence[Dict]) -> str:
    lines = [
        "| seqlen | causal | ours ms | torch ms | torch / ours | max abs diff |",
        "|---:|:---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seqlen']} | {'yes' if r['causal'] else 'no'} | {r['ours_ms']:.2f} | "
            f"{r['torch_ms']:.2f} | {r['ratio']:.2f}x | {r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastattention.bench.attention", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
