"""Tensor parallelism on CPU ranks, launched with mpirun -n 2 and -n 4 (tests/mpi/mpi_worker.py
runs on each rank): a tp=N export gives the same greedy tokens and logits (1e-4, fp32) as tp=1, on
every rank, with and without the tiling-AllReduce; the collectives against exact / float64
references; a tp_size / world-size mismatch, a shard that fails to load on one rank, a rank that
raises and a rank that stops answering all end the job in bounded time with the error reported.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from test_example import EXAMPLE, run_example

from fastattention.session import Session

PROMPTS = [
    [1, 17, 42, 99, 5, 63, 7, 200, 31, 4, 150, 11, 8],
    [1, 250, 3, 77, 91, 12, 40],
    [1, 9, 230, 64, 18, 55, 2, 120, 71, 33, 46, 88, 19, 27, 140, 6, 101, 13],
    [1, 44],
]
MAX_NEW = 6


def run_session(mpi, exported, tmp_path, n: int, chunk: int = 2048):
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(dict(prompts=PROMPTS, max_new_tokens=MAX_NEW, prefill_chunk_tokens=chunk))
    )
    out = tmp_path / "out"
    out.mkdir()
    mpi.run(n, "session", exported.path, out, spec)
    return [dict(np.load(out / f"rank{r}.npz")) for r in range(n)]


@pytest.mark.parametrize(
    "name,n", [("llama", 2), ("llama", 4), ("llama_bias", 2), ("llama_bias", 4)]
)
def test_tp_matches_tp1(mpi, exported_model_factory, tmp_path, name, n):
    """llama: GQA (4 heads / 2 KV heads: KV heads replicated at tp=4), vocab 301 padded per rank;
    llama_bias: q/k/v/o and MLP biases (the row-parallel biases are added once, after the
    all-reduce), tied embeddings."""
    ref_model = exported_model_factory(name, tp=1)
    ref = Session(ref_model.path, num_threads=1, max_batch=len(PROMPTS))
    ref_tokens = ref.generate(PROMPTS, MAX_NEW)
    ref_logits = ref.logits(PROMPTS[0])

    results = run_session(mpi, exported_model_factory(name, tp=n), tmp_path, n)
    for r, res in enumerate(results):
        assert int(res["rank"]) == r and int(res["world_size"]) == n
        for tiling in ("plain", "tiles3", "auto"):
            assert res[f"tokens_{tiling}"].tolist() == ref_tokens, (r, tiling)
            err = np.abs(res[f"logits_{tiling}"] - ref_logits).max()
            assert err <= 1e-4, (r, tiling, err)
        # Every rank holds the same gathered logits.
        assert np.array_equal(res["logits_tiles3"], results[0]["logits_tiles3"])


def test_tp_prefill_chunks(mpi, exported_model_factory, tmp_path):
    """Prompts prefilled in 5-token chunks (several passes, batches mixing sequences)."""
    ref = Session(
        exported_model_factory("llama", tp=1).path,
        num_threads=1,
        max_batch=len(PROMPTS),
        prefill_chunk_tokens=5,
    )
    ref_tokens = ref.generate(PROMPTS, MAX_NEW)
    results = run_session(mpi, exported_model_factory("llama", tp=2), tmp_path, 2, chunk=5)
    for res in results:
        assert res["tokens_tiles3"].tolist() == ref_tokens
        assert np.abs(res["logits_plain"] - ref.logits(PROMPTS[0])).max() <= 1e-4


@pytest.mark.parametrize("n", [2, 4])
def test_collectives(mpi, tmp_path, n):
    mpi.run(n, "collectives", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"collectives_ok_rank{r}" for r in range(n)
    ]


def test_world_size_mismatch_fails_on_every_rank(mpi, exported_model_factory):
    model = exported_model_factory("llama", tp=4)
    res = mpi.run(2, "load", model.path, check=False, timeout=120)
    assert res.returncode != 0
    for r in range(2):
        assert re.search(
            rf"tp_size = 4 but this MPI job has 2 processes \(rank {r}\)", res.output
        ), res.output
    assert "loaded" not in res.output
    assert res.seconds < 60, res.seconds


def test_tp1_export_under_mpirun_is_a_mismatch(mpi, exported_model_factory):
    res = mpi.run(2, "load", exported_model_factory("llama", tp=1).path, check=False)
    assert res.returncode != 0
    assert res.output.count("tp_size = 1 but this MPI job has 2 processes") == 2, res.output


def test_shard_failing_to_load_on_one_rank(mpi, exported_model_factory, tmp_path):
    src = exported_model_factory("llama", tp=2).path
    broken = tmp_path / "model"
    shutil.copytree(src, broken)
    victim = sorted((broken / "rank1").glob("*.fat"))[0]
    victim.unlink()
    res = mpi.run(2, "load", broken, check=False, timeout=120)
    assert res.returncode != 0
    assert victim.name in res.output, res.output  # rank 1's own error names the file
    assert "loading the model failed on rank 1" in res.output, res.output  # rank 0's
    assert res.seconds < 60


def test_rank_raising_ends_the_job(mpi, exported_model_factory):
    """Rank 1 raises while rank 0 waits in a collective: the abort-on-error hook ends the job
    (long before the 120 s collective timeout the runner sets)."""
    res = mpi.run(
        2, "fail-raise", exported_model_factory("llama", tp=2).path, check=False, timeout=150
    )
    assert res.returncode != 0
    assert "rank 1 fails on purpose" in res.output, res.output
    assert "finished generating" not in res.output
    assert res.seconds < 60, res.seconds


def test_rank_stopping_times_out(mpi, exported_model_factory):
    """Rank 1 stops answering (no exception): rank 0's collective gives up after
    FASTATTN_COMM_TIMEOUT seconds, and its error ends the job."""
    res = mpi.run(
        2,
        "fail-hang",
        exported_model_factory("llama", tp=2).path,
        check=False,
        timeout=150,
        env={"FASTATTN_COMM_TIMEOUT": "3"},
    )
    assert res.returncode != 0
    assert re.search(r"rank 0 of 2: \w+: no answer from the other ranks after 3 s", res.output), (
        res.output
    )
    assert res.seconds < 60, res.seconds


def test_libmpi_comes_from_an_installed_location(mpi, tmp_path):
    """The MPI library the ranks load exists on disk (not a deleted pip build environment)."""
    script = tmp_path / "maps.py"
    script.write_text(
        "import re\n"
        "from fastattention import distributed\n"
        "info = distributed.start()\n"
        "maps = open('/proc/self/maps').read()\n"
        "libs = sorted(set(re.findall(r'\\S*/libmpi\\.so[.0-9]*', maps)))\n"
        "print('LIBMPI', info['rank'], ' '.join(libs), info['mpi_shim'])\n"
    )
    res = mpi.run(2, script=script)
    lines = [l.split() for l in res.output.splitlines() if l.startswith("LIBMPI")]
    assert len(lines) == 2, res.output
    for _, rank, *paths in lines:
        assert paths, res.output
        for p in paths:
            assert "pip-build-env" not in p and "(deleted)" not in p, res.output
            assert __import__("os").path.exists(p), p


def test_example_under_mpirun(mpi, tmp_path):
    """`mpirun -n 2 python examples/llama_infer.py` exports the default model with tp=2 on rank
    0, runs it on both ranks, prints once, and generates what the one-process run generates."""
    args = [
        "--builder",
        "numpy",
        "--dtype",
        "float32",
        "--max-new-tokens",
        4,
        "--batch",
        2,
        "--prompt-len",
        8,
        "--threads",
        1,
    ]
    env = {"FASTATTENTION_CACHE": str(tmp_path / "cache")}
    res = mpi.run(2, *args, script=EXAMPLE, env=env)
    assert res.output.count("tensor parallel over 2 ranks") == 1, res.output  # rank 0 only
    assert "-export-float32-tp2" in res.output
    single = run_example(*args, cache=tmp_path / "cache")
    assert single.returncode == 0, single.stderr

    def new_tokens(text):
        return re.findall(r"^\[\d+\] prompt \d+ tokens -> \d+ new: (.*)$", text, re.M)

    assert (
        new_tokens(res.output) == new_tokens(single.stdout) and len(new_tokens(single.stdout)) == 2
    )
