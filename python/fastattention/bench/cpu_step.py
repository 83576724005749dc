"""Where a CPU decode step (or a prefill) goes: the batch-1 decode step of an exported Llama-style
model replayed op by op through the kernel bindings, each op timed on its own.

    fastattention bench cpu-step --model DIR [--threads N] [--context 160] [--steps 40]
    fastattention bench cpu-step --model DIR --prefill 512 [--steps 5]

The replay runs, for every layer in order, the ops DecoderLayer runs (rms norm, fused QKV GEMV,
RoPE + KV-cache write, paged decode attention, O GEMV, add + norm, gate/up GEMV, SwiGLU, down
GEMV, residual add), then the final norm, the LM head GEMV and greedy sampling, on the model's
own weights (in memory, in their stored dtype) and a float32 paged KV cache of --context tokens
(the CPU session's default). Walking all layers in order reads the weights from memory as a real
step does, so each GEMV's time is its streaming time. Printed per op class: ms per step, share,
bytes read and GB/s; then

  read loop     a plain multi-threaded read loop (_C.read_loop) over 1 GiB, the same threads;
  step bound    bytes the step reads / that bandwidth;
  region cost   one OpenMP parallel region of the given threads over ~no work, minus the same
                call on one thread (the fork / join / wake-up a kernel pays per region);
  call cost     one binding call on 8 floats, one thread (the Python overhead in every op's time);
  session step  Session.generate's ms/step on the same model, same threads and context.

--compare-team times each op twice, the GEMVs' threads on OpenMP regions and on the spin team
(kernels/cpu/spin_team.h), the two alternating step by step.

Every op's time includes one call cost (Python and argument conversion, a few microseconds)
that the C++ step does not pay; the table shows it so it can be subtracted.

--prefill N replays the batch-1 prefill of an N-token prompt instead (after --context cached
tokens, default 0): the same ops on N rows (the GEMMs, the paged prefill attention over the
prompt with the causal mask), then the final norm, the LM head and sampling on the last row only,
as the session does. The table gives GFLOP and GFLOP/s per op class instead of bytes, and the
session comparison is Session.generate's prefill tokens/s on the same prompt length.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import OrderedDict
from typing import Dict, List

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="an exported model directory (tp 1)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    parser.add_argument(
        "--context",
        type=int,
        default=None,
        help="KV tokens cached before the step (default 160: the e2e bench's mean decode "
        "context; 0 with --prefill)",
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        metavar="N",
        help="replay the prefill of an N-token prompt instead of a decode step (GFLOP/s per op; "
        "the LM head on the last token only)",
    )
    parser.add_argument("--steps", type=int, default=40, help="replayed steps (median kept)")
    parser.add_argument(
        "--no-session", action="store_true", help="skip timing Session.generate for comparison"
    )
    parser.add_argument(
        "--session-rounds",
        type=int,
        default=3,
        help="Session.generate calls per variant, alternating (median kept)",
    )
    parser.add_argument(
        "--session-only",
        action="store_true",
        help="skip the replay: only the session step (and --busy-neighbour)",
    )
    parser.add_argument(
        "--compare-team",
        action="store_true",
        help="time every op (and the session step) with the GEMVs on OpenMP "
        "regions and on the spin team, alternating",
    )
    parser.add_argument(
        "--busy-neighbour",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="then the session step idle and beside one spinning neighbour "
        "process per two cores, ROUNDS alternating rounds, for each variant "
        "(bench/busy.py)",
    )
    parser.add_argument("--seed", type=int, default=0)


def _load_weights(model_dir: str):
    """config, {name: array} with bfloat16 as a torch bfloat16 tensor (numpy has no bfloat16)."""
    import torch

    from fastattention.export.format import read_header, read_tensor

    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    if config.get("tp_size", 1) != 1:
        raise ValueError(f"{model_dir}: tp_size {config['tp_size']}; the replay needs tp 1")
    rank = os.path.join(model_dir, "rank0")
    weights = {}
    for name in os.listdir(rank):
        if not name.endswith(".fat"):
            continue
        path = os.path.join(rank, name)
        array = np.ascontiguousarray(read_tensor(path))
        if read_header(path).dtype == "bfloat16":
            array = torch.from_numpy(array).view(torch.bfloat16)
        weights[name[:-4]] = array
    return config, weights


def _nbytes(a) -> int:
    return a.nbytes if isinstance(a, np.ndarray) else a.numel() * a.element_size()


class Replay:
    """One batch-1 decode step (tokens = 1) or prefill chunk of `tokens` tokens, op by op, with
    per-op timers."""

    def __init__(
        self, config: dict, weights: dict, threads: int, context: int, seed: int, tokens: int = 1
    ):
        from fastattention import _C

        self.C, self.c, self.w, self.t = _C, config, weights, threads
        c = config
        if c["architecture"] not in ("llama",) or not c["gated_ffn"] or c["norm_type"] != "rmsnorm":
            raise ValueError(
                "the replay covers Llama-style models (rms norm, gated SiLU FFN, RoPE)"
            )
        self.H, self.L = c["hidden_size"], c["num_layers"]
        self.hq, self.hk, self.D = c["num_heads"], c["num_kv_heads"], c["head_dim"]
        self.I, self.V = c["intermediate_size"], c["vocab_size"]
        rng = np.random.default_rng(seed)
        self.block = 16
        T = self.tokens = tokens
        blocks = (context + T + self.block - 1) // self.block
        kv_shape = (blocks, self.block, self.hk, self.D)
        self.k_cache = [rng.standard_normal(kv_shape, dtype=np.float32) for _ in range(self.L)]
        self.v_cache = [rng.standard_normal(kv_shape, dtype=np.float32) for _ in range(self.L)]
        self.block_table = np.arange(blocks, dtype=np.int32)[None]
        self.context = context
        self.kv_bytes_per_step = 2 * self.L * (context + T) * self.hk * self.D * 4
        # Query-key pairs the causal attention of one layer scores, per head.
        self.attn_pairs = T * context + T * (T + 1) // 2
        self.hidden = rng.standard_normal((T, self.H), dtype=np.float32)
        f = lambda *s: np.empty(s, dtype=np.float32)  # noqa: E731
        qkv_cols = (self.hq + 2 * self.hk) * self.D
        self.normed, self.branch = f(T, self.H), f(T, self.H)
        self.qkv, self.attn = f(T, qkv_cols), f(T, self.hq, self.D)
        self.up, self.act = f(T, 2 * self.I), f(T, self.I)
        self.last, self.last_normed = f(1, self.H), f(1, self.H)
        self.logits, self.token = f(1, self.V), np.empty(1, dtype=np.int32)
        self.mm = "GEMV" if T == 1 else "GEMM"  # the op names: decode rows vs prefill rows
        self.rope = dict(c.get("rope") or {})
        self.rope.pop("scaling", None)
        self.eps = float(c["norm_eps"])
        self.head = (
            weights["embed.weight"] if c["tie_word_embeddings"] else weights["lm_head.weight"]
        )
        self.head = self.head[: self.V]
        self.times: Dict[str, List[float]] = OrderedDict()
        self.bytes: Dict[str, int] = OrderedDict()
        self.flops: Dict[str, float] = OrderedDict()

    def _timed(self, name: str, nbytes: int, fn, *args, flops: float = 0.0, **kwargs) -> None:
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        dt = time.perf_counter() - t0
        self.times.setdefault(name, [0.0])[-1] += dt
        self.bytes[name] = self.bytes.get(name, 0) + nbytes
        self.flops[name] = self.flops.get(name, 0.0) + flops

    def _linear(self, name: str, x: np.ndarray, w, y: np.ndarray) -> None:
        """y = x w^T, timed as `name` with the weight's bytes and 2 M N K flops."""
        flops = 2.0 * x.shape[0] * y.shape[1] * x.shape[1]
        self._timed(
            name, _nbytes(w), self.C.kernel_linear, x, w, None, y, flops=flops, num_threads=self.t
        )

    def _timed_rms_norm(self, name: str, x, weight, out) -> None:
        """out = rms_norm(x) * weight, timed as `name` (its weight's bytes are not counted)."""
        options = dict(type="rms", eps=self.eps, num_threads=self.t)
        self._timed(name, 0, self.C.kernel_norm, x, weight, None, out, **options)

    def step(self) -> None:
        C, t, w, T, mm = self.C, self.t, self.w, self.tokens, self.mm
        for name in self.times:
            self.times[name].append(0.0)
        self.bytes = OrderedDict()
        self.flops = OrderedDict()
        pos = self.context
        positions = np.arange(pos, pos + T, dtype=np.int32)
        slot = positions.copy()
        cu_q = np.array([0, T], dtype=np.int32)
        seqlens = np.array([pos + T], dtype=np.int32)
        q = self.qkv[:, : self.hq * self.D].reshape(T, self.hq, self.D)
        k = self.qkv[:, self.hq * self.D : (self.hq + self.hk) * self.D].reshape(T, self.hk, self.D)
        v = self.qkv[:, (self.hq + self.hk) * self.D :].reshape(T, self.hk, self.D)
        kv_layer = self.kv_bytes_per_step // self.L
        attn_flops = 4.0 * self.hq * self.D * self.attn_pairs  # q k^T and p v
        attn_name = "attention (paged decode)" if T == 1 else "attention (paged prefill)"
        add_norm = dict(type="rms", eps=self.eps, num_threads=t)
        for i in range(self.L):
            p = f"layers.{i}."
            wq, wo = w[p + "attn.qkv.weight"], w[p + "attn.o.weight"]
            wgu, wd = w[p + "ffn.gate_up.weight"], w[p + "ffn.down.weight"]
            self._timed_rms_norm(
                "norm (attn, rms)", self.hidden, w[p + "attn_norm.weight"], self.normed
            )
            self._linear(f"{mm} qkv", self.normed, wq, self.qkv)
            self._timed(
                "rope + KV write",
                0,
                C.kernel_rope_kv_cache_write,
                q,
                k,
                v,
                positions,
                self.k_cache[i],
                self.v_cache[i],
                slot,
                rope=self.rope,
                num_threads=t,
            )
            self._timed(
                attn_name,
                kv_layer,
                C.fmha_forward,
                q,
                self.k_cache[i],
                self.v_cache[i],
                self.attn,
                flops=attn_flops,
                cu_seqlens_q=cu_q,
                block_table=self.block_table,
                seqlens_k=seqlens,
                causal=True,
                num_threads=t,
                max_seqlen_q=T,
                max_seqlen_k=pos + T,
            )
            self._linear(f"{mm} o", self.attn.reshape(T, -1), wo, self.branch)
            self._timed(
                "add + norm (ffn, rms)",
                0,
                C.kernel_add_norm,
                self.hidden,
                self.branch,
                w[p + "ffn_norm.weight"],
                None,
                self.normed,
                **add_norm,
            )
            self._linear(f"{mm} gate_up", self.normed, wgu, self.up)
            self._timed("swiglu", 0, C.kernel_swiglu, self.up, self.act, num_threads=t)
            self._linear(f"{mm} down", self.act, wd, self.branch)
            self._timed(
                "residual add",
                0,
                C.kernel_add,
                self.hidden,
                self.branch,
                self.hidden,
                num_threads=t,
            )
        # The session normalises and projects only the rows it samples from: the last one.
        self.last[:] = self.hidden[-1:]
        self._timed_rms_norm("final norm", self.last, w["final_norm.weight"], self.last_normed)
        self._linear(
            "GEMV LM head" if T == 1 else "GEMV LM head (last token)",
            self.last_normed,
            self.head,
            self.logits,
        )
        self._timed("sampling (greedy)", 0, C.kernel_sample, self.logits, self.token, num_threads=t)
        # Keep the hidden state bounded over many replayed steps (the weights are whatever they
        # are; the values do not change the timings, but inf / nan could).
        np.clip(self.hidden, -10, 10, out=self.hidden)


