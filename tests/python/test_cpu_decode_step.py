"""CPU decode step (issue 18): the spin team switch, and `bench cpu-step` (the per-op replay of a
decode step) on a tiny model."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import run_cli
from hostile_model import tiny_config


def test_spin_team_switch_keeps_gemv_results_bit_identical():
    """The GEMV splits rows between threads the same way on the spin team and on OpenMP, so the
    outputs agree bit for bit; and they are right (float64 reference, poisoned output)."""
    from fastattention import _C

    rng = np.random.default_rng(18)
    x = rng.standard_normal((1, 300), dtype=np.float32)
    w = rng.standard_normal((517, 300), dtype=np.float32)  # above the threading threshold
    ref = x.astype(np.float64) @ w.astype(np.float64).T
    outs = []
    old = _C.cpu_spin_team()
    try:
        for team in (False, True, False, True):
            assert isinstance(_C.cpu_spin_team(team), bool)
            assert _C.cpu_spin_team() is team
            y = np.full((1, 517), np.nan, dtype=np.float32)
            _C.kernel_linear(x, w, None, y, num_threads=2)
            outs.append(y)
    finally:
        _C.cpu_spin_team(old)
    for y in outs:
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
        assert np.array_equal(y, outs[0])


@pytest.mark.parametrize("dtype, tied", [("float32", False), ("float16", True)])
def test_bench_cpu_step_runs_on_a_tiny_model(tmp_path, dtype, tied):
    pytest.importorskip("torch")
    from fastattention import random_weights

    cfg = tiny_config()
    cfg.update(dtype=dtype, num_layers=2, tie_word_embeddings=tied)
    random_weights.write_model(cfg, tmp_path / "m", seed=1)
    args = ["--steps", 2, "--context", 20, "--threads", 2, "--compare-team"]
    res = run_cli("bench", "cpu-step", "--model", tmp_path / "m", *args)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    rows = {l.split("|")[1].strip(): l for l in out.splitlines() if l.startswith("| ")}
    for op in (
        "GEMV qkv",
        "GEMV o",
        "GEMV gate_up",
        "GEMV down",
        "GEMV LM head",
        "attention (paged decode)",
        "sampling (greedy)",
        "**sum of ops**",
    ):
        assert op in rows, out
    assert rows["GEMV qkv"].split("|")[2].strip() == "2"  # calls per step: one per layer
    assert "OpenMP regions" in out and "spin team" in out
    assert "step bound" in out and "session step (spin team" in out


def test_bench_cpu_step_prefill_mode(tmp_path):
    """--prefill N replays a prefill: GEMMs over N rows, the prefill attention, the LM head on the
    last token only; GFLOP/s per op and the session's prefill tokens/s."""
    pytest.importorskip("torch")
    from fastattention import random_weights

    cfg = tiny_config()
    cfg.update(dtype="float16", num_layers=2)
    random_weights.write_model(cfg, tmp_path / "m", seed=2)
    res = run_cli(
        "bench",
        "cpu-step",
        "--model",
        tmp_path / "m",
        "--prefill",
        "40",
        "--steps",
        "2",
        "--threads",
        "2",
        "--session-rounds",
        "1",
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    rows = {l.split("|")[1].strip(): l for l in out.splitlines() if l.startswith("| ")}
    for op in (
        "GEMM qkv",
        "GEMM o",
        "GEMM gate_up",
        "GEMM down",
        "GEMV LM head (last token)",
        "attention (paged prefill)",
        "**sum of ops**",
    ):
        assert op in rows, out
    assert "GFLOP/s" in rows["op"]
    assert rows["GEMV LM head (last token)"].split("|")[2].strip() == "1"
    assert "replayed prefill" in out and "session prefill" in out and "tokens/s" in out
    assert "step bound" not in out


def test_spin_team_switch_with_a_bad_value_is_a_clear_error():
    """FASTATTN_SPIN_TEAM takes 0 or 1; anything else is refused, naming the variable."""
    code = (
        "import numpy as np; from fastattention import _C\n"
        "x = np.ones((1, 300), np.float32); w = np.ones((517, 300), np.float32)\n"
        "try:\n"
        "    _C.kernel_linear(x, w, None, np.empty((1, 517), np.float32), num_threads=2)\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FASTATTN_SPIN_TEAM": "yes"},
    )
    assert "environment variable FASTATTN_SPIN_TEAM: expected 0 or 1, got 'yes'" in res.stdout, (
        res.stdout,
        res.stderr,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prefill", "-1"], "--prefill must be >= 0, got -1"),
        (["--prefill", "8", "--busy-neighbour", "2"], "does not combine with --prefill"),
    ],
)
def test_bench_cpu_step_refuses_bad_prefill_options(tmp_path, args, message):
    cfg = tiny_config()
    cfg.update(num_layers=1)
    from fastattention import random_weights

    random_weights.write_model(cfg, tmp_path / "m", seed=1)
    res = run_cli("bench", "cpu-step", "--model", tmp_path / "m", *args, timeout=120)
    assert res.returncode != 0 and message in res.stderr, res.stderr
