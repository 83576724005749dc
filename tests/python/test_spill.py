"""Two-tier KV cache on the CPU backend: the device pool is small, older tokens spill to a host
pool, and attention over them is merged by log-sum-exp. Spilling must not change the results:
same logits (fp32, 1e-4) and the same greedy tokens as a session whose pool holds everything,
for budgets that put about 0%, 50% and 95% of the KV on the host."""

import numpy as np
import pytest

from fastattention import Session

PROMPT = [1] + [(37 * i + 11) % 290 + 3 for i in range(119)]  # 120 tokens
PROMPTS = [PROMPT, PROMPT[:50], [1, 9, 4, 200, 17]]
NEW = 40
BLOCK = 4


@pytest.fixture(scope="module")
def model(exported_model_factory):
    return exported_model_factory("llama")


@pytest.fixture(scope="module")
def reference(model):
    s = Session(model.path, max_batch=3, max_seq_len=256, kv_block_size=BLOCK)
    return dict(logits=s.logits(PROMPT), tokens=s.generate(PROMPTS, max_new_tokens=NEW))


def spill_session(model, device_tokens, chunk, max_batch, path="auto"):
    return Session(
        model.path,
        max_batch=max_batch,
        max_seq_len=256,
        kv_block_size=BLOCK,
        max_cache_tokens=device_tokens,
        host_kv_tokens=1024,
        prefill_chunk_tokens=chunk,
        spill_attention=path,
    )


# "cpu" reads the host blocks in place; "stream" copies them to the device side's contiguous
# staging first (on the CPU backend both are host memory, so both paths' logic runs here).
@pytest.mark.parametrize("path", ["cpu", "stream"])
@pytest.mark.parametrize(
    "device_tokens,chunk,max_batch,host_share",
    [
        (1024, 64, 3, 0.0),  # everything fits on the device: nothing moves
        (60, 32, 3, 0.5),  # half of the 120-token prompt spills
        (8, 4, 1, 0.95),  # the device pool holds two blocks: 95% of the KV lives on the host
    ],
)
def test_spill_matches_no_spill(
    model, reference, device_tokens, chunk, max_batch, host_share, path
):
    s = spill_session(model, device_tokens, chunk, max_batch, path)
    logits = s.logits(PROMPT)
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-4, rtol=1e-4)
    spilled_tokens = s.spilled_blocks * BLOCK
    if host_share == 0.0:
        assert s.spilled_blocks == 0
    else:
        assert spilled_tokens >= host_share * len(PROMPT) - BLOCK
    prompts = PROMPTS[:max_batch]
    assert s.generate(prompts, max_new_tokens=NEW) == reference["tokens"][:max_batch]
    t = s.timings
    used = t["spill_stream_steps"] if path == "stream" else t["spill_cpu_steps"]
    assert (used > 0) == (host_share > 0) and t["spill_stream_steps"] + t["spill_cpu_steps"] == used
    assert "host KV" in s.memory_plan and "longest context" in s.memory_plan


def test_host_pool_exhaustion_fails_before_any_work(model):
    s = Session(
        model.path,
        max_batch=1,
        max_seq_len=256,
        kv_block_size=BLOCK,
        max_cache_tokens=8,
        host_kv_tokens=64,
        prefill_chunk_tokens=4,
    )
    with pytest.raises(MemoryError, match="host"):
        s.generate([PROMPT], max_new_tokens=10)
    assert s.spilled_blocks == 0
    # The pools are intact: a batch that fits still runs and matches.
    ref = Session(model.path, max_batch=3, max_seq_len=256, kv_block_size=BLOCK)
    assert s.generate([PROMPT[:60]], max_new_tokens=8) == ref.generate(
        [PROMPT[:60]], max_new_tokens=8
    )


def test_device_pool_below_one_chunk_is_refused(model):
    with pytest.raises(ValueError, match="prefill chunk"):
        Session(
            model.path,
            max_batch=2,
            kv_block_size=BLOCK,
            max_cache_tokens=8,
            host_kv_tokens=256,
            prefill_chunk_tokens=64,
        )


def test_sliding_window_model_cannot_spill(exported_model_factory):
    m = exported_model_factory("mistral")
    with pytest.raises(ValueError, match="sliding"):
        Session(
            m.path,
            kv_block_size=BLOCK,
            max_cache_tokens=64,
            host_kv_tokens=256,
            prefill_chunk_tokens=16,
        )


def test_bad_host_kv_tokens(model):
    with pytest.raises(ValueError, match="spill_attention"):
        Session(model.path, spill_attention="gpu")
    with pytest.raises(ValueError, match="gpu_kv_budget"):
        Session(model.path, gpu_kv_budget=0)
    with pytest.raises(ValueError, match="gpu_memory_fraction"):
        Session(model.path, gpu_memory_fraction=1.5)
    with pytest.raises(ValueError, match="host_kv_tokens"):
        Session(model.path, host_kv_tokens=-1)
    with pytest.raises(TypeError, match="host_kv_tokens"):
        Session(model.path, host_kv_tokens=1.5)
