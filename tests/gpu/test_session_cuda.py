"""GPU session vs the CPU session and Hugging Face transformers (run on a GPU machine).

The test models are the random-initialised ones of tests/conftest.py, widened to head dim 64
(the smallest the CUDA attention kernels instantiate). Tolerances: fp32 weights must give the
CPU's logits within 2e-3 and the same greedy tokens for 32 steps; fp16 / bf16 weights are
compared with transformers run in float32 on the same weights, within a bound that scales with
the logits' magnitude.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastattention  # noqa: E402
from fastattention import Session  # noqa: E402

pytestmark = pytest.mark.skipif(
    not fastattention.cuda_available(), reason="needs a CUDA GPU and a CUDA build"
)

# head_dim 64 everywhere; GQA 2:1 (llama), q/k/v bias + tied (qwen2), MQA + window (mistral).
WIDE = dict(hidden_size=256, num_attention_heads=4, intermediate_size=384)
MODELS = {
    "llama": dict(WIDE, num_key_value_heads=2),
    "qwen2": dict(WIDE, num_key_value_heads=2),
    "mistral": dict(WIDE, num_key_value_heads=1, sliding_window=24),
}
PROMPTS = [[1, 5, 9, 33, 7, 250, 11, 4] * 5, [1, 17, 19], [1] + list(range(40, 100))]


@pytest.fixture(scope="module")
def models(exported_model_factory):
    def get(name, dtype):
        return exported_model_factory(name, dtype=dtype, **MODELS[name])

    return get


def hf_logits(model, prompt):
    hf = model.hf.load_model(torch.float32)
    with torch.no_grad():
        return hf(torch.tensor([prompt])).logits[0].numpy()


@pytest.mark.parametrize("name", list(MODELS))
def test_fp32_logits_and_greedy_match_cpu(models, name):
    m = models(name, "float32")
    cpu = Session(m.path, "cpu", max_batch=3, max_seq_len=160)
    gpu = Session(m.path, "cuda", max_batch=3, max_seq_len=160, prefill_chunk_tokens=32)
    for p in PROMPTS:
        ref = cpu.logits(p)
        got = gpu.logits(p)
        assert got.shape == ref.shape and np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, atol=2e-3, rtol=2e-3)
    want = cpu.generate(PROMPTS, max_new_tokens=32)
    assert gpu.generate(PROMPTS, max_new_tokens=32) == want


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_half_logits_match_transformers(models, name, dtype):
    m = models(name, dtype)
    gpu = Session(m.path, "cuda:0", max_batch=3, max_seq_len=160, verbose=True)
    assert "KV cache" in gpu.memory_plan
    for p in PROMPTS:
        ref = hf_logits(m, p)
        got = gpu.logits(p)
        scale = np.abs(ref).max()
        tol = (0.02 if dtype == "float16" else 0.08) * scale
        assert np.abs(got - ref).max() <= tol, (name, dtype, np.abs(got - ref).max(), scale)
    # The batch gives the same greedy tokens as each prompt alone (no cross-talk between rows).
    batch = gpu.generate(PROMPTS, max_new_tokens=16)
    for p, toks in zip(PROMPTS, batch):
        assert gpu.generate([p], max_new_tokens=16)[0] == toks


def test_chunked_prefill_equals_one_pass(models):
    m = models("llama", "float16")
    one = Session(m.path, "cuda", max_seq_len=160, prefill_chunk_tokens=4096)
    # chunks of 24: the first on the prefill kernel, the second gathered from the paged cache
    # into contiguous staging for it, the last (13 queries) on the split-KV kernel
    chunked = Session(m.path, "cuda", max_seq_len=160, prefill_chunk_tokens=24)
    p = PROMPTS[2]
    np.testing.assert_allclose(chunked.logits(p), one.logits(p), atol=0.05, rtol=0.02)


def test_sampling_is_seeded(models):
    m = models("llama", "float16")
    s = Session(m.path, "cuda", max_batch=3, max_seq_len=160)
    kw = dict(max_new_tokens=12, temperature=0.8, top_k=50, top_p=0.9, seed=7)
    a = s.generate(PROMPTS, **kw)
    assert a == s.generate(PROMPTS, **kw)
    assert a != s.generate(PROMPTS, **{**kw, "seed": 8})


def test_out_of_memory_is_refused_at_load(models):
    m = models("llama", "float16")
    with pytest.raises(MemoryError, match="KV cache"):
        Session(m.path, "cuda", max_cache_tokens=10**12)
    with pytest.raises(MemoryError, match="one block"):
        Session(m.path, "cuda", gpu_memory_fraction=1e-6)
    with pytest.raises(ValueError, match="kv_dtype"):
        Session(m.path, "cuda", kv_dtype="float32")
    with pytest.raises(ValueError, match="does not exist"):
        Session(m.path, "cuda:99")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_generate_prefill_chunks_match_logits(models, dtype):
    """A 640-token prompt in 40 chunks of 16: generate() queues the chunks back to back (no host
    wait between them), logits() waits after each. Each pass's index tensors (positions, slots,
    block table) go up from a pinned staging buffer by an asynchronous copy; the buffer must not be
    rewritten for the next chunk before that copy has run (runtime/device_batch.h). When it was,
    a chunk could run with the next chunk's indices: generate()'s tokens then differed from run to
    run and from the argmax of logits() (seen on an H100 in fp32, 2026-12-07). Here generate()'s
    greedy tokens must be the argmax of logits() over the prompt and those tokens (up to a near
    tie) and, in fp32, equal a CPU session's."""
    m = models("llama", dtype)
    prompt = [1] + [(37 * i + 11) % 290 + 3 for i in range(639)]
    opts = dict(max_batch=1, max_seq_len=720, kv_block_size=16, prefill_chunk_tokens=16)
    gpu = Session(m.path, "cuda", **opts)
    tol = 1e-4 if dtype == "float32" else 2e-2  # near ties, relative to the row's largest logit
    for _ in range(3):  # the race depended on timing: a few calls
        tokens = gpu.generate([prompt], max_new_tokens=16)[0]
        rows = gpu.logits(prompt + tokens[:-1])[len(prompt) - 1 :]
        for i, (t, row) in enumerate(zip(tokens, rows)):
            assert row[t] >= row.max() - tol * np.abs(row).max(), (i, t, int(row.argmax()))
    if dtype == "float32":
        cpu = Session(m.path, "cpu", **opts)
        assert tokens == cpu.generate([prompt], max_new_tokens=16)[0]
