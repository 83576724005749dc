"""Pangu-38B-shaped inference, tensor parallel under mpirun, on exported or random weights.

    mpirun -n 8 python examples/pangu38b_infer.py --random-weights --device cuda   # 38B, 8 GPUs
    mpirun -n 8 --oversubscribe python examples/pangu38b_infer.py --preset tiny     # CPUs, seconds
    mpirun -n 8 python examples/pangu38b_infer.py --model DIR                      # exported, tp 8

The assumed shape (Pangu-38B's exact architecture and weights are not public): the "pangu" family
(docs/FORMAT.md), pre-LayerNorm with bias, rotary positions (neox, theta 10000), a GeLU FFN of 4x
hidden, biases on QKV / output / FFN, untied LM head; 60 layers, hidden 7168, 56 heads of 128,
FFN 28672, Pangu-alpha's 40000-token vocabulary: 37.57 B parameters
(examples/configs/pangu_38b.json). `--preset tiny` (examples/configs/pangu_tiny.json) is the same
architecture with 2 layers, hidden 1024, 8 heads of 128, FFN 4096, vocabulary 1001.

Weights: --model DIR loads an exported model (its tp_size must be the number of ranks). Without it
(or with --random-weights), every rank builds its own shard of seeded random weights in memory
(fastattention.random_weights: no files written; the same model for every tp split of a seed, so
`-n 8` generates the same tokens as `-n 1`) and hands them to Session.from_memory, zero-copy on
the CPU. The full preset needs about 75 GB of float16 weights in all (9.4 GB per rank at tp 8,
built in host memory first): it is for big machines (8 GPUs); the tiny preset runs anywhere.

--max-context C (up to 262144) sizes the session for contexts of C tokens; past 32768 tokens (or
past --kv-pool-tokens) the KV cache spills to a host pool (host_kv_tokens = batch * C, or
--host-kv-tokens; on a GPU the device pool is what the memory plan, --gpu-kv-budget or
--kv-pool-tokens leaves; pinned host memory: the full shape's KV is 210 KiB per token per rank at
tp 8, 56 GB per rank for 256K tokens).

Only rank 0 prints: the shape, the memory plan, prefill tokens/s, decode ms/step and tokens/s
(and the weight bytes each decode step reads per rank, as GB/s), and the generated ids (greedy).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

CONFIGS = pathlib.Path(__file__).resolve().parent / "configs"
PRESETS = {"full": CONFIGS / "pangu_38b.json", "tiny": CONFIGS / "pangu_tiny.json"}
MAX_CONTEXT = 262144  # the longest context the example sizes a session for
SPILL_FROM = 32768  # longer contexts spill the KV cache to a host pool
KV_BLOCK = 16  # tokens per KV-cache block (the session's default kv_block_size)


class UsageError(ValueError):
    """A bad option: reported once (by rank 0), not by every rank."""


def mpi_rank_and_size() -> tuple[int, int]:
    from fastattention import distributed

    return distributed.rank(), distributed.world_size()


class Parser(argparse.ArgumentParser):
    def error(self, message):  # every rank exits 2; only rank 0 prints the usage
        if mpi_rank_and_size()[0] == 0:
            self.print_usage(sys.stderr)
            print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(after_rank0_printed(2))


def after_rank0_printed(code: int) -> int:
    """`code`, once rank 0 has printed a usage error every rank found: the other ranks wait for
    it, since mpirun ends the whole job when the first rank exits with an error and rank 0's
    message would be lost if another rank got there first."""
    sys.stderr.flush()
    if mpi_rank_and_size()[1] > 1:
        from fastattention import distributed

        distributed.barrier()
    return code


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(
        prog="pangu38b_infer.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="DIR", help="an exported model (tp_size = ranks)")
    src.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random weights built in memory (the default without --model)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="random-weights shape: full (38B, the default) or tiny (CPU-sized)",
    )
    p.add_argument(
        "--num-layers",
        type=int,
        default=None,
        help="random weights: override the preset's layer count (e.g. a reduced 38B on one GPU)",
    )
    p.add_argument(
        "--dtype",
        choices=["float16", "float32"],
        default="float16",
        help="random weights' dtype (default float16)",
    )
    p.add_argument(
        "--tp",
        type=int,
        default=None,
        help="tensor-parallel ranks (default: the MPI world size; must equal it)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda (a rank's local GPU)")
    p.add_argument("--batch", type=int, default=4, help="prompts generated together (default 4)")
    p.add_argument("--prompt-len", type=int, default=64, help="tokens per prompt (default 64)")
    p.add_argument("--new-tokens", type=int, default=16, help="tokens generated (default 16)")
    p.add_argument(
        "--max-context",
        type=int,
        default=None,
        help=f"longest context the session is sized for, up to {MAX_CONTEXT} "
        f"(default prompt-len + new-tokens); past {SPILL_FROM} the KV cache "
        "spills to host memory",
    )
    p.add_argument(
        "--kv-pool-tokens",
        type=int,
        default=None,
        help="device KV pool in tokens over the batch (default: on a GPU what the "
        f"memory plan leaves, on the CPU batch x min(max-context, {SPILL_FROM})); "
        "smaller than batch x max-context: the rest spills to host memory",
    )
    p.add_argument(
        "--host-kv-tokens",
        type=int,
        default=None,
        help="host KV pool in tokens over the batch (default: batch x max-context "
        "when the context may outgrow the device pool, else 0)",
    )
    p.add_argument(
        "--gpu-kv-budget",
        type=float,
        default=None,
        help="GPU KV pool: a fraction of GPU memory (<= 1) or bytes (default: what "
        "the memory plan leaves)",
    )
    p.add_argument("--prefill-chunk", type=int, default=2048, help="tokens per prefill pass")
    p.add_argument("--warmup", type=int, default=1, help="untimed generate() calls first (1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per rank")
    p.add_argument("--seed", type=int, default=0, help="weights and prompts seed")
    args = p.parse_args(argv)
    for name in ("batch", "prompt_len", "new_tokens", "prefill_chunk"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("threads", "num_layers", "tp", "kv_pool_tokens"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0 or args.seed < 0 or (args.host_kv_tokens or 0) < 0:
        p.error("--warmup, --seed and --host-kv-tokens must be >= 0")
    if args.model and (args.preset or args.num_layers):
        p.error("--preset and --num-layers shape random weights; --model DIR brings its own config")
    if args.max_context is None:
        args.max_context = args.prompt_len + args.new_tokens
    if args.max_context > MAX_CONTEXT:
        p.error(
            f"--max-context {args.max_context} is beyond {MAX_CONTEXT} (256K), the longest "
            "context this example sizes a session for"
        )
    if args.max_context < args.prompt_len + args.new_tokens:
        p.error(
            f"--max-context {args.max_context} is shorter than --prompt-len + --new-tokens "
            f"({args.prompt_len + args.new_tokens})"
        )
    args.preset = args.preset or "full"
    return args


def model_config(args, world: int) -> tuple[dict, int]:
    """The config to run (with tp_size set) and the tp degree; UsageError for a bad --tp."""
    from fastattention import random_weights

    if args.model:
        path = pathlib.Path(args.model) / "config.json"
        try:
            cfg = json.loads(path.read_text())
        except OSError as e:
            raise UsageError(f"--model {args.model}: cannot read {path} ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise UsageError(f"--model {args.model}: {path} is not valid JSON ({e})") from None
    else:
        cfg = json.loads(PRESETS[args.preset].read_text())
        cfg["dtype"] = args.dtype
        if args.num_layers:
            cfg["num_layers"] = args.num_layers
    tp = args.tp or world
    heads = int(cfg.get("num_heads", 0))
    if heads % tp:
        raise UsageError(f"--tp {tp} does not divide the model's {heads} attention heads")
    if args.model and int(cfg.get("tp_size", 1)) != tp:
        raise UsageError(
            f"--model {args.model} was exported with tp_size "
            f"{cfg.get('tp_size')}; run it with --tp {cfg.get('tp_size')} under "
            f"`mpirun -n {cfg.get('tp_size')}`"
        )
    if tp != world:
        raise UsageError(
            f"--tp {tp} must equal the number of MPI processes ({world}): run "
            f"`mpirun -n {tp} python examples/pangu38b_infer.py ...`"
        )
    if not args.model:
        try:
            cfg = random_weights.config_for_tp(cfg, tp)
        except ValueError as e:
            raise UsageError(f"--tp {tp}: {e}") from None
    return cfg, tp


def describe_shape(cfg: dict, params: int) -> str:
    heads = f"{cfg['num_heads']} heads x {cfg['head_dim']}" + (
        " (MHA)" if cfg["num_kv_heads"] == cfg["num_heads"] else f", {cfg['num_kv_heads']} KV heads"
    )
    ffn = cfg["intermediate_size"] / cfg["hidden_size"]
    biases = [
        n for n, k in (("QKV", "qkv_bias"), ("output", "o_bias"), ("FFN", "mlp_bias")) if cfg.get(k)
    ]
    return (
        f"{cfg['architecture']}: {cfg['num_layers']} layers, hidden {cfg['hidden_size']}, "
        f"{heads}, FFN {cfg['intermediate_size']} ({ffn:g}x, {cfg['activation']}"
        f"{', gated' if cfg['gated_ffn'] else ''}), {cfg['norm_type']} (pre-norm), rotary "
        f"({cfg['rope']['style']}, theta {cfg['rope']['theta']:g}), biases on "
        f"{'/'.join(biases) or 'nothing'}, vocab {cfg['vocab_size']}"
        f"{' (tied LM head)' if cfg['tie_word_embeddings'] else ''}, {cfg['dtype']}: "
        + (f"{params / 1e9:.2f} B" if params >= 1e9 else f"{params / 1e6:.1f} M")
        + " parameters"
    )


def host_available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_host_memory(shard_bytes: int, local_ranks: int, available: int | None) -> None:
    """MemoryError, before allocating, when this host cannot hold its ranks' shards."""
    need = shard_bytes * local_ranks
    if available is not None and need > 0.9 * available:
        raise MemoryError(
            f"the random weights need {shard_bytes / 1e9:.1f} GB of host memory per "
            f"rank, {need / 1e9:.1f} GB for the {local_ranks} rank(s) on this host, "
            f"which has {available / 1e9:.1f} GB available: use --preset tiny, a "
            "reduced --num-layers, or more hosts"
        )


