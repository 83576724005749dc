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
from types import SimpleNamespace

import openai
import pytest
import text_helpers as h
from cli_helpers import run_cli

from fastattention._native import _C
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
        (["--device", "tpu"], "--device: 'tpu' is not a valid device (expected cpu, cuda or"),
        (["--model", "m", "--shape", "7b"], "--shape: for the random model, not with --model"),
        (
            ["--model", "m", "--dtype", "float16", "--work-dir", "w"],
            "--dtype, --work-dir: for the random model, not with --model",
        ),
    ],
)
def test_bench_serve_bad_options(args, message):
    res = run_cli("bench", "serve", *args, timeout=120)
    assert res.returncode == 1 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.skipif(_C.cuda_built, reason="a CUDA build: --device cuda is valid")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_bench_serve_device_the_build_lacks(tmp_path, device):
    """Refused before any model is written (a 7B one would be 13.5 GB)."""
    res = run_cli("bench", "serve", "--device", device, "--shape", "7b", "--work-dir", tmp_path)
    assert res.returncode == 1, res.stderr
    assert f"--device {device}: this build has no CUDA support (built for CPU only)" in res.stderr
    assert "Traceback" not in res.stderr and list(tmp_path.iterdir()) == []


def test_bench_serve_7b_shape():
    """The Llama-7B shape: 6,738,415,616 parameters, 13.5 GB in float16 (nothing written)."""
    from fastattention import random_weights
    from fastattention.bench.serve_model import model_config

    cfg = model_config("7b", 768, "float16")
    shape = {k: cfg[k] for k in ("hidden_size", "num_layers", "num_heads", "num_kv_heads")}
    assert shape == dict(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32)
    assert (cfg["head_dim"], cfg["intermediate_size"], cfg["vocab_size"]) == (128, 11008, 32000)
    assert cfg["dtype"] == "float16" and not cfg["tie_word_embeddings"]
    assert cfg["max_position_embeddings"] == 4096  # Llama-2-7B's; longer requests: theirs
    assert model_config("7b", 5000)["max_position_embeddings"] == 5000
    assert random_weights.parameter_count(cfg) == 6_738_415_616
    assert random_weights.shard_bytes(cfg) == 2 * 6_738_415_616


def test_bench_serve_passes_the_device_to_the_server():
    from fastattention.bench.serve import server_command
    from fastattention.cli import build_parser

    def command(*options, mode="inflight"):
        args = build_parser().parse_args(["bench", "serve", *options])
        return server_command(args, "/models/m", mode, 768)

    def option(cmd, name):
        return cmd[cmd.index(name) + 1]

    cmd = command("--device", "cuda:1", "--max-batch", "32", mode="static")
    assert cmd[1:4] == ["-m", "fastattention.cli", "serve"] and "--static-batching" in cmd
    assert option(cmd, "--device") == "cuda:1" and option(cmd, "--max-batch") == "32"
    assert option(cmd, "--model") == "/models/m" and option(cmd, "--max-seq-len") == "768"
    assert option(command(), "--device") == "cpu" and "--static-batching" not in command()


def test_bench_serve_7b_on_the_cpu_warns_and_checks_the_disk(tmp_path, monkeypatch, capsys):
    """--shape 7b --device cpu is allowed with a warning; a disk without room for its 13.5 GB
    (here: 1 GB free, faked) is refused before anything is written."""
    from fastattention.bench import serve
    from fastattention.cli import main

    monkeypatch.setattr(serve.shutil, "disk_usage", lambda path: SimpleNamespace(free=10**9))
    argv = ["bench", "serve", "--shape", "7b", "--dtype", "float16", "--work-dir", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "warning: --shape 7b on the CPU: every decode step reads the whole model (13.5 GB" in err
    assert (
        f"the random 7b model needs 13.5 GB (and 1 GiB to spare) in {tmp_path}, which has "
        f"1.0 GB free" in err
    )
    assert [p.name for p in tmp_path.iterdir()] == []


def test_bench_serve_work_dir_keeps_the_model(tmp_path):
    """--work-dir: the random model is written once and reused by a run of the same shape,
    dtype and seed (its files untouched), written again for another seed; --server-log-dir keeps
    each mode's server output."""
    work, logs = tmp_path / "work", tmp_path / "logs"
    options = (
        f"--requests 2 --concurrency 2 --max-batch 2 --output-len 2,4 --modes inflight "
        f"--dtype float16 --work-dir {work} --server-log-dir {logs}"
    )
    weights = work / "random-tiny-float16" / "rank0" / "embed.weight.fat"

    res = bench_serve_tiny(options, tmp_path / "1.json")
    assert res.returncode == 0, res.stderr
    assert "random tiny model (" in res.stderr and " parameters, float16, " in res.stderr
    assert json.loads((weights.parent.parent / "config.json").read_text())["dtype"] == "float16"
    written = weights.stat().st_mtime_ns
    result = json.loads((tmp_path / "1.json").read_text())
    assert result["args"]["device"] == "cpu" and result["results"][0]["server_start_s"] > 0
    assert "server stopped" in (logs / "server_inflight.log").read_text()

    res = bench_serve_tiny(options, tmp_path / "2.json")
    assert res.returncode == 0, res.stderr
    assert f"random tiny model: reusing {work / 'random-tiny-float16'}" in res.stderr
    assert weights.stat().st_mtime_ns == written

    res = bench_serve_tiny(options + " --seed 1", tmp_path / "3.json")
    assert res.returncode == 0, res.stderr
    assert "reusing" not in res.stderr and weights.stat().st_mtime_ns != written
