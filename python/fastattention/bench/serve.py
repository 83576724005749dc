"""HTTP serving load test: in-flight batching vs static batching of the same requests.

    fastattention bench serve [--model DIR | --shape 135m|7b|tiny [--dtype float32|float16]
                              [--work-dir DIR]] [--device cpu|cuda|cuda:N] [--requests 64]
                              [--concurrency 16] [--max-batch 8] [--prompt-len 16,256]
                              [--output-mean 64] [--output-len 4,256] [--modes inflight,static]
                              [--seed 0] [--max-cache-tokens N] [--server-log-dir DIR]
                              [--peer llama-server [--llama-server PATH]
                               [--llama-cpp-convert PATH] [--llama-cpp-kv float16|same|...]]

For each mode, `fastattention serve` runs as its own process on 127.0.0.1 (an ephemeral port;
on --device, which the build must have;
--static-batching for static; --no-preemption for reserve: in-flight batching that reserves each
request's whole context at admission instead of preempting under KV pressure) and --concurrency clients (the official `openai` Python client,
AsyncOpenAI, streaming) send the --requests requests, each client its next one as soon as its
last one has finished. The requests are the same in every mode: prompt lengths uniform in
--prompt-len and output lengths exponential with mean --output-mean clipped to --output-len,
drawn from --seed; prompts are random token ids, outputs run to their length (ignore_eos),
greedy. Reported: output tokens/s, requests/s, time to first token (TTFT), inter-token latency
(ITL: gaps between streamed tokens, pooled over requests), time per output token (TPOT) and
end-to-end latency percentiles; and, from the server's /metrics after the run, the engine's
steps, tokens per step (prompt + generated) and busy share (time in steps over the wall time),
which tell the engine's cost apart from the HTTP side's.

Without --model, a random-weight model of --shape (135m: the SmolLM-135M shape; 7b: the Llama-7B
shape, 13.5 GB in float16; tiny) with a word-level tokenizer is written to a temporary directory
(bench/serve_model.py), or to --work-dir, where it is kept and reused by later runs of the same
shape, dtype and seed. Its weights are float16 on a GPU and float32 on the CPU unless --dtype
says otherwise. --server-log-dir keeps each mode's server output (server_MODE.log).

--peer llama-server (CPU, the random model) serves the same requests with llama.cpp's
llama-server on the same weights as a GGUF after our modes (bench/llama_server_peer.py: how it is
set up to match), one more row in the table, and compares the greedy tokens of two prompts
between our server and llama-server; without a llama-server binary or llama.cpp's conversion
script it says why the peer is skipped and runs the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from fastattention.bench import llama_server_peer
from fastattention.bench.arguments import int_list

MODES = ("inflight", "static", "reserve")
SERVER_FLAGS = {"inflight": [], "static": ["--static-batching"], "reserve": ["--no-preemption"]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help="an exported model with a tokenizer (default: a random --shape model)",
    )
    p.add_argument(
        "--shape",
        choices=("135m", "7b", "tiny"),
        default=None,
        help="shape of the random model when no --model (default 135m)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default=None,
        help="weights of the random model (default float16 on a GPU, float32 on the CPU)",
    )
    p.add_argument(
        "--work-dir",
        default=None,
        metavar="DIR",
        help="write the random model here and keep it: later runs of the same shape, dtype "
        "and seed reuse it (default: a temporary directory, removed afterwards)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="the server's device: cpu, cuda or cuda:N (a CUDA build; default cpu)",
    )
    p.add_argument("--requests", type=int, default=64, help="requests per mode (default 64)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--max-batch", type=int, default=8, help="server's running batch (default 8)")
    p.add_argument(
        "--step-tokens",
        type=int,
        default=256,
        help="server's tokens per forward pass (default 256)",
    )
    p.add_argument(
        "--prompt-len",
        type=int_list,
        default=[16, 256],
        metavar="LO,HI",
        help="prompt lengths, uniform (default 16,256)",
    )
    p.add_argument(
        "--output-len",
        type=int_list,
        default=[4, 256],
        metavar="LO,HI",
        help="output lengths are clipped to this range (default 4,256)",
    )
    p.add_argument(
        "--output-mean",
        type=float,
        default=64.0,
        help="mean of the exponential output lengths (default 64)",
    )
    p.add_argument(
        "--modes",
        default="inflight,static",
        help="comma-separated: inflight, static, reserve (default inflight,static)",
    )
    p.add_argument(
        "--max-cache-tokens",
        type=int,
        default=None,
        help="server's KV pool in tokens (default: the session's, max batch x "
        "context: no KV pressure)",
    )
    p.add_argument("--threads", type=int, default=None, help="server's CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--json",
        default=None,
        metavar="FILE",
        help="also write the results here (rewritten after each mode)",
    )
    p.add_argument(
        "--server-log-dir",
        default=None,
        metavar="DIR",
        help="write each mode's server output to DIR/server_MODE.log",
    )
    llama_server_peer.add_arguments(p)


def make_requests(args, vocab: int) -> list:
    rng = random.Random(args.seed)
    (plo, phi), (olo, ohi) = args.prompt_len, args.output_len
    reqs = []
    for _ in range(args.requests):
        n = rng.randint(plo, phi)
        out = int(min(max(round(rng.expovariate(1.0 / args.output_mean)), olo), ohi))
        reqs.append(([rng.randrange(3, vocab) for _ in range(n)], out))
    return reqs


def server_command(args, model_dir: str, mode: str, max_seq_len: int) -> list:
    """The `fastattention serve` command line of `mode` (on 127.0.0.1, an ephemeral port)."""
    cmd = [
        sys.executable,
        "-m",
        "fastattention.cli",
        "serve",
        "--model",
        model_dir,
        "--port",
        "0",
        "--device",
        args.device,
        "--max-batch",
        str(args.max_batch),
        "--step-tokens",
        str(args.step_tokens),
        "--max-seq-len",
        str(max_seq_len),
        "--served-model-name",
        "bench",
        "--log-level",
        "info",
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.max_cache_tokens:
        cmd += ["--max-cache-tokens", str(args.max_cache_tokens)]
    return cmd + SERVER_FLAGS[mode]


UVICORN = r"Uvicorn running on http://127\.0\.0\.1:(\d+)"


def fastattention_metrics(text: str) -> dict:
    """Our server's engine counters (fastattention_* in /metrics) as floats."""
    out = {}
    for line in text.splitlines():
        if line.startswith("fastattention_") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name[len("fastattention_") :]] = float(value)
    return out


