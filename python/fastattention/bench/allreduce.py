"""Tiling-AllReduce benchmark: a row-parallel GEMM + all-reduce, with and without the overlap.

    mpirun -n 2 fastattention bench allreduce-overlap --device cuda     # NCCL, one GPU per rank
    mpirun -n 2 fastattention bench allreduce-overlap --device cpu      # MPI, CPU ranks

Each rank computes y[T, H] = x[T, K] @ w[H, K]^T with K = H / ranks (its shard of a row-parallel
projection: attention output; FFN down has K = intermediate / ranks, --k to set it), and y is
summed over the ranks. Timed, as the slowest rank's median over --repeats runs (ranks start each
run together):

  GEMM         the GEMM alone                  all-reduce   the all-reduce of y alone
  sequential   GEMM, then all-reduce (the overlap switched off)
  tiled N      the tiling-AllReduce with N row tiles (tile i's all-reduce runs while tile i+1 is
               computed); "auto" is what the runtime picks (plan_tiles: tile count and, on GPUs,
               the tile GEMMs' SMs, from the GEMM's size; "1" = sequential); "N@Ssm"
               the same with each tile GEMM limited to S SMs (--gemm-sms; "@all": every SM;
               no suffix: the runtime's choice), leaving the rest of
               the GPU to the all-reduce beside it (NCCL's own CTAs: FASTATTN_NCCL_MAX_CTAS,
               FASTATTN_NCCL_CTA_POLICY, read when the communicator starts); "Ng": the
               tiles' all-reduces as a copy-engine all-gather plus a sum (--allreduce gather)

saving = 1 - best tiled / sequential; overlap = (GEMM + all-reduce - tiled) / min(GEMM,
all-reduce): the share of the shorter operation hidden behind the longer (1 = the ideal
max(GEMM, all-reduce)). Defaults: on GPUs T = 1K..16K, H = 4096, 8192, bfloat16; on CPU ranks
(one thread each unless --threads) T = 256, 1024, 2048 and H = 1024, 2048, float32, so a run
takes about a minute. Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from fastattention import distributed
from fastattention.bench.arguments import int_list, non_negative_int_list

GPU_TOKENS = "1024,2048,4096,8192,16384"
GPU_HIDDEN = "4096,8192"
CPU_TOKENS = "256,1024,2048"
CPU_HIDDEN = "1024,2048"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cpu: MPI over CPU ranks; cuda: NCCL, GPU = local rank",
    )
    parser.add_argument(
        "--tokens",
        type=int_list,
        default=None,
        help=f"token counts T (default cuda {GPU_TOKENS}, cpu {CPU_TOKENS})",
    )
    parser.add_argument(
        "--hidden",
        type=int_list,
        default=None,
        help=f"hidden sizes H (default cuda {GPU_HIDDEN}, cpu {CPU_HIDDEN})",
    )
    parser.add_argument(
        "--k", type=int, default=None, help="GEMM inner size per rank (default H / ranks)"
    )
    parser.add_argument(
        "--tiles",
        type=int_list,
        default=[2, 4, 8],
        help="tile counts to time besides the runtime's choice (default 2,4,8)",
    )
    parser.add_argument(
        "--gemm-sms",
        type=non_negative_int_list,
        default=None,
        help="GPU: also time each tile count with the tile GEMMs limited to these "
        "SM counts (0 = all; default: only the communicator's setting, "
        "FASTATTN_TP_GEMM_SMS or its default)",
    )
    parser.add_argument(
        "--allreduce",
        default=None,
        help="GPU: the tiles' all-reduce methods to time, comma-separated: nccl "
        "(NCCL's kernels), gather (copy-engine all-gather + sum; key suffix "
        "'g'); default: the communicator's (FASTATTN_TP_ALLREDUCE or its "
        "default)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float16", "bfloat16", "float32"],
        default=None,
        help="GPU dtype (default bfloat16); CPU activations are float32",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (cuda 20, cpu 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank (default 1)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON (rank 0)")


class _Runner:
    """Tensors and timed operations of one device kind."""

    def __init__(self, args, comm, local, device: str):
        self.args, self.comm, self.local, self.device = args, comm, local, device
        if device == "cuda":
            import torch

            self.torch = torch
            self.dtype = getattr(torch, args.dtype or "bfloat16")
            self.stream = torch.cuda.current_stream().cuda_stream
        else:
            self.stream = 0

    def tensors(self, T: int, H: int, K: int, seed: int):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((T, K), dtype=np.float32) * 0.1
        w = rng.standard_normal((H, K), dtype=np.float32) * 0.1
        y = np.zeros((T, H), np.float32)
        if self.device == "cuda":
            dev = f"cuda:{self.comm.device.split(':')[1]}"
            t = self.torch
            return (
                t.from_numpy(x).to(dev, self.dtype),
                t.from_numpy(w).to(dev, self.dtype),
                t.zeros((T, H), dtype=self.dtype, device=dev),
            )
        return x, w, y

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def time(self, fn) -> float:
        """Median seconds of fn over the repeats, the slowest rank's."""
        samples = []
        for i in range(self.args.warmup + self.args.repeats):
            self.sync()
            distributed.barrier()  # over MPI on the host (NCCL takes GPU buffers)
            t0 = time.perf_counter()
            fn()
            self.sync()
            if i >= self.args.warmup:
                samples.append(time.perf_counter() - t0)
        return distributed.max_seconds(statistics.median(samples))


