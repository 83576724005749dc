"""Where a GPU decode step goes: CUDA kernel time per step, by kernel, under the profiler.

    fastattention bench step-profile [--layers 8] [--batches 1,16] [--prompt-len 128]
                                     [--steps 32] [--cuda-graphs 1|0] [--work-dir DIR]

The `bench e2e --device cuda` model (Llama-7B shape: hidden 4096, 32 heads, intermediate 11008,
vocab 32000, random fp16 weights) cut to --layers layers: the per-layer kernels are those of the
whole model, and fewer layers build in seconds. A Session decodes --steps greedy steps after a
--prompt-len prompt per batch size (decode graphs as --cuda-graphs says; a warm-up call first so
graphs are captured); torch.profiler (CUPTI, which traces the kernels of replayed graphs too)
records the timed call. Printed per batch: the step's wall time (Session.timings), the sum of
its kernels' time, and per kernel name (shortened) us per call, calls per step, us per step and
its share, with the weight bytes the step streams and the device-to-device copy bandwidth of the
same run: (kernel time) vs (bytes / copy bandwidth) says which kernels are off the bound.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import re
import tempfile
from typing import Dict, List, Tuple

from fastattention.bench.arguments import int_list
from fastattention.bench.e2e_cuda import FULL, build_or_reuse, copy_bandwidth


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layers", type=int, default=8, help="decoder layers of the 7B shape (1..32)"
    )
    parser.add_argument("--batches", type=int_list, default=[1, 16], help="decode batch sizes")
    parser.add_argument("--prompt-len", type=int, default=128, help="prompt tokens per sequence")
    parser.add_argument("--steps", type=int, default=32, help="decode steps profiled")
    parser.add_argument(
        "--cuda-graphs",
        type=int,
        choices=(0, 1),
        default=1,
        help="1: decode steps replayed as CUDA graphs (the default), 0: eager",
    )
    parser.add_argument("--top", type=int, default=16, help="kernel rows printed per batch")
    parser.add_argument(
        "--work-dir", default=None, help="where the model is built (default: a temp dir)"
    )
    parser.add_argument("--seed", type=int, default=0)


def check_arguments(args: argparse.Namespace) -> None:
    if not 1 <= args.layers <= 32:
        raise ValueError(f"--layers must be 1..32, got {args.layers}")
    if args.prompt_len < 1 or args.steps < 1 or args.top < 1:
        raise ValueError("--prompt-len, --steps and --top must be positive")


def short_name(name: str) -> str:
    """A kernel's name without template arguments and parameter lists (readable in a table)."""
    name = re.sub(r"^void ", "", name)
    depth, out = 0, []
    for ch in name:  # drop everything inside <...> and (...)
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    short = "".join(out).strip()
    short = short.split("::")[-1] if "::" in short else short
    return short[:60] or name[:60]


def kernel_times(events) -> Dict[str, Tuple[float, int]]:
    """{kernel: (total us, calls)} of the CUDA kernels among profiler events."""
    out: Dict[str, Tuple[float, int]] = {}
    for e in events:
        if "CUDA" not in str(getattr(e, "device_type", "")):
            continue
        us = e.time_range.elapsed_us()  # a device event's own span (one kernel, copy or memset)
        total, calls = out.get(short_name(e.name), (0.0, 0))
        out[short_name(e.name)] = (total + us, calls + 1)
    return out


def step_rows(
    timed: Dict[str, Tuple[float, int]], prefill: Dict[str, Tuple[float, int]], steps: int
) -> List[Tuple[str, float, float, float]]:
    """[(kernel, us per call, calls per step, us per step)] of the decode steps, by time: the
    timed call's kernels less those of a call that only prefills (same prompts)."""
    rows = []
    for k, (us, n) in timed.items():
        pre_us, pre_n = prefill.get(k, (0.0, 0))
        if n - pre_n > 0:
            rows.append(
                (k, (us - pre_us) / (n - pre_n), (n - pre_n) / steps, (us - pre_us) / steps)
            )
    rows.sort(key=lambda r: -r[3])
    return rows


def run(args: argparse.Namespace) -> int:
    import torch
    import transformers
    from torch.profiler import ProfilerActivity, profile

    import fastattention
    from fastattention import Session

    check_arguments(args)
    batches = args.batches
    if not fastattention.cuda_available():
        raise ValueError("bench step-profile: this build has no CUDA kernels or no GPU is visible")
    transformers.utils.logging.disable_progress_bar()
    shape = dict(FULL, num_hidden_layers=args.layers)
    work = (
        tempfile.TemporaryDirectory(prefix="fastattention-step-profile-")
        if args.work_dir is None
        else None
    )
    root = args.work_dir or work.name
    try:
        _, fa_dir = build_or_reuse(torch, root, shape, args.seed)
        bandwidth = copy_bandwidth(torch)
        sess = Session(
            fa_dir,
            "cuda",
            max_batch=max(batches),
            max_seq_len=args.prompt_len + args.steps + 8,
            cuda_graphs=bool(args.cuda_graphs),
            gpu_memory_fraction=0.5,
        )
        weight_bytes = (
            sess.weight_bytes - shape["vocab_size"] * shape["hidden_size"] * 2
        )  # no embedding
        print(
            f"{torch.cuda.get_device_name()}, {datetime.date.today().isoformat()}: Llama-7B shape cut "
            f"to {args.layers} layers, fp16, decode after a {args.prompt_len}-token prompt, "
            f"{args.steps} steps, CUDA graphs {'on' if args.cuda_graphs else 'off'} "
            f"({sess.uses_cuda_graphs}); copy {bandwidth / 1e12:.2f} TB/s; weights streamed per "
            f"step {weight_bytes / 1e9:.2f} GB = {1e3 * weight_bytes / bandwidth:.3f} ms at the copy "
            f"bandwidth"
        )
        rng = torch.Generator().manual_seed(args.seed)
        for b in batches:
            prompts = torch.randint(
                3, shape["vocab_size"], (b, args.prompt_len), generator=rng
            ).tolist()
            sess.generate(prompts, max_new_tokens=4)  # warm-up: graphs captured
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                sess.generate(prompts, max_new_tokens=args.steps + 1)
                torch.cuda.synchronize()
            step_ms = sess.timings["decode_ms_per_step"]
            # The call also ran the prefill: profile it alone and take its kernels away.
            with profile(activities=[ProfilerActivity.CUDA]) as prefill_prof:
                sess.generate(prompts, max_new_tokens=1)
                torch.cuda.synchronize()
            rows = step_rows(
                kernel_times(prof.events()), kernel_times(prefill_prof.events()), args.steps
            )
            kernels_ms = sum(r[3] for r in rows) / 1e3
            print()
            print(
                f"batch {b}: {step_ms:.3f} ms/step wall, {kernels_ms:.3f} ms of kernels per step "
                f"(gaps {step_ms - kernels_ms:.3f} ms); bound (weights only) "
                f"{1e3 * weight_bytes / bandwidth:.3f} ms"
            )
            print("| kernel | us per call | calls per step | us per step | share |")
            print("|---|---:|---:|---:|---:|")
            for k, per_call, n, us in rows[: args.top]:
                print(f"| {k} | {per_call:.1f} | {n:.1f} | {us:.1f} | {us / (1e3 * step_ms):.1%} |")
        del sess
        gc.collect()
    finally:
        if work is not None:
            work.cleanup()
    return 0
