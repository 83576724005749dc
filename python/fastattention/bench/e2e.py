"""End-to-end CPU benchmark: FastAttention Session vs Hugging Face transformers.

    fastattention bench e2e --device cpu [--threads N] [--prompt-len 512] [--new-tokens 64] [--quick]

A ~100M-parameter Llama-shaped model (hidden 768, 12 layers, 12 heads, intermediate 2048, vocab
32000; --model-shape 1b: TinyLlama-1.1B's shape) with random weights is built as a transformers
LlamaForCausalLM, saved, and exported with our exporter in float32, bfloat16 and float16. In one
process, on the same threads:

  prefill tokens/s   batch 1, a --prompt-len prompt
  decode ms/step     batch 1, --new-tokens greedy tokens after a --decode-prompt-len prompt

for transformers float32 (its fastest CPU path: torch.inference_mode, SDPA attention, KV cache;
prefill is a forward over the prompt with the LM head on the last position only, as generate()
does; decode a manual greedy loop feeding past_key_values) and for our
Session with each exported dtype. Prints a markdown table with ratios against transformers.
With --peer llama.cpp (bench/llama_cpp_peer.py) llama.cpp joins them through llama-cpp-python, on
the same checkpoint converted to GGUF at each dtype, with a table of our speed over its speed;
without llama-cpp-python or llama.cpp's conversion script the peer is skipped, saying why.
After a warm-up call of each, --repeats rounds run every engine in turn (so load from elsewhere
on the machine falls on all of them alike) and the best time of each is kept.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

FULL_MODEL = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=2048,
    vocab_size=32000,
)
QUICK_MODEL = dict(
    hidden_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=512,
    vocab_size=32000,
)
# --model-shape 1b: TinyLlama-1.1B's shape (1.10B parameters, GQA 32 / 4, untied 32,000 vocab):
# 4.4 GB of float32 weights, so the whole bench (transformers, our float32 and bfloat16 sessions,
# llama.cpp's GGUFs) needs ~18 GB of memory.
ONE_B_MODEL = dict(
    hidden_size=2048,
    num_hidden_layers=22,
    num_attention_heads=32,
    num_key_value_heads=4,
    intermediate_size=5632,
    vocab_size=32000,
)
MODEL_SHAPES = {"134m": FULL_MODEL, "1b": ONE_B_MODEL}


@dataclass
class Engine:
    """One engine under test: prefill() -> seconds, decode() -> seconds per step; decode() leaves
    its greedy tokens in `tokens`."""

    engine: str
    weights: str
    prefill: Callable[[], float]
    decode: Callable[[], float]
    tokens: List[int] = field(default_factory=list)
    # Bytes one decode step reads (weights + KV at the mean context of the timed steps); 0 where
    # not known (transformers).
    step_bytes: float = 0.0


@dataclass
class Result:
    engine: str
    weights: str
    prefill_tokens_per_s: float
    decode_ms_per_step: float
    decode_tokens: List[int]
    step_bytes: float = 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cpu: a ~100M Llama on CPU threads; cuda: a Llama-7B shape on the "
        "GPU (bench/e2e_cuda.py)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for both engines (default: all cores)"
    )
    parser.add_argument(
        "--prompt-len",
        type=int,
        default=None,
        help="prefill prompt length (default 512; 64 with --quick)",
    )
    parser.add_argument(
        "--decode-prompt-len",
        type=int,
        default=None,
        help="prompt length before decoding (default 128; 32 with --quick)",
    )
    parser.add_argument(
        "--new-tokens", type=int, default=None, help="decode steps (default 64; 8 with --quick)"
    )
    parser.add_argument(
        "--model-shape",
        choices=sorted(MODEL_SHAPES),
        default="134m",
        help="cpu: the random model's shape: 134m (hidden 768, 12 layers, 12 heads; the default) "
        "or 1b (TinyLlama-1.1B: hidden 2048, 22 layers, 32 heads / 4 KV heads, intermediate "
        "5632; ~18 GB of memory for the whole bench)",
    )
    parser.add_argument(
        "--kv-heads",
        type=int,
        default=None,
        help="KV heads (default: the shape's own, 12 = MHA for 134m, 4 for 1b; 4 = GQA for 134m)",
    )
    parser.add_argument(
        "--dtypes",
        default="float32,bfloat16,float16",
        help="comma-separated weight dtypes of our sessions",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds, each running every engine once; best kept (default 5; 1 with --quick)",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="where the checkpoint and exports go (default: a temporary dir)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--busy-neighbour",
        action="store_true",
        help="cpu: then measure decode again with one CPU-bound neighbour "
        "process per two cores, in --repeats rounds alternating with idle "
        "ones (medians and ranges reported)",
    )
    from fastattention.bench import llama_cpp_peer
    from fastattention.bench.e2e_cuda import add_cuda_arguments

    llama_cpp_peer.add_arguments(parser)
    add_cuda_arguments(parser)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a 2-layer hidden-256 model and short prompts (a smoke test)",
    )


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    quick = args.quick
    defaults = dict(
        prompt_len=(64, 512), decode_prompt_len=(32, 128), new_tokens=(8, 64), repeats=(1, 5)
    )
    for name, (q, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, q if quick else full)
    if args.threads is None:
        args.threads = os.cpu_count() or 1
    if args.kv_heads is None:
        shape = QUICK_MODEL if quick else MODEL_SHAPES[args.model_shape]
        args.kv_heads = shape.get("num_key_value_heads", shape["num_attention_heads"])
    for name in ("threads", "prompt_len", "decode_prompt_len", "new_tokens", "repeats", "kv_heads"):
        if getattr(args, name) <= 0:
            raise ValueError(
                f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}"
            )
    args.dtype_list = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in args.dtype_list:
        if d not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"--dtypes: unknown dtype {d!r} (expected float32, bfloat16, float16)")
    return args


def build_checkpoint(hf_dir: str, args: argparse.Namespace) -> Dict[str, int]:
    """A random-initialised LlamaForCausalLM saved as a Hugging Face checkpoint."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = dict(QUICK_MODEL if args.quick else MODEL_SHAPES[args.model_shape])
    shape.pop("num_key_value_heads", None)
    heads = shape["num_attention_heads"]
    kv_heads = min(args.kv_heads, heads)
    if heads % kv_heads:
        raise ValueError(f"--kv-heads {args.kv_heads} must divide the {heads} attention heads")
    max_len = max(args.prompt_len, args.decode_prompt_len + args.new_tokens) + 16
    config = LlamaConfig(
        **shape,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max(2048, max_len),
        tie_word_embeddings=False,
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(hf_dir)
    params = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    return dict(shape, num_key_value_heads=kv_heads, params=params)


def transformers_engine(
    hf_dir: str, prompt: np.ndarray, decode_prompt: np.ndarray, args: argparse.Namespace
) -> Engine:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        hf_dir, dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    ids = torch.from_numpy(prompt.astype(np.int64))[None]
    dids = torch.from_numpy(decode_prompt.astype(np.int64))[None]
    # The LM head over the last position only, as generate() does in its prefill.
    params = inspect.signature(model.forward).parameters
    last_only = next(
        ({name: 1} for name in ("logits_to_keep", "num_logits_to_keep") if name in params), {}
    )
    engine = Engine("transformers", "float32", lambda: 0.0, lambda: 0.0)

    @torch.inference_mode()
    def prefill() -> float:
        t0 = time.perf_counter()
        model(input_ids=ids, use_cache=True, **last_only)
        return time.perf_counter() - t0

    @torch.inference_mode()
    def decode() -> float:
        out = model(input_ids=dids, use_cache=True, **last_only)
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens = [int(nxt)]
        # The first token comes from the prefill; each step feeds one token and picks the next.
        t0 = time.perf_counter()
        for _ in range(args.new_tokens - 1):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(int(nxt))
        elapsed = time.perf_counter() - t0
        engine.tokens = tokens
        return elapsed / max(args.new_tokens - 1, 1)

    engine.prefill, engine.decode = prefill, decode
    return engine


def decode_step_bytes(session, context: float) -> float:
    """Bytes a batch-1 decode step of `session` reads: every weight but the embedding rows it
    does not gather (the whole table when the LM head is tied to it), plus the KV cache of
    `context` tokens in the session's KV dtype."""
    c = session.config
    embedding = (
        0
        if c["tie_word_embeddings"]
        else (c["vocab_size_padded"] * c["hidden_size"] * {"float32": 4}.get(c["dtype"], 2))
    )
    kv_elem = {"float32": 4, "float16": 2, "bfloat16": 2}[session.options.kv_dtype]
    kv = context * c["num_layers"] * 2 * c["num_kv_heads"] * c["head_dim"] * kv_elem
    return session.weight_bytes - embedding + kv


def read_bandwidth(threads: int, mb: int = 1024, repeats: int = 5) -> float:
    """Bytes per second a plain multi-threaded read loop (_C.read_loop, `threads` threads) reaches
    over a buffer far beyond the caches: best of `repeats`."""
    from fastattention import _C

    buf = np.ones((mb << 20) // 8, dtype=np.uint64)
    _C.read_loop(buf, threads)  # fault the pages in
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _C.read_loop(buf, threads)
        best = min(best, time.perf_counter() - t0)
    return buf.nbytes / best


def session_engine(
    model_dir: str,
    dtype: str,
    prompt: np.ndarray,
    decode_prompt: np.ndarray,
    args: argparse.Namespace,
) -> Engine:
    from fastattention.session import Session

    session = Session(
        model_dir,
        num_threads=args.threads,
        max_batch=1,
        max_seq_len=max(len(prompt), len(decode_prompt) + args.new_tokens) + 8,
    )
    prompt_ids = [int(t) for t in prompt]
    decode_ids = [int(t) for t in decode_prompt]
    engine = Engine("fastattention", dtype, lambda: 0.0, lambda: 0.0)

    def prefill() -> float:
        session.generate([prompt_ids], 1)
        return session.timings["prefill_seconds"]

    def decode() -> float:
        out = session.generate([decode_ids], args.new_tokens)
        engine.tokens = [int(t) for t in out[0]]
        t = session.timings
        if t["decode_steps"] <= 0:
            raise RuntimeError(f"session {dtype}: no decode steps were timed ({t})")
        return t["decode_seconds"] / t["decode_steps"]

    engine.prefill, engine.decode = prefill, decode
    engine.step_bytes = decode_step_bytes(session, len(decode_ids) + (args.new_tokens + 1) / 2)
    return engine


# Pause before each timed call: thread pools spin for a while after their last job (OpenBLAS's
# workers for up to ~0.1 s, OpenMP's for a few ms), which would steal cores from the next engine.
SETTLE_SECONDS = 0.25


def measure(engines: List[Engine], prompt_len: int, repeats: int) -> List[Result]:
    """A warm-up call of each, then `repeats` rounds that run every engine in turn (so load from
    elsewhere on the machine falls on all of them alike); the best time of each is kept."""
    best_prefill = [float("inf")] * len(engines)
    best_decode = [float("inf")] * len(engines)
    for e in engines:
        e.prefill()
        e.decode()
    for _ in range(repeats):
        for i, e in enumerate(engines):
            time.sleep(SETTLE_SECONDS)
            best_prefill[i] = min(best_prefill[i], e.prefill())
        for i, e in enumerate(engines):
            time.sleep(SETTLE_SECONDS)
            best_decode[i] = min(best_decode[i], e.decode())
    return [
        Result(e.engine, e.weights, prompt_len / p, d * 1e3, list(e.tokens), e.step_bytes)
        for e, p, d in zip(engines, best_prefill, best_decode)
    ]


def _load() -> str:
    try:
        return "%.2f" % os.getloadavg()[0]
    except OSError:
        return "n/a"


def format_table(results: List[Result], baseline: Result, bandwidth: float) -> str:
    """The results as a markdown table; `bandwidth`: the read loop's bytes/s, for each decode
    figure's step bound (step bytes / bandwidth) and ratio to it."""
    lines = [
        "| engine | weights | prefill tokens/s | vs transformers | decode ms/step | vs transformers "
        "| step bound ms | decode / bound |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        bound = 1e3 * r.step_bytes / bandwidth if r.step_bytes > 0 else 0.0
        lines.append(
            f"| {r.engine} | {r.weights} | {r.prefill_tokens_per_s:,.0f} | "
            f"{r.prefill_tokens_per_s / baseline.prefill_tokens_per_s:.2f}x | "
            f"{r.decode_ms_per_step:.2f} | {baseline.decode_ms_per_step / r.decode_ms_per_step:.2f}x | "
            + (f"{bound:.2f} | {r.decode_ms_per_step / bound:.2f}x |" if bound > 0 else " | |")
        )
    return "\n".join(lines)


def _agreement(a: List[int], b: List[int]) -> str:
    same = 0
    for x, y in zip(a, b):
        if x != y:
            break
        same += 1
    return f"{same}/{min(len(a), len(b))}"


def run(args: argparse.Namespace) -> int:
    from fastattention.bench import llama_cpp_peer

    llama_cpp_peer.validate_arguments(args)
    if args.device == "cuda":
        from fastattention.bench.e2e_cuda import run_cuda

        return run_cuda(args)
    import torch

    args = _resolve(args)
    torch.set_num_threads(args.threads)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    from fastattention.export import export_hf

    work: Optional[tempfile.TemporaryDirectory] = None
    root = args.work_dir
    if root is None:
        work = tempfile.TemporaryDirectory(prefix="fastattention-e2e-")
        root = work.name
    try:
        hf_dir = os.path.join(root, "hf")
        t0 = time.perf_counter()
        shape = build_checkpoint(hf_dir, args)
        print(
            f"model: Llama-shaped, {shape['params'] / 1e6:.1f}M parameters (hidden "
            f"{shape['hidden_size']}, {shape['num_hidden_layers']} layers, "
            f"{shape['num_attention_heads']} heads, {shape['num_key_value_heads']} KV heads, "
            f"intermediate {shape['intermediate_size']}, vocab {shape['vocab_size']}), random "
            f"weights, built in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        rng = np.random.default_rng(args.seed)
        prompt = rng.integers(3, shape["vocab_size"], size=args.prompt_len)
        decode_prompt = rng.integers(3, shape["vocab_size"], size=args.decode_prompt_len)
        print(
            f"threads: {args.threads} (torch.set_num_threads and Session num_threads); "
            f"prefill prompt {args.prompt_len}, decode {args.new_tokens} tokens after "
            f"{args.decode_prompt_len}; batch 1; best of {args.repeats} interleaved rounds",
            flush=True,
        )

        engines = [transformers_engine(hf_dir, prompt, decode_prompt, args)]
        for dtype in args.dtype_list:
            out_dir = os.path.join(root, f"export-{dtype}")
            export_hf(hf_dir, out_dir, tp=1, dtype=dtype, progress=False)
            engines.append(session_engine(out_dir, dtype, prompt, decode_prompt, args))
        peer_note = None
        if args.peer is not None:
            peer_engines, peer_note = _peer_engines(hf_dir, root, prompt, decode_prompt, args)
            engines += peer_engines
            print(peer_note, flush=True)
        load_before = _load()
        t0 = time.perf_counter()
        bandwidth = read_bandwidth(args.threads)
        results = measure(engines, args.prompt_len, args.repeats)
        bandwidth = max(bandwidth, read_bandwidth(args.threads))  # before and after: the best
        print(
            f"measured in {time.perf_counter() - t0:.0f} s; load average before "
            f"{load_before}, after {_load()} (other work on the machine skews the numbers)",
            flush=True,
        )
        busy_table = _busy_neighbour(engines, args) if args.busy_neighbour else None
    finally:
        if work is not None:
            work.cleanup()

    baseline = results[0]
    print()
    print(
        f"read loop ({args.threads} threads, 1 GiB): {bandwidth / 1e9:.1f} GB/s; step bound = "
        f"bytes a decode step reads (weights but the embedding rows not gathered, + KV at the "
        f"mean context) / that bandwidth"
    )
    print(format_table(results, baseline, bandwidth))
    print()
    for r in results[1:]:
        who = "" if r.engine == "fastattention" else f"{r.engine}, "
        print(
            f"greedy decode tokens agreeing with transformers float32 ({who}{r.weights} "
            f"weights): {_agreement(r.decode_tokens, baseline.decode_tokens)}"
        )
    if args.peer is not None:
        print()
        print(peer_note)
        if any(r.engine == PEER for r in results):
            print(format_peer_table(results))
    if busy_table is not None:
        print()
        print(busy_table)
    return 0


def _busy_neighbour(engines: List[Engine], args: argparse.Namespace) -> str:
    """Decode of every engine idle vs beside CPU-bound neighbours (bench/busy.py)."""
    from fastattention.bench import busy

    count = busy.neighbour_count()
    omp = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    print(
        f"busy neighbours: {count} spinning process(es) for {os.cpu_count()} cores, "
        f"{args.repeats} rounds alternating idle / loaded; OpenMP waits: {omp}",
        flush=True,
    )
    timed = busy.measure_loaded([e.decode for e in engines], args.repeats, count)
    return busy.format_loaded_table(
        [(e.engine, e.weights, idle, loaded) for e, (idle, loaded) in zip(engines, timed)], count
    )


PEER = "llama.cpp"


def _peer_engines(
    hf_dir: str, root: str, prompt: np.ndarray, decode_prompt: np.ndarray, args: argparse.Namespace
):
    """llama.cpp engines for each --dtypes entry, and a line saying what was run, or why the peer
    is skipped ([] then): llama-cpp-python missing, or llama.cpp's convert_hf_to_gguf.py."""
    from fastattention.bench import llama_cpp_peer as peer

    module, why = peer.llama_cpp_module()
    if module is None:
        return [], f"llama.cpp peer skipped: {why}"
    try:
        script = peer.find_convert_script(args.llama_cpp_convert)
    except peer.ConvertScriptNotFound as e:
        return [], f"llama.cpp peer skipped: {e}"
    kv = "float32" if args.llama_cpp_kv == "same" else args.llama_cpp_kv  # ours: float32 on CPU
    src = peer.conversion_source(hf_dir, os.path.join(root, "gguf-src"))
    n_ctx = max(len(prompt), len(decode_prompt) + args.new_tokens) + 8
    engines = []
    for dtype in args.dtype_list:
        t0 = time.perf_counter()
        gguf = peer.convert_to_gguf(src, os.path.join(root, f"model-{dtype}.gguf"), dtype, script)
        runner = peer.LlamaCppRunner(gguf, args.threads, n_ctx, kv_dtype=kv)
        print(
            f"llama.cpp {dtype}: {os.path.basename(gguf)} ({os.path.getsize(gguf) / 1e6:.0f} MB, "
            f"--outtype {peer.OUTTYPES[dtype]}) converted and loaded in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        engines.append(_peer_engine(runner, dtype, prompt, decode_prompt, args))
        engines[-1].step_bytes = peer.gguf_step_bytes(
            gguf, hf_dir, len(decode_prompt) + (args.new_tokens + 1) / 2, kv
        )
    version = getattr(module, "__version__", "?")
    note = (
        f"llama.cpp peer: llama-cpp-python {version}, GGUF by {script}, {args.threads} "
        f"threads (n_threads and n_threads_batch), KV cache {kv}, flash attention on, "
        f"greedy argmax over the last position's logits; same prompt ids; model load and "
        f"conversion not timed"
    )
    return engines, note


def _peer_engine(
    runner, dtype: str, prompt: np.ndarray, decode_prompt: np.ndarray, args: argparse.Namespace
) -> Engine:
    prompt_ids = [int(t) for t in prompt]
    decode_ids = [int(t) for t in decode_prompt]
    engine = Engine(PEER, dtype, lambda: 0.0, lambda: 0.0)

    def decode() -> float:
        engine.tokens, seconds = runner.generate(decode_ids, args.new_tokens)
        return seconds

    engine.prefill = lambda: runner.prefill(prompt_ids)
    engine.decode = decode
    return engine


def format_peer_table(results: List[Result]) -> str:
    """Ours next to llama.cpp per weight dtype: prefill tokens/s and decode ms/step, each with the
    ratio of our speed to llama.cpp's (above 1: we are faster), and greedy token agreement."""
    ours = {r.weights: r for r in results if r.engine == "fastattention"}
    lines = [
        "| weights | prefill tokens/s: fastattention | llama.cpp | ours / llama.cpp "
        "| decode ms/step: fastattention | llama.cpp | ours / llama.cpp "
        "| greedy tokens = llama.cpp |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in results:
        if p.engine != PEER or p.weights not in ours:
            continue
        o = ours[p.weights]
        lines.append(
            f"| {p.weights} | {o.prefill_tokens_per_s:,.0f} | {p.prefill_tokens_per_s:,.0f} | "
            f"{o.prefill_tokens_per_s / p.prefill_tokens_per_s:.2f}x | "
            f"{o.decode_ms_per_step:.2f} | {p.decode_ms_per_step:.2f} | "
            f"{p.decode_ms_per_step / o.decode_ms_per_step:.2f}x | "
            f"{_agreement(o.decode_tokens, p.decode_tokens)} |"
        )
    return "\n".join(lines)
