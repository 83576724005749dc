"""Decode steps as CUDA graphs against the same session run eagerly (run on a GPU machine).

Where the batch fills its bucket (1, 2, 4, 8, 16 with max_batch 16) a graph replays exactly the
eager launches, so every step's logits must be equal bit for bit and the tokens identical. A
batch padded to a bucket (3 -> 4, 5 -> 8) changes the GEMMs' shapes (cuBLAS may pick another
algorithm): its logits must agree within the dtype's tolerance. Models: the tiny Llama (GQA),
Qwen2 (QKV bias, tied embeddings) and Mistral (MQA, sliding window) of tests/conftest.py at head
dim 64, and the assumed Pangu-38B shape cut to 2 layers.
"""

import json
import pathlib

import numpy as np
import pytest

import fastattention
from fastattention import Session, random_weights

pytestmark = pytest.mark.skipif(
    not fastattention.cuda_available(), reason="needs a CUDA GPU and a CUDA build"
)
pytest.importorskip("torch")

WIDE = dict(hidden_size=256, num_attention_heads=4, intermediate_size=384)
MODELS = {
    "llama": dict(WIDE, num_key_value_heads=2),
    "qwen2": dict(WIDE, num_key_value_heads=2),
    "mistral": dict(WIDE, num_key_value_heads=1, sliding_window=24),
}
ROOT = pathlib.Path(__file__).resolve().parents[2]
RTOL = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 8e-2}  # of the logits' scale


def prompts(n, seed=0, lo=3, hi=40):
    rng = np.random.default_rng(seed)
    return [
        [int(t) for t in rng.integers(1, 200, size=int(rng.integers(lo, hi)))] for _ in range(n)
    ]


def run(session, batch, new_tokens, **kw):
    """Tokens and every step's logits (a copy per step) of one generate call."""
    steps = []
    out = session.generate(
        batch, new_tokens, on_step=lambda t: steps.append((list(t), session.step_logits())), **kw
    )
    return out, steps


@pytest.fixture(scope="module")
def models(exported_model_factory):
    def get(name, dtype):
        return exported_model_factory(name, dtype=dtype, **MODELS[name])

    return get


def pair(path, **kw):
    opts = dict(max_batch=16, max_seq_len=256, **kw)
    return Session(path, "cuda", cuda_graphs=False, **opts), Session(path, "cuda", **opts)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("name", list(MODELS))
def test_full_buckets_equal_eager_bit_for_bit(models, name, dtype):
    eager, graphed = pair(models(name, dtype).path)
    assert graphed.uses_cuda_graphs and not eager.uses_cuda_graphs
    assert "decode graphs" in graphed.memory_plan
    for b in (1, 4, 16):
        batch = prompts(b, seed=b)
        want, want_steps = run(eager, batch, 12)
        got, got_steps = run(graphed, batch, 12)
        assert got == want, (name, dtype, b)
        t = graphed.timings  # a bucket's first step runs eagerly, then graphs replay
        assert t["decode_steps"] == 11 and t["decode_graph_steps"] >= 10
        for (tw, lw), (tg, lg) in zip(want_steps, got_steps):
            assert tw == tg
            assert np.array_equal(lw, lg), (name, dtype, b, np.abs(lw - lg).max())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_padded_batches_within_tolerance(models, dtype):
    eager, graphed = pair(models("llama", dtype).path)
    for b in (3, 5, 11):
        batch = prompts(b, seed=10 + b)
        want, want_steps = run(eager, batch, 8)
        got, got_steps = run(graphed, batch, 8)
        # The first decode step sees the same inputs in both: compare its logits.
        lw, lg = want_steps[1][1], got_steps[1][1]
        scale = np.abs(lw).max()
        assert np.abs(lw - lg).max() <= RTOL[dtype] * scale, (b, np.abs(lw - lg).max(), scale)
        same = sum(a == c for w, g in zip(want, got) for a, c in zip(w, g))
        assert same >= 0.9 * sum(len(w) for w in want), (b, want, got)


