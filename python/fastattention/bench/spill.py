"""Spilled-KV benchmark (GPU): decode ms/step and prefill tokens/s as the GPU's KV budget shrinks.

    fastattention bench spill [--context 65536] [--host-shares 0,0.5,0.75,0.9] [--quick]
    fastattention bench spill --demo      # the 256K-token run: 262,144-token prompt, >= 75% on host

A Llama-7B-shaped model with 8 KV heads (hidden 4096, 32 layers, 32 heads, intermediate 11008,
vocab 32000) with random fp16 weights is written straight into the runtime format. For each
host share s, a session holds (1 - s) of the prompt's KV on the GPU (max_cache_tokens) and the
rest in pinned host memory (host_kv_tokens); one prompt of --context tokens is prefilled and
--new-tokens are decoded. Printed next to each: the bound set by the bytes each side must move
per decode step at its measured bandwidth (weights + GPU KV at the GPU's copy bandwidth; host KV
at the pinned host-to-device bandwidth for the stream path, or at the CPU's read bandwidth for
the cpu path, whichever the step used), and the peak GPU memory of the process.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time

FULL = dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=11008, vocab=32000)
QUICK = dict(hidden=1024, layers=4, heads=8, kv_heads=2, intermediate=2816, vocab=32000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--context",
        type=int,
        default=None,
        help="prompt tokens (default 65536; 262144 with --demo; 4096 with --quick)",
    )
    parser.add_argument(
        "--host-shares",
        default=None,
        help="shares of the KV on the host (default 0,0.5,0.75,0.9; 0.8 with --demo)",
    )
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="prefill chunk tokens (default 8192; 16384 with --demo; 1024 with --quick)",
    )
    parser.add_argument("--block", type=int, default=256, help="KV block size in tokens")
    parser.add_argument(
        "--path",
        default="auto",
        choices=["auto", "cpu", "stream"],
        help="spill_attention of the sessions",
    )
    parser.add_argument("--demo", action="store_true", help="the 256K-token run")
    parser.add_argument("--quick", action="store_true", help="a small model (smoke test)")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)


def _bandwidths(torch) -> dict:
    """GPU copy, pinned host->device, and CPU read bandwidth in bytes/s (best of 3)."""
    n = 1 << 30
    dev = torch.empty(n, dtype=torch.uint8, device="cuda")
    dev2 = torch.empty_like(dev)
    host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    cpu = torch.ones(n // 2, dtype=torch.float16)

    def best(fn, nbytes):
        t = float("inf")
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            t = min(t, time.perf_counter() - t0)
        return nbytes / t

    out = dict(
        gpu=best(lambda: dev2.copy_(dev), 2 * n),
        pcie=best(lambda: dev.copy_(host, non_blocking=True), n),
        cpu=best(lambda: cpu.sum(), n),
    )
    # Not `del`: ruff's F821 misreads a del of names used by a closure above
    # (astral-sh/ruff#9858). Dropping the references frees the memory.
    dev = dev2 = host = cpu = None
    torch.cuda.empty_cache()
    return out


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import fastattention
    from fastattention import Session
    from fastattention.bench.random_model import llama_hf_config, write_random_llama

    if not fastattention.cuda_available():
        raise ValueError("bench spill needs a CUDA build and a GPU")
    shape = QUICK if args.quick else FULL
    context = args.context or (262144 if args.demo else 4096 if args.quick else 65536)
    args.chunk = args.chunk or (16384 if args.demo else 1024 if args.quick else 8192)
    shares = [
        float(x)
        for x in (args.host_shares or ("0.8" if args.demo else "0,0.5,0.75,0.9")).split(",")
    ]
    work = (
        tempfile.TemporaryDirectory(prefix="fastattention-spill-")
        if args.work_dir is None
        else None
    )
    root = args.work_dir or work.name
    model_dir = os.path.join(root, "model")
    t0 = time.perf_counter()
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        hf = llama_hf_config(
            shape["hidden"],
            shape["layers"],
            shape["heads"],
            shape["kv_heads"],
            shape["intermediate"],
            shape["vocab"],
            max(context + 1024, 4096),
        )
        write_random_llama(model_dir, hf, "float16", args.seed)
    print(
        f"model {shape}, random fp16 weights, written in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    bw = _bandwidths(torch)
    print(
        "bandwidths (GB/s): " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in bw.items()), flush=True
    )

    kv_per_token = shape["layers"] * shape["kv_heads"] * (shape["hidden"] // shape["heads"]) * 2 * 2
    rng = np.random.default_rng(args.seed)
    prompt = [int(t) for t in rng.integers(3, shape["vocab"], size=context)]
    total = context + args.new_tokens
    rows = []
    for share in shares:
        host_tokens = int(share * total)
        device_tokens = max(total - host_tokens, args.chunk + 2 * args.block)
        if share == 0:
            device_tokens, host_tokens = total + args.block, 0
        torch.cuda.synchronize()
        s = Session(
            model_dir,
            "cuda",
            max_batch=1,
            max_seq_len=total + args.block,
            kv_block_size=args.block,
            prefill_chunk_tokens=args.chunk,
            max_cache_tokens=device_tokens,
            host_kv_tokens=host_tokens + 2 * args.block,
            spill_attention=args.path,
            verbose=True,
        )
        t1 = time.perf_counter()
        out = s.generate([prompt], max_new_tokens=args.new_tokens + 1)
        wall = time.perf_counter() - t1
        t = s.timings
        free, total_mem = torch.cuda.mem_get_info()
        host_kv = s.spilled_blocks * args.block * kv_per_token
        dev_kv = (total * kv_per_token) - host_kv
        wbytes = sum(
            os.path.getsize(os.path.join(model_dir, "rank0", f))
            for f in os.listdir(os.path.join(model_dir, "rank0"))
        )
        path = (
            "stream"
            if t["spill_stream_steps"] and not t["spill_cpu_steps"]
            else "cpu"
            if t["spill_cpu_steps"] and not t["spill_stream_steps"]
            else ("mixed" if host_kv else "-")
        )
        host_bw = bw["pcie"] if path == "stream" else bw["cpu"]
        bound_ms = 1e3 * ((wbytes + dev_kv) / bw["gpu"] + (host_kv / host_bw if host_kv else 0.0))
        rows.append(
            dict(
                share=share,
                host_gb=host_kv / 1e9,
                prefill=t["prefill_tokens_per_s"],
                decode=t["decode_ms_per_step"],
                bound=bound_ms,
                path=path,
                steps=f"{t['spill_stream_steps']}/{t['spill_cpu_steps']}",
                peak_gb=(total_mem - free) / 1e9,
                wall=wall,
            )
        )
        print(rows[-1], s.memory_plan, flush=True)
        del s, out
    base = rows[0]["prefill"] if rows and rows[0]["share"] == 0 else None
    print()
    print(
        f"{torch.cuda.get_device_name()}, {datetime.date.today().isoformat()}, fp16, "
        f"{shape['layers']} layers x hidden {shape['hidden']}, {shape['kv_heads']} KV heads, "
        f"context {context}, block {args.block}, prefill chunk {args.chunk}"
    )
    print()
    print(
        "| KV on host | host KV GB | prefill tok/s | vs no spill | decode ms/step | bound ms | "
        "decode / bound | host-part path (stream/cpu steps) | GPU memory GB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        rel = f"{r['prefill'] / base:.2f}" if base else "-"
        print(
            f"| {r['share']:.0%} | {r['host_gb']:.1f} | {r['prefill']:.0f} | {rel} | "
            f"{r['decode']:.1f} | {r['bound']:.1f} | {r['decode'] / r['bound']:.2f} | "
            f"{r['path']} ({r['steps']}) | {r['peak_gb']:.1f} |"
        )
    if work is not None:
        work.cleanup()
    return 0
