"""GPU small-batch linear benchmark: the weight-streaming speed of a decode step's GEMMs.

    fastattention bench gemv [--dtype float16|bfloat16] [--tokens 1,8,16] [--repeats 20]
                             [--warps 0,2,4,8] [--stages 0,1,2,3]

The Llama-7B decode-step linears (QKV 12288x4096, O 4096x4096, gate-up 22016x4096,
down 4096x11008, LM head 32000x4096 with float32 logits) at M = --tokens rows: our small-batch
GEMV (`_C.kernel_linear(impl="gemv")`, each --warps x --stages value; 0 = its default, what
`auto` runs), cuBLAS through our own call (`impl="cublas"`) and PyTorch's F.linear, as GB/s of weights
read; in the same run a device-to-device copy of the weight bytes (its bandwidth counts bytes read
+ written). Time: the median over --repeats of CUDA-event-timed runs of 20 back-to-back calls,
each over a different copy of the weights when they fit (so L2 holds none of them). Also the
max error of ours against a float64 reference and PyTorch's: a fast wrong kernel shows. Prints a
markdown table with the device and the date.
"""

from __future__ import annotations

import argparse
import datetime
from typing import List

from fastattention.bench.arguments import run_as_script
from fastattention.bench.cuda_timing import median_ms_per_call

SHAPES = (
    ("qkv", 12288, 4096),
    ("o", 4096, 4096),
    ("gate_up", 22016, 4096),
    ("down", 4096, 11008),
    ("lm_head", 32000, 4096),
)