def local_ranks(world: int) -> int:
    """Ranks on this host (Open MPI / MPICH tell; else all of them)."""
    return int(
        os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or os.environ.get("MPI_LOCALNRANKS") or world
    )


def make_prompts(batch: int, length: int, vocab: int, seed: int) -> list:
    rng = np.random.default_rng(seed + 1)
    return [rng.integers(0, vocab, size=length).tolist() for _ in range(batch)]


def session_options(args) -> dict:
    opts = dict(
        device=args.device,
        num_threads=args.threads,
        max_batch=args.batch,
        max_seq_len=args.max_context,
        prefill_chunk_tokens=args.prefill_chunk,
        gpu_kv_budget=args.gpu_kv_budget,
    )

    def per_seq(tokens):  # KV blocks are per sequence: whole blocks for each
        return args.batch * (-(-tokens // KV_BLOCK) * KV_BLOCK)

    need = per_seq(args.max_context)
    pool = args.kv_pool_tokens
    if pool is None and not args.device.startswith("cuda"):
        pool = per_seq(min(args.max_context, SPILL_FROM))  # the CPU's "device" pool
    if pool is not None:
        opts["max_cache_tokens"] = pool
    if args.host_kv_tokens is not None:
        opts["host_kv_tokens"] = args.host_kv_tokens
    elif args.max_context > SPILL_FROM or (pool is not None and pool < need):
        opts["host_kv_tokens"] = need  # older tokens spill here (kvcache/spill_manager.h)
    return opts


def main(argv=None) -> int:
    args = parse_args(argv)
    from fastattention import distributed, random_weights
    from fastattention.session import Session

    distributed.abort_on_error()  # under mpirun: a failing rank ends the job, none waits for it
    rank, world = mpi_rank_and_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    cfg, tp = model_config(args, world)
    say(f"Pangu-38B example: {world} rank(s), tp {tp}, device {args.device}")
    if args.model:
        say(f"model: {args.model}")
    else:
        say(
            f"assumed shape, preset {args.preset} (Pangu-38B's exact architecture is not public; "
            f"examples/configs/{PRESETS[args.preset].name}):"
        )
    say("  " + describe_shape(cfg, random_weights.parameter_count(cfg)))
    if not args.model and args.preset == "full" and not args.device.startswith("cuda"):
        say(
            "  note: the full preset is sized for 8 big GPUs (--device cuda); on CPUs use "
            "--preset tiny"
        )

    t0 = time.perf_counter()
    if args.model:
        session = Session(args.model, **session_options(args))
        say(f"weights: loaded from {args.model} in {time.perf_counter() - t0:.2f} s")
    else:
        check_host_memory(
            random_weights.shard_bytes(cfg), local_ranks(world), host_available_bytes()
        )
        tensors = random_weights.shard_tensors(cfg, rank, args.seed, num_threads=args.threads)
        built = time.perf_counter() - t0
        session = Session.from_memory(cfg, tensors, **session_options(args))
        del tensors  # the session holds them (CPU: used in place; GPU: copied, then let go)
        say(
            f"weights: RANDOM (seed {args.seed}), built in memory by each rank, its shard only, "
            f"nothing written to disk: {random_weights.shard_bytes(cfg) / 1e9:.3f} GB per rank, "
            f"built in {built:.2f} s, session ready in {time.perf_counter() - t0:.2f} s"
        )
    say(f"memory plan (rank 0, {args.device}): {session.memory_plan}")

    prompts = make_prompts(args.batch, args.prompt_len, int(cfg["vocab_size"]), args.seed)
    for _ in range(
        args.warmup
    ):  # 3 tokens: on a GPU, two decode steps warm up and capture its graph
        session.generate(prompts, min(args.new_tokens, 3))
    outputs = session.generate(prompts, args.new_tokens)
    t = session.timings
    decode_tokens = sum(len(o) for o in outputs) - len(outputs)  # the first come from prefill
    say(
        f"prefill: {t['prefill_tokens']} tokens (batch {args.batch} x {args.prompt_len}) in "
        f"{t['prefill_seconds']:.3f} s = {t['prefill_tokens_per_s']:.1f} tokens/s"
    )
    if t["decode_steps"] > 0:
        weights_gb = session.weight_bytes / 1e9
        say(
            f"decode:  {t['decode_steps']} steps (batch {args.batch}) in "
            f"{t['decode_seconds']:.3f} s = {t['decode_ms_per_step']:.2f} ms/step, "
            f"{decode_tokens / t['decode_seconds']:.1f} tokens/s; each step reads the rank's "
            f"{weights_gb:.3f} GB of weights: {weights_gb / (t['decode_ms_per_step'] / 1e3):.1f} "
            "GB/s per rank"
        )
    if args.device.startswith("cuda") and t["decode_steps"] > 0:
        say(
            f"decode graphs: {t['decode_graph_steps']} of {t['decode_steps']} steps replayed as "
            f"CUDA graphs ({t['decode_graph_captures']} captured in this call)"
            + ("" if session.uses_cuda_graphs else f"; off: {session.cuda_graphs_off_reason}")
        )
    if t["spill_stream_steps"] or t["spill_cpu_steps"]:
        say(
            f"spilled KV: {session.spilled_blocks} blocks moved to the host pool; attention over "
            f"them streamed in {t['spill_stream_steps']} passes, on the CPU in "
            f"{t['spill_cpu_steps']}"
        )
    for i, out in enumerate(outputs):
        say(
            f"[{i}] {len(prompts[i])} prompt tokens -> {len(out)} new: "
            f"{' '.join(str(int(x)) for x in out)}"
        )
    return 0


def run(argv=None) -> int:
    """main() with errors (which name the option, file or tensor at fault) printed plainly;
    usage errors by rank 0 only (every rank finds them)."""
    try:
        return main(argv)
    except UsageError as e:
        if mpi_rank_and_size()[0] == 0:
            print(f"pangu38b_infer.py: error: {e}", file=sys.stderr)
        return after_rank0_printed(2)
    except (ValueError, MemoryError, OSError) as e:
        rank, world = mpi_rank_and_size()
        where = f" (rank {rank})" if world > 1 else ""
        print(f"pangu38b_infer.py: error{where}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