def test_sequences_finishing_at_different_steps(models):
    eager, graphed = pair(models("qwen2", "float16").path)
    batch = prompts(16, seed=3)
    full = eager.generate(batch, 20)
    stops = [full[0][3], full[5][9]]  # the batch shrinks across buckets as rows stop
    want = eager.generate(batch, 20, stop_tokens=stops)
    got = graphed.generate(batch, 20, stop_tokens=stops)
    assert [len(g) for g in got] == [len(w) for w in want]
    same = sum(a == c for w, g in zip(want, got) for a, c in zip(w, g))
    assert same >= 0.95 * sum(len(w) for w in want)
    assert graphed.timings["decode_graph_steps"] > 0


def test_seeded_sampling_is_the_same_in_both_modes(models):
    eager, graphed = pair(models("llama", "float16").path)
    batch = prompts(8, seed=4)
    kw = dict(temperature=0.8, top_k=40, top_p=0.9, seed=11)
    want = eager.generate(batch, 16, **kw)
    assert graphed.generate(batch, 16, **kw) == want
    assert graphed.generate(batch, 16, **kw) == want  # replayed graphs, same draws
    assert graphed.generate(batch, 16, **{**kw, "seed": 12}) != want


def test_replay_after_batch_change_error_and_many_steps(models):
    m = models("llama", "float16")
    eager = Session(m.path, "cuda", max_batch=4, max_seq_len=2048, cuda_graphs=False)
    graphed = Session(m.path, "cuda", max_batch=4, max_seq_len=2048)
    four, two = prompts(4, seed=5), prompts(2, seed=6)
    a = graphed.generate(four, 10)
    b = graphed.generate(two, 10)

    class Stop(Exception):
        pass

    def fail_at_third(tokens, n=[0]):
        n[0] += 1
        if n[0] == 3:
            raise Stop()

    with pytest.raises(Stop):
        graphed.generate(four, 10, on_step=fail_at_third)
    assert graphed.generate(four, 10) == a == eager.generate(four, 10)
    assert graphed.generate(two, 10) == b == eager.generate(two, 10)
    # Long decode: positions cross many KV blocks and the split count grows with the context
    # (each count is its own graph).
    long = [prompts(1, seed=7, lo=300, hi=301)[0]]
    want, want_steps = run(eager, long, 900)
    got, got_steps = run(graphed, long, 900)
    assert graphed.timings["decode_graph_captures"] >= 2
    assert got == want
    assert all(np.array_equal(w[1], g[1]) for w, g in zip(want_steps, got_steps))


def test_spilled_steps_run_eagerly_with_the_same_tokens(models):
    m = models("llama", "float16")
    opts = dict(
        max_batch=2,
        max_seq_len=512,
        max_cache_tokens=160,
        host_kv_tokens=1024,
        prefill_chunk_tokens=64,
    )
    eager = Session(m.path, "cuda", cuda_graphs=False, **opts)
    graphed = Session(m.path, "cuda", **opts)
    batch = prompts(2, seed=8, lo=100, hi=120)
    want = eager.generate(batch, 60)
    assert graphed.generate(batch, 60) == want
    t = graphed.timings
    assert t["spill_stream_steps"] + t["spill_cpu_steps"] > 0
    assert t["decode_graph_steps"] < t["decode_steps"]  # the spilled steps ran eagerly


@pytest.mark.parametrize("dtype", ["float16", "float32"])  # random_weights: no numpy bfloat16
def test_pangu_shape_equal_eager(dtype):
    full = json.loads((ROOT / "examples" / "configs" / "pangu_38b.json").read_text())
    cfg = random_weights.config_for_tp(dict(full, num_layers=2, dtype=dtype), 1)
    w = random_weights.shard_tensors(cfg, 0, seed=2)
    opts = dict(max_batch=16, max_seq_len=128)
    eager = Session.from_memory(cfg, w, "cuda", cuda_graphs=False, **opts)
    graphed = Session.from_memory(cfg, w, "cuda", **opts)
    for b in (1, 16):
        batch = [[int(t) % cfg["vocab_size"] for t in p] for p in prompts(b, seed=20 + b)]
        want, want_steps = run(eager, batch, 6)
        got, got_steps = run(graphed, batch, 6)
        assert got == want
        assert all(np.array_equal(w_[1], g[1]) for w_, g in zip(want_steps, got_steps))