def region_cost(threads: int, repeats: int = 2000) -> float:
    """Seconds one OpenMP region of `threads` threads costs over one of a single thread: the median
    of `repeats` _C.read_loop calls over 64 bytes, minus the same on one thread."""
    from fastattention import _C

    buf = np.ones(8, dtype=np.uint64)

    def median(n: int) -> float:
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _C.read_loop(buf, n)
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))

    median(threads)
    return median(threads) - median(1)


def call_cost(repeats: int = 2000) -> float:
    """Median seconds of one binding call on 8 floats, one thread (Python + argument conversion)."""
    from fastattention import _C

    a, b = np.ones((1, 8), np.float32), np.ones((1, 8), np.float32)
    out = np.empty_like(a)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _C.kernel_add(a, b, out, num_threads=1)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _warm_session(model_dir: str, threads: int, context: int, new_tokens: int, seed: int):
    """(config, a seeded prompt of `context` tokens, a batch-1 Session on `threads` threads with
    one generate of `new_tokens` tokens after the prompt done as a warm-up)."""
    from fastattention.session import Session

    rng = np.random.default_rng(seed)
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    prompt = [int(x) for x in rng.integers(3, config["vocab_size"], size=context)]
    s = Session(model_dir, num_threads=threads, max_batch=1, max_seq_len=context + new_tokens + 8)
    s.generate([prompt], new_tokens)
    return config, prompt, s


