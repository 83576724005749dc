"""examples/pangu38b_infer.py under mpirun (CI's check of the Pangu example): the tiny preset with
random weights built in memory per rank gives, at tp 8 (`mpirun -n 8 --oversubscribe`), the
tokens it gives in one process; an exported tp-2 directory (--model) gives them too; only rank 0
prints; a --tp that is not the world size is reported once and fails every rank.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pangu38b_infer.py"
TINY = json.loads((ROOT / "examples" / "configs" / "pangu_tiny.json").read_text())
ARGS = ("--preset", "tiny", "--batch", 3, "--prompt-len", 24, "--new-tokens", 8, "--seed", 11)


def generated(output: str) -> list:
    return [
        [int(t) for t in m.group(1).split()]
        for m in re.finditer(r"^\[\d+\] \d+ prompt tokens -> \d+ new: (.*)$", output, re.M)
    ]


@pytest.fixture(scope="module")
def one_rank(mpi):
    res = mpi.run(1, *ARGS, "--random-weights", script=EXAMPLE)
    ids = generated(res.output)
    assert len(ids) == 3 and all(len(x) == 8 for x in ids), res.output
    return ids


def test_tp8_matches_one_rank_token_for_token(mpi, one_rank):
    # CI's command: without --model the example builds random weights (as --random-weights).
    res = mpi.run(8, *ARGS, script=EXAMPLE)
    assert generated(res.output) == one_rank, res.output
    out = res.output
    assert out.count("Pangu-38B example: 8 rank(s), tp 8, device cpu") == 1, out  # rank 0 only
    assert "weights: RANDOM (seed 11), built in memory by each rank" in out
    assert re.search(
        r"^prefill: 72 tokens \(batch 3 x 24\) in [\d.]+ s = [\d.]+ tokens/s$", out, re.M
    ), out
    assert re.search(
        r"^decode:  7 steps \(batch 3\) in [\d.]+ s = [\d.]+ ms/step, [\d.]+ tokens/s", out, re.M
    ), out
    assert re.search(r"^memory plan \(rank 0, cpu\): weights", out, re.M), out


def test_exported_tp2_directory_matches_one_rank(mpi, one_rank, tmp_path):
    from fastattention import random_weights

    cfg = random_weights.config_for_tp(dict(TINY, dtype="float16"), 2)
    random_weights.write_model(cfg, tmp_path / "tiny-tp2", seed=11)
    res = mpi.run(2, *ARGS[2:], "--model", tmp_path / "tiny-tp2", script=EXAMPLE)
    assert generated(res.output) == one_rank, res.output


def test_tp_other_than_world_size_fails_once(mpi):
    res = mpi.run(2, "--preset", "tiny", "--tp", 4, script=EXAMPLE, check=False, timeout=120)
    assert res.returncode != 0
    msg = "--tp 4 must equal the number of MPI processes (2)"
    assert res.output.count(msg) == 1, res.output