def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16")
    parser.add_argument("--tokens", type=_int_list, default=[1, 8, 16], help="rows M (1..16)")
    parser.add_argument(
        "--warps",
        type=_int_list,
        default=[0],
        help="warps per block of our GEMV to time (0 = the heuristic)",
    )
    parser.add_argument(
        "--stages",
        type=_int_list,
        default=[0],
        help="load groups in flight per warp of our GEMV (1, 2; 0 = the default)",
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed runs (median kept)")


def run_shape(
    torch, name: str, n: int, k: int, m: int, dtype, variants: List[tuple], repeats: int
) -> dict:
    from fastattention import _C

    stream = torch.cuda.current_stream().cuda_stream
    gen = torch.Generator(device="cuda").manual_seed(n + k + m)
    w_bytes = n * k * torch.finfo(dtype).bits // 8
    copies = max(1, min(4, (8 << 30) // (w_bytes * 2)))  # rotate over copies: L2 never holds w
    ws = [
        (torch.randn(n, k, device="cuda", generator=gen) * k**-0.5).to(dtype) for _ in range(copies)
    ]
    x = torch.randn(m, k, device="cuda", generator=gen).to(dtype)
    out_dtype = torch.float32 if name == "lm_head" else dtype
    y = torch.empty(m, n, device="cuda", dtype=out_dtype)
    row = {
        "shape": name,
        "n": n,
        "k": k,
        "m": m,
        "dtype": str(dtype).replace("torch.", ""),
        "mb": w_bytes / 1e6,
    }

    def gbps(ms: float) -> float:
        return w_bytes / (ms * 1e-3) / 1e9

    ref = x.double() @ ws[0].double().T
    for wv, st in variants:
        y.fill_(float("nan"))
        _C.kernel_linear(
            x, ws[0], None, y, impl="gemv", gemv_warps=wv, gemv_stages=st, stream=stream
        )
        row[f"err_{_key(wv, st)}"] = (y.double() - ref).abs().max().item()
        ms = median_ms_per_call(
            lambda i: _C.kernel_linear(
                x,
                ws[i % copies],
                None,
                y,
                impl="gemv",
                gemv_warps=wv,
                gemv_stages=st,
                stream=stream,
            ),
            repeats,
            calls=20,
        )
        row[f"gemv_{_key(wv, st)}"] = gbps(ms)
        row[f"gemv_{_key(wv, st)}_us"] = ms * 1e3
    ms = median_ms_per_call(
        lambda i: _C.kernel_linear(x, ws[i % copies], None, y, impl="cublas", stream=stream),
        repeats,
        calls=20,
    )
    row["cublas"], row["cublas_us"] = gbps(ms), ms * 1e3
    F = torch.nn.functional
    if out_dtype == dtype:
        row["torch_err"] = (F.linear(x, ws[0]).double() - ref).abs().max().item()
        ms = median_ms_per_call(lambda i: F.linear(x, ws[i % copies]), repeats, calls=20)
        row["torch"] = gbps(ms)
    src = torch.empty(w_bytes, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    ms = median_ms_per_call(lambda i: dst.copy_(src), repeats, calls=20)
    row["copy"] = 2 * w_bytes / (ms * 1e-3) / 1e9
    # Not `del`: ruff's F821 misreads a del of names used by a closure above
    # (astral-sh/ruff#9858). Dropping the references frees the memory.
    ws = src = dst = None
    torch.cuda.empty_cache()
    return row


def _key(warps: int, stages: int) -> str:
    return f"w{warps or 'auto'}s{stages or 'auto'}"


def run(args: argparse.Namespace) -> List[dict]:
    # The options first: a bad value is reported on any machine, before the GPU is looked for.
    for m in args.tokens:
        if not 1 <= m <= 16:
            raise ValueError(
                f"--tokens: each must be 1..16 (the small-batch GEMV's range), got {m}"
            )
    for wv in args.warps:
        if not 0 <= wv <= 8:
            raise ValueError(f"--warps: each must be 0..8 (0 = the heuristic), got {wv}")
    for st in args.stages:
        if st not in (0, 1, 2, 3):
            raise ValueError(f"--stages: each must be 0, 1, 2 or 3 (0 = the default), got {st}")
    import torch

    if not torch.cuda.is_available():
        raise ValueError("bench gemv needs a CUDA GPU (torch.cuda.is_available() is False)")
    import fastattention

    if not getattr(fastattention._C, "cuda_built", False):
        raise ValueError("bench gemv needs FastAttention built with CUDA")
    variants = [(wv, st) for st in args.stages for wv in args.warps]
    dtype = getattr(torch, args.dtype)
    print(
        f"Small-batch linear on {torch.cuda.get_device_name()}, {datetime.date.today().isoformat()}, "
        f"{args.dtype}; GB/s of weights read (copy: read + written); ratio = best GEMV / copy"
    )
    heads = " | ".join(f"gemv {_key(wv, st)}" for wv, st in variants)
    print(
        f"| shape | N x K | M | MB | {heads} | cuBLAS | torch | copy | gemv/copy | gemv/cuBLAS | err | torch err |"
    )
    print("|---|---|---|---|" + "---|" * len(variants) + "---|---|---|---|---|---|---|")
    rows = []
    for m in args.tokens:
        for name, n, k in SHAPES:
            r = run_shape(torch, name, n, k, m, dtype, variants, max(1, args.repeats))
            best = max(r[f"gemv_{_key(*v)}"] for v in variants)
            cells = " | ".join(f"{r[f'gemv_{_key(*v)}']:.0f}" for v in variants)
            torch_cell = f"{r['torch']:.0f}" if "torch" in r else "-"
            err = max(r[f"err_{_key(*v)}"] for v in variants)
            torch_err = f"{r['torch_err']:.2g}" if "torch_err" in r else "-"
            print(
                f"| {name} | {n}x{k} | {m} | {r['mb']:.0f} | {cells} | {r['cublas']:.0f} | {torch_cell} "
                f"| {r['copy']:.0f} | {best / r['copy']:.2f} | {best / r['cublas']:.2f} | {err:.2g} "
                f"| {torch_err} |",
                flush=True,
            )
            rows.append(r)
    return rows


if __name__ == "__main__":
    run_as_script(__doc__, add_arguments, run)