class ServerProcess:
    """A server on 127.0.0.1:<ephemeral port>, stopped by SIGINT: `fastattention serve`
    (server_command) by default; another (llama-server) with the regular expression of the line
    that tells its port, a path that answers 200 once it is ready, and a parser of its /metrics
    into our server's counter names."""

    def __init__(self, cmd: list, port_line=UVICORN, health=None, metrics=fastattention_metrics):
        self.parse_metrics = metrics
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(self.proc.stdout), daemon=True
        )
        self._reader.start()
        started = time.monotonic()
        deadline = started + 600
        self.port = None
        while self.port is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start:\n" + "".join(self.lines))
            text = re.sub(r"\x1b\[[0-9;]*m", "", "".join(self.lines))  # colours, if any
            found = re.search(port_line, text)
            self.port = int(found.group(1)) if found else None
            time.sleep(0.1)
        while health is not None and not self._answers(health):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server never answered {health}:\n" + "".join(self.lines))
            time.sleep(0.2)
        self.start_seconds = time.monotonic() - started  # the model's load, mostly

    def _get(self, path: str) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
            return r.read().decode()

    def _answers(self, path: str) -> bool:
        import urllib.error

        try:
            self._get(path)
            return True
        except (urllib.error.URLError, OSError):  # 503 while loading, refused before listening
            return False

    def engine_metrics(self) -> dict:
        """The server's engine counters from its /metrics (our server's names)."""
        return self.parse_metrics(self._get("/metrics"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)  # the rest of its output

    def output_tail(self, lines: int = 40) -> str:
        return "".join(self.lines[-lines:])


async def _one(client, ids, max_tokens, record):
    sent = time.perf_counter()
    stamps, tokens = [], 0
    stream = await client.completions.create(
        model="bench",
        prompt=ids,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            stamps.append(time.perf_counter())
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    record.append(
        dict(sent=sent, stamps=stamps, done=time.perf_counter(), tokens=tokens, expected=max_tokens)
    )


async def _load(port: int, reqs: list, concurrency: int) -> list:
    import openai

    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=3600
    )
    await _one(client, reqs[0][0][:8], 2, [])  # warm-up
    todo = list(reqs)
    record: list = []

    async def worker():
        while todo:
            ids, n = todo.pop(0)
            await _one(client, ids, n, record)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()
    return record


def _pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def summarise(mode: str, record: list, engine: dict | None = None) -> dict:
    start = min(r["sent"] for r in record)
    wall = max(r["done"] for r in record) - start
    tokens = sum(r["tokens"] for r in record)
    ttft = [r["stamps"][0] - r["sent"] for r in record if r["stamps"]]
    itl = [b - a for r in record for a, b in zip(r["stamps"], r["stamps"][1:])]
    tpot = [
        (r["stamps"][-1] - r["stamps"][0]) / (len(r["stamps"]) - 1)
        for r in record
        if len(r["stamps"]) > 1
    ]
    e2e = [r["done"] - r["sent"] for r in record]
    wrong = [(r["tokens"], r["expected"]) for r in record if r["tokens"] != r["expected"]]
    if wrong:
        raise RuntimeError(
            f"{mode}: {len(wrong)} of {len(record)} requests got another number of tokens than "
            f"asked (got, asked: {', '.join(map(str, wrong[:5]))})"
        )
    engine = engine or {}
    steps = engine.get("engine_steps_total", 0.0)
    step_tokens = engine.get("prompt_tokens_total", 0.0) + engine.get("generated_tokens_total", 0.0)
    busy = engine.get("engine_step_seconds_total")  # llama-server has no such counter
    return dict(
        mode=mode,
        requests=len(record),
        wall_s=wall,
        output_tokens=tokens,
        engine_steps=int(steps),
        tokens_per_step=step_tokens / steps if steps else 0.0,
        engine_busy=None if busy is None else busy / wall,
        # streamed chunks with text != tokens: the ITL then spans tokens (a special token's
        # empty text, a character held back)
        chunks_not_tokens=sum(len(r["stamps"]) != r["tokens"] for r in record),
        preemptions=int(engine.get("preemptions_total", 0.0)),
        tokens_per_s=tokens / wall,
        requests_per_s=len(record) / wall,
        ttft_p50=_pct(ttft, 50),
        ttft_p90=_pct(ttft, 90),
        ttft_p99=_pct(ttft, 99),
        itl_p50=_pct(itl, 50),
        itl_p90=_pct(itl, 90),
        itl_p99=_pct(itl, 99),
        tpot_p50=_pct(tpot, 50),
        e2e_p50=_pct(e2e, 50),
        e2e_p90=_pct(e2e, 90),
    )


def _percent(share) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def table(results: list) -> str:
    head = (
        "| batching | tokens/s | req/s | TTFT p50 / p90 / p99 (s) | ITL p50 / p90 / p99 (ms) "
        "| TPOT p50 (ms) | latency p50 / p90 (s) | steps | tokens / step | engine busy |"
    )
    rows = [head, "|" + "---|" * 10]
    for r in results:
        rows.append(
            f"| {r['mode']} | {r['tokens_per_s']:.1f} | {r['requests_per_s']:.3f} | "
            f"{r['ttft_p50']:.2f} / {r['ttft_p90']:.2f} / {r['ttft_p99']:.2f} | "
            f"{1e3 * r['itl_p50']:.0f} / {1e3 * r['itl_p90']:.0f} / "
            f"{1e3 * r['itl_p99']:.0f} | {1e3 * r['tpot_p50']:.0f} | "
            f"{r['e2e_p50']:.2f} / {r['e2e_p90']:.2f} | {r['engine_steps']} | "
            f"{r['tokens_per_step']:.1f} | {_percent(r['engine_busy'])} |"
        )
    return "\n".join(rows)


def _check(args) -> list:
    from fastattention.cli import CliError

    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise CliError(
            f"--modes: expected a comma-separated list of {', '.join(MODES)}, got {args.modes!r}"
        )
    for name in ("requests", "concurrency", "max_batch"):
        if getattr(args, name) < 1:
            raise CliError(
                f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}"
            )
    if args.step_tokens <= args.max_batch:
        raise CliError(
            f"--step-tokens ({args.step_tokens}) must exceed --max-batch ({args.max_batch})"
        )
    for name in ("prompt_len", "output_len"):
        v = getattr(args, name)
        if len(v) != 2 or v[0] > v[1]:
            raise CliError(f"--{name.replace('_', '-')}: expected LO,HI with LO <= HI, got {v}")
    if args.output_mean <= 0:
        raise CliError(f"--output-mean must be positive, got {args.output_mean}")
    longest = args.prompt_len[1] + args.output_len[1]
    if args.max_cache_tokens is not None and args.max_cache_tokens < longest:
        raise CliError(
            f"--max-cache-tokens ({args.max_cache_tokens}) must hold the longest "
            f"request: --prompt-len + --output-len maxima = {longest} tokens"
        )
    try:
        llama_server_peer.check_arguments(args)
    except (ValueError, FileNotFoundError) as e:  # LlamaServerNotFound, ConvertScriptNotFound
        raise CliError(str(e)) from None
    if args.model is not None:
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("shape", "dtype", "work_dir")
            if getattr(args, name) is not None
        ]
        if given:
            raise CliError(
                f"{', '.join(given)}: for the random model, not with --model (its own "
                f"weights are served)"
            )
    _check_device(args.device)
    return modes


