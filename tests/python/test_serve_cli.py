"""`fastattention serve` as a process on 127.0.0.1 (an ephemeral port) over an exported tiny model
with a tokenizer: the openai client gets Session.chat's text, Ctrl-C (SIGINT) shuts it down
cleanly; bad options fail with a message."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time

import openai
import pytest
import text_helpers as h
from cli_helpers import run_cli

from fastattention.session import Session


@pytest.fixture(scope="module")
def model(hf_model_factory, tmp_path_factory):
    src = tmp_path_factory.mktemp("hf-serve")
    out = tmp_path_factory.mktemp("fa-serve") / "tiny-llama"
    h.export_llama_with_tokenizer(hf_model_factory, h.train_byte_level(), src, out)
    return out


def serve(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "fastattention.cli", "serve", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def bench_serve_tiny(options: str, json_out, timeout=300):
    """Runs `fastattention bench serve` on the tiny shape (one thread, steps of 16 tokens, prompts
    of 4..20 tokens) with `options` (flags and values, space-separated) and --json json_out."""
    tiny = ("--shape", "tiny", "--threads", 1, "--step-tokens", 16, "--prompt-len", "4,20")
    return run_cli("bench", "serve", *tiny, *options.split(), "--json", json_out, timeout=timeout)


def test_serve_answers_like_session_chat_and_stops_on_sigint(model):
    proc = serve("--model", model, "--port", 0, "--threads", 1, "--max-batch", 4)
    lines, port = [], None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while port is None:
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "no 'Uvicorn running on' line: " + "".join(lines)
            found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", "".join(lines))
            port = int(found.group(1)) if found else None
            time.sleep(0.05)
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60
        )
        messages = [{"role": "user", "content": "Hello world"}]
        answer = client.chat.completions.create(
            model="tiny-llama", messages=messages, max_tokens=16, temperature=0
        )
        expect = Session(model).chat(messages, 16)
        assert answer.choices[0].message.content == str(expect)
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(60)
        reader.join(10)
    assert rc == 0, "".join(lines)
    assert "Shutting down" in "".join(lines) and "server stopped" in lines[-1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/m"], "--model /nonexistent/m: no such directory"),
        (["--port", 70000], "--port must be in 0..65535"),
    ],
)
def test_serve_bad_options(model, args, message):
    args = ["--model", model, *args] if args[0] != "--model" else args
    res = run_cli("serve", *args, timeout=120)
    assert res.returncode == 1 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.startswith("fastattention serve: error:")


def test_bench_serve_tiny(tmp_path):
    """Both modes serve the same seeded requests to their full lengths (ignore_eos)."""
    import argparse

    from fastattention.bench.serve import make_requests

    out = tmp_path / "serve.json"
    res = bench_serve_tiny(
        "--requests 6 --concurrency 3 --max-batch 2 --output-len 2,12 --output-mean 5 --seed 4", out
    )
    assert res.returncode == 0, res.stderr
    assert "| inflight |" in res.stdout and "| static |" in res.stdout
    assert "in-flight / static: throughput x" in res.stdout
    results = json.loads(out.read_text())["results"]
    reqs = make_requests(
        argparse.Namespace(
            seed=4, prompt_len=[4, 20], output_len=[2, 12], output_mean=5.0, requests=6
        ),
        512,
    )
    assert [r["mode"] for r in results] == ["inflight", "static"]
    for r in results:
        assert r["requests"] == 6 and r["output_tokens"] == sum(n for _, n in reqs)
        assert r["ttft_p50"] > 0 and r["tokens_per_s"] > 0
        # the server's engine counters: every prompt and output token went through its steps
        # (+ the warm-up request: 8 prompt tokens, 2 outputs at most)
        total = sum(len(p) + n for p, n in reqs)
        assert total <= r["engine_steps"] * r["tokens_per_step"] <= total + 10
        assert 0 < r["engine_busy"] <= 1


def test_bench_serve_under_kv_pressure(tmp_path):
    """A 256-token KV pool for 4 clients of requests growing to 14 blocks each (long enough in
    engine time for the clients' requests to overlap): in flight, the youngest are preempted
    and resumed; reserving whole contexts, nothing is (one request at a time); every request
    runs to its length either way."""
    out = tmp_path / "serve.json"
    res = bench_serve_tiny(
        "--requests 8 --concurrency 4 --max-batch 4 --output-len 190,200 --output-mean 195 "
        "--seed 2 --max-cache-tokens 256 --modes inflight,reserve",
        out,
    )
    assert res.returncode == 0, res.stderr
    assert "in-flight / reserving: throughput x" in res.stdout
    inflight, reserve = json.loads(out.read_text())["results"]
    assert inflight["preemptions"] > 0 and reserve["preemptions"] == 0
    assert inflight["output_tokens"] == reserve["output_tokens"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--modes", "inflight,dynamic"], "--modes: expected a comma-separated list"),
        (["--step-tokens", 8, "--max-batch", 8], "--step-tokens (8) must exceed --max-batch (8)"),
        (["--prompt-len", "9,3"], "--prompt-len: expected LO,HI with LO <= HI"),
        (["--max-cache-tokens", 100], "--max-cache-tokens (100) must hold the longest request"),
    ],
)
def test_bench_serve_bad_options(args, message):
    res = run_cli("bench", "serve", *args, timeout=120)
    assert res.returncode == 1 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
