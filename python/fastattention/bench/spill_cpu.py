"""CPU attention over host-resident (spilled) KV: its KV read bandwidth against a plain read loop.

    fastattention bench spill-cpu [--threads N] [--repeats 5] [--quick]

The host part of a spilled decode step is the CPU attention kernel over a paged KV cache (the
`attention_paged` op: decode queries, GQA groups sharing each K/V read). This benchmark prints
  read loop   a plain multi-threaded read loop (`_C.read_loop`, the same threads) over a buffer
              well beyond the caches (--buffer-mb, default 512 MiB), in GB/s;
  kernel      the attention kernel's KV bandwidth: bytes of K and V it must read (batch x context x
              KV heads x head dim x 2 x dtype size) / time, in GB/s;
  ratio       kernel / read loop (issue 14's goal: >= 0.8).
Both are timed interleaved (read loop, kernel, read loop, kernel, ...), and each number is the best
of --repeats, so that other load on the machine hits both alike; every kernel call starts with the
KV evicted from the caches by the read loop before it. The spread column is the worst / best time
of the kernel's repeats (the noise). The block table is a random permutation of the pool's
blocks, as in a pool that has seen traffic.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

# (query heads, KV heads, [(batch, context), ...])
SHAPES = {
    (32, 8): [(1, 16384), (1, 65536), (1, 131072), (4, 16384), (4, 32768)],
    (8, 1): [(1, 131072), (4, 32768), (8, 131072)],
}
QUICK = {(32, 8): [(1, 16384)], (8, 1): [(4, 32768)]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads for both the read loop and the kernel (0 = OpenMP's default)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats of each (best is kept)"
    )
    parser.add_argument("--dtypes", default="float16,bfloat16", help="KV dtypes")
    parser.add_argument("--blocks", default="16,256", help="KV block sizes in tokens")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--buffer-mb", type=int, default=512, help="read loop buffer (MiB)")
    parser.add_argument("--quick", action="store_true", help="one small shape per GQA ratio")
    parser.add_argument("--seed", type=int, default=0)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from fastattention import _C, ops

    threads = args.threads or torch.get_num_threads()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    D = args.head_dim
    buf = np.ones((args.buffer_mb << 20) // 8, dtype=np.uint64)
    _C.read_loop(buf, threads)  # fault the pages in

    def read_loop_s() -> float:
        t0 = time.perf_counter()
        _C.read_loop(buf, threads)
        return time.perf_counter() - t0

    shapes = QUICK if args.quick else SHAPES
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        elem = torch.empty((), dtype=dtype).element_size()
        for (hq, hk), cases in shapes.items():
            for block in (int(b) for b in args.blocks.split(",")):
                pool_blocks = max(b * ((c + block - 1) // block) for b, c in cases)
                k_pool = torch.empty(pool_blocks, block, hk, D, dtype=dtype).uniform_(-1, 1)
                v_pool = torch.empty_like(k_pool).uniform_(-1, 1)
                for batch, context in cases:
                    per_seq = (context + block - 1) // block
                    table = torch.from_numpy(
                        rng.permutation(pool_blocks)[: batch * per_seq]
                        .astype(np.int32)
                        .reshape(batch, per_seq)
                    )
                    q = torch.empty(batch, hq, D, dtype=dtype).uniform_(-1, 1)
                    cu_q = torch.arange(batch + 1, dtype=torch.int32)
                    lens = torch.full((batch,), context, dtype=torch.int32)

                    def kernel_s() -> float:
                        t0 = time.perf_counter()
                        ops.attention_paged(
                            q, k_pool, v_pool, cu_q, table, lens, causal=True, num_threads=threads
                        )
                        return time.perf_counter() - t0

                    kernel_s()  # warm-up (thread team, scratch)
                    tr, tk = [], []
                    for _ in range(args.repeats):
                        tr.append(read_loop_s())
                        tk.append(kernel_s())
                    kv_bytes = batch * context * hk * D * 2 * elem
                    read_bw = buf.nbytes / min(tr)
                    kern_bw = kv_bytes / min(tk)
                    rows.append(
                        dict(
                            dtype=dtype_name,
                            hq=hq,
                            hk=hk,
                            block=block,
                            batch=batch,
                            context=context,
                            kv_mb=kv_bytes / 2**20,
                            ms=1e3 * min(tk),
                            read=read_bw / 1e9,
                            kern=kern_bw / 1e9,
                            ratio=kern_bw / read_bw,
                            spread=max(tk) / min(tk),
                            read_spread=max(tr) / min(tr),
                        )
                    )
                    r = rows[-1]
                    print(
                        f"{dtype_name} {hq}/{hk} block {block} batch {batch} context {context}: "
                        f"read loop {r['read']:.1f} GB/s, kernel {r['kern']:.1f} GB/s "
                        f"({r['ms']:.1f} ms), ratio {r['ratio']:.2f}",
                        flush=True,
                    )
                # Not `del`: ruff's F821 misreads a del of names used by a closure above
                # (astral-sh/ruff#9858). Dropping the references frees the memory.
                k_pool = v_pool = None
    print()
    print(
        f"{_cpu_name()}, {os.cpu_count()} CPUs, {threads} threads, "
        f"{datetime.date.today().isoformat()}, head dim {D}, read loop over "
        f"{args.buffer_mb} MiB, best of {args.repeats} interleaved repeats"
    )
    print()
    print(
        "| KV dtype | heads q/kv | block | batch | context | KV MiB | kernel ms | read loop GB/s | "
        "kernel KV GB/s | ratio | kernel spread | read spread |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dtype']} | {r['hq']}/{r['hk']} | {r['block']} | {r['batch']} | {r['context']} | "
            f"{r['kv_mb']:.0f} | {r['ms']:.1f} | {r['read']:.1f} | {r['kern']:.1f} | "
            f"{r['ratio']:.2f} | {r['spread']:.2f} | {r['read_spread']:.2f} |"
        )
    ratios = [r["ratio"] for r in rows]
    if ratios:
        print(
            f"\nratio: min {min(ratios):.2f}, median {sorted(ratios)[len(ratios) // 2]:.2f}, "
            f"max {max(ratios):.2f} (goal >= 0.8)"
        )
    return 0