def _check_device(device: str) -> None:
    """CliError unless `device` is the CPU or a GPU that this build has and sees (checked before
    a model of gigabytes is written for a server that could not start)."""
    from fastattention._native import _C
    from fastattention.cli import CliError
    from fastattention.session import _check_device as check_name

    try:
        check_name(device)
    except ValueError as e:  # "device: 'x' is not a valid device (expected cpu, cuda or cuda:N)"
        raise CliError(f"--{e}") from None
    if device == "cpu":
        return
    if not _C.cuda_built:
        raise CliError(
            f"--device {device}: this build has no CUDA support (built for CPU only): use "
            f"--device cpu, or a CUDA build (README, On a GPU)"
        )
    count, index = _C.cuda_device_count(), int(device.partition(":")[2] or 0)
    if index >= count:
        seen = f"cuda:0..cuda:{count - 1}" if count else "none"
        raise CliError(f"--device {device}: this CUDA build sees {count} GPU(s) ({seen})")


def _random_model(args, tmp: str, max_seq_len: int) -> tuple:
    """(model_dir, config) of the random --shape model: written into --work-dir (and reused when
    an earlier run wrote the same config and seed there) or into the temporary directory tmp."""
    from fastattention import random_weights
    from fastattention.bench.serve_model import model_config, write_bench_model
    from fastattention.bench.work_dir import reuse_or_build
    from fastattention.cli import CliError

    cfg = model_config(args.shape, max_seq_len, args.dtype)
    size = random_weights.shard_bytes(cfg)
    root = args.work_dir or tmp
    name = f"random-{args.shape}-{args.dtype}"
    model_dir = os.path.join(root, name)
    os.makedirs(root, exist_ok=True)
    if args.shape == "7b" and args.device == "cpu":
        print(
            f"bench serve: warning: --shape 7b on the CPU: every decode step reads the whole "
            f"model ({size / 1e9:.1f} GB of {args.dtype} weights), seconds per step; "
            f"--device cuda is what this shape is for",
            file=sys.stderr,
            flush=True,
        )

    def build():
        shutil.rmtree(model_dir, ignore_errors=True)  # an earlier config's files
        free = shutil.disk_usage(root).free
        if free < size + 2**30:
            raise CliError(
                f"the random {args.shape} model needs {size / 1e9:.1f} GB (and 1 GiB to spare) "
                f"in {root}, which has {free / 1e9:.1f} GB free: pass a --work-dir on a "
                f"larger disk"
            )
        t0 = time.perf_counter()
        write_bench_model(cfg, model_dir, args.seed)
        params = random_weights.parameter_count(cfg)
        print(
            f"random {args.shape} model ({params:,} parameters, {args.dtype}, "
            f"{size / 1e9:.2f} GB) written to {model_dir} in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    if reuse_or_build(
        os.path.join(root, name + ".json"), {"config": cfg, "seed": args.seed}, build
    ):
        print(f"random {args.shape} model: reusing {model_dir}", file=sys.stderr, flush=True)
    return model_dir, cfg


