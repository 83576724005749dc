"""`fastattention serve`: the OpenAI-compatible HTTP server (fastattention.server) on a model.

    fastattention serve --model DIR [--host 127.0.0.1] [--port 8000] [--device cpu]
                        [--max-batch 8] [--step-tokens 512] [--max-seq-len N] [--threads N]

Needs the `serve` extra (starlette, uvicorn): pip install 'fastattention[serve]'.
Ctrl-C (SIGINT) or SIGTERM shuts down gracefully: no new connections, running requests get
--graceful-seconds to finish, the rest are cancelled. Under `mpirun -n N` (a model exported with
--tp N) rank 0 serves HTTP and schedules; the other ranks run the same engine steps.
"""

from __future__ import annotations

import argparse
import os
import signal

SERVE_EXTRA = "pip install 'fastattention[serve]' (starlette and uvicorn)"


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    from fastattention.cli import positive_int

    p = sub.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server with in-flight batching",
        description="Serve an exported model (with its tokenizer) over HTTP: "
        "/v1/completions, /v1/chat/completions (streaming by "
        "server-sent events or not), /v1/models, /health, /metrics. "
        "Requests join and leave the running batch at every step. "
        f"Needs the serve extra: {SERVE_EXTRA}.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="exported model directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (a CUDA build)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default all)")
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=8,
        help="requests in the running batch (default 8)",
    )
    p.add_argument(
        "--step-tokens",
        type=positive_int,
        default=512,
        help="tokens of one forward pass: the decodes plus prompt chunks (default 512)",
    )
    p.add_argument(
        "--max-seq-len",
        type=positive_int,
        default=None,
        help="prompt + new tokens per request (default: the model's)",
    )
    p.add_argument(
        "--max-cache-tokens",
        type=positive_int,
        default=None,
        help="KV pool size in tokens (default: the session's)",
    )
    p.add_argument(
        "--served-model-name",
        default=None,
        help="the model id clients pass (default: the directory's name)",
    )
    p.add_argument(
        "--static-batching",
        action="store_true",
        help="admit requests only when none runs (for comparison; default: in flight)",
    )
    p.add_argument(
        "--no-preemption",
        action="store_true",
        help="reserve each request's prompt + max_tokens of KV at admission instead "
        "of preempting the youngest requests to host memory under KV pressure",
    )
    p.add_argument(
        "--max-preempted-kv-gib",
        type=float,
        default=None,
        help="host memory for the KV of preempted requests (GiB; default a quarter "
        "of the machine's memory); past it a preempted request's KV is dropped "
        "and recomputed when it resumes",
    )
    p.add_argument(
        "--graceful-seconds",
        type=float,
        default=30.0,
        help="on shutdown, how long running requests may finish (default 30)",
    )
    p.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from fastattention.cli import CliError, _require_config_dir

    gib = args.max_preempted_kv_gib
    if gib is not None and not (gib >= 0 and gib * 2**30 < 2**63):
        raise CliError(f"--max-preempted-kv-gib must be >= 0 and finite, got {gib}")
    stash_cap = (
        None if args.max_preempted_kv_gib is None else int(args.max_preempted_kv_gib * 2**30)
    )
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise CliError(f"serve needs the serve extra ({e}): {SERVE_EXTRA}") from None
    _require_config_dir(
        "--model", args.model, "(expected a directory written by `fastattention export`)"
    )
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be in 0..65535, got {args.port}")
    if args.graceful_seconds < 0:
        raise CliError(f"--graceful-seconds must be >= 0, got {args.graceful_seconds}")
    from fastattention import distributed
    from fastattention.server import Server, make_uvicorn
    from fastattention.session import Session

    step = max(args.step_tokens, args.max_batch + 1)
    session = Session(
        args.model,
        args.device,
        num_threads=args.threads,
        max_batch=args.max_batch,
        max_seq_len=args.max_seq_len,
        max_cache_tokens=args.max_cache_tokens,
        prefill_chunk_tokens=max(step, 2048),
    )
    if session.tokenizer is None:
        raise CliError(
            f"--model {args.model} has no tokenizer (tokenizer.json): export the "
            f"model with its tokenizer to serve it"
        )
    if not distributed.is_main():  # under mpirun: rank 0 serves, the others step with it
        from fastattention.engine import Engine, follow

        follow(
            Engine(
                session,
                step_tokens=step,
                static_batching=args.static_batching,
                preemption=not args.no_preemption,
                max_preempted_kv_bytes=stash_cap,
            )
        )
        return 0
    name = args.served_model_name or os.path.basename(os.path.normpath(args.model))
    server = Server(
        session,
        name,
        step_tokens=step,
        static_batching=args.static_batching,
        preemption=not args.no_preemption,
        max_preempted_kv_bytes=stash_cap,
    )
    print(
        f"serving {name} ({args.model}) on http://{args.host}:{args.port}/v1 "
        f"(max batch {args.max_batch}, {step} tokens per step, "
        f"{'static' if args.static_batching else 'in-flight'} batching)",
        flush=True,
    )

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    # uvicorn shuts down gracefully on SIGINT / SIGTERM, then re-raises the signal to the
    # handler found before it started: SIGTERM (what mpirun sends) then ends like Ctrl-C.
    signal.signal(signal.SIGTERM, interrupted)
    try:
        make_uvicorn(server, args.host, args.port, args.graceful_seconds, args.log_level).run()
    except KeyboardInterrupt:
        pass
    server.close()  # a no-op when the app's shutdown already closed it
    print("server stopped", flush=True)
    return 0
