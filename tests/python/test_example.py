"""examples/llama_infer.py, the main job: its three sources (the default model, --hf, --model),
the numpy-built default checkpoint checked against transformers, and its option errors."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from fastattention.session import Session

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "llama_infer.py"


def run_example(*args, cache=None, timeout=300):
    env = dict(os.environ)
    if cache is not None:
        env["FASTATTENTION_CACHE"] = str(cache)
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def outputs(stdout: str):
    """{prompt index: (prompt length, new ids)} from the example's output."""
    return {
        int(m.group(1)): (int(m.group(2)), [int(t) for t in m.group(4).split()])
        for m in re.finditer(r"^\[(\d+)\] prompt (\d+) tokens -> (\d+) new: (.*)$", stdout, re.M)
    }


def load_example_module():
    spec = importlib.util.spec_from_file_location("llama_infer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["llama_infer"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def numpy_default_run(tmp_path_factory):
    """The default model built with numpy (no torch needed), exported in float32, run once."""
    cache = tmp_path_factory.mktemp("cache")
    res = run_example(
        "--builder",
        "numpy",
        "--dtype",
        "float32",
        "--max-new-tokens",
        6,
        "--batch",
        3,
        "--prompt-len",
        10,
        "--threads",
        2,
        cache=cache,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return cache, res.stdout


def test_default_model_runs(numpy_default_run):
    cache, stdout = numpy_default_run
    out = outputs(stdout)
    assert sorted(out) == [0, 1, 2]
    assert [out[i][0] for i in range(3)] == [10, 7, 4]  # prompts of different lengths
    assert all(len(ids) == 6 and all(0 <= t < 32000 for t in ids) for _, ids in out.values())
    assert re.search(r"^prefill: 21 tokens in [\d.]+ s = \d+ tokens/s$", stdout, re.M), stdout
    assert re.search(r"^decode:  5 steps \(batch 3\) in [\d.]+ s = [\d.]+ ms/step$", stdout, re.M)
    assert "llama, 4 layers, hidden 384, 6 heads / 2 KV heads, vocab 32000" in stdout
    assert (cache / "default-llama-numpy-seed0" / "model.safetensors").is_file()


def test_model_option_reuses_the_export(numpy_default_run):
    cache, stdout = numpy_default_run
    export = cache / "default-llama-numpy-seed0-export-float32"
    res = run_example("--model", export, "--max-new-tokens", 6, "--batch", 3, "--prompt-len", 10)
    assert res.returncode == 0, res.stderr
    assert "exported" not in res.stdout  # nothing rebuilt or re-exported
    assert outputs(res.stdout) == outputs(stdout)  # same prompts, greedy: same tokens


def test_numpy_checkpoint_matches_transformers(numpy_default_run):
    """The numpy-written checkpoint is a valid transformers Llama, and our export of it computes
    what transformers computes."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cache, _ = numpy_default_run
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        cache / "default-llama-numpy-seed0", dtype=torch.float32
    ).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    assert hf.config.num_key_value_heads == 2 and hf.config.head_dim == 64
    prompt = np.random.default_rng(3).integers(0, 32000, size=17).tolist()
    with torch.inference_mode():
        ref = hf(torch.tensor([prompt])).logits[0].numpy()
    ours = Session(cache / "default-llama-numpy-seed0-export-float32").logits(prompt)
    assert np.abs(ours - ref).max() < 1e-3 and np.abs(ref).max() > 0.1


def test_transformers_builder_matches_its_model(tmp_path):
    """--builder transformers (the default when torch is installed) saves LlamaForCausalLM's own
    random initialisation; greedy outputs match transformers' generate()."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    res = run_example(
        "--builder",
        "transformers",
        "--dtype",
        "float32",
        "--max-new-tokens",
        5,
        "--batch",
        1,
        "--prompt-len",
        8,
        cache=tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    ((length, new),) = outputs(res.stdout).values()
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "default-llama-transformers-seed0", dtype=torch.float32
    ).eval()
    hf.generation_config.eos_token_id = None
    prompt = load_example_module().make_prompts(1, 8, 32000, 1, 0)[0]
    with torch.inference_mode():
        ref = hf.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=5, pad_token_id=0
        )[0, 8:].tolist()
    assert length == 8 and new == ref


def test_hf_option(hf_model_factory):
    hf = hf_model_factory("mistral")
    res = run_example(
        "--hf",
        hf.path,
        "--dtype",
        "bfloat16",
        "--max-new-tokens",
        4,
        "--batch",
        2,
        "--prompt-len",
        12,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    out = outputs(res.stdout)
    assert [out[i][0] for i in range(2)] == [12, 9]
    assert all(len(ids) == 4 and all(0 <= t < 512 for t in ids) for _, ids in out.values())
    assert "mistral" in res.stdout and "weights bfloat16" in res.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hf", "a", "--model", "b"], "not allowed with argument"),
        (["--batch", "0"], "--batch must be positive"),
        (["--dtype", "int4"], "invalid choice: 'int4'"),
    ],
)
def test_bad_options(args, message):
    res = run_example(*args)
    assert res.returncode == 2 and message in res.stderr, res.stderr


def test_missing_model_dir(tmp_path):
    res = run_example("--model", tmp_path / "nothing")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert re.search(r"llama_infer: error: WeightFileError: .*nothing/config\.json", res.stderr), (
        res.stderr
    )
