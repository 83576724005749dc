"""The `fastattention` command line.

    fastattention export   --hf HF_DIR --out MODEL_DIR [--tp N] [--dtype float16|bfloat16|float32]
    fastattention export   --ft FT_DIR --out MODEL_DIR [--tp N] [--dtype ...] [--max-positions N]
    fastattention export   --gguf FILE.gguf --out MODEL_DIR [--tp N] [--dtype ...]
    fastattention generate --model MODEL_DIR --prompt "text" [--prompt "more"] [--max-new-tokens N]
                           [--temperature T] [--top-k K] [--top-p P] [--seed S] [--threads N]
                           [--stop-text S] [--ids (prompts are token ids: --prompt "1 2 3")]
    fastattention chat     --model MODEL_DIR [--system TEXT] [--max-new-tokens N] [...]
    fastattention serve    --model MODEL_DIR [--host 127.0.0.1] [--port 8000] [--max-batch N] [...]
                           (OpenAI-compatible HTTP server; needs the serve extra)
    fastattention bench attention|e2e|decode|gemv|allreduce-overlap|tp-e2e|spill|spill-cpu|serve|cpu-step|step-profile [options]     (see `fastattention bench NAME --help`)

Exit status: 0 on success, 2 for a usage error (bad option or value), 1 when the work itself fails
(missing or bad weight files, unsupported model, ...); the message goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import List, Optional, Sequence

BENCHES = {
    "attention": "attention kernel speed: FastAttention vs a reference implementation",
    "e2e": "end-to-end prefill and decode speed: FastAttention vs transformers",
    "decode": "split-KV decode attention bandwidth (GPU): ours vs SDPA flash / cudnn and a copy",
    "allreduce-overlap": (
        "row-parallel GEMM + all-reduce, tiling-AllReduce overlap vs without (under mpirun)"
    ),
    "tp-e2e": (
        "tensor-parallel prefill and decode speed at the mpirun world size (--baseline: "
        "speed-up over a tp=1 run)"
    ),
    "spill": "spilled KV (GPU): decode and prefill speed as the GPU KV budget shrinks; --demo: 256K",
    "serve": (
        "HTTP serving load test: concurrent streaming clients, in-flight vs static batching "
        "(throughput, time to first token, inter-token latency)"
    ),
    "spill-cpu": "CPU attention over host (spilled) KV: its KV bandwidth vs a plain read loop",
    "gemv": "small-batch linear (GPU): our GEMV vs cuBLAS, weight GB/s against a copy",
    "cpu-step": "where a CPU decode step goes: per-op timings of a replayed step vs its bound",
    "step-profile": "where a GPU decode step goes: kernel time per step by kernel (torch.profiler)",
}
# Benchmarks whose module name differs from the command name.
BENCH_MODULES = {
    "allreduce-overlap": "allreduce",
    "tp-e2e": "tp_e2e",
    "spill-cpu": "spill_cpu",
    "cpu-step": "cpu_step",
    "step-profile": "step_profile",
}
DTYPES = ("float16", "bfloat16", "float32")


class CliError(Exception):
    """A failure the user can fix; printed without a traceback (exit status 1)."""


class UsageError(CliError):
    """A bad option value found after parsing: exit status 2, as argparse's own."""


INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def parse_prompt(text: str) -> List[int]:
    """'1 2 3' or '1,2,3' -> [1, 2, 3]."""
    fields = text.replace(",", " ").split()
    if not fields:
        raise argparse.ArgumentTypeError('empty prompt: expected token ids such as "1 2 3"')
    try:
        ids = [int(f) for f in fields]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad prompt {_excerpt(text)}: expected integer token ids separated by spaces, such "
            f'as "1 2 3"'
        )
    if any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError(f"bad prompt {_excerpt(text)}: token ids must be >= 0")
    if any(i > INT64_MAX for i in ids):
        raise argparse.ArgumentTypeError(
            f"bad prompt {_excerpt(text)}: a token id is out of range (at most {INT64_MAX})"
        )
    return ids