def run(args: argparse.Namespace):
    from fastattention._native import _C

    methods_asked = _methods(args.allreduce)
    if not distributed.launched():
        raise ValueError(
            "bench allreduce-overlap runs over several ranks: start it with "
            "`mpirun -n 2 fastattention bench allreduce-overlap ...`"
        )
    if args.repeats is None:
        args.repeats = 20 if args.device == "cuda" else 5
    if args.repeats <= 0 or args.warmup < 0 or args.threads <= 0:
        raise ValueError("--repeats and --threads must be positive, --warmup >= 0")
    tokens = args.tokens or int_list(GPU_TOKENS if args.device == "cuda" else CPU_TOKENS)
    hidden = args.hidden or int_list(GPU_HIDDEN if args.device == "cuda" else CPU_HIDDEN)
    distributed.abort_on_error()
    info = distributed.start()
    if args.device == "cuda":
        comm = _C.Communicator("nccl", f"cuda:{info['local_rank']}")
        local = _C.Communicator("local", comm.device)
        import torch

        torch.cuda.set_device(info["local_rank"])
    else:
        comm = _C.Communicator("mpi", "cpu")
        local = _C.Communicator("local", "cpu")
    world, is_main = comm.size, comm.rank == 0
    if world < 2:
        raise ValueError("bench allreduce-overlap needs at least 2 ranks (mpirun -n 2)")
    r = _Runner(args, comm, local, args.device)
    default_sms, default_gather = comm.gemm_sms, comm.gather_reduce
    methods = [m == "gather" for m in methods_asked] or [default_gather]
    threads = args.threads if args.device == "cpu" else 0

    results = []
    for H in hidden:
        K = args.k or max(H // world, 1)
        for T in tokens:
            x, w, y = r.tensors(T, H, K, seed=comm.rank)

            def linear(c, overlap, tiles, sms=None, gather=None):
                c.overlap, c.num_tiles = overlap, tiles
                if sms is not None:
                    c.gemm_sms = sms
                if gather is not None:
                    c.gather_reduce = gather
                return lambda: c.linear_all_reduce(x, w, y, num_threads=threads, stream=r.stream)

            row = dict(tokens=T, hidden=H, k=K, ranks=world, device=args.device)
            row["gemm_ms"] = 1e3 * r.time(linear(local, False, 0))
            row["allreduce_ms"] = 1e3 * r.time(lambda: comm.all_reduce_sum(y, stream=r.stream))
            row["sequential_ms"] = 1e3 * r.time(linear(comm, False, 0))
            if True in methods:  # the copy-engine gather all-reduce alone, as 2 tiles
                comm.gather_reduce = True
                row["allreduce_gather_ms"] = 1e3 * r.time(
                    lambda: comm.all_reduce_sum_tiled(y, 2, stream=r.stream)
                )
                comm.gather_reduce = default_gather
            comm.overlap, comm.num_tiles = True, 0
            row["auto_tiles"], row["auto_sms"] = comm.plan_tiles(T, H, K)
            row["auto_ms"] = (
                row["sequential_ms"]
                if row["auto_tiles"] == 1
                else 1e3 * r.time(linear(comm, True, 0, default_sms, default_gather))
            )
            tiled = {"auto": row["auto_ms"]}
            for n in sorted(set(args.tiles)):
                if n > 1:
                    tiled[str(n)] = 1e3 * r.time(linear(comm, True, n, default_sms, default_gather))
                for gather in methods if n > 1 else []:
                    for sms in sorted({default_sms, *(args.gemm_sms or [])}):
                        key = f"{n}{'g' if gather else ''}{_sm_label(sms)}"
                        if (sms, gather) != (default_sms, default_gather):
                            tiled[key] = 1e3 * r.time(linear(comm, True, n, sms, gather))
            comm.gemm_sms, comm.gather_reduce = default_sms, default_gather
            row["tiled_ms"] = tiled
            best = min(tiled, key=tiled.get)
            row["best_tiles"], row["best_ms"] = best, tiled[best]
            row["saving_best"] = 1.0 - row["best_ms"] / row["sequential_ms"]
            row["saving_auto"] = 1.0 - row["auto_ms"] / row["sequential_ms"]
            shorter = min(row["gemm_ms"], row["allreduce_ms"])
            row["overlap_best"] = (
                (row["gemm_ms"] + row["allreduce_ms"] - row["best_ms"]) / shorter
                if shorter > 0
                else 0.0
            )
            results.append(row)
            if is_main:
                print(_format_row(row), flush=True)
    if is_main:
        print()
        print(_table(results, info, args))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(results=results, mpi=info.get("mpi_library", "")), f, indent=2)
    return results