def _alternating(s, prompt, new_tokens: int, variants: List[bool], rounds: int, metric):
    """metric(s.timings) of `rounds` generate calls per variant (the spin team on / off), the
    variants alternating call by call so load falls on all alike."""
    from fastattention import _C

    out: List[List[float]] = [[] for _ in variants]
    for _ in range(rounds):
        for i, team in enumerate(variants):
            _C.cpu_spin_team(team)
            time.sleep(0.25)
            s.generate([prompt], new_tokens)
            out[i].append(metric(s.timings))
    return out


def session_steps(
    model_dir: str,
    threads: int,
    context: int,
    steps: int,
    seed: int,
    variants: List[bool],
    rounds: int = 3,
) -> List[List[float]]:
    """ms/step of each of `rounds` Session.generate calls (`steps` tokens after `context`) per
    variant (the spin team on / off), the variants alternating call by call so load falls on all
    alike."""
    _, prompt, s = _warm_session(model_dir, threads, context, steps, seed)
    return _alternating(s, prompt, steps, variants, rounds, lambda t: t["decode_ms_per_step"])


def session_prefill(
    model_dir: str, threads: int, tokens: int, seed: int, variants: List[bool], rounds: int = 3
) -> List[List[float]]:
    """Prefill tokens/s of each of `rounds` Session.generate calls on a `tokens`-token prompt (one
    new token: the prefill and the first token's sampling) per variant, alternating call by call."""
    _, prompt, s = _warm_session(model_dir, threads, tokens, 1, seed)
    return _alternating(s, prompt, 1, variants, rounds, lambda t: tokens / t["prefill_seconds"])