def _bounded_int(text: str, minimum: int, maximum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {_excerpt(text)}")
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    if value > maximum:
        raise argparse.ArgumentTypeError(
            f"expected {what} of at most {maximum}, got {_excerpt(text)}"
        )
    return value


def positive_int(text: str) -> int:
    return _bounded_int(text, 1, INT64_MAX, "a positive integer")


def positive_int32(text: str) -> int:
    return _bounded_int(text, 1, INT32_MAX, "a positive integer")


def non_negative_int32(text: str) -> int:
    return _bounded_int(text, 0, INT32_MAX, "an integer >= 0")


def token_id(text: str) -> int:
    return _bounded_int(text, 0, INT64_MAX, "a token id (an integer >= 0)")


def seed_value(text: str) -> int:
    return _bounded_int(text, 0, 2**64 - 1, "a seed (an integer >= 0)")


# ---------------------------------------------------------------------------------------- export
def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="convert a Hugging Face or FasterTransformer checkpoint to the FastAttention format",
        description="Convert a Hugging Face checkpoint directory (config.json + "
        "*.safetensors), a FasterTransformer GPT or GPT-NeoX checkpoint "
        "directory (config.ini + model.*.bin, any tensor-parallel "
        "split) or a llama.cpp GGUF file to a FastAttention model "
        "directory (docs/FORMAT.md), with the tokenizer if the source "
        "has one.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--hf", metavar="DIR", help="Hugging Face checkpoint directory")
    source.add_argument(
        "--ft",
        metavar="DIR",
        help="FasterTransformer checkpoint directory (the converter's <N>-gpu/ "
        "folder holding config.ini)",
    )
    source.add_argument(
        "--gguf",
        metavar="FILE",
        help="llama.cpp GGUF file (llama incl. Mistral, qwen2; F32, F16, BF16, Q8_0, "
        "Q4_0, Q4_1, Q4_K, Q5_K, Q6_K de-quantised to --dtype)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output model directory")
    p.add_argument("--tp", type=positive_int32, default=1, help="tensor-parallel size (default 1)")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float16",
        help="dtype of the exported weights (default float16)",
    )
    p.add_argument(
        "--max-positions",
        type=positive_int,
        default=None,
        metavar="N",
        help="--ft only: max_position_embeddings of the output (default: config.ini's "
        "max_pos_seq_len, else 2048)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_export, export_parser=p)


def _require_config_dir(flag: str, path: str, expected: str) -> None:
    """A directory holding a config.json, else a CliError naming the option."""
    if not os.path.isdir(path):
        raise CliError(f"{flag} {path}: no such directory")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CliError(f"{flag} {path}: no config.json {expected}")


def run_export(args: argparse.Namespace) -> int:
    if args.hf is None and args.ft is None and args.gguf is None:
        args.export_parser.error("the following arguments are required: --hf (or --ft, --gguf)")
    if args.max_positions is not None and args.ft is None:
        args.export_parser.error("--max-positions applies to --ft only")
    from fastattention.export.model_writer import check_out_dir

    if args.gguf is not None and args.ft is None and not os.path.isfile(args.gguf):
        raise CliError(f"--gguf {args.gguf}: no such file")
    source = args.ft if args.ft is not None else args.gguf if args.gguf is not None else args.hf
    try:  # before anything is written: the output must not overwrite the source
        check_out_dir(source, args.out, args.tp)
    except ValueError as e:
        raise UsageError(f"--out: {e}") from None
    if args.ft is not None:  # export_ft's errors name config.ini or the file at fault
        from fastattention.export import export_ft

        export_ft(
            args.ft,
            args.out,
            tp=args.tp,
            dtype=args.dtype,
            progress=not args.quiet,
            max_positions=args.max_positions,
        )
        source = args.ft
    elif args.gguf is not None:
        from fastattention.export.gguf import export_gguf

        export_gguf(args.gguf, args.out, tp=args.tp, dtype=args.dtype, progress=not args.quiet)
        source = args.gguf
    else:
        _require_config_dir(
            "--hf", args.hf, "in this directory (expected a Hugging Face checkpoint)"
        )
        from fastattention.export import export_hf

        export_hf(args.hf, args.out, tp=args.tp, dtype=args.dtype, progress=not args.quiet)
        source = args.hf
    print(f"exported {source} -> {args.out} (dtype {args.dtype}, tp {args.tp})")
    return 0


# -------------------------------------------------------------------------------------- generate
def add_sampling_arguments(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    """The options generate and chat share."""
    p.add_argument("--model", required=True, metavar="DIR", help="exported model directory")
    p.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = no top-k filter")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--threads", type=positive_int32, default=None, help="CPU threads (default all)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (a CUDA build)")


def check_sampling_arguments(args: argparse.Namespace) -> None:
    _require_config_dir(
        "--model", args.model, "(expected a directory written by `fastattention export`)"
    )
    if args.temperature < 0:
        raise CliError(f"--temperature must be >= 0, got {args.temperature}")
    if not 0.0 < args.top_p <= 1.0:
        raise CliError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.top_k < 0:
        raise CliError(f"--top-k must be >= 0, got {args.top_k}")
    if args.top_k > INT32_MAX:
        raise UsageError(f"--top-k must be at most {INT32_MAX}, got {args.top_k}")


def add_generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text (or tokens) from prompts",
        description="Load an exported model and generate from one or more prompts. "
        "Prompts are text (the model needs its tokenizer) and each "
        "prompt's generated text is printed; with --ids they are token "
        "ids and the new token ids are printed with the prefill/decode "
        "timings.",
    )
    add_sampling_arguments(p, max_new_tokens=16)
    p.add_argument(
        "--prompt",
        required=True,
        action="append",
        metavar="TEXT",
        help='the prompt text (with --ids: token ids, e.g. "1 2 3"); repeat the option for a batch',
    )
    p.add_argument(
        "--ids",
        action="store_true",
        help="prompts are token ids; print token ids (no tokenizer needed)",
    )
    p.add_argument(
        "--stop",
        type=token_id,
        action="append",
        default=[],
        metavar="ID",
        help="stop token id (repeatable)",
    )
    p.add_argument(
        "--stop-text",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop string (repeatable): the text is cut before it",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run_generate, generate_parser=p)


def run_generate(args: argparse.Namespace) -> int:
    if args.ids:
        try:
            args.prompt = [parse_prompt(p) for p in args.prompt]
        except argparse.ArgumentTypeError as e:
            args.generate_parser.error(f"argument --prompt: {e}")
    elif any(p == "" for p in args.prompt):
        args.generate_parser.error("argument --prompt: empty prompt")
    check_sampling_arguments(args)
    from fastattention import distributed
    from fastattention.session import Session

    session = Session(
        args.model, args.device, num_threads=args.threads, max_batch=max(len(args.prompt), 1)
    )
    if not args.ids and session.tokenizer is None:
        raise CliError(
            f"--model {args.model} has no tokenizer (tokenizer.json): pass token ids "
            f"with --ids, or export the model with its tokenizer"
        )
    outputs = session.generate(
        args.prompt,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop_tokens=tuple(args.stop),
        stop=args.stop_text or None,
    )
    timings = dict(session.timings)
    if not distributed.is_main():
        return 0  # under mpirun every rank has the same tokens: rank 0 prints them
    if not args.ids:
        return print_texts(args, outputs, timings)
    outputs = [[int(t) for t in out] for out in outputs]
    if args.json:
        print(json.dumps({"prompts": args.prompt, "outputs": outputs, "timings": timings}))
        return 0
    for i, (prompt, out) in enumerate(zip(args.prompt, outputs)):
        print(f"[{i}] prompt ({len(prompt)} tokens): {' '.join(map(str, prompt))}")
        print(f"[{i}] new    ({len(out)} tokens): {' '.join(map(str, out))}")
    print(format_timings(timings))
    return 0


def print_texts(args: argparse.Namespace, outputs, timings: dict) -> int:
    """Text mode: the generated text of each prompt on stdout, timings on stderr."""
    if args.json:
        print(
            json.dumps(
                {
                    "prompts": args.prompt,
                    "outputs": [str(o) for o in outputs],
                    "token_ids": [o.token_ids for o in outputs],
                    "finish_reasons": [o.finish_reason for o in outputs],
                    "timings": timings,
                },
                ensure_ascii=False,
            )
        )
        return 0
    for i, out in enumerate(outputs):
        print(str(out) if len(outputs) == 1 else f"[{i}] {out}")
    print(format_timings(timings), file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------ chat
def add_chat_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="interactive chat in the terminal (streamed answers)",
        description="Chat with an exported model that has a tokenizer and a chat "
        "template: type a message, the answer streams back; the "
        "conversation is kept. Ctrl-C stops the current answer; "
        "/reset forgets the conversation; /exit or Ctrl-D quits.",
    )
    add_sampling_arguments(p, max_new_tokens=512)
    p.add_argument("--system", default=None, metavar="TEXT", help="a system message")
    p.set_defaults(func=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    check_sampling_arguments(args)
    from fastattention.cli_chat import chat_loop

    return chat_loop(args)


def format_timings(t: dict) -> str:
    parts = []
    if "prefill_tokens" in t:
        parts.append(
            f"prefill: {t['prefill_tokens']} tokens in {t['prefill_seconds']:.3f} s "
            f"({t['prefill_tokens_per_s']:.1f} tokens/s)"
        )
    if "decode_steps" in t:
        parts.append(
            f"decode: {t['decode_steps']} steps in {t['decode_seconds']:.3f} s "
            f"({t['decode_ms_per_step']:.2f} ms/step)"
        )
    return "\n".join(parts) if parts else f"timings: {t}"


# ----------------------------------------------------------------------------------------- bench
def add_bench_parser(sub: argparse._SubParsersAction, load: bool = True) -> None:
    """load=False skips importing the bench modules (some import torch, which is slow)."""
    p = sub.add_parser(
        "bench",
        help="benchmarks",
        description="Benchmarks: "
        + ", ".join(f"{name} ({text})" for name, text in BENCHES.items()),
    )
    bench_sub = p.add_subparsers(dest="bench", metavar="{" + ",".join(BENCHES) + "}")
    bench_sub.required = True
    for name, text in BENCHES.items():
        bp = bench_sub.add_parser(name, help=text, description=text)
        if not load:
            continue
        try:
            module = importlib.import_module(f"fastattention.bench.{BENCH_MODULES.get(name, name)}")
        except ImportError as e:  # e.g. a benchmark needing torch in a base install
            bp.set_defaults(func=_unavailable(name, e))
            bp.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            continue
        module.add_arguments(bp)
        bp.set_defaults(func=module.run)


def _unavailable(name: str, error: ImportError):
    def run(args: argparse.Namespace) -> int:
        raise CliError(
            f'bench {name} is unavailable: {error} (install the test extra: pip install ".[test]")'
        )

    return run


# ------------------------------------------------------------------------------------------ main
def build_parser(load_benches: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastattention", description="FastAttention LLM inference runtime."
    )
    from fastattention import __version__

    parser.add_argument("--version", action="version", version=f"fastattention {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{export,generate,chat,serve,bench}")
    sub.required = True
    add_export_parser(sub)
    add_generate_parser(sub)
    add_chat_parser(sub)
    from fastattention.cli_serve import add_serve_parser

    add_serve_parser(sub)
    add_bench_parser(sub, load=load_benches)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(load_benches="bench" in argv)
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except CliError as e:
        print(f"fastattention {args.command}: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    except (ValueError, TypeError, MemoryError, OSError) as e:
        # The runtime's errors (ValueError, WeightFileError, MemoryError) name what is wrong;
        # OSError: a missing file, a read-only file system, a full disk (its message names the
        # path and the cause).
        print(f"fastattention {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    # Subcommands return an exit status; benchmarks may return their results instead (success).
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


if __name__ == "__main__":
    # `python -m fastattention.cli`: run the package's module rather than this __main__ copy, so
    # that main() catches the CliError the subcommand modules import (fastattention.cli's).
    from fastattention.cli import main as package_main

    sys.exit(package_main())
