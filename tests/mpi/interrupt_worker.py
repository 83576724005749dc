"""What each rank runs in tests/mpi/test_interrupt_mpi.py: a long generate that a SIGINT ends.

    interrupt_worker.py WHO     WHO = "rank0" (only rank 0 gets SIGINT, as from a signal sent to
                                one process) or "all" (every rank gets it, as from Ctrl-C in a
                                terminal, which signals the whole foreground process group)

Each rank builds the same tp=2 random model in memory, signals itself (if chosen) one second into
a 8000-token generate, and reports how the call ended; then every rank generates again, so a rank
left in a collective would hang the job (and fail the test by its timeout)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from fastattention import distributed, random_weights
from fastattention.session import Session

CONFIG = {
    "architecture": "llama",
    "dtype": "float32",
    "tp_size": 1,
    "vocab_size": 512,
    "vocab_size_padded": 512,
    "hidden_size": 256,
    "num_layers": 4,
    "num_heads": 4,
    "num_kv_heads": 4,
    "head_dim": 64,
    "intermediate_size": 512,
    "max_position_embeddings": 8192,
    "norm_type": "rmsnorm",
    "norm_eps": 1e-5,
    "activation": "silu",
    "gated_ffn": True,
    "qkv_bias": False,
    "o_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "rope": {"theta": 10000.0, "style": "neox"},
}


def main(who: str) -> None:
    rank = distributed.rank()
    cfg = random_weights.config_for_tp(CONFIG, distributed.world_size())
    s = Session.from_memory(
        cfg,
        random_weights.shard_tensors(cfg, rank),
        num_threads=1,
        max_batch=1,
        max_seq_len=8192,
        max_cache_tokens=8192,
    )
    if who == "all" or rank == 0:
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    try:
        out = s.generate([[1, 2, 3]], 8000)[0]
        ended = f"returned {len(out)} tokens"
    except KeyboardInterrupt:
        ended = "KeyboardInterrupt"
    seconds = time.monotonic() - t0
    again = s.generate([[1, 2, 3]], 4)[0]
    print(
        json.dumps({"rank": rank, "ended": ended, "seconds": seconds, "again": again}), flush=True
    )


if __name__ == "__main__":
    main(sys.argv[1])
