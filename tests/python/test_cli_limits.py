"""CLI usage errors and failures end in exit status 2 / 1 with a message, never a traceback
(issue 17 items 4 and 9)."""

from __future__ import annotations

import errno
import json
import re

import pytest
from cli_helpers import run_cli
from hostile_model import write_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    write_tiny_model(path)
    return path


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--stop", "-1"], 2, r"argument --stop: expected a token id \(an integer >= 0\), got -1"),
        (["--stop", str(2**63)], 2, r"argument --stop: expected a token id .* of at most"),
        (["--prompt", f"1 {2**64}"], 2, r"argument --prompt: bad prompt .* out of range"),
        (["--top-k", str(2**40)], 2, r"--top-k must be at most 2147483647"),
        (
            ["--threads", str(2**40)],
            2,
            r"argument --threads: expected a positive integer of at most",
        ),
        (
            ["--max-new-tokens", str(2**64)],
            2,
            r"argument --max-new-tokens: expected a positive integer of at most",
        ),
        (["--max-new-tokens", str(2**40)], 1, r"max_new_tokens: 1099511627776 exceeds max_seq_len"),
        (["--seed", "-5"], 2, r"argument --seed: expected a seed"),
        (["--device", "cuda:9999999999"], 1, r"device: 'cuda:9999999999': the GPU index is out"),
    ],
)
def test_generate_out_of_range_values(tiny, extra, code, message):
    args = ["generate", "--ids", "--model", tiny, "--prompt", "1 2"] + extra
    if "--prompt" in extra:
        args = ["generate", "--ids", "--model", tiny] + extra
    res = run_cli(*args)
    assert res.returncode == code, (res.returncode, res.stderr)
    assert re.search(message, res.stderr), res.stderr
    assert "Traceback" not in res.stderr


def test_bench_attention_bad_seqlens_is_a_usage_error():
    res = run_cli("bench", "attention", "--seqlens", "abc")
    assert res.returncode == 2, res.stderr
    assert "argument --seqlens: expected comma-separated integers, got 'abc'" in res.stderr


@pytest.mark.parametrize("where", ["same", "dotdot", "symlink", "rank_folder"])
def test_export_onto_its_source_is_refused_before_writing(tmp_path, where):
    """Item 4: --out naming --hf's directory used to overwrite the checkpoint's config.json."""
    src = tmp_path / "hf" / "rank0" if where == "rank_folder" else tmp_path / "hf"
    src.mkdir(parents=True)
    (src / "sub").mkdir()
    config = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    (src / "config.json").write_text(config)
    out = {
        "same": src,
        "dotdot": f"{src}/sub/..",
        "symlink": tmp_path / "link",
        "rank_folder": tmp_path / "hf",
    }[where]
    if where == "symlink":
        out.symlink_to(src)
    res = run_cli("export", "--hf", src, "--out", out)
    assert res.returncode == 2, res.stderr
    assert "--out:" in res.stderr and str(src) in res.stderr and "Traceback" not in res.stderr
    assert (src / "config.json").read_text() == config
    assert sorted(p.name for p in src.iterdir()) == ["config.json", "sub"]


def test_export_api_refuses_its_source(tmp_path):
    from fastattention.export import export_hf

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"is the source checkpoint directory"):
        export_hf(tmp_path, tmp_path, dtype="float32", progress=False)
    assert (tmp_path / "config.json").read_text() == "{}"


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS])
def test_export_io_errors_are_messages_not_tracebacks(
    hf_model_factory, tmp_path, monkeypatch, capsys, err
):
    """A full disk or a read-only file system during export: exit 1, the message names the path."""
    from fastattention import cli as cli_module
    from fastattention.export import model_writer

    src = hf_model_factory("llama")

    def failing_write(name, *a, **k):
        raise OSError(err, __import__("os").strerror(err), str(tmp_path / "out" / "x.fat"))

    monkeypatch.setattr(model_writer.Exporter, "tasks", lambda self: [("embed", failing_write, ())])
    rc = cli_module.main(
        ["export", "--hf", str(src.path), "--out", str(tmp_path / "out"), "--quiet"]
    )
    captured = capsys.readouterr()
    assert rc == 1
    assert "x.fat" in captured.err and "OSError" in captured.err


def test_export_onto_a_read_only_file_system_for_real(hf_model_factory):
    """/proc is read-only for everyone, root included."""
    src = hf_model_factory("llama")
    res = run_cli("export", "--hf", src.path, "--out", "/proc/fastattention-export", "--quiet")
    assert res.returncode == 1, res.stderr
    assert "/proc/fastattention-export" in res.stderr and "Traceback" not in res.stderr