def _methods(text: str | None) -> list[str]:
    """--allreduce's method names ([] when not given); ValueError for an unknown one."""
    if not text:
        return []
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names or any(m not in ("nccl", "gather") for m in names):
        raise ValueError(f"--allreduce: expected nccl and/or gather, got {text!r}")
    return names


def _format_row(row: dict) -> str:
    tiles = " ".join(f"{n}:{v:.3f}" for n, v in row["tiled_ms"].items())
    return (
        f"T={row['tokens']} H={row['hidden']} K={row['k']}: GEMM {row['gemm_ms']:.3f} ms, "
        f"all-reduce {row['allreduce_ms']:.3f} ms"
        + (f" (gather {row['allreduce_gather_ms']:.3f} ms)" if "allreduce_gather_ms" in row else "")
        + f", sequential {row['sequential_ms']:.3f} ms, "
        f"tiled [{tiles}] ms, auto {row['auto_tiles']} tiles"
        + (f" on {row['auto_sms']} SMs" if row.get("auto_sms", 0) > 0 else "")
    )


def _sm_label(sms: int) -> str:
    """Key suffix of a tile GEMM SM limit: '' = the runtime's choice (-1), '@all' = every SM."""
    return "" if sms < 0 else "@all" if sms == 0 else f"@{sms}sm"


def _sms(row: dict) -> str:
    return f"@{row['auto_sms']}sm" if row.get("auto_sms", 0) > 0 else ""


def _table(results: list, info: dict, args) -> str:
    head = (
        f"row-parallel GEMM + all-reduce, {results[0]['ranks']} ranks, {args.device}, "
        f"{'float32' if args.device == 'cpu' else (args.dtype or 'bfloat16')}; "
        f"{info.get('mpi_library', '').split(',')[0]}"
    )
    tuning = " ".join(
        f"{k}={v}"
        for k, v in sorted(os.environ.items())
        if k.startswith(("FASTATTN_NCCL_", "FASTATTN_TP_", "NCCL_"))
    )
    if tuning:
        head += f"; {tuning}"
    lines = [
        head,
        "",
        "| tokens | hidden | K/rank | GEMM ms | all-reduce ms | sequential ms | tiled (auto) ms"
        " | best tiled ms (tiles) | saving best / auto | overlap |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        lines.append(
            f"| {row['tokens']} | {row['hidden']} | {row['k']} | {row['gemm_ms']:.3f} | "
            f"{row['allreduce_ms']:.3f} | {row['sequential_ms']:.3f} | {row['auto_ms']:.3f} "
            f"({row['auto_tiles']}{_sms(row)}) | {row['best_ms']:.3f} ({row['best_tiles']}) | "
            f"{100 * row['saving_best']:.1f}% / {100 * row['saving_auto']:.1f}% | "
            f"{row['overlap_best']:.2f} |"
        )
    return "\n".join(lines)
