"""The tensor-parallel benchmarks under mpirun on CPU ranks (their GPU runs are in the README):
`bench allreduce-overlap` times the GEMM, the all-reduce, the sequential pair and the tiles, and
picks no tiling on one machine's CPU ranks; `bench tp-e2e` at tp 2 with a tp-1 --baseline prints
the speed-up table and writes positive timings.
"""

from __future__ import annotations

import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI = ROOT / "python" / "fastattention" / "cli.py"
TINY = ROOT / "examples" / "configs" / "pangu_tiny.json"


def test_allreduce_overlap_bench(mpi, tmp_path):
    out = tmp_path / "ar.json"
    res = mpi.run(
        2,
        "bench",
        "allreduce-overlap",
        "--tokens",
        "64,128",
        "--hidden",
        "64",
        "--tiles",
        "2",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--json",
        out,
        script=CLI,
    )
    rows = json.loads(out.read_text())["results"]
    assert [(r["tokens"], r["hidden"], r["k"]) for r in rows] == [(64, 64, 32), (128, 64, 32)]
    for r in rows:
        assert min(r["gemm_ms"], r["allreduce_ms"], r["sequential_ms"]) > 0, r
        assert set(r["tiled_ms"]) == {"auto", "2"} and r["tiled_ms"]["2"] > 0, r
        # CPU ranks of one machine: the plan is one GEMM, then one all-reduce.
        assert r["auto_tiles"] == 1 and r["auto_ms"] == r["sequential_ms"], r
    assert res.output.count("| 128 | 64 | 32 |") == 1, res.output  # rank 0 prints the table


def test_tp_e2e_bench_against_a_tp1_baseline(mpi, tmp_path):
    common = (
        "bench",
        "tp-e2e",
        "--device",
        "cpu",
        "--model",
        TINY,
        "--prefill-lens",
        "16",
        "--batches",
        "1,2",
        "--decode-prompt",
        "8",
        "--new-tokens",
        "3",
        "--repeats",
        "1",
    )
    base = tmp_path / "tp1.json"
    mpi.run(1, *common, "--json", base, script=CLI)
    out = tmp_path / "tp2.json"
    res = mpi.run(2, *common, "--baseline", base, "--json", out, script=CLI)
    tp1, tp2 = json.loads(base.read_text()), json.loads(out.read_text())
    assert (tp1["tp"], tp2["tp"], tp2["layers"]) == (1, 2, 2)
    for r in (tp1, tp2):
        assert set(r["prefill_tokens_per_s"]) == {"16"} and r["prefill_tokens_per_s"]["16"] > 0
        assert set(r["decode_ms_per_step"]) == {"1", "2"}
        assert all(v > 0 for v in r["decode_ms_per_step"].values())
    assert "speed-up over tp 1" in res.output and res.output.count("| decode batch 2 ") == 1
