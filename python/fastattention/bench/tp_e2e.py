"""End-to-end tensor-parallel speed: prefill and decode of one model at N ranks, against tp=1.

    mpirun -n 1 fastattention bench tp-e2e --device cuda --json tp1.json
    mpirun -n 2 fastattention bench tp-e2e --device cuda --baseline tp1.json     # speed-up column

Every rank builds its shard of seeded random weights in memory (fastattention.random_weights: the
same model at every tp split) for --model: llama-7b (hidden 4096, 32 layers, 32 heads of 128,
SwiGLU FFN 11008, vocabulary 32000, float16: the shape of `bench e2e`), pangu-38b
(examples/configs/pangu_38b.json's shape) or a config.json path; --layers N keeps N layers. One
process per GPU (the local rank's), or CPU ranks with --device cpu. Measured, best of --repeats,
the slowest rank's (every rank runs the same steps):

  prefill tokens/s   batch 1, each --prefill-lens prompt in one prefill pass (plus the first token)
  decode ms/step     each --batches size, --new-tokens greedy steps after a --decode-prompt prompt

With --tp-overlap off the tiling-AllReduce is switched off (one GEMM, then one all-reduce), for
comparison. Only rank 0 prints: a markdown table with the device, ranks and date; with --baseline
(this bench's --json of another run, e.g. tp=1) the speed-up over it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import time

import numpy as np

from fastattention.bench.arguments import int_list

# The shape of `bench e2e`'s Llama-7B (float16 weights).
LLAMA_7B_SHAPE = dict(
    vocab_size=32000,
    hidden_size=4096,
    num_layers=32,
    num_heads=32,
    num_kv_heads=32,
    head_dim=128,
    intermediate_size=11008,
    max_position_embeddings=32768,
    dtype="float16",
)
PANGU_38B = pathlib.Path(__file__).resolve().parents[3] / "examples" / "configs" / "pangu_38b.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cuda: the local rank's GPU, NCCL; cpu: MPI over CPU ranks",
    )
    parser.add_argument(
        "--model",
        default="llama-7b",
        help="llama-7b (default), pangu-38b, or a config.json path (random weights of that shape)",
    )
    parser.add_argument("--layers", type=int, default=None, help="keep this many layers")
    parser.add_argument(
        "--prefill-lens",
        type=int_list,
        default=[2048, 8192],
        help="prefill prompt lengths, batch 1 (default 2048,8192)",
    )
    parser.add_argument(
        "--batches", type=int_list, default=[1, 16], help="decode batch sizes (default 1,16)"
    )
    parser.add_argument(
        "--decode-prompt",
        type=int,
        default=128,
        help="prompt tokens before the decode steps (default 128)",
    )
    parser.add_argument("--new-tokens", type=int, default=32, help="decode steps timed (32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, best kept (3)")
    parser.add_argument(
        "--tp-overlap",
        choices=["on", "off"],
        default="on",
        help="the tiling-AllReduce (default on)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per rank")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON (rank 0)")
    parser.add_argument(
        "--baseline",
        metavar="PATH",
        help="a --json of another run (e.g. tp=1): adds the speed-up over it",
    )


def load_config(name: str, layers: int | None) -> dict:
    if name == "llama-7b":
        from fastattention import random_weights

        cfg = random_weights.llama_config(**LLAMA_7B_SHAPE)
    else:
        path = PANGU_38B if name == "pangu-38b" else pathlib.Path(name)
        try:
            cfg = json.loads(path.read_text())
        except OSError as e:
            raise ValueError(f"--model {name}: cannot read {path} ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"--model {name}: {path} is not valid JSON ({e})") from None
    if layers is not None:
        if layers <= 0:
            raise ValueError(f"--layers must be positive, got {layers}")
        cfg["num_layers"] = layers
    return cfg


def run(args: argparse.Namespace):
    from fastattention import distributed, random_weights
    from fastattention.session import Session

    for name in ("decode_prompt", "new_tokens", "repeats"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    base = _read_baseline(args.baseline)  # before the work, so a bad path fails at once
    base_cfg = load_config(args.model, args.layers)
    distributed.abort_on_error()
    tp = distributed.world_size()
    rank = distributed.rank()
    cfg = random_weights.config_for_tp(base_cfg, tp)
    device = args.device  # "cuda": under mpirun the session takes the local rank's GPU
    t0 = time.perf_counter()
    shard = random_weights.shard_tensors(cfg, rank, seed=0, num_threads=args.threads)
    longest = max(max(args.prefill_lens) + 1, args.decode_prompt + args.new_tokens + 1)
    session = Session.from_memory(
        cfg,
        shard,
        device,
        max_batch=max(args.batches),
        max_seq_len=longest,
        prefill_chunk_tokens=max(args.prefill_lens),
        num_threads=args.threads,
        tp_overlap=args.tp_overlap == "on",
    )
    del shard
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    vocab = int(cfg["vocab_size"])

    def best(fn, key):
        fn()  # warm-up
        times = []
        for _ in range(args.repeats):
            fn()
            times.append(distributed.max_seconds(session.timings[key]))
        return min(times)

    prefill = {}
    for n in args.prefill_lens:
        prompt = [rng.integers(0, vocab, size=n).tolist()]
        s = best(lambda: session.generate(prompt, 1), "prefill_seconds")
        prefill[str(n)] = n / s
    decode = {}
    for b in args.batches:
        prompts = [rng.integers(0, vocab, size=args.decode_prompt).tolist() for _ in range(b)]
        s = best(lambda: session.generate(prompts, args.new_tokens + 1), "decode_seconds")
        decode[str(b)] = 1e3 * s / args.new_tokens
    res = dict(
        model=args.model,
        layers=int(cfg["num_layers"]),
        tp=tp,
        device=args.device,
        device_name=_device_name(args.device),
        overlap=args.tp_overlap,
        date=datetime.date.today().isoformat(),
        prefill_tokens_per_s=prefill,
        decode_ms_per_step=decode,
        load_seconds=build_s,
    )
    if rank == 0:
        print(_table(res, base))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
    return res


def _device_name(device: str) -> str:
    if device == "cpu":
        return f"CPU ({os.cpu_count()} cores)"
    import torch

    return torch.cuda.get_device_name()


def _read_baseline(path: str | None) -> dict | None:
    if not path:
        return None
    try:
        base = json.loads(pathlib.Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--baseline {path}: cannot read it as this bench's JSON ({e})") from None
    if not isinstance(base, dict) or not {
        "tp",
        "prefill_tokens_per_s",
        "decode_ms_per_step",
    } <= set(base):
        raise ValueError(
            f"--baseline {path}: not a `bench tp-e2e --json` file (needs tp, "
            "prefill_tokens_per_s and decode_ms_per_step)"
        )
    return base


def _table(res: dict, base: dict | None) -> str:
    head = (
        f"{res['model']} ({res['layers']} layers), tp {res['tp']} on {res['device_name']}, "
        f"overlap {res['overlap']}, {res['date']}"
        + (f"; speed-up over tp {base['tp']}" if base else "")
    )
    lines = [
        head,
        "",
        "| measure | tp "
        + str(res["tp"])
        + " |"
        + (f" tp {base['tp']} | speed-up |" if base else ""),
        "|---|---:|" + ("---:|---:|" if base else ""),
    ]
    for n, v in res["prefill_tokens_per_s"].items():
        row = f"| prefill {n} tokens (tokens/s) | {v:.0f} |"
        b = (base or {}).get("prefill_tokens_per_s", {}).get(n)
        if base:
            row += f" {b:.0f} | {v / b:.2f}x |" if b else " - | - |"
        lines.append(row)
    for n, v in res["decode_ms_per_step"].items():
        row = f"| decode batch {n} (ms/step) | {v:.2f} |"
        b = (base or {}).get("decode_ms_per_step", {}).get(n)
        if base:
            row += f" {b:.2f} | {b / v:.2f}x |" if b else " - | - |"
        lines.append(row)
    return "\n".join(lines)