def _measure(args, name: str, server: ServerProcess, reqs: list, probe=None) -> dict:
    """The load of `reqs` on the running `server` (stopped afterwards): summarise()'s results,
    with probe(port)'s greedy token ids as "probe_ids" when a probe is given."""
    try:
        record = asyncio.run(_load(server.port, reqs, args.concurrency))
        result = dict(
            summarise(name, record, server.engine_metrics()), server_start_s=server.start_seconds
        )
        if probe is not None:
            result["probe_ids"] = probe(server.port)
        return result
    except Exception:
        print(
            f"{name}: the load failed; the server's last output:\n{server.output_tail()}",
            file=sys.stderr,
        )
        raise
    finally:
        server.stop()
        if args.server_log_dir:
            os.makedirs(args.server_log_dir, exist_ok=True)
            with open(os.path.join(args.server_log_dir, f"server_{name}.log"), "w") as f:
                f.write("".join(server.lines))


def _run_mode(
    args, model_dir: str, mode: str, max_seq_len: int, reqs: list, probe: bool = False
) -> dict:
    """One server of `mode` under the load of `reqs`: summarise()'s results (and, with probe,
    the greedy token ids that the peer's are compared with)."""
    server = ServerProcess(server_command(args, model_dir, mode, max_seq_len))

    def token_ids(port):
        vocab = llama_server_peer.word_vocab(model_dir)
        texts = llama_server_peer.probe(port, reqs, logprobs=False)
        return [llama_server_peer.text_token_ids(vocab, text) for text in texts]

    return _measure(args, mode, server, reqs, token_ids if probe else None)


