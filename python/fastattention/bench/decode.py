"""GPU decode-attention benchmark: the split-KV decode kernel's achieved bandwidth.

    fastattention bench decode [--dtype float16|bfloat16] [--repeats 20] [--quick]
                               [--impl auto|decode|decode-async|decode-regstage] [--num-splits N]
                               [--step-shapes]

One query token per sequence (decode) against a long KV cache, for (batch 8, 32 query heads,
8 KV heads, head dim 128, KV 8K) with a paged cache (block 16) and a contiguous one, and
(batch 1, KV 128K) likewise. Bandwidth = bytes of K and V read (each byte once) / time; time is
the median over --repeats of CUDA-event-timed runs of 10 back-to-back calls. In the same run:
PyTorch SDPA's flash and cudnn backends on the same K / V held contiguously (enable_gqa=True
where the backend takes it, else K / V expanded to the query heads first, outside the timing,
marked '*': it then reads more bytes than counted), and a device-to-device copy of the same
bytes (its bandwidth counts bytes read + written). Prints a markdown table with the device name
and the date.
"""

from __future__ import annotations

import argparse
import datetime
from typing import List, Optional

from fastattention.bench.arguments import run_as_script
from fastattention.bench.cuda_timing import median_ms_per_call

DTYPES = ("float16", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="default: both")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs (median kept)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, the 8K cases only")
    parser.add_argument(
        "--impl",
        default="auto",
        help="auto | decode | decode-async | decode-regstage (force a copy path)",
    )
    parser.add_argument("--num-splits", type=int, default=0, help="0 = the heuristic")
    parser.add_argument(
        "--step-shapes",
        action="store_true",
        help="instead: a Llama-7B decode step's attention (32/32 heads, paged 16) "
        "at batch 1 and 16 and short contexts (128-2048 keys), every "
        "implementation timed as a replayed CUDA graph",
    )


def cases(quick: bool, step_shapes: bool = False):
    """(name, batch, Hq, Hk, head dim, KV length, paged block size or 0 for contiguous)."""
    if step_shapes:
        return [
            (f"b{b} kv{kv} step", b, 32, 32, 128, kv, 16)
            for b in (1, 16)
            for kv in (128, 256, 512, 1024, 2048)
        ]
    out = [
        ("b8 kv8K paged16", 8, 32, 8, 128, 8192, 16),
        ("b8 kv8K contiguous", 8, 32, 8, 128, 8192, 0),
    ]
    if not quick:
        out += [
            ("b1 kv128K paged16", 1, 32, 8, 128, 131072, 16),
            ("b1 kv128K contiguous", 1, 32, 8, 128, 131072, 0),
        ]
    return out


