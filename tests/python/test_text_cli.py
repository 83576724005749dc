"""`fastattention generate` with text and `fastattention chat` (stdin fed by a subprocess; Ctrl-C
sent as SIGINT) on tiny random models with a tokenizer built here, checked against the Python
API."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
import text_helpers as h
from cli_helpers import run_cli

from fastattention import random_weights
from fastattention.session import Session


@pytest.fixture(scope="module")
def model(hf_model_factory, tmp_path_factory):
    src, out = tmp_path_factory.mktemp("hf-cli-tok"), tmp_path_factory.mktemp("fa-cli-tok")
    h.export_llama_with_tokenizer(hf_model_factory, h.train_byte_level(), src, out)
    return out


def test_generate_prints_text(model):
    s = Session(model, max_batch=2)
    res = run_cli("generate", "--model", model, "--prompt", "Hello world", "--max-new-tokens", 12)
    assert res.returncode == 0, res.stderr
    assert res.stdout == s.generate("Hello world", 12) + "\n"
    assert "prefill:" in res.stderr and "decode:" in res.stderr
    res = run_cli(
        "generate",
        "--model",
        model,
        "--prompt",
        "Hello",
        "--prompt",
        "你好",
        "--json",
        "--temperature",
        0.9,
        "--seed",
        4,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    expected = s.generate(["Hello", "你好"], 16, temperature=0.9, seed=4)
    assert out["outputs"] == expected and out["token_ids"] == [e.token_ids for e in expected]
    full = s.generate("Hello world", 12)
    stop = full[3:6]
    res = run_cli(
        "generate",
        "--model",
        model,
        "--prompt",
        "Hello world",
        "--max-new-tokens",
        12,
        "--stop-text",
        stop,
    )
    assert res.returncode == 0 and res.stdout == full[: full.index(stop)] + "\n"


def test_chat_conversation_with_history(model):
    s = Session(model)
    u1, u2, u3 = "Hello there", "And then?", "New topic"
    a1 = s.chat([{"role": "user", "content": u1}], 10)
    a2 = s.chat(
        [
            {"role": "user", "content": u1},
            {"role": "assistant", "content": a1},
            {"role": "user", "content": u2},
        ],
        10,
    )
    a3 = s.chat([{"role": "user", "content": u3}], 10)
    res = run_cli(
        "chat", "--model", model, "--max-new-tokens", 10, stdin=f"{u1}\n{u2}\n/reset\n{u3}\n"
    )
    assert res.returncode == 0, res.stderr
    banner = res.stdout.split("\n", 1)[0]
    assert banner.startswith(f"chat with {model}")
    assert res.stdout == (
        f"{banner}\n>>> {a1}\n>>> {a2}\n>>> (conversation cleared)\n>>> {a3}\n>>> \n"
    )


def test_chat_needs_a_tokenizer(exported_model_factory):
    res = run_cli("chat", "--model", exported_model_factory("llama").path, stdin="hi\n")
    assert res.returncode == 1 and "has no tokenizer" in res.stderr


def test_ctrl_c_stops_the_answer_not_the_program(tmp_path):
    """A model slow enough (about 2 ms a step on one thread, 3000 new tokens) that SIGINT lands
    mid-answer. One thread: on a shared 2-core machine OpenMP threads can wait on each other."""
    tok = h.train_byte_level()
    cfg = h.tiny_config(
        tok.get_vocab_size(),
        hidden_size=512,
        num_layers=6,
        num_heads=8,
        num_kv_heads=8,
        head_dim=64,
        intermediate_size=1536,
        max_position_embeddings=4096,
        rope=dict(theta=10000.0, style="neox", rotary_dim=64, scaling=dict(type="none")),
    )
    random_weights.write_model(cfg, tmp_path, seed=1)
    h.save_hf_tokenizer(tok, tmp_path)
    s = Session(tmp_path, max_batch=1, num_threads=1)
    first = s.chat([{"role": "user", "content": "Hi"}], 100)
    assert first.finish_reason == "length"  # no end-of-turn token soon: the answer runs long
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastattention.cli",
            "chat",
            "--model",
            tmp_path,
            "--max-new-tokens",
            "3000",
            "--threads",
            "1",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    chunks = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: proc.stdout.read(1), "")), daemon=True
    )
    reader.start()
    try:
        proc.stdin.write("Hi\n")
        proc.stdin.flush()
        deadline = time.time() + 120
        while len("".join(chunks).split(">>> ", 1)[-1]) < 20 and time.time() < deadline:
            time.sleep(0.05)  # until the answer streams
        proc.send_signal(signal.SIGINT)
        while "[stopped]" not in "".join(chunks) and time.time() < deadline:
            time.sleep(0.05)
        proc.stdin.write("/exit\n")
        proc.stdin.flush()
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    out = "".join(chunks)
    assert rc == 0, proc.stderr.read()
    answer = out.split(">>> ", 1)[1].split(" [stopped]")[0]
    assert out.rstrip().endswith(">>>") and " [stopped]\n" in out
    assert len(answer) >= 20 and len(s.tokenizer.encode(answer, False)) < 2500  # stopped early
    assert answer.startswith(first) or first.startswith(answer)  # the greedy answer, cut
