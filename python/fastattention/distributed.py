"""Tensor parallelism over MPI ranks: which rank this process is, and ending the job cleanly.

A model exported with `fastattention export --tp N` runs as N processes, one per rank:

    mpirun -n N python my_script.py          # my_script.py: Session(model_dir).generate(...)

Each rank loads its shard; rank and world size come from MPI, which starts when the first
tensor-parallel Session (or `start()`) needs it. Every rank must make the same calls with the same
arguments; every rank gets the same tokens and logits (print from rank 0 only: `is_main()`).

    from fastattention import distributed
    distributed.rank(), distributed.world_size(), distributed.is_main()
    distributed.barrier()          # e.g. after rank 0 exported a model the others will load
    distributed.max_seconds(t)     # the slowest rank's time

Failures: a tp_size / world-size mismatch, or a model shard that fails to load on some ranks,
raises on every rank. A rank that dies mid-run with an uncaught exception ends the whole job
(MPI_Abort, installed by `abort_on_error()`, which Session calls under mpirun) instead of
leaving the other ranks waiting; a collective also gives up after FASTATTN_COMM_TIMEOUT seconds
(default 300).
"""

from __future__ import annotations

import sys

import numpy as np

from fastattention._native import _C

_hook_installed = False
_world_comm = None


def info() -> dict:
    """launched, rank, world_size, local_rank, mpi_built, mpi_started, mpi_library, ... (starts
    nothing: before MPI starts, rank and world size are the launcher's)."""
    return dict(_C.distributed_info())


def launched() -> bool:
    """True when this process was started by mpirun / mpiexec (or srun with PMI)."""
    return bool(_C.distributed_info()["launched"])


def start() -> dict:
    """Starts MPI in this process (idempotent) and returns info(). RuntimeError saying how to get
    MPI when this build or machine has none."""
    return dict(_C.mpi_start())


def rank() -> int:
    return int(_C.distributed_info()["rank"])


def world_size() -> int:
    return int(_C.distributed_info()["world_size"])


def is_main() -> bool:
    """True on rank 0 (and in a process started alone)."""
    return rank() == 0


def _comm():
    global _world_comm
    if _world_comm is None:
        _world_comm = _C.Communicator("mpi", "cpu")
    return _world_comm


def barrier() -> None:
    """Waits until every rank of the job gets here (a no-op in a process started alone)."""
    if world_size() > 1:
        _comm().barrier()


def max_seconds(seconds: float) -> float:
    """The largest of every rank's `seconds` (e.g. a step's time: it ends with the slowest rank),
    to the nanosecond; every rank must call it. In a process started alone: `seconds`."""
    if world_size() <= 1:
        return seconds
    comm = _comm()
    mine = np.array([int(seconds * 1e9)], np.int64)
    every = np.zeros(comm.size, np.int64)
    comm.all_gather(mine, every)
    return float(every.max()) * 1e-9


def broadcast_str(value: str | None, root: int = 0) -> str | None:
    """root's `value` on every rank (None stays None); every rank must call it."""
    if world_size() <= 1:
        return value
    comm = _comm()
    data = b"" if comm.rank != root or value is None else value.encode()
    head = np.array([len(data), value is None], np.int64)
    comm.broadcast(head, root)
    words = np.zeros((int(head[0]) + 7) // 8, np.int64)  # int64 words: bytes padded
    if comm.rank == root:
        words.view(np.uint8)[: len(data)] = np.frombuffer(data, np.uint8)
    if words.size:
        comm.broadcast(words, root)
    return None if head[1] else words.view(np.uint8)[: int(head[0])].tobytes().decode()


def abort_on_error() -> None:
    """Under mpirun: an uncaught exception on this rank prints its traceback, then ends every
    rank of the job (MPI_Abort), so none is left waiting in a collective. Idempotent."""
    global _hook_installed
    if _hook_installed or not launched():
        return
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        try:
            previous(exc_type, exc, tb)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            _C.abort_job(1)  # returns when MPI is not running (or was finalised on every rank)

    sys.excepthook = hook
    _hook_installed = True
