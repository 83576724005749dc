"""`bench serve --peer llama-server` (bench/llama_server_peer.py): what CI can check without
llama.cpp (option errors, finding the binary, its command line, the peer skipped with a reason,
our model written back as a Hugging Face checkpoint that transformers computes the same logits
from), and, where a llama-server binary and llama.cpp's conversion script are found, the peer's
row and its greedy tokens against our server's on the tiny shape."""

from __future__ import annotations

import json
import os
import stat
import types

import numpy as np
import pytest
from cli_helpers import run_cli

from fastattention.bench import llama_cpp_peer
from fastattention.bench import llama_server_peer as peer
from fastattention.cli import build_parser, main

TINY = ("--shape", "tiny", "--threads", 1, "--step-tokens", 16, "--prompt-len", "4,20")


@pytest.fixture
def no_server(monkeypatch, tmp_path):
    """No llama-server anywhere: $LLAMA_SERVER unset, PATH an empty folder."""
    monkeypatch.delenv(peer.ENV, raising=False)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def fake_binary(path, mode=0o755):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho 'version: 1 (abc1234)'\n")
    path.chmod(mode)
    return path


# ----------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    "args, message",
    [
        (["--llama-server", "x"], "--llama-server needs --peer llama-server"),
        (["--llama-cpp-convert", "x.py"], "--llama-cpp-convert needs --peer llama-server"),
        (["--llama-cpp-kv", "same"], "--llama-cpp-kv needs --peer llama-server"),
        (["--peer", "llama-server", "--device", "cuda"], "is a CPU peer (--device cpu)"),
        (["--peer", "llama-server", "--model", "m"], "serves the random --shape model"),
        (
            ["--peer", "llama-server", "--llama-server", "/nonexistent/llama-server"],
            "--llama-server /nonexistent/llama-server: no such file; build it from llama.cpp",
        ),
        (
            ["--peer", "llama-server", "--llama-cpp-convert", "/nonexistent/convert.py"],
            "--llama-cpp-convert /nonexistent/convert.py: no such file",
        ),
    ],
)
def test_peer_option_errors(args, message, capsys, tmp_path):
    """Refused before any model is written."""
    assert main(["bench", "serve", *args, "--work-dir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "w").exists()


def test_peer_choice_is_checked(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser(load_benches=True).parse_args(["bench", "serve", "--peer", "vllm"])
    assert e.value.code == 2 and "invalid choice: 'vllm'" in capsys.readouterr().err


# ------------------------------------------------------------------------ finding llama-server
def test_find_llama_server(tmp_path, monkeypatch, no_server):
    with pytest.raises(peer.LlamaServerNotFound) as e:
        peer.find_llama_server()
    assert "llama-server not found: neither --llama-server nor $LLAMA_SERVER" in str(e.value)
    assert "--target llama-server" in str(e.value)  # how to build one

    on_path = fake_binary(no_server / "llama-server")
    assert peer.find_llama_server() == on_path.resolve()
    from_env = fake_binary(tmp_path / "env" / "llama-server")
    monkeypatch.setenv(peer.ENV, str(from_env))
    assert peer.find_llama_server() == from_env.resolve()
    explicit = fake_binary(tmp_path / "given" / "llama-server")
    assert peer.find_llama_server(str(explicit)) == explicit.resolve()

    plain = fake_binary(tmp_path / "plain" / "llama-server", mode=stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(peer.LlamaServerNotFound, match="not an executable file"):
        peer.find_llama_server(str(plain))
    monkeypatch.setenv(peer.ENV, str(tmp_path / "gone"))
    with pytest.raises(peer.LlamaServerNotFound, match=r"\$LLAMA_SERVER .*gone: no such file"):
        peer.find_llama_server()
    assert peer.server_version(explicit) == "version: 1 (abc1234)"


def test_convert_script_is_looked_for_in_the_build_tree(tmp_path, monkeypatch):
    monkeypatch.setattr(llama_cpp_peer, "vendored_candidates", lambda: [])
    server = fake_binary(tmp_path / "llama.cpp" / "build" / "bin" / "llama-server")
    script = tmp_path / "llama.cpp" / llama_cpp_peer.SCRIPT
    script.write_text("")
    candidates = peer.convert_script_candidates(server)
    assert candidates[:3] == [
        server.parent / llama_cpp_peer.SCRIPT,
        server.parent.parent / llama_cpp_peer.SCRIPT,
        script,
    ]
    monkeypatch.delenv(llama_cpp_peer.ENV, raising=False)
    assert llama_cpp_peer.find_convert_script(None, candidates) == script.resolve()


# ----------------------------------------------------------------- command line and counters
def test_server_command_matches_the_bench_settings():
    parse = build_parser(load_benches=True).parse_args
    args = parse(["bench", "serve", "--peer", "llama-server", "--threads", "1", "--max-batch", "6"])
    cmd = peer.server_command("/bin/llama-server", "/m.gguf", args, 512)

    def option(name):
        return cmd[cmd.index(name) + 1]

    assert cmd[0] == "/bin/llama-server" and option("--model") == "/m.gguf"
    assert option("--host") == "127.0.0.1" and option("--port") == "0"
    assert option("--threads") == option("--threads-batch") == "1"
    assert option("--parallel") == "6" and option("--ctx-size") == str(6 * 513)
    assert option("--batch-size") == option("--ubatch-size") == "256"  # --step-tokens
    assert option("--cache-type-k") == option("--cache-type-v") == "f16"
    assert {"--cont-batching", "--no-cache-prompt", "--metrics"} <= set(cmd)
    assert option("--alias") == "bench"
    same = parse(["bench", "serve", "--peer", "llama-server", "--llama-cpp-kv", "same"])
    cmd = peer.server_command("llama-server", "m.gguf", same, 100)
    assert cmd[cmd.index("--cache-type-k") + 1] == "f32"
    assert cmd[cmd.index("--threads") + 1] == str(len(os.sched_getaffinity(0)))


def test_engine_metrics_and_token_ids():
    text = (
        "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n"
        "llamacpp:prompt_tokens_total 120\nllamacpp:tokens_predicted_total 30\n"
        "llamacpp:n_decode_total 25\nllamacpp:requests_processing 0\n"
    )
    assert peer.engine_metrics(text) == dict(
        prompt_tokens_total=120.0, generated_tokens_total=30.0, engine_steps_total=25.0
    )
    choice = types.SimpleNamespace(
        logprobs=types.SimpleNamespace(content=[{"id": 7, "token": " t7"}, {"id": 300}])
    )
    assert peer.logprob_token_ids(choice) == [7, 300]
    with pytest.raises(RuntimeError, match="no token ids in logprobs.content"):
        peer.logprob_token_ids(types.SimpleNamespace(logprobs=None))
    vocab = {" a": 3, " b": 4, " ab": 29}
    assert peer.text_token_ids(vocab, " a ab b") == [3, 29, 4]
    with pytest.raises(RuntimeError, match="'zz' is not a word"):
        peer.text_token_ids(vocab, " a zz")


def test_agreement_counts_and_first_token():
    ours = dict(mode="inflight", probe_ids=[[1, 2, 3], [4, 5, 6]])
    same = dict(mode="llama-server", probe_ids=[[1, 2, 9], [4, 5, 6]])
    line = peer.agreement([ours, same])
    assert line.endswith(f": 2/{peer.PROBE_TOKENS}, 3/{peer.PROBE_TOKENS}"), line
    other = dict(mode="llama-server", probe_ids=[[1, 2, 3], [8, 5, 6]])
    with pytest.raises(RuntimeError, match="greedy tokens of prompt 1: the first differs"):
        peer.agreement([ours, other])


# ------------------------------------------------------- our model as a Hugging Face checkpoint
def test_hf_checkpoint_is_the_same_model(tmp_path):
    """transformers computes our session's logits from the checkpoint write_hf_checkpoint makes
    of the random tiny model (both float32), untied and tied."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from fastattention.bench.serve_model import model_config, write_bench_model
    from fastattention.session import Session

    prompt = [int(t) for t in np.random.default_rng(0).integers(3, 512, size=12)]
    for tied in (False, True):
        cfg = dict(model_config("tiny", 64), tie_word_embeddings=tied)
        ours_dir, hf_dir = tmp_path / f"fa-{tied}", tmp_path / f"hf-{tied}"
        write_bench_model(cfg, str(ours_dir), seed=3)
        hf = peer.write_hf_checkpoint(str(ours_dir), str(hf_dir))
        assert hf["tie_word_embeddings"] is tied and hf["head_dim"] == 16
        ours = Session(str(ours_dir), num_threads=1, max_batch=1).logits(prompt)
        model = transformers.LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
        with torch.no_grad():
            theirs = model(torch.tensor([prompt])).logits[0].numpy()
        assert np.abs(ours - theirs).max() < 1e-3 * np.abs(theirs).max(), tied


def test_hf_config_refuses_what_llama_cannot_hold():
    from fastattention.bench.serve_model import model_config

    cfg = dict(model_config("tiny", 64), qkv_bias=True, dtype="bfloat16")
    with pytest.raises(ValueError) as e:
        peer.hf_config_of(cfg)
    assert "qkv_bias True (expected False)" in str(e.value)
    assert "dtype 'bfloat16' (expected 'float32' or 'float16')" in str(e.value)


# --------------------------------------------------------------------------- the bench itself
def test_bench_serve_says_the_peer_is_absent(tmp_path):
    """No llama-server: the bench serves our modes and says why the peer is skipped."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != peer.ENV}
    env["PATH"] = str(empty)
    options = "--requests 2 --concurrency 2 --max-batch 2 --output-len 2,4 --modes inflight"
    res = run_cli(
        "bench", "serve", *TINY, *options.split(), "--peer", "llama-server", env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert "llama-server peer skipped: llama-server not found: neither --llama-server" in (
        res.stdout
    ), res.stdout
    assert "| inflight |" in res.stdout and "| llama-server |" not in res.stdout


def _llama_server_or_skip():
    try:
        server = peer.find_llama_server()
        llama_cpp_peer.find_convert_script(None, peer.convert_script_candidates(server))
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return server


def test_bench_serve_with_llama_server(tmp_path):
    """Where llama-server is found ($LLAMA_SERVER or PATH): its row serves every request to its
    length, and its greedy tokens agree with our server's from the first (the bench fails
    otherwise); float32 KV on both sides, so all of them agree on the tiny model."""
    _llama_server_or_skip()
    out = tmp_path / "serve.json"
    options = (
        "--requests 4 --concurrency 2 --max-batch 2 --output-len 4,12 --output-mean 8 "
        "--modes inflight --peer llama-server --llama-cpp-kv same"
    )
    res = run_cli(
        "bench",
        "serve",
        *TINY,
        *options.split(),
        "--json",
        out,
        "--server-log-dir",
        tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "| llama-server |" in res.stdout and "in-flight / llama-server: throughput x" in (
        res.stdout
    )
    assert "llama-server peer: version: " in res.stdout
    ours, theirs = json.loads(out.read_text())["results"]
    assert theirs["mode"] == "llama-server" and theirs["output_tokens"] == ours["output_tokens"]
    assert theirs["engine_busy"] is None and theirs["engine_steps"] > 0
    assert theirs["chunks_not_tokens"] == 0  # one streamed chunk per token
    expected = f": {peer.PROBE_TOKENS}/{peer.PROBE_TOKENS}, {peer.PROBE_TOKENS}/{peer.PROBE_TOKENS}"
    assert expected in res.stdout, res.stdout
    assert "listening on" in (tmp_path / "server_llama-server.log").read_text()
