"""The `fastattention` command line: export, generate and bench on real (tiny) models, checking
what they print against the Python API, and bad input: exit status 2 for usage errors, 1 for
failures, each with a message naming the option or file at fault."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import QUICK_CPU_E2E, run_cli

from fastattention.export import read_header, read_tensor
from fastattention.session import Session


def parse_generate(stdout: str):
    """{index: new ids} and the timing numbers from `fastattention generate` output."""
    new = {
        int(m.group(1)): [int(t) for t in m.group(3).split()]
        for m in re.finditer(r"^\[(\d+)\] new\s+\((\d+) tokens\): ?(.*)$", stdout, re.M)
    }
    prefill = re.search(
        r"^prefill: (\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s\)$", stdout, re.M
    )
    decode = re.search(r"^decode: (\d+) steps in ([\d.]+) s \(([\d.]+) ms/step\)$", stdout, re.M)
    return new, prefill, decode


def test_console_script_is_installed():
    script = pathlib.Path(sys.executable).parent / "fastattention"
    assert script.exists(), f"{script} missing: is the package installed (pip install .)?"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for command in ("export", "generate", "chat", "serve", "bench"):
        assert command in out.stdout


def test_package_entry_points():
    """The lazy top-level names of the package resolve in a fresh interpreter."""
    code = (
        "from fastattention import ops, Session, export_hf; "
        "import fastattention as fa; import numpy as np; "
        "q = np.ones((1, 2, 1, 8), np.float32); "
        "print(fa.ops.attention(q, q, q).shape, fa.Session.__name__, fa.export_hf.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["(1,", "2,", "1,", "8)", "Session", "export_hf"]


def test_export_command(hf_model_factory, tmp_path):
    hf = hf_model_factory("llama")
    out_dir = tmp_path / "exported"
    res = run_cli("export", "--hf", hf.path, "--out", out_dir, "--dtype", "bfloat16", "--quiet")
    assert res.returncode == 0, res.stderr
    assert f"-> {out_dir}" in res.stdout
    config = json.loads((out_dir / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["tp_size"] == 1
    assert config["num_layers"] == hf.config["num_hidden_layers"]
    header = read_header(out_dir / "rank0" / "embed.weight.fat")
    assert header.dtype == "bfloat16"
    assert header.shape == (hf.config["vocab_size"], hf.config["hidden_size"])
    # The values are the checkpoint's, rounded to bfloat16 (relative error <= 2**-8).
    embed = read_tensor(out_dir / "rank0" / "embed.weight.fat", upcast_bf16=True)
    ref = hf.state_dict()["model.embed_tokens.weight"]
    assert np.all(np.abs(embed - ref) <= np.abs(ref) * 2.0**-8)
    session = Session(out_dir)
    assert session.config["dtype"] == "bfloat16"


def test_export_command_tp2(hf_model_factory, tmp_path):
    hf = hf_model_factory("llama")
    res = run_cli(
        "export",
        "--hf",
        hf.path,
        "--out",
        tmp_path / "tp2",
        "--tp",
        "2",
        "--dtype",
        "float32",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "tp2").iterdir()) == ["config.json", "rank0", "rank1"]


def test_generate_command_matches_session(exported_model_factory):
    model = exported_model_factory("llama")
    prompts = ["1 5 9 33 7", "4,8,15,16,23,42", "3"]
    args = ["generate", "--model", model.path, "--ids", "--max-new-tokens", 12, "--threads", 2]
    for p in prompts:
        args += ["--prompt", p]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    new, prefill, decode = parse_generate(res.stdout)
    expected = Session(model.path, max_batch=3).generate(
        [[int(t) for t in p.replace(",", " ").split()] for p in prompts], 12
    )
    assert [new[i] for i in range(len(prompts))] == expected
    assert prefill and int(prefill.group(1)) == 5 + 6 + 1 and float(prefill.group(3)) > 0
    assert decode and int(decode.group(1)) == 11 and float(decode.group(3)) > 0


def test_generate_command_sampling_and_json(exported_model_factory):
    model = exported_model_factory("qwen2")
    args = [
        "generate",
        "--model",
        model.path,
        "--ids",
        "--prompt",
        "10 20 30",
        "--max-new-tokens",
        8,
        "--temperature",
        0.8,
        "--top-k",
        20,
        "--top-p",
        0.9,
        "--seed",
        7,
        "--json",
    ]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    expected = Session(model.path).generate(
        [[10, 20, 30]], 8, temperature=0.8, top_k=20, top_p=0.9, seed=7
    )
    assert out["outputs"] == expected and out["prompts"] == [[10, 20, 30]]
    assert out["timings"]["decode_steps"] == 7
    # A stop token ends the sequence (and is included).
    stop = expected[0][2]
    res = run_cli(*args, "--stop", stop)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["outputs"][0] == expected[0][: expected[0].index(stop) + 1]


def test_bench_e2e_quick():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    res = run_cli(*QUICK_CPU_E2E, "--dtypes", "float32,bfloat16", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = {}
    for line in res.stdout.splitlines():
        m = re.match(
            r"^\| (transformers|fastattention) \| (\w+) \| ([\d,]+) \| ([\d.]+)x \| "
            r"([\d.]+) \| ([\d.]+)x \| *([\d.]*) \| *([\d.]*)x? *\|$",
            line,
        )
        if m:
            rows[(m.group(1), m.group(2))] = m.groups()[:6]
            # Our rows carry the step bound (bytes read / the read loop's bandwidth) and the ratio.
            bound, ratio = m.group(7), m.group(8)
            if m.group(1) == "fastattention":
                assert float(bound) > 0 and float(ratio) > 0, line
            else:
                assert bound == "" and ratio == "", line
    assert set(rows) == {
        ("transformers", "float32"),
        ("fastattention", "float32"),
        ("fastattention", "bfloat16"),
    }, res.stdout
    assert rows[("transformers", "float32")][3] == "1.00"
    for engine, dtype, prefill, _, decode, _ in rows.values():
        assert float(prefill.replace(",", "")) > 0 and float(decode) > 0
    # Same weights in float32: the greedy tokens agree with transformers' all the way.
    assert re.search(r"\(float32 weights\): 8/8$", res.stdout, re.M), res.stdout
    assert re.search(r"^read loop \(2 threads, 1 GiB\): [\d.]+ GB/s", res.stdout, re.M), res.stdout


def test_bench_attention_small():
    pytest.importorskip("torch")
    res = run_cli(
        "bench",
        "attention",
        "--device",
        "cpu",
        "--seqlens",
        "64,128",
        "--heads",
        2,
        "--head-dim",
        32,
        "--causal",
        "yes",
        "--warmup",
        1,
        "--repeats",
        1,
        "--threads",
        2,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    table = [line for line in res.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2, res.stdout  # header, separator, one row per sequence length
    assert table[2].startswith("| 64 |") and table[3].startswith("| 128 |"), res.stdout


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "args, code, message",
    [
        ([], 2, "required: .*command|the following arguments are required"),
        (["serve"], 2, "the following arguments are required: --model"),
        (
            ["serve", "--model", ".", "--max-preempted-kv-gib", "-1"],
            1,
            "--max-preempted-kv-gib must be >= 0",
        ),
        (
            ["serve", "--model", ".", "--max-preempted-kv-gib", "nan"],
            1,
            "--max-preempted-kv-gib must be >= 0",
        ),
        (
            ["serve", "--model", ".", "--max-preempted-kv-gib", "inf"],
            1,
            "--max-preempted-kv-gib must be >= 0",
        ),
        (["deploy"], 2, "invalid choice: 'deploy'"),
        (["bench", "nosuch"], 2, "invalid choice: 'nosuch'"),
        (
            ["export", "--hf", "/nonexistent/hf", "--out", "/tmp/x"],
            1,
            "--hf /nonexistent/hf: no such directory",
        ),
        (
            ["export", "--hf", ".", "--out", "/tmp/x", "--dtype", "int8"],
            2,
            "argument --dtype: invalid choice: 'int8'",
        ),
        (
            ["export", "--hf", ".", "--out", "/tmp/x", "--tp", "0"],
            2,
            "argument --tp: expected a positive integer, got 0",
        ),
        (["export", "--out", "/tmp/x"], 2, "the following arguments are required: --hf"),
        (
            ["generate", "--model", "/nonexistent/model", "--prompt", "1 2"],
            1,
            "--model /nonexistent/model: no such directory",
        ),
        (["generate", "--model", ".", "--ids", "--prompt", "1 x 2"], 2, "bad prompt '1 x 2'"),
        (["generate", "--model", ".", "--ids", "--prompt", ""], 2, "empty prompt"),
        (["generate", "--model", ".", "--prompt", ""], 2, "empty prompt"),
        (
            ["chat", "--model", "/nonexistent/model"],
            1,
            "--model /nonexistent/model: no such directory",
        ),
        (
            ["export", "--gguf", "/nonexistent/m.gguf", "--out", "/tmp/x"],
            1,
            "--gguf /nonexistent/m.gguf: no such file",
        ),
        (["export", "--gguf", "x.gguf", "--hf", ".", "--out", "/tmp/x"], 2, "not allowed with"),
        (["generate", "--model", "."], 2, "the following arguments are required: --prompt"),
        (
            ["bench", "tp-e2e", "--device", "cpu", "--model", "/nonexistent/c.json"],
            1,
            "--model /nonexistent/c.json: cannot read",
        ),
        (["bench", "tp-e2e", "--device", "cpu", "--layers", "0"], 1, "--layers must be positive"),
        (["bench", "tp-e2e", "--device", "cpu", "--repeats", "0"], 1, "--repeats must be positive"),
        (["bench", "tp-e2e", "--batches", "1,x"], 2, "expected comma-separated integers"),
        (
            ["bench", "tp-e2e", "--device", "cpu", "--baseline", "/nonexistent/tp1.json"],
            1,
            "--baseline /nonexistent/tp1.json: cannot read",
        ),
        (["bench", "allreduce-overlap", "--gemm-sms", "-2"], 2, "expected integers >= 0"),
        (
            ["bench", "allreduce-overlap", "--allreduce", "ring"],
            1,
            "--allreduce: expected nccl and/or gather, got 'ring'",
        ),
        (["bench", "allreduce-overlap"], 1, "start it with `mpirun -n 2"),
        (["bench", "gemv", "--tokens", "17"], 1, "--tokens: each must be 1..16"),
        (["bench", "gemv", "--warps", "9"], 1, r"--warps: each must be 0\.\.8"),
        (["bench", "gemv", "--stages", "4"], 1, "--stages: each must be 0, 1, 2 or 3"),
        (["bench", "gemv", "--tokens", "1,x"], 2, "expected comma-separated integers"),
    ],
)
def test_usage_errors(args, code, message):
    res = run_cli(*args)
    assert res.returncode == code, (res.stdout, res.stderr)
    assert re.search(message, res.stderr), res.stderr


def test_export_of_a_dir_without_config(tmp_path):
    res = run_cli("export", "--hf", tmp_path, "--out", tmp_path / "out")
    assert res.returncode == 1
    assert f"--hf {tmp_path}: no config.json" in res.stderr


def test_export_of_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]})
    )
    res = run_cli("export", "--hf", tmp_path, "--out", tmp_path / "out")
    assert res.returncode == 1
    assert "bert" in res.stderr.lower() and "Traceback" not in res.stderr


def test_generate_bad_token_and_options(exported_model_factory):
    model = exported_model_factory("llama")
    vocab = model.config["vocab_size"]
    res = run_cli("generate", "--model", model.path, "--ids", "--prompt", f"1 2 {vocab}")
    assert res.returncode == 1
    assert f"position 2: token id {vocab} is out of range" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("generate", "--model", model.path, "--ids", "--prompt", "1 2", "--top-p", "1.5")
    assert res.returncode == 1 and "--top-p must be in (0, 1], got 1.5" in res.stderr
    res = run_cli(
        "generate", "--model", model.path, "--ids", "--prompt", "1 2", "--temperature", "-1"
    )
    assert res.returncode == 1 and "--temperature must be >= 0" in res.stderr
    long_prompt = " ".join(["5"] * (model.config["max_position_embeddings"] + 1))
    res = run_cli("generate", "--model", model.path, "--ids", "--prompt", long_prompt)
    assert res.returncode == 1 and "max_seq_len" in res.stderr
    res = run_cli("generate", "--model", model.path, "--ids", "--prompt", "1 2", "--device", "tpu")
    assert res.returncode == 1 and "'tpu' is not a valid device" in res.stderr
    # Text needs a tokenizer; this model has none.
    res = run_cli("generate", "--model", model.path, "--prompt", "Hello")
    assert res.returncode == 1 and "has no tokenizer" in res.stderr and "--ids" in res.stderr


def test_generate_broken_weights(exported_model_factory, tmp_path):
    model = exported_model_factory("llama")
    broken = tmp_path / "broken"
    (broken / "rank0").mkdir(parents=True)
    (broken / "config.json").write_bytes((model.path / "config.json").read_bytes())
    for f in (model.path / "rank0").iterdir():
        data = f.read_bytes()
        (broken / "rank0" / f.name).write_bytes(
            data[:-4] if f.name == "lm_head.weight.fat" else data
        )
    res = run_cli("generate", "--model", broken, "--ids", "--prompt", "1 2")
    assert res.returncode == 1
    assert "WeightFileError" in res.stderr and "lm_head.weight.fat" in res.stderr


def test_bench_tp_e2e_baseline_of_another_kind(tmp_path):
    wrong = tmp_path / "other.json"
    wrong.write_text(json.dumps({"results": []}))  # e.g. allreduce-overlap's JSON
    res = run_cli("bench", "tp-e2e", "--device", "cpu", "--baseline", wrong)
    assert res.returncode == 1 and "not a `bench tp-e2e --json` file" in res.stderr, res.stderr


def test_communicator_tiling_options_reject_bad_values():
    from fastattention._native import _C

    comm = _C.Communicator("local", "cpu")
    assert comm.gemm_sms == -1 and comm.gather_reduce is False  # the defaults (GPU-only knobs)
    comm.gemm_sms = 0  # all SMs
    with pytest.raises(ValueError, match="gemm_sms: expected >= -1"):
        comm.gemm_sms = -2
    with pytest.raises(ValueError, match="num_tiles: expected >= 0"):
        comm.num_tiles = -1
    assert comm.plan_tiles(4096, 1024, 512) == (1, 0)  # one rank: nothing to overlap


def test_bench_spill_cpu_quick():
    """`bench spill-cpu` runs on the CPU and prints the read loop, the kernel and their ratio."""
    pytest.importorskip("torch")
    res = run_cli(
        "bench",
        "spill-cpu",
        "--quick",
        "--repeats",
        "1",
        "--buffer-mb",
        "16",
        "--dtypes",
        "bfloat16",
        "--blocks",
        "16",
    )
    assert res.returncode == 0, res.stderr
    rows = [l for l in res.stdout.splitlines() if l.startswith("| bfloat16 |")]
    assert len(rows) == 2, res.stdout  # GQA 32/8 and 8/1
    ratio = float(rows[0].split("|")[10])
    assert 0 < ratio < 10, rows[0]


def test_read_loop_sums_the_buffer():
    from fastattention._native import _C

    data = np.arange(1001, dtype=np.uint64)  # 8008 bytes: 1001 words, shares of 8 words per thread
    for threads in (1, 2, 3):
        assert _C.read_loop(data, threads) == int(data.sum())
    with pytest.raises(ValueError, match="contiguous 1-D"):
        _C.read_loop(np.zeros((4, 4), dtype=np.uint64), 1)
