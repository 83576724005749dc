"""Spilled KV on the GPU: a small device pool, older tokens in pinned host memory, attention over
them on the CPU (cooperative) or streamed to the GPU; results must match a session whose device
pool holds everything (fp32 weights: same greedy tokens and logits within 1e-3; fp16: logits
within fp16 tolerance)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastattention  # noqa: E402
from fastattention import Session  # noqa: E402

pytestmark = pytest.mark.skipif(
    not fastattention.cuda_available(), reason="needs a CUDA GPU and a CUDA build"
)

WIDE = dict(hidden_size=256, num_attention_heads=4, intermediate_size=384, num_key_value_heads=2)
PROMPT = [1] + [(37 * i + 11) % 290 + 3 for i in range(119)]
BLOCK = 16


@pytest.fixture(scope="module")
def models(exported_model_factory):
    return lambda dtype: exported_model_factory("llama", dtype=dtype, **WIDE)


def session(m, device_tokens=None, path="auto", chunk=32):
    kw = dict(
        max_batch=1,
        max_seq_len=240,
        kv_block_size=BLOCK,
        prefill_chunk_tokens=chunk,
        spill_attention=path,
    )
    if device_tokens is not None:
        kw.update(max_cache_tokens=device_tokens, host_kv_tokens=512)
    return Session(m.path, "cuda", **kw)


@pytest.mark.parametrize("path", ["cpu", "stream", "auto"])
@pytest.mark.parametrize("device_tokens", [64, 48])  # about 50% and 75% of the KV on the host
def test_fp32_spill_matches_no_spill(models, path, device_tokens):
    m = models("float32")
    ref = session(m)
    s = session(m, device_tokens, path)
    np.testing.assert_allclose(s.logits(PROMPT), ref.logits(PROMPT), atol=1e-3, rtol=1e-3)
    assert s.spilled_blocks > 0
    assert s.generate([PROMPT], max_new_tokens=24) == ref.generate([PROMPT], max_new_tokens=24)
    t = s.timings
    assert t["spill_stream_steps"] + t["spill_cpu_steps"] > 0
    if path != "auto":
        assert t["spill_cpu_steps" if path == "stream" else "spill_stream_steps"] == 0


@pytest.mark.parametrize("path", ["cpu", "stream"])
def test_fp16_spill_logits(models, path):
    m = models("float16")
    ref = session(m).logits(PROMPT)
    got = session(m, 48, path).logits(PROMPT)
    assert np.abs(got - ref).max() <= 0.02 * np.abs(ref).max()


def test_host_pool_too_small_is_refused_before_work(models):
    m = models("float16")
    s = Session(
        m.path,
        "cuda",
        max_batch=1,
        max_seq_len=240,
        kv_block_size=BLOCK,
        prefill_chunk_tokens=32,
        max_cache_tokens=48,
        host_kv_tokens=32,
    )
    with pytest.raises(MemoryError, match="host"):
        s.generate([PROMPT], max_new_tokens=8)
    assert s.spilled_blocks == 0
