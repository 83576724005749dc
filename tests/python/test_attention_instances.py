"""cmake/generate_attention_instances.py: one generator for the FlashAttention-2 and the decode
instances, both narrowed by the requested head dims, listed in one registry with arch fields.
Runs the script only (no CUDA compiler needed)."""

import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "cmake" / "generate_attention_instances.py"


def generate(tmp_path, *args):
    out = tmp_path / "gen"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        check=True,
        capture_output=True,
        text=True,
    )
    manifest = dict(line.split("|") for line in (out / "manifest.txt").read_text().split())
    rows = re.findall(
        r'\{AttentionKernel::(\w+), (\d+), DType::(\w+), "([\d;]*)"',
        (out / "attention_registry_table.cc").read_text(),
    )
    return out, manifest, rows


def test_head_dims_narrow_both_kernels(tmp_path):
    out, manifest, rows = generate(tmp_path, "--archs", "75;80;90", "--head-dims", "128")
    assert sorted(p.name for p in out.glob("*.cu")) == sorted(manifest)
    assert {name for name in manifest if name.startswith("decode_")} == {
        "decode_hd128_float16.cu",
        "decode_hd128_bfloat16.cu",
        "decode_hd128_float32.cu",
    }
    assert {int(d) for _, d, _, _ in rows} == {128}
    # Decode files are compiled for every arch; cp.async is registered for sm_80+ only.
    assert manifest["decode_hd128_float32.cu"] == "75;80;90"
    assert ("kDecodeRegStaged", "128", "kFloat32", "75;80;90") in rows
    assert ("kDecodeAsync", "128", "kFloat32", "80;90") in rows
    # Native mode: each MMA path for the archs it is native to.
    assert ("kFmha1688", "128", "kFloat16", "75") in rows
    assert ("kFmha16816", "128", "kBFloat16", "80;90") in rows
    assert not any(k == "kFmha884" for k, *_ in rows)


def test_volta_build_has_no_async_decode_and_stale_files_go(tmp_path):
    generate(tmp_path, "--archs", "75;80;90", "--head-dims", "64;128")
    out, manifest, rows = generate(tmp_path, "--archs", "70", "--head-dims", "64", "--impls", "884")
    assert sorted(p.name for p in out.glob("*.cu")) == sorted(manifest)
    assert {k for k, *_ in rows} == {"kFmha884", "kDecodeRegStaged"}
    assert all(archs == "70" for *_, archs in rows)


def test_all_impls_and_decode_only_dims(tmp_path):
    # 48 has no decode tiling: FlashAttention-2 instances only.
    _, manifest, rows = generate(tmp_path, "--archs", "90", "--head-dims", "48;128", "--all-impls")
    assert not any(name.startswith("decode_hd48") for name in manifest)
    assert ("kFmha884", "48", "kFloat16", "90") in rows
    assert ("kFmha884Plain", "128", "kFloat16", "90") in rows


def test_bad_options_are_named(tmp_path):
    for args, needle in (
        (["--head-dims", "72"], "FASTATTN_CUDA_HEAD_DIMS"),
        (["--impls", "999"], "FASTATTN_CUDA_IMPLS"),
    ):
        with pytest.raises(subprocess.CalledProcessError) as e:
            generate(tmp_path, "--archs", "80", *args)
        assert needle in e.value.stderr
