"""`bench e2e --device cpu --peer llama.cpp` (bench/llama_cpp_peer.py): what CI can check without
llama-cpp-python (the peer skipped with a reason, option validation, finding and running
llama.cpp's convert_hf_to_gguf.py), and, where llama-cpp-python and the conversion script are
installed, llama.cpp's greedy tokens against ours on a tiny model."""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import numpy as np
import pytest
from cli_helpers import QUICK_CPU_E2E, run_cli

from fastattention.bench import e2e
from fastattention.bench import llama_cpp_peer as peer


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(peer.ENV, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent-bin")


# ------------------------------------------------------------------ finding convert_hf_to_gguf.py
def test_explicit_script_missing_names_path_and_hint(tmp_path, no_env):
    missing = tmp_path / "nowhere" / peer.SCRIPT
    with pytest.raises(peer.ConvertScriptNotFound) as e:
        peer.find_convert_script(str(missing))
    msg = str(e.value)
    assert f"--llama-cpp-convert {missing}" in msg and "no such file" in msg
    assert "git clone" in msg and "vendor/llama.cpp" in msg


def test_script_found_as_file_folder_env_and_candidate(tmp_path, monkeypatch, no_env):
    script = tmp_path / "llama.cpp" / peer.SCRIPT
    script.parent.mkdir()
    script.write_text("")
    assert peer.find_convert_script(str(script)) == script.resolve()
    assert peer.find_convert_script(str(script.parent)) == script.resolve()
    assert peer.find_convert_script(candidates=[tmp_path / "x.py", script]) == script.resolve()
    monkeypatch.setenv(peer.ENV, str(script.parent))
    assert peer.find_convert_script(candidates=[]) == script.resolve()
    monkeypatch.setenv(peer.ENV, str(tmp_path / "gone"))
    with pytest.raises(peer.ConvertScriptNotFound, match=r"\$LLAMA_CPP_CONVERT .*gone"):
        peer.find_convert_script(candidates=[])


def test_script_not_found_anywhere_lists_places(tmp_path, no_env):
    looked = tmp_path / "site-packages" / "vendor" / "llama.cpp" / peer.SCRIPT
    with pytest.raises(peer.ConvertScriptNotFound) as e:
        peer.find_convert_script(candidates=[looked])
    msg = str(e.value)
    assert "not found" in msg and str(looked) in msg and "PATH" in msg
    assert "--llama-cpp-convert" in msg


def test_vendored_candidates_are_beside_the_module(tmp_path):
    module = tmp_path / "src" / "llama_cpp" / "__init__.py"
    got = peer.vendored_candidates(str(module))
    assert tmp_path / "src" / "vendor" / "llama.cpp" / peer.SCRIPT in got


# ------------------------------------------------------------------------------- the conversion
def test_convert_missing_script_and_bad_dtype(tmp_path):
    with pytest.raises(peer.ConvertScriptNotFound, match="no such file"):
        peer.convert_to_gguf(
            str(tmp_path), str(tmp_path / "m.gguf"), "float32", tmp_path / peer.SCRIPT
        )
    with pytest.raises(ValueError, match="no GGUF outtype for weight dtype 'int8'"):
        peer.convert_to_gguf(
            str(tmp_path), str(tmp_path / "m.gguf"), "int8", tmp_path / peer.SCRIPT
        )


def test_convert_failure_shows_output_and_missing_module(tmp_path):
    script = tmp_path / peer.SCRIPT
    script.write_text(
        "import sys\nprint('loading')\n"
        "sys.exit(\"ModuleNotFoundError: No module named 'sentencepiece'\")\n"
    )
    with pytest.raises(RuntimeError) as e:
        peer.convert_to_gguf(str(tmp_path), str(tmp_path / "m.gguf"), "bfloat16", script)
    msg = str(e.value)
    assert "--outtype bf16" in msg and "exit 1" in msg and "loading" in msg
    assert "needs the Python module 'sentencepiece'" in msg


def test_conversion_source_adds_a_placeholder_tokenizer(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"vocab_size": 300}))
    (hf / "model.safetensors").write_bytes(b"x")
    src = peer.conversion_source(str(hf), str(tmp_path / "src"))
    assert src == str(tmp_path / "src")
    assert sorted(os.listdir(hf)) == ["config.json", "model.safetensors"]  # left as it was
    assert os.path.realpath(os.path.join(src, "model.safetensors")) == str(hf / "model.safetensors")
    tok = json.loads((tmp_path / "src" / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(300))
    assert vocab["<0x0A>"] == 3 + 10 and tok["model"]["byte_fallback"]
    tokenizers = pytest.importorskip("tokenizers")
    assert (
        tokenizers.Tokenizer.from_file(str(tmp_path / "src" / "tokenizer.json")).get_vocab_size()
        == 300
    )
    # A checkpoint with its own tokenizer is converted as it is.
    (hf / "tokenizer.json").write_text("{}")
    assert peer.conversion_source(str(hf), str(tmp_path / "src2")) == str(hf)
    with pytest.raises(ValueError, match="at least 259"):
        peer.write_placeholder_tokenizer(str(tmp_path), 100)


# ------------------------------------------------------------------------ options and skipping
@pytest.mark.parametrize(
    "args, message",
    [
        (["--llama-cpp-convert", "x.py"], "--llama-cpp-convert needs --peer llama.cpp"),
        (["--llama-cpp-kv", "same"], "--llama-cpp-kv needs --peer llama.cpp"),
        (["--peer", "llama.cpp", "--device", "cuda"], "is a CPU peer (--device cpu)"),
        (
            ["--peer", "llama.cpp", "--llama-cpp-convert", "/nonexistent/convert_hf_to_gguf.py"],
            "--llama-cpp-convert /nonexistent/convert_hf_to_gguf.py: no such file",
        ),
    ],
)
def test_bench_e2e_peer_option_errors(args, message):
    res = run_cli("bench", "e2e", *args, timeout=120)
    assert res.returncode == 1 and message in res.stderr, res.stdout + res.stderr


def test_bench_e2e_model_shapes():
    """--model-shape picks the random model's shape; --kv-heads defaults to the shape's own."""
    import argparse

    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    small = e2e._resolve(parser.parse_args([]))
    assert small.model_shape == "134m" and small.kv_heads == 12
    big = e2e._resolve(parser.parse_args(["--model-shape", "1b"]))
    assert big.kv_heads == 4 and e2e.MODEL_SHAPES["1b"]["hidden_size"] == 2048
    gqa = e2e._resolve(parser.parse_args(["--model-shape", "1b", "--kv-heads", "8"]))
    assert gqa.kv_heads == 8
    res = run_cli("bench", "e2e", "--model-shape", "7b", timeout=120)
    assert res.returncode == 2 and "invalid choice: '7b'" in res.stderr, res.stderr


def test_bench_e2e_peer_choice_is_checked():
    res = run_cli("bench", "e2e", "--peer", "vllm", timeout=120)
    assert res.returncode == 2 and "invalid choice: 'vllm'" in res.stderr, res.stderr


def test_bench_e2e_peer_skipped_without_llama_cpp(tmp_path):
    """The bench runs and says why the peer is skipped when llama_cpp cannot be imported (an
    import that fails is put first on the path, so this holds with llama-cpp-python installed)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    (tmp_path / "llama_cpp.py").write_text("raise ImportError('hidden by the test')\n")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(tmp_path)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    )
    args = ["--dtypes", "float32", "--new-tokens", 3, "--prompt-len", 16, "--decode-prompt-len", 8]
    res = run_cli(*QUICK_CPU_E2E, *args, "--peer", "llama.cpp", env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (
        "llama.cpp peer skipped: the llama_cpp module (llama-cpp-python) is not importable "
        "(hidden by the test); install it with"
    ) in res.stdout, res.stdout
    assert "| fastattention | float32 |" in res.stdout and "| llama.cpp |" not in res.stdout


def test_peer_skipped_without_convert_script(tmp_path, monkeypatch, no_env):
    fake = types.ModuleType("llama_cpp")
    fake.__file__ = str(tmp_path / "llama_cpp" / "__init__.py")
    monkeypatch.setitem(sys.modules, "llama_cpp", fake)
    monkeypatch.setattr(
        peer,
        "vendored_candidates",
        lambda module_file=None: [tmp_path / "vendor" / "llama.cpp" / peer.SCRIPT],
    )
    args = argparse.Namespace(
        llama_cpp_convert=None, llama_cpp_kv="same", threads=1, new_tokens=2, dtype_list=["float32"]
    )
    engines, note = e2e._peer_engines(
        str(tmp_path), str(tmp_path), np.arange(4), np.arange(2), args
    )
    assert engines == []
    assert note.startswith(f"llama.cpp peer skipped: llama.cpp's {peer.SCRIPT} not found")
    assert str(tmp_path / "vendor" / "llama.cpp" / peer.SCRIPT) in note


def test_peer_table_ratios():
    R = e2e.Result
    results = [
        R("transformers", "float32", 100.0, 40.0, [1, 2, 3]),
        R("fastattention", "float32", 300.0, 10.0, [1, 2, 3]),
        R("fastattention", "bfloat16", 320.0, 6.0, [1, 2, 4]),
        R("llama.cpp", "float32", 150.0, 15.0, [1, 2, 3]),
        R("llama.cpp", "bfloat16", 100.0, 12.0, [1, 2, 3]),
    ]
    table = e2e.format_peer_table(results).splitlines()
    assert table[2] == "| float32 | 300 | 150 | 2.00x | 10.00 | 15.00 | 1.50x | 3/3 |"
    assert table[3] == "| bfloat16 | 320 | 100 | 3.20x | 6.00 | 12.00 | 2.00x | 2/3 |"


# ------------------------------------------------------------- llama.cpp itself (when installed)
def test_llama_cpp_greedy_tokens_agree_with_ours(tmp_path):
    """A tiny Llama (random weights, spread-out logits so that greedy picks are not near-ties):
    our float32 session and llama.cpp on the GGUF its converter makes agree on 12 greedy tokens."""
    module, why = peer.llama_cpp_module()
    if module is None:
        pytest.skip(why)
    try:
        script = peer.find_convert_script()
    except peer.ConvertScriptNotFound as e:
        pytest.skip(str(e))
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from fastattention.export import export_hf
    from fastattention.session import Session

    config = transformers.LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=512,
        max_position_embeddings=256,
        initializer_range=0.2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(tmp_path / "hf")
    export_hf(str(tmp_path / "hf"), str(tmp_path / "fa"), tp=1, dtype="float32", progress=False)
    prompt = [int(t) for t in np.random.default_rng(0).integers(3, 512, size=20)]
    ours = Session(str(tmp_path / "fa"), num_threads=2, max_batch=1, max_seq_len=64).generate(
        [prompt], 12
    )[0]
    src = peer.conversion_source(str(tmp_path / "hf"), str(tmp_path / "src"))
    gguf = peer.convert_to_gguf(src, str(tmp_path / "m.gguf"), "float32", script)
    runner = peer.LlamaCppRunner(gguf, threads=2, n_ctx=64)
    tokens, seconds = runner.generate(prompt, 12)
    assert seconds > 0 and runner.prefill(prompt) > 0
    assert [int(t) for t in ours] == tokens


def test_gguf_step_bytes(tmp_path):
    """Weights but the embedding table (when an output.weight is the LM head) + the KV cache."""
    import gguf

    def write(path, tied):
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_tensor("token_embd.weight", np.zeros((300, 8), np.float32))
        if not tied:
            w.add_tensor("output.weight", np.zeros((300, 8), np.float32))
        w.add_tensor("blk.0.attn_q.weight", np.zeros((8, 8), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(
        json.dumps(
            dict(num_attention_heads=2, hidden_size=8, num_key_value_heads=1, num_hidden_layers=1)
        )
    )
    kv = 10 * 1 * 2 * 1 * 4 * 4  # context 10, 1 layer, K and V, 1 KV head of 4, float32
    write(tmp_path / "untied.gguf", tied=False)
    write(tmp_path / "tied.gguf", tied=True)
    assert (
        peer.gguf_step_bytes(str(tmp_path / "untied.gguf"), str(hf), 10, "float32")
        == 300 * 8 * 4 + 64 * 4 + kv
    )
    assert (
        peer.gguf_step_bytes(str(tmp_path / "tied.gguf"), str(hf), 10, "float32")
        == 300 * 8 * 4 + 64 * 4 + kv
    )
    assert (
        peer.gguf_step_bytes(str(tmp_path / "tied.gguf"), str(hf), 10, "float16")
        == 300 * 8 * 4 + 64 * 4 + kv // 2
    )