def busy_neighbour_table(
    model_dir: str,
    threads: int,
    context: int,
    steps: int,
    seed: int,
    variants: List[bool],
    rounds: int,
) -> str:
    """The session step per variant, idle and beside spinning neighbours (bench/busy.py)."""
    from fastattention import _C
    from fastattention.bench import busy

    config, prompt, s = _warm_session(model_dir, threads, context, steps, seed)

    def decoder(team: bool):
        def decode() -> float:
            _C.cpu_spin_team(team)
            s.generate([prompt], steps)
            return s.timings["decode_seconds"] / s.timings["decode_steps"]

        return decode

    count = busy.neighbour_count()
    timed = busy.measure_loaded([decoder(t) for t in variants], rounds, count)
    return busy.format_loaded_table(
        [
            (f"fastattention ({_variant_name(t)})", config["dtype"], idle, loaded)
            for t, (idle, loaded) in zip(variants, timed)
        ],
        count,
    )


def _variant_name(team: bool) -> str:
    return "spin team" if team else "OpenMP regions"


def run(args: argparse.Namespace) -> int:
    from fastattention import _C
    from fastattention.bench.e2e import _load, read_bandwidth

    threads = args.threads or os.cpu_count() or 1
    if args.prefill < 0:
        raise ValueError(f"--prefill must be >= 0, got {args.prefill}")
    prefill = args.prefill > 0
    if prefill and args.busy_neighbour:
        raise ValueError("--busy-neighbour times decode steps; it does not combine with --prefill")
    if args.context is None:
        args.context = 0 if prefill else 160
    tokens = args.prefill if prefill else 1
    default_team = _C.cpu_spin_team()
    variants = [False, True] if args.compare_team else [default_team]
    config, weights = _load_weights(args.model)
    replays = [Replay(config, weights, threads, args.context, args.seed, tokens) for _ in variants]
    load_before = _load()
    bandwidth = read_bandwidth(threads)
    for replay, team in zip(replays, variants):
        _C.cpu_spin_team(team)
        for _ in range(3):
            replay.step()  # warm-up: thread pools, pages
        replay.times.clear()
    for _ in range(1 if args.session_only else args.steps):
        for replay, team in zip(replays, variants):  # alternating, so load hits both alike
            _C.cpu_spin_team(team)
            time.sleep(0.002)
            replay.step()
    bandwidth = max(bandwidth, read_bandwidth(threads))
    _C.cpu_spin_team(default_team)
    region = region_cost(threads)
    call = call_cost()
    session_ms = session_rate = None
    if args.no_session:
        pass
    elif prefill:
        session_rate = session_prefill(
            args.model, threads, tokens, args.seed, variants, args.session_rounds
        )
    else:
        session_ms = session_steps(
            args.model, threads, args.context, args.steps, args.seed, variants, args.session_rounds
        )
    busy_table = (
        None
        if not args.busy_neighbour
        else busy_neighbour_table(
            args.model, threads, args.context, args.steps, args.seed, variants, args.busy_neighbour
        )
    )
    _C.cpu_spin_team(default_team)
    replay = replays[0]
    calls_per_step = sum(_ops_per_step(replay).values())
    step_bytes = sum(replay.bytes.values())
    print(
        f"model: {args.model} ({config['architecture']}, {config['dtype']} weights, "
        f"{replay.L} layers, hidden {replay.H}, heads {replay.hq}/{replay.hk}, intermediate "
        f"{replay.I}, vocab {replay.V}, tied LM head: {config['tie_word_embeddings']})"
    )
    what = f"prefill of {tokens} tokens" if prefill else "steps"
    print(
        f"threads {threads}; context {args.context}; median of {args.steps} replayed {what}"
        + (" per variant, the variants alternating step by step" if len(variants) > 1 else "")
        + f"; load average before {load_before}, after {_load()}"
    )
    print()
    if not args.session_only:
        _print_ops(replays, variants)
    bound_ms = step_bytes / bandwidth * 1e3
    if prefill:
        if not args.session_only:
            for replay, team in zip(replays, variants):
                total = sum(float(np.median(v)) for v in replay.times.values())
                print(
                    f"replayed prefill ({_variant_name(team)}): {total * 1e3:.1f} ms = "
                    f"{tokens / total:,.0f} tokens/s, "
                    f"{sum(replay.flops.values()) / total / 1e9:.1f} GFLOP/s"
                )
    else:
        print(
            f"read loop ({threads} threads, 1 GiB): {bandwidth / 1e9:.1f} GB/s; step bound "
            f"{bound_ms:.2f} ms ({step_bytes / 1e6:.1f} MB)"
        )
    print(
        f"region cost (one {threads}-thread OpenMP region over ~no work, minus 1 thread): "
        f"{region * 1e6:.1f} us"
    )
    print(
        f"call cost (one binding call, in every op's time above): {call * 1e6:.1f} us x "
        f"{calls_per_step} calls = {call * calls_per_step * 1e3:.2f} ms"
    )
    if session_rate is not None:
        for team, rates in zip(variants, session_rate):
            print(
                f"session prefill ({_variant_name(team)}; Session.generate, {tokens}-token "
                f"prompt, median of {len(rates)}): {float(np.median(rates)):,.0f} tokens/s "
                f"(best {max(rates):,.0f})"
            )
    if session_ms is not None:
        for team, calls in zip(variants, session_ms):
            ms = float(np.median(calls))
            print(
                f"session step ({_variant_name(team)}; Session.generate, {args.steps} tokens "
                f"after {args.context}, median of {len(calls)}): {ms:.2f} ms = "
                f"{ms / bound_ms:.2f}x the bound (best {min(calls):.2f} ms = "
                f"{min(calls) / bound_ms:.2f}x)"
            )
    if busy_table is not None:
        print()
        print(
            f"busy neighbours: session step idle vs beside spinning processes, "
            f"{args.busy_neighbour} alternating rounds; OpenMP waits: "
            f"{ {k: os.environ.get(k) for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')} }"
        )
        print(busy_table)
    return 0


