"""The pangu architecture on a GPU against the CPU (run on a GPU machine; skipped elsewhere).

The assumed Pangu-38B shape (hidden 7168, 56 heads of 128, FFN 28672, vocabulary 40000) at tp=1
with a reduced layer count, on random weights built in memory (fastattention.random_weights) and
handed to Session.from_memory on both devices: float32 weights must give the CPU's logits within
2e-3 (relative to their scale) and the same greedy tokens; float16 weights the CPU's logits (the
CPU computes in float32 on the same float16 weights) within 2% of their scale. The example itself
runs with --device cuda and generates the CPU's tokens (float32, the tiny preset).
"""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import fastattention
from fastattention import random_weights
from fastattention.session import Session

pytestmark = pytest.mark.skipif(
    not fastattention.cuda_available(), reason="needs a CUDA GPU and a CUDA build"
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
FULL = json.loads((ROOT / "examples" / "configs" / "pangu_38b.json").read_text())
PROMPTS = [[5, 998, 17, 300, 42, 7, 1000, 64] * 3, [11, 12, 13], list(range(100, 160))]


def reduced(dtype: str, layers: int = 2) -> dict:
    return random_weights.config_for_tp(dict(FULL, num_layers=layers, dtype=dtype), 1)


@pytest.mark.parametrize("dtype,rel", [("float32", 2e-3), ("float16", 2e-2)])
def test_reduced_38b_gpu_logits_match_cpu(dtype, rel):
    cfg = reduced(dtype)
    w = random_weights.shard_tensors(cfg, 0, seed=1)
    cpu = Session.from_memory(cfg, w, "cpu", max_batch=3, max_seq_len=128)
    gpu = Session.from_memory(cfg, w, "cuda", max_batch=3, max_seq_len=128, prefill_chunk_tokens=32)
    assert "KV cache" in gpu.memory_plan and gpu.weight_bytes == cpu.weight_bytes
    for p in PROMPTS:
        ref, got = cpu.logits(p), gpu.logits(p)
        assert got.shape == ref.shape and np.isfinite(got).all()
        scale = np.abs(ref).max()
        assert np.abs(got - ref).max() <= rel * scale, (dtype, np.abs(got - ref).max(), scale)
    if dtype == "float32":
        assert gpu.generate(PROMPTS, 16) == cpu.generate(PROMPTS, 16)


def test_example_on_the_gpu_generates_the_cpu_tokens():
    def run(device):
        res = subprocess.run(
            [
                sys.executable,
                str(ROOT / "examples" / "pangu38b_infer.py"),
                "--preset",
                "tiny",
                "--dtype",
                "float32",
                "--device",
                device,
                "--new-tokens",
                "12",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    gpu, cpu = run("cuda"), run("cpu")
    ids = re.compile(r"^\[\d+\] \d+ prompt tokens -> \d+ new: (.*)$", re.M)
    assert ids.findall(gpu) == ids.findall(cpu) and len(ids.findall(cpu)) == 4
    assert re.search(r"^memory plan \(rank 0, cuda\): .*budget", gpu, re.M), gpu
