"""Hostile model files (issue 17 items 1, 5, 7, 11): every case ends at load in a
WeightFileError naming the file, the key and the value as written, without a crash or a hang."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from hostile_model import write_tiny_model

import fastattention
from fastattention.session import Session


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    cfg = write_tiny_model(path)
    return path, cfg


@pytest.fixture()
def model_copy(tiny_model, tmp_path):
    src, cfg = tiny_model
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst, json.loads(json.dumps(cfg))


def _write_config(path, text):
    (path / "config.json").write_bytes(text.encode() if isinstance(text, str) else text)


def _load_in_subprocess(path, timeout=60):
    """Session(path) in a child, so that a crash or a hang fails the test instead of the run."""
    code = textwrap.dedent(f"""
        import sys
        from fastattention.session import Session
        try:
            Session({str(path)!r})
        except Exception as e:
            print(type(e).__name__ + ": " + str(e)); sys.exit(3)
        print("loaded")
    """)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )


# ----------------------------------------------------------------------- item 1: deep nesting

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "key, replace",
    [
        ("num_layers", lambda raw: raw.replace('"num_layers": 1', '"num_layers": ' + DEEP)),
        ("rope.theta", lambda raw: raw.replace('"theta": 10000.0', '"theta": ' + DEEP)),
        ("eos_token_id", lambda raw: raw[:-1] + ', "eos_token_id": ' + DEEP + "}"),
    ],
)
def test_deeply_nested_value_is_refused_not_a_crash(model_copy, key, replace):
    path, cfg = model_copy
    _write_config(path, replace(json.dumps(cfg)))
    res = _load_in_subprocess(path)
    assert res.returncode == 3, (res.returncode, res.stdout[-500:], res.stderr[-2000:])
    assert res.stdout.startswith("WeightFileError")
    assert "config.json" in res.stdout and f"key '{key}'" in res.stdout
    assert len(res.stdout) < 400, "the message must quote a short excerpt"


# ------------------------------------------------------------------ item 5: FIFO, /dev/zero


def test_config_that_is_a_fifo_is_refused_without_blocking(model_copy):
    path, _ = model_copy
    os.remove(path / "config.json")
    os.mkfifo(path / "config.json")
    res = _load_in_subprocess(path, timeout=30)
    assert res.returncode == 3 and "config.json: not a regular file" in res.stdout, res.stdout


def test_weight_file_that_is_a_fifo_is_refused_without_blocking(model_copy):
    path, _ = model_copy
    fat = path / "rank0" / "final_norm.weight.fat"
    os.remove(fat)
    os.mkfifo(fat)
    res = _load_in_subprocess(path, timeout=30)
    assert res.returncode == 3 and "final_norm.weight.fat: not a regular file" in res.stdout, (
        res.stdout
    )


def test_config_linked_to_dev_zero_is_refused(model_copy):
    path, _ = model_copy
    os.remove(path / "config.json")
    os.symlink("/dev/zero", path / "config.json")
    res = _load_in_subprocess(path, timeout=30)
    assert res.returncode == 3 and "config.json: not a regular file" in res.stdout, res.stdout


def test_huge_config_is_refused_by_size(model_copy):
    path, cfg = model_copy
    with open(path / "config.json", "w") as f:
        f.write(json.dumps(cfg)[:-1] + ', "padding": "')
        f.write("x" * (17 << 20))
        f.write('"}')
    with pytest.raises(fastattention.WeightFileError, match=r"config\.json: \d+ bytes, too large"):
        Session(path)


# --------------------------------------------------------------------------- item 7: numbers


@pytest.mark.parametrize(
    "key, text, message",
    [
        ("rope.theta", "1e400", r"not valid JSON at key 'rope\.theta' .*number overflow.*1e400"),
        ("num_layers", "9" * 100_000, r"not valid JSON at key 'num_layers' .*number overflow"),
        ("num_layers", str(2**63), r"key 'num_layers' is too large: 9223372036854775808"),
        ("rope.theta", "1e39", r"key 'rope\.theta' is too large for float32 .*got 1e\+39"),
        ("rope.theta", "1e-50", r"key 'rope\.theta' is too small for float32 .*got 1e-50"),
        ("norm_eps", "1e-50", r"key 'norm_eps' is too small for float32 .*got 1e-50"),
        ("norm_eps", "1e39", r"key 'norm_eps' is too large for float32"),
        (
            "max_position_embeddings",
            str(2**40),
            r"key 'max_position_embeddings' is too large: 1099511627776",
        ),
        ("head_dim", "512", r"key 'head_dim' is 512; the attention kernels support 1\.\.256"),
    ],
)
def test_numbers_are_checked_at_load(model_copy, key, text, message):
    path, cfg = model_copy
    raw = json.dumps(cfg)
    leaf = key.split(".")[-1]
    old = f'"{leaf}": {json.dumps(cfg["rope"][leaf] if key.startswith("rope.") else cfg[leaf])}'
    assert old in raw
    _write_config(path, raw.replace(old, f'"{leaf}": {text}'))
    with pytest.raises(fastattention.WeightFileError) as info:
        Session(path)
    msg = str(info.value)
    assert str(path / "config.json") in msg and re.search(message, msg), msg
    assert len(msg) < 600


def test_scaling_factor_below_float32_is_refused(model_copy):
    path, cfg = model_copy
    cfg["rope"]["scaling"] = {"type": "linear", "factor": 1e-50}
    _write_config(path, json.dumps(cfg))
    with pytest.raises(
        fastattention.WeightFileError, match=r"key 'rope\.scaling\.factor' is too small for float32"
    ):
        Session(path)


@pytest.mark.parametrize(
    "theta, scaling",
    [
        (1e-37, None),
        (10000.0, {"type": "linear", "factor": 1.2e-38}),
        (1e-37, {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
    ],
)
def test_rope_angles_that_overflow_float32_are_refused(theta, scaling):
    """Found by the fuzz suite: these loaded and gave NaN logits from finite input."""
    from hostile_model import tiny_config

    from fastattention import random_weights

    cfg = tiny_config()
    tensors = random_weights.shard_tensors(cfg, 0)
    cfg["rope"] = {"theta": theta, "style": "neox", **({"scaling": scaling} if scaling else {})}
    with pytest.raises(
        fastattention.WeightFileError,
        match=r"key 'rope\.theta' .* makes rotation angles overflow float32",
    ):
        Session.from_memory(cfg, tensors)


def test_dynamic_scaling_with_two_rotated_dims_is_refused_at_load():
    """Found by the fuzz suite: it loaded, then failed with a message naming no file or key."""
    from hostile_model import tiny_config

    from fastattention import random_weights

    cfg = tiny_config()
    tensors = random_weights.shard_tensors(cfg, 0)
    cfg["rope"] = {
        "theta": 1.0,
        "style": "neox",
        "rotary_dim": 2,
        "scaling": {"type": "dynamic", "factor": 1.0},
    }
    with pytest.raises(
        fastattention.WeightFileError,
        match=r"in-memory config: key 'rope\.scaling\.type' 'dynamic' needs a "
        r"rotated dimension > 2",
    ):
        Session.from_memory(cfg, tensors)


def test_invalid_utf8_in_a_config_string_keeps_the_message(model_copy):
    path, cfg = model_copy
    raw = json.dumps(cfg).encode().replace(b'"llama"', b'"ll\xff\xfeama"')
    _write_config(path, raw)
    with pytest.raises(fastattention.WeightFileError) as info:
        Session(path)
    msg = str(info.value)
    assert "config.json: not valid JSON at key 'architecture'" in msg and "ill-formed UTF-8" in msg
    assert "\\xff" in msg  # the bad byte, escaped


def test_in_memory_config_numbers_are_checked_too():
    from hostile_model import tiny_config

    from fastattention import random_weights

    cfg = tiny_config()
    tensors = random_weights.shard_tensors(cfg, 0)
    cfg["rope"]["theta"] = 1e39
    with pytest.raises(fastattention.WeightFileError, match=r"in-memory config: key 'rope\.theta'"):
        Session.from_memory(cfg, tensors)


# ---------------------------------------------------------- item 11: files changed under a session


def test_copy_load_survives_truncated_files(model_copy):
    """load="copy": truncating every weight file of a live session changes nothing (with the
    default mmap, the next generate dies with SIGBUS: tested in a child below)."""
    path, _ = model_copy
    ref = Session(path).generate([[1, 2, 3]], 4)
    s = Session(path, load="copy")
    for f in (path / "rank0").iterdir():
        with open(f, "r+b") as fh:
            fh.truncate(0)
    assert s.generate([[1, 2, 3]], 4) == ref
    assert s.weight_bytes > 0


def test_mmap_load_documents_sigbus_on_truncation(model_copy):
    """The documented limit of the default load="mmap": a truncated file kills the process."""
    path, _ = model_copy
    code = textwrap.dedent(f"""
        import os, pathlib
        from fastattention.session import Session
        s = Session({str(path)!r})
        for f in pathlib.Path({str(path)!r}, "rank0").iterdir():
            os.truncate(f, 0)
        s.generate([[1, 2, 3]], 4)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == -7, (res.returncode, res.stderr[-1000:])  # SIGBUS


def test_load_option_is_checked(model_copy):
    path, _ = model_copy
    with pytest.raises(ValueError, match=r"load must be 'mmap' or 'copy', got 'mmapp'"):
        Session(path, load="mmapp")


def test_copy_load_gives_the_same_tokens(model_copy):
    path, _ = model_copy
    a = Session(path).generate([[5, 6, 7], [1]], 6)
    b = Session(path, load="copy").generate([[5, 6, 7], [1]], 6)
    assert a == b