def _resolve_peer(args):
    """(llama-server binary, conversion script) for --peer, or (None, why it is skipped)."""
    from fastattention.bench import llama_cpp_peer

    try:
        server = llama_server_peer.find_llama_server(args.llama_server)
        script = llama_cpp_peer.find_convert_script(
            args.llama_cpp_convert, llama_server_peer.convert_script_candidates(server)
        )
    except FileNotFoundError as e:  # LlamaServerNotFound, ConvertScriptNotFound
        return None, f"{llama_server_peer.PEER} peer skipped: {e}"
    return (server, script), ""


def _run_peer(args, peer, model_dir: str, cfg: dict, tmp: str, max_seq_len: int, reqs: list):
    """llama-server on the GGUF of the served model under the load of `reqs`: (its results, a
    line saying what was run)."""
    from fastattention.bench.work_dir import reuse_or_build

    server_bin, script = peer
    root = args.work_dir or tmp
    gguf = os.path.join(root, f"random-{args.shape}-{args.dtype}.gguf")
    stamp = {
        "config": cfg,
        "seed": args.seed,
        "script": str(script),
        "byte_tokens": llama_server_peer.BYTE_TOKENS,
    }
    t0 = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="gguf-", dir=tmp)
    reused = reuse_or_build(
        gguf + ".json",
        stamp,
        lambda: llama_server_peer.write_gguf(model_dir, gguf, script, scratch),
    )
    shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"{llama_server_peer.PEER}: {'reusing' if reused else 'wrote'} {gguf} "
        f"({os.path.getsize(gguf) / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    cmd = llama_server_peer.server_command(server_bin, gguf, args, max_seq_len)
    server = ServerProcess(
        cmd,
        port_line=llama_server_peer.LISTENING,
        health="/health",
        metrics=llama_server_peer.engine_metrics,
    )
    result = _measure(
        args,
        llama_server_peer.PEER,
        server,
        reqs,
        lambda port: llama_server_peer.probe(port, reqs, logprobs=True),
    )
    note = (
        f"{llama_server_peer.PEER} peer: {llama_server_peer.server_version(server_bin)} "
        f"({server_bin}), GGUF by {script}: {shlex.join([os.path.basename(cmd[0])] + cmd[1:])}"
    )
    return result, note


