"""Each rank of tests/gpu/test_tp_nccl.py (mpirun -n 2, one GPU per rank, NCCL):

tp_nccl_worker.py start OUT_DIR             only starts the NCCL communicator (its settings come
    from the environment); writes a marker per rank that got through
tp_nccl_worker.py collectives OUT_DIR       NCCL collectives and the tiling-AllReduce on the
    GPU against exact / float64 references; writes a marker per rank when all pass
tp_nccl_worker.py session MODEL_DIR OUT_DIR PROMPTS_JSON    Session(device="cuda") with and
    without the overlap; writes OUT_DIR/rank{r}.npz
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch


def collectives(out_dir: str) -> None:
    from fastattention import distributed
    from fastattention._native import _C

    info = distributed.start()
    local = info["local_rank"]
    torch.cuda.set_device(local)
    dev = f"cuda:{local}"
    comm = _C.Communicator("nccl", dev)
    r, n = comm.rank, comm.size
    stream = torch.cuda.current_stream().cuda_stream
    gen = torch.Generator(device="cpu").manual_seed(100 + r)

    def gathered(x):
        out = torch.empty((n,) + tuple(x.shape), dtype=x.dtype, device=dev)
        comm.all_gather(x.contiguous(), out, stream=stream)
        return out

    # The tiles' all-reduce by NCCL's kernels, and (NCCL >= 2.28) by the copy-engine gather.
    methods = [False] + ([True] if torch.cuda.nccl.version() >= (2, 28, 0) else [])
    # Integers: tiled == plain == exact, bit for bit. Odd sizes take the gather's scalar sum.
    for gather in methods:
        comm.gather_reduce = gather
        for dtype in (torch.int32, torch.int64):
            for rows, cols, tiles in ((37, 5, 4), (4096, 64, 3), (1, 7, 2)):
                x = torch.randint(-(10**6), 10**6, (rows, cols), generator=gen, dtype=dtype).to(dev)
                exact = gathered(x).sum(dim=0, dtype=torch.int64).to(dtype)
                plain, tiled = x.clone(), x.clone()
                comm.all_reduce_sum(plain, stream=stream)
                comm.all_reduce_sum_tiled(tiled, tiles, stream=stream)
                torch.cuda.synchronize()
                assert torch.equal(plain, exact), (dtype, rows)
                assert torch.equal(tiled, plain), (gather, dtype, rows, tiles)

    # Floats: within rounding of the float64 sum; the gather's sums are the same on every rank.
    for gather in methods:
        comm.gather_reduce = gather
        for dtype, eps in (
            (torch.float32, 2**-23),
            (torch.bfloat16, 2**-8),
            (torch.float16, 2**-11),
        ):
            for rows, cols in ((1000, 96), (333, 7)):
                x = torch.randn((rows, cols), generator=gen).to(dev, dtype)
                every = gathered(x).double()
                ref = every.sum(dim=0)
                plain, tiled = x.clone(), x.clone()
                comm.all_reduce_sum(plain, stream=stream)
                comm.all_reduce_sum_tiled(tiled, 4, stream=stream)
                torch.cuda.synchronize()
                tol = 4 * n * eps * every.abs().sum(dim=0).max().item()
                for got in (plain, tiled):
                    assert torch.isfinite(got).all(), (gather, dtype)
                    assert (got.double() - ref).abs().max().item() <= tol, (gather, dtype, tol)
                if gather:
                    assert torch.equal(gathered(tiled)[0], gathered(tiled)[n - 1]), dtype
    comm.gather_reduce = False

    # broadcast from each root.
    for root in range(n):
        b = torch.randn(33, generator=gen).to(dev)
        want = gathered(b)[root].clone()
        comm.broadcast(b, root, stream=stream)
        torch.cuda.synchronize()
        assert torch.equal(b, want)

    # The row-parallel GEMM, bf16: tiled (forced and auto) and not, against float64.
    T, K, H = 3000, 64 * n, 256
    g = torch.Generator(device="cpu").manual_seed(7)
    full_x = torch.randn((T, K), generator=g)
    full_w = torch.randn((H, K), generator=g)
    cols = slice(r * K // n, (r + 1) * K // n)
    x = full_x[:, cols].contiguous().to(dev, torch.bfloat16)
    w = full_w[:, cols].contiguous().to(dev, torch.bfloat16)
    xr = torch.cat([t.double() for t in gathered(x)], dim=1)  # the bf16 inputs, every rank's
    wr = torch.cat([t.double() for t in gathered(w)], dim=1)
    ref = xr @ wr.T
    for overlap, tiles, gather in (
        (False, 0, False),
        (True, 3, False),
        (True, 0, False),
        *((True, 3, True), (True, 4, True))[: 2 * (len(methods) - 1)],
    ):
        comm.overlap, comm.num_tiles, comm.gather_reduce = overlap, tiles, gather
        y = torch.full((T, H), float("nan"), dtype=torch.bfloat16, device=dev)
        comm.linear_all_reduce(x, w, y, stream=stream)
        torch.cuda.synchronize()
        err = (y.double() - ref).abs().max().item()
        tol = 2 * 2**-8 * (xr.abs() @ wr.abs().T).max().item()
        assert torch.isfinite(y).all() and err <= tol, (overlap, tiles, gather, err, tol)
    comm.barrier()
    open(os.path.join(out_dir, f"nccl_ok_rank{r}"), "w").write("ok\n")


def session(model_dir: str, out_dir: str, prompts_json: str) -> None:
    from fastattention.session import Session

    spec = json.loads(open(prompts_json).read())
    res = {}
    variants = [("plain", "nccl", dict(tp_overlap=False)), ("tiles3", "nccl", dict(tp_tiles=3))]
    if torch.cuda.nccl.version() >= (2, 28, 0):
        variants.append(("gather3", "gather", dict(tp_tiles=3)))
    for name, method, kw in variants:
        os.environ["FASTATTN_TP_ALLREDUCE"] = method  # read when the session's NCCL comm starts
        s = Session(model_dir, device="cuda", max_batch=len(spec["prompts"]), **kw)
        res[f"tokens_{name}"] = np.array(s.generate(spec["prompts"], spec["max_new_tokens"]))
        res[f"logits_{name}"] = s.logits(spec["prompts"][0])
        res["rank"] = np.int64(s.rank)
        del s
    np.savez(os.path.join(out_dir, f"rank{int(res['rank'])}.npz"), **res)


if __name__ == "__main__":
    from fastattention import distributed

    distributed.abort_on_error()
    if sys.argv[1] == "start":  # the communicator alone (settings from the environment)
        from fastattention import distributed as dist
        from fastattention._native import _C

        _C.Communicator("nccl", f"cuda:{dist.start()['local_rank']}")
        open(os.path.join(sys.argv[2], f"started_rank{dist.rank()}"), "w").write("ok\n")
    elif sys.argv[1] == "collectives":
        collectives(sys.argv[2])
    else:
        session(*sys.argv[2:5])