def _sdpa_runner(backend_name: str, q, k, v):
    """A no-argument callable running SDPA with one backend, and whether K / V were expanded."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[
        backend_name
    ]
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def gqa():
        with sdpa_kernel([backend]):
            return sdpa(q, k, v, enable_gqa=True)

    try:
        gqa()
        torch.cuda.synchronize()
        return gqa, False
    except Exception:  # backend without GQA support: expand K / V to the query heads
        rep = q.shape[1] // k.shape[1]
        ke, ve = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)

        def expanded():
            with sdpa_kernel([backend]):
                return sdpa(q, ke, ve)

        expanded()
        torch.cuda.synchronize()
        return expanded, True


def run_case(
    torch, name, batch, hq, hk, d, kv, block, dtype, repeats, impl="auto", num_splits=0, graph=False
) -> dict:
    import fastattention

    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(batch, hq, d, device="cuda", dtype=dtype, generator=gen)
    out = torch.empty_like(q)
    cu_q = torch.arange(batch + 1, device="cuda", dtype=torch.int32)
    if block:
        blocks = batch * kv // block
        k = torch.randn(blocks, block, hk, d, device="cuda", dtype=dtype, generator=gen)
        v = torch.randn_like(k)
        # Sequences own shuffled blocks, as a block manager hands them out.
        table = torch.randperm(blocks, device="cuda", generator=gen).to(torch.int32).view(batch, -1)
        layout = dict(
            block_table=table, seqlens_k=torch.full((batch,), kv, device="cuda", dtype=torch.int32)
        )
        k_seq = k[table.long()].reshape(batch, kv, hk, d)
        v_seq = v[table.long()].reshape(batch, kv, hk, d)
    else:
        k = torch.randn(batch * kv, hk, d, device="cuda", dtype=dtype, generator=gen)
        v = torch.randn_like(k)
        layout = dict(cu_seqlens_k=torch.arange(batch + 1, device="cuda", dtype=torch.int32) * kv)
        k_seq, v_seq = k.view(batch, kv, hk, d), v.view(batch, kv, hk, d)
    kv_bytes = 2 * batch * kv * hk * d * q.element_size()

    def ours():
        fastattention._C.fmha_forward(
            q,
            k,
            v,
            out,
            cu_seqlens_q=cu_q,
            max_seqlen_q=1,
            max_seqlen_k=kv,
            causal=True,
            stream=torch.cuda.current_stream().cuda_stream,
            impl=impl,
            num_splits=num_splits,
            **layout,
        )

    row = {
        "case": name,
        "dtype": str(dtype).replace("torch.", ""),
        "batch": batch,
        "heads": f"{hq}/{hk}",
        "head_dim": d,
        "kv": kv,
        "bytes": kv_bytes,
    }
    ms = median_ms_per_call(lambda n: ours(), repeats, calls=10, graph=graph)
    row["ours_us"] = ms * 1e3
    row["ours"] = kv_bytes / (ms * 1e-3) / 1e9

    # SDPA on contiguous (batch, heads, seqlen, dim) K / V: one query sees every key.
    q4 = q.view(batch, hq, 1, d)
    k4, v4 = k_seq.transpose(1, 2).contiguous(), v_seq.transpose(1, 2).contiguous()
    del k_seq, v_seq
    for backend in ("flash", "cudnn"):
        try:
            fn, expanded = _sdpa_runner(backend, q4, k4, v4)
            ms_b = median_ms_per_call(lambda n: fn(), repeats, calls=10, graph=graph)
            row[backend] = kv_bytes / (ms_b * 1e-3) / 1e9
            row[backend + "_expanded"] = expanded
        except Exception:  # backend unavailable for this shape / dtype / GPU
            row[backend] = None
    # Our output against SDPA in float32, so a fast wrong kernel shows.
    ref = torch.nn.functional.scaled_dot_product_attention(
        q4.float(), k4.float(), v4.float(), enable_gqa=True
    )
    row["max_err"] = (out.float() - ref.view(batch, hq, d)).abs().max().item()
    del k4, v4, ref

    src = torch.empty(kv_bytes, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    ms_c = median_ms_per_call(lambda n: dst.copy_(src), repeats, calls=10, graph=graph)
    row["copy"] = 2 * kv_bytes / (ms_c * 1e-3) / 1e9
    row["ours_vs_copy"] = row["ours"] / row["copy"]
    return row


def _fmt(x: Optional[float], expanded: bool = False) -> str:
    return "-" if x is None else f"{x:.0f}{'*' if expanded else ''}"


def print_header(device_name: str) -> None:
    print(
        f"FastAttention split-KV decode attention on {device_name}, "
        f"{datetime.date.today().isoformat()}; GB/s of K + V read (copy: read + written)"
    )
    print(
        "| dtype | case | batch | Hq/Hk | D | KV | ours us | ours GB/s | SDPA flash | SDPA cudnn "
        "| D2D copy | ours/copy | max err |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def print_row(r: dict) -> None:
    print(
        f"| {r['dtype']} | {r['case']} | {r['batch']} | {r['heads']} | {r['head_dim']} | {r['kv']} "
        f"| {r['ours_us']:.1f} | {r['ours']:.0f} | {_fmt(r.get('flash'), r.get('flash_expanded', False))} "
        f"| {_fmt(r.get('cudnn'), r.get('cudnn_expanded', False))} | {r['copy']:.0f} "
        f"| {r['ours_vs_copy']:.2f} | {r['max_err']:.2g} |",
        flush=True,
    )


def run(args: argparse.Namespace) -> List[dict]:
    import torch

    if not torch.cuda.is_available():
        raise ValueError("bench decode needs a CUDA GPU (torch.cuda.is_available() is False)")
    import fastattention

    if not getattr(fastattention._C, "cuda_built", False):
        raise ValueError("bench decode needs FastAttention built with CUDA")
    dtypes = [args.dtype] if args.dtype else list(DTYPES)
    repeats = 5 if args.quick else max(1, args.repeats)
    print_header(torch.cuda.get_device_name())
    if args.impl != "auto" or args.num_splits:
        print(f"impl {args.impl}, num_splits {args.num_splits or 'heuristic'}")
    rows = []
    for dname in dtypes:
        for case in cases(args.quick, getattr(args, "step_shapes", False)):
            row = run_case(
                torch,
                *case,
                getattr(torch, dname),
                repeats,
                args.impl,
                args.num_splits,
                graph=getattr(args, "step_shapes", False),
            )
            print_row(row)
            rows.append(row)
            torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    run_as_script(__doc__, add_arguments, run)