def _write_json(args, results: list) -> None:
    with open(args.json, "w") as f:
        json.dump(
            {"args": {k: v for k, v in vars(args).items() if k != "func"}, "results": results},
            f,
            indent=2,
        )


def run(args: argparse.Namespace):
    modes = _check(args)
    import openai  # noqa: F401  (the test extra has it; fail before any work)

    if args.model is None:
        args.shape = args.shape or "135m"
        args.dtype = args.dtype or ("float32" if args.device == "cpu" else "float16")
    peer, peer_note = _resolve_peer(args) if args.peer else (None, "")
    if peer_note:
        print(peer_note, file=sys.stderr, flush=True)
    # Our server's greedy tokens are compared with the peer's: probed in one of our modes.
    probed = "inflight" if "inflight" in modes else modes[0]
    with tempfile.TemporaryDirectory(prefix="fa-bench-serve-") as tmp:
        max_seq_len = args.prompt_len[1] + args.output_len[1]
        if args.model is None:
            model_dir, cfg = _random_model(args, tmp, max_seq_len)
        else:
            model_dir = args.model
            with open(os.path.join(model_dir, "config.json")) as f:
                cfg = json.load(f)
        reqs = make_requests(args, cfg["vocab_size"])
        results = []
        for mode in modes:
            probe = peer is not None and mode == probed
            results.append(_run_mode(args, model_dir, mode, max_seq_len, reqs, probe))
            _progress(results[-1])
            if args.json:
                _write_json(args, results)  # after each mode: a run cut short keeps its results
        if peer is not None:
            result, peer_note = _run_peer(args, peer, model_dir, cfg, tmp, max_seq_len, reqs)
            results.append(result)
            _progress(results[-1])
            if args.json:
                _write_json(args, results)
    model = args.model or f"random {args.shape} ({args.dtype})"
    print(
        f"{args.requests} requests, {args.concurrency} clients, max batch {args.max_batch}, "
        f"prompts {args.prompt_len[0]}-{args.prompt_len[1]} tokens, outputs exponential mean "
        f"{args.output_mean:g} in {args.output_len[0]}-{args.output_len[1]}, seed {args.seed}, "
        f"model {model}, device {args.device}, {datetime.date.today().isoformat()}"
    )
    if peer_note:
        print(peer_note)
    print(table(results))
    by_mode = {r["mode"]: r for r in results}
    peer_name = llama_server_peer.PEER
    for other, name in (("static", "static"), ("reserve", "reserving"), (peer_name, peer_name)):
        if "inflight" in by_mode and other in by_mode:
            a, b = by_mode["inflight"], by_mode[other]
            print(
                f"in-flight / {name}: throughput x{a['tokens_per_s'] / b['tokens_per_s']:.2f}, "
                f"latency p50 x{a['e2e_p50'] / b['e2e_p50']:.2f}, TTFT p50 "
                f"x{a['ttft_p50'] / b['ttft_p50']:.2f}"
            )
    for r in results:
        if r["chunks_not_tokens"]:
            print(
                f"{r['mode']}: {r['chunks_not_tokens']} requests streamed another number of text "
                f"chunks than tokens (their ITL spans tokens)"
            )
    if peer is not None:
        print(llama_server_peer.agreement(results))
    return results


def _progress(r: dict) -> None:
    print(
        f"{r['mode']}: {r['tokens_per_s']:.1f} tokens/s, {r['wall_s']:.0f} s, "
        f"{r['engine_steps']} steps, engine busy {_percent(r['engine_busy'])} (the "
        f"server started in {r['server_start_s']:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
