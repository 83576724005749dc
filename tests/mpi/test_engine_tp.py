"""In-flight batching (fastattention.engine) on a tp=2 model under mpirun -n 2: rank 0 takes the
requests and schedules, rank 1 steps with it (follow); every request's tokens equal a tp=1 session
running it alone, a cancelled request frees its blocks, both ranks end with the same stats (the
same steps) and whole KV pools, and rank 1 refuses requests. `fastattention serve` under
mpirun answers like Session.generate, keeps the ranks together while idle, and shuts down on a
SIGINT to rank 0."""

from __future__ import annotations

import json
import random

from text_helpers import tiny_config

from fastattention import random_weights
from fastattention.session import Session

CONFIG = tiny_config(512, max_position_embeddings=256)


def write(tmp_path, tp: int):
    path = tmp_path / f"model-tp{tp}"
    random_weights.write_model(random_weights.config_for_tp(CONFIG, tp), path, seed=5)
    return path


def random_requests(seed: int, n: int, prompt_len: tuple, new_tokens: tuple) -> list:
    rng = random.Random(seed)
    return [
        (
            [rng.randrange(3, 512) for _ in range(rng.randint(*prompt_len))],
            dict(max_new_tokens=rng.randint(*new_tokens), seed=i, temperature=[0.0, 0.9][i % 2]),
        )
        for i in range(n)
    ]


def run_engine(mpi, tmp_path, requests, **spec):
    """The requests through the engine of a tp=2 model under mpirun -n 2 (mpi_worker.py's
    'engine'): both ranks' results, and a tp=1 session of the same weights for reference."""
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(dict(requests=requests, **spec)))
    out = tmp_path / "out"
    out.mkdir()
    mpi.run(2, "engine", write(tmp_path, 2), out, spec_file)
    r0, r1 = (json.loads((out / f"engine{r}.json").read_text()) for r in (0, 1))
    return r0, r1, Session(write(tmp_path, 1), num_threads=1)


def test_engine_under_mpirun(mpi, tmp_path):
    requests = random_requests(3, 7, prompt_len=(2, 30), new_tokens=(3, 12))
    r0, r1, ref = run_engine(mpi, tmp_path, requests, cancel=3)
    for i, (prompt, kw) in enumerate(requests):
        alone = ref.generate([prompt], **kw)[0]
        if i == 3:
            assert r0["reasons"][i] == "cancelled" and r0["tokens"][i] == alone[:2]
        else:
            assert r0["tokens"][i] == alone, i
            assert r0["reasons"][i] == "length"
    assert r0["stats"] == {**r1["stats"], "step_seconds": r0["stats"]["step_seconds"]}
    assert r0["stats"]["kv_blocks_free"] == r0["stats"]["kv_blocks_total"]
    assert r0["stats"]["running"] == 0 and r0["stats"]["cancelled"] == 1
    assert "rank 0 takes the requests" in r1["add_error"]


def test_engine_preempts_in_lock_step_under_mpirun(mpi, tmp_path):
    # A pool of 6 blocks for 4 running requests growing to 3-4 blocks each: the ranks preempt
    # and resume the same requests at the same steps (each its own KV shard).
    requests = random_requests(8, 5, prompt_len=(8, 20), new_tokens=(30, 40))
    r0, r1, ref = run_engine(mpi, tmp_path, requests, max_cache_tokens=96)
    for i, (prompt, kw) in enumerate(requests):
        assert r0["tokens"][i] == ref.generate([prompt], **kw)[0], i
    assert r0["stats"]["preemptions"] > 0
    assert r0["stats"] == {**r1["stats"], "step_seconds": r0["stats"]["step_seconds"]}
    assert r0["stats"]["kv_blocks_free"] == r0["stats"]["kv_blocks_total"] == 6


def test_serve_under_mpirun(mpi, tmp_path):
    import os
    import re
    import signal
    import subprocess
    import sys
    import threading
    import time

    import openai

    from fastattention.bench.serve_model import write_tokenizer

    tp2, tp1 = write(tmp_path, 2), write(tmp_path, 1)
    for path in (tp2, tp1):
        write_tokenizer(str(path), CONFIG["vocab_size"])
    env = dict(
        os.environ,
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        FASTATTN_COMM_TIMEOUT="60",
    )
    cmd = (
        [mpi.mpirun, "-n", "2"]
        + (["--oversubscribe"] if mpi.is_open_mpi else [])
        + [
            sys.executable,
            "-m",
            "fastattention.cli",
            "serve",
            "--model",
            str(tp2),
            "--port",
            "0",
            "--threads",
            "1",
            "--max-batch",
            "4",
            "--served-model-name",
            "tp2",
        ]
    )
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: list = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline, port = time.monotonic() + 120, None
        while port is None:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            text = re.sub(r"\x1b\[[0-9;]*m", "", "".join(lines))  # mpirun: a terminal, colours
            found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", text)
            port = int(found.group(1)) if found else None
            time.sleep(0.05)
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60
        )
        ref = Session(tp1, num_threads=1)
        for prompt in ("a b c", "kl zz q"):
            got = client.completions.create(
                model="tp2", prompt=prompt, max_tokens=8, temperature=0.7, seed=9
            )
            assert got.choices[0].text == str(
                ref.generate(prompt, 8, temperature=0.7, seed=9, stop_tokens=[2])
            )
        time.sleep(1.5)  # idle: rank 0 keeps stepping, rank 1 keeps following
        streamed = client.completions.create(
            model="tp2", prompt="a b", max_tokens=6, temperature=0, stream=True
        )
        assert "".join(c.choices[0].text for c in streamed) == str(
            ref.generate("a b", 6, stop_tokens=[2])
        )
    finally:
        # Ctrl-C to rank 0 (Open MPI's mpirun ends the job at once on a signal of its own):
        # rank 0 shuts down gracefully and its last step stops rank 1.
        text = re.sub(r"\x1b\[[0-9;]*m", "", "".join(lines))
        rank0 = re.search(r"Started server process \[(\d+)\]", text)
        if rank0:
            os.kill(int(rank0.group(1)), signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        reader.join(10)
    assert rc == 0, "".join(lines)
    assert "".join(lines).count("server stopped") == 1, "".join(lines)
