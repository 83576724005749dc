"""What each rank runs in the multi-rank tests (launched by tests/mpi/conftest.py's `mpi.run`):

mpi_worker.py session MODEL_DIR OUT_DIR PROMPTS_JSON   generate + logits with three tiling
    settings; writes OUT_DIR/rank{r}.npz
mpi_worker.py engine MODEL_DIR OUT_DIR SPEC_JSON       in-flight batching: rank 0 schedules,
    the others follow; writes OUT_DIR/engine{r}.json
mpi_worker.py collectives OUT_DIR                      tiled vs plain all-reduce, all-gather,
    broadcast, linear_all_reduce against float64 / exact references; asserts, writes a marker
mpi_worker.py fail-raise MODEL_DIR                     rank 1 raises while rank 0 generates
mpi_worker.py fail-hang MODEL_DIR                      rank 1 stops answering (sleeps)
mpi_worker.py load MODEL_DIR                           just loads a Session (mismatch cases)
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

# The three settings every session case runs: no overlap, forced uneven tiles, the heuristic.
TILINGS = {"plain": dict(tp_overlap=False), "tiles3": dict(tp_tiles=3), "auto": dict()}


def session_case(model_dir: str, out_dir: str, prompts_json: str) -> None:
    from fastattention.session import Session

    spec = json.loads(open(prompts_json).read())
    results = {}
    for name, kwargs in TILINGS.items():
        s = Session(
            model_dir,
            num_threads=1,
            max_batch=len(spec["prompts"]),
            prefill_chunk_tokens=spec["prefill_chunk_tokens"],
            **kwargs,
        )
        results[f"tokens_{name}"] = np.array(
            s.generate(spec["prompts"], spec["max_new_tokens"]), dtype=np.int64
        )
        results[f"logits_{name}"] = s.logits(spec["prompts"][0])
        results["rank"] = np.int64(s.rank)
        results["world_size"] = np.int64(s.world_size)
        del s
    np.savez(os.path.join(out_dir, f"rank{results['rank']}.npz"), **results)


def collectives_case(out_dir: str) -> None:
    from fastattention._native import _C

    comm = _C.Communicator("auto", "cpu")
    r, n = comm.rank, comm.size
    assert comm.backend == "mpi" and n > 1, comm
    rng = np.random.default_rng(1234 + r)

    def gathered(x):
        out = np.empty((n,) + x.shape, x.dtype)
        comm.all_gather(np.ascontiguousarray(x), out)
        return out

    # all_gather is a copy: every rank's input arrives exactly.
    mine = rng.standard_normal((3, 5)).astype(np.float32)
    every = gathered(mine)
    assert np.array_equal(every[r], mine)

    # Integers: the tiled all-reduce equals the plain one and the exact sum, bit for bit.
    for dtype in (np.int32, np.int64):
        for rows, cols, tiles in ((37, 5, 4), (8, 3, 8), (1, 7, 3), (64, 33, 2), (5, 2, 9)):
            x = rng.integers(-(10**6), 10**6, (rows, cols)).astype(dtype)
            exact = gathered(x).sum(axis=0, dtype=np.int64).astype(dtype)
            plain, tiled = x.copy(), x.copy()
            comm.all_reduce_sum(plain)
            comm.all_reduce_sum_tiled(tiled, tiles)
            assert np.array_equal(plain, exact), (dtype, rows, cols)
            assert np.array_equal(tiled, plain), (dtype, rows, cols, tiles)

    # Floats: within rounding of the float64 sum.
    for rows, cols, tiles in ((33, 17, 4), (128, 64, 3), (2, 5, 2)):
        x = rng.standard_normal((rows, cols)).astype(np.float32)
        ref = gathered(x).astype(np.float64).sum(axis=0)
        plain, tiled = x.copy(), x.copy()
        comm.all_reduce_sum(plain)
        comm.all_reduce_sum_tiled(tiled, tiles)
        tol = 4 * n * np.finfo(np.float32).eps * np.abs(gathered(x)).sum(axis=0).max()
        assert np.abs(plain - ref).max() <= tol
        assert np.abs(tiled - ref).max() <= tol
        assert np.abs(tiled - plain).max() <= tol

    # broadcast from every root.
    for root in range(n):
        b = rng.standard_normal(6).astype(np.float32)
        want = gathered(b)[root]
        comm.broadcast(b, root)
        assert np.array_equal(b, want)

    # The row-parallel GEMM: rank r holds columns r*K/n.. of x and w; the sum over ranks of the
    # partial products is x @ w^T. Tiled (forced tiles and the heuristic) and not, against float64.
    T, K, H = 300, 16 * n, 24
    full_x = np.random.default_rng(7).standard_normal((T, K)).astype(np.float32)
    full_w = np.random.default_rng(8).standard_normal((H, K)).astype(np.float32)
    cols = slice(r * K // n, (r + 1) * K // n)
    x, w = np.ascontiguousarray(full_x[:, cols]), np.ascontiguousarray(full_w[:, cols])
    ref = full_x.astype(np.float64) @ full_w.astype(np.float64).T
    outs = {}
    for name, overlap, tiles in (("plain", False, 0), ("tiles5", True, 5), ("auto", True, 0)):
        comm.overlap, comm.num_tiles = overlap, tiles
        y = np.full((T, H), np.nan, np.float32)
        comm.linear_all_reduce(x, w, y, num_threads=1)
        tol = 8 * K * np.finfo(np.float32).eps * (np.abs(full_x) @ np.abs(full_w).T).max()
        assert np.isfinite(y).all(), name
        assert np.abs(y - ref).max() <= tol, (name, np.abs(y - ref).max(), tol)
        outs[name] = y
    # Ranks of one machine: the heuristic does not tile (overlap cannot pay there); a count asked
    # for is used, capped at the rows.
    comm.overlap, comm.num_tiles = True, 0
    assert comm.choose_num_tiles(4096) == 1
    comm.num_tiles = 6
    assert comm.choose_num_tiles(4096) == 6 and comm.choose_num_tiles(4) == 4
    comm.overlap = False
    assert comm.choose_num_tiles(4096) == 1

    # Bad input names the tensor and the rank.
    try:
        comm.all_reduce_sum(np.zeros((4, 4), np.float32)[:, ::2])
        raise AssertionError("a strided buffer was accepted")
    except ValueError as e:
        assert "must be contiguous" in str(e) and f"rank {r} of {n}" in str(e), e
    try:
        comm.all_gather(np.zeros(3, np.float32), np.zeros(3 * n + 1, np.float32))
        raise AssertionError("a wrong all_gather output size was accepted")
    except ValueError as e:
        assert "must hold" in str(e), e
    comm.barrier()
    with open(os.path.join(out_dir, f"collectives_ok_rank{r}"), "w") as f:
        f.write("ok\n")


def fail_case(mode: str, model_dir: str) -> None:
    from fastattention.session import Session

    s = Session(model_dir, num_threads=1, max_batch=1)
    if s.rank == 1:
        if mode == "fail-raise":
            raise RuntimeError("rank 1 fails on purpose (test)")
        time.sleep(600)  # fail-hang: stops answering
    print(f"rank {s.rank} starts generating", flush=True)
    s.generate([[1, 5, 9, 13]], 8)
    print("rank 0 finished generating: the test expected it to be stopped", flush=True)


def engine_case(model_dir: str, out_dir: str, spec_json: str) -> None:
    """In-flight batching under mpirun: rank 0 adds the requests (some joining a running batch,
    one cancelled) and steps; the other ranks follow(). Every rank writes its engine's stats."""
    from fastattention.engine import Engine, follow
    from fastattention.session import Session

    spec = json.loads(open(spec_json).read())
    s = Session(
        model_dir,
        num_threads=1,
        max_batch=4,
        prefill_chunk_tokens=16,
        max_cache_tokens=spec.get("max_cache_tokens"),
    )
    e = Engine(s, step_tokens=12)
    out = {}
    if s.rank == 0:
        pending = list(enumerate(spec["requests"]))
        ids, tokens, reasons = {}, {}, {}
        while pending or e.has_work:
            if pending:
                i, (prompt, kw) = pending.pop(0)
                ids[e.add_request(prompt, **kw)] = i
                tokens[i] = []
            for rid, token, finished, reason in e.step():
                if token >= 0:
                    tokens[ids[rid]].append(token)
                if finished:
                    reasons[ids[rid]] = reason
                if ids[rid] == spec.get("cancel") and len(tokens[ids[rid]]) == 2 and not finished:
                    e.cancel(rid)
        for _ in range(3):  # idle steps (what an idle server's loop does)
            e.step()
        e.shutdown()
        e.step()
        assert e.stopped
        out.update(
            tokens=[tokens[i] for i in range(len(tokens))],
            reasons=[reasons[i] for i in range(len(reasons))],
        )
    else:
        try:
            e.add_request([1, 2], 2)
        except ValueError as err:
            out["add_error"] = str(err)
        follow(e)
    out["stats"] = e.stats
    with open(os.path.join(out_dir, f"engine{s.rank}.json"), "w") as f:
        json.dump(out, f)


def main(argv) -> None:
    mode = argv[1]
    if mode == "session":
        session_case(*argv[2:5])
    elif mode == "engine":
        engine_case(*argv[2:5])
    elif mode == "collectives":
        collectives_case(argv[2])
    elif mode in ("fail-raise", "fail-hang"):
        fail_case(mode, argv[2])
    elif mode == "load":
        from fastattention.session import Session

        Session(argv[2], num_threads=1)
        print("loaded", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    from fastattention import distributed

    distributed.abort_on_error()
    main(sys.argv)