def _print_ops(replays: List[Replay], variants: List[bool]) -> None:
    """The per-op table: one column group (ms/step, share, GB/s) per variant."""
    replay = replays[0]
    ops = _ops_per_step(replay)
    names = list(replay.times)
    med = [{n: float(np.median(r.times[n])) for n in names} for r in replays]
    totals = [sum(m.values()) for m in med]
    # Decode: bytes read and GB/s per op; prefill (compute-bound): GFLOP and GFLOP/s.
    prefill = replay.tokens > 1
    work = replay.flops if prefill else replay.bytes
    unit, rate, scale = ("GFLOP", "GFLOP/s", 1e9) if prefill else ("MB read", "GB/s", 1e6)
    step = "prefill" if prefill else "step"
    head = f"| op | calls/{step} | {unit} |"
    for team in variants:
        head += f" ms/{step} ({_variant_name(team)}) | share | {rate} |"
    print(head)
    print("|---|---:|---:|" + "---:|---:|---:|" * len(variants))
    for n in names:
        amount = work[n]
        line = f"| {n} | {ops[n]} | {amount / scale:.1f} |" if amount else f"| {n} | {ops[n]} | |"
        for m, total in zip(med, totals):
            per_s = f"{amount / m[n] / 1e9:.1f}" if amount else ""
            line += f" {m[n] * 1e3:.3f} | {m[n] / total:.1%} | {per_s} |"
        print(line)
    total_work = sum(work.values())
    line = f"| **sum of ops** | {sum(ops.values())} | {total_work / scale:.1f} |"
    for total in totals:
        line += f" {total * 1e3:.3f} | 100% | {total_work / total / 1e9:.1f} |"
    print(line)
    print()


def _ops_per_step(replay: Replay) -> Dict[str, int]:
    mm = replay.mm
    per_layer = {
        "norm (attn, rms)",
        f"{mm} qkv",
        "rope + KV write",
        "attention (paged decode)",
        "attention (paged prefill)",
        f"{mm} o",
        "add + norm (ffn, rms)",
        f"{mm} gate_up",
        "swiglu",
        f"{mm} down",
        "residual add",
    }
    return {name: replay.L if name in per_layer else 1 for name in replay.times}
