"""Preemption under KV pressure (runtime/engine.h, "KV pressure"; runtime/kv_stash.h) on a tiny
random model: with pools too small for the running requests' growing contexts, the youngest are
preempted (their KV copied to host memory outside the pools, their blocks freed) and resumed
later; every request's tokens equal the same request run alone, whether its blocks were in the
device pool or the host pool when it was preempted; a preempted request can be cancelled; the
pools are whole afterwards; with preemption=False nothing is preempted and fewer requests run."""

from __future__ import annotations

import random

import pytest
from engine_model import VOCAB, reference, session, weights  # noqa: F401 (fixtures)

from fastattention.engine import Engine


def growing_requests(n: int, seed: int):
    """Short prompts, long outputs: admitted easily, they outgrow a small pool while decoding."""
    rng = random.Random(seed)
    return [
        (
            [rng.randrange(3, VOCAB) for _ in range(rng.randint(10, 30))],
            dict(
                max_new_tokens=rng.randint(45, 60),
                seed=i,
                temperature=[0.0, 1.0][i % 2],
                top_k=[0, 40][i % 2],
            ),
        )
        for i in range(n)
    ]


def run(engine: Engine, reqs, on_step=None):
    """Runs every request; returns their tokens and the per-step stats."""
    ids = [engine.add_request(p, **kw) for p, kw in reqs]
    out = {i: [] for i in ids}
    history = []
    while engine.has_work:
        events = engine.step()
        for rid, token, _, _ in events:
            if token >= 0:
                out[rid].append(token)
        history.append(engine.stats)
        if on_step:
            on_step(ids, events)
    return [out[i] for i in ids], history


def assert_pools_whole(engine: Engine, blocks: int):
    s = engine.stats
    assert s["kv_blocks_free"] == s["kv_blocks_total"] == blocks
    assert s["preempted"] == s["running"] == s["waiting"] == 0
    assert s["preempted_kv_bytes"] == 0


@pytest.mark.parametrize("host_pool", [False, True])
def test_preempted_requests_resume_with_the_same_tokens(weights, reference, host_pool):
    if host_pool:  # 6 device blocks (the least spilling allows) + 4 host blocks
        sess = session(
            weights, max_batch=4, max_cache_tokens=96, host_kv_tokens=64, prefill_chunk_tokens=32
        )
        blocks = 10
    else:  # 8 blocks of 16 tokens; each request ends at 4-6 blocks
        sess, blocks = session(weights, max_cache_tokens=128), 8
    eng = Engine(sess, step_tokens=32)
    reqs = growing_requests(8, seed=11)
    out, history = run(eng, reqs)
    for i, ((prompt, kw), tokens) in enumerate(zip(reqs, out)):
        assert tokens == reference.generate([prompt], **kw)[0], i
    last = history[-1]
    assert last["preemptions"] >= 3 and last["resumed"] == last["preemptions"]
    assert max(s["running"] for s in history) >= 3  # reserving whole contexts: 1 or 2
    stashed = [s["preempted_kv_bytes"] for s in history if s["preempted"]]
    assert stashed and min(stashed) > 0
    if host_pool:
        assert sess.spilled_blocks > 0  # some preempted blocks came out of the host pool
    assert_pools_whole(eng, blocks)
    eng.close()  # and the session's own generate finds all 8 device blocks free
    full = [[5] * 90]
    assert sess.generate(full, 30) == reference.generate(full, 30)


@pytest.mark.parametrize("cap", [0, "one"])
def test_preemption_past_the_host_cap_recomputes(weights, reference, cap):
    """max_preempted_kv_bytes: 0 recomputes every preemption (nothing stashed); a cap of one
    request's stash mixes both kinds. Either way each request's tokens equal it run alone
    (float32: prefill and decode agree closely enough for these greedy and seeded draws)."""
    sess = session(weights, max_cache_tokens=128)
    probe = Engine(sess, step_tokens=32)
    _, history = run(probe, growing_requests(8, seed=11))
    one = min(s["preempted_kv_bytes"] for s in history if s["preempted"])
    probe.close()
    eng = Engine(sess, step_tokens=32, max_preempted_kv_bytes=0 if cap == 0 else one)
    reqs = growing_requests(8, seed=11)
    out, history = run(eng, reqs)
    for i, ((prompt, kw), tokens) in enumerate(zip(reqs, out)):
        assert tokens == reference.generate([prompt], **kw)[0], i
    last = history[-1]
    assert last["recomputed"] >= 1 and last["resumed"] == last["preemptions"]
    assert max(s["preempted_kv_bytes"] for s in history) <= (0 if cap == 0 else one)
    if cap != 0:
        assert last["recomputed"] < last["preemptions"]  # some were stashed
    assert_pools_whole(eng, 8)


def test_host_cap_option_is_checked(weights):
    with pytest.raises(ValueError, match="max_preempted_kv_bytes"):
        Engine(session(weights), max_preempted_kv_bytes=-5)
    with pytest.raises(TypeError, match="max_preempted_kv_bytes"):
        Engine(session(weights), max_preempted_kv_bytes=1.5)


def test_preemption_off_reserves_whole_contexts(weights, reference):
    sess = session(weights, max_cache_tokens=128)
    eng = Engine(sess, step_tokens=32, preemption=False)
    reqs = growing_requests(4, seed=11)
    out, history = run(eng, reqs)
    assert out == [reference.generate([p], **kw)[0] for p, kw in reqs]
    assert max(s["running"] for s in history) == 1  # 5-6 blocks each, 8 in the pool
    assert history[-1]["preemptions"] == 0 and history[-1]["kv_blocks_reserved"] == 0
    assert_pools_whole(eng, 8)


def test_a_preempted_request_can_be_cancelled(weights, reference):
    eng = Engine(session(weights, max_cache_tokens=128), step_tokens=32)
    reqs = growing_requests(6, seed=4)
    cancelled = {}

    def on_step(ids, events):
        s = eng.stats
        if s["preempted"] and not cancelled:
            running_or_done = {rid for rid, *_ in events}
            # the youngest request that got no event this step is a preempted (or waiting) one
            victim = max(rid for rid in ids if rid not in running_or_done)
            assert eng.cancel(victim)
            cancelled[victim] = s["preempted_kv_bytes"]

    ids_before = eng.stats["finished"]
    out, history = run(eng, reqs, on_step)
    assert cancelled and ids_before == 0
    ((victim, stash_bytes),) = cancelled.items()
    for i, ((prompt, kw), tokens) in enumerate(zip(reqs, out)):
        alone = reference.generate([prompt], **kw)[0]
        if i == victim:
            assert tokens == alone[: len(tokens)]
        else:
            assert tokens == alone, i
    assert history[-1]["cancelled"] == 1 and stash_bytes > 0
    assert_pools_whole(eng, 8)


def test_preemption_option_is_checked(weights):
    with pytest.raises(TypeError, match="preemption must be a bool"):
        Engine(session(weights), preemption="yes")


def test_a_request_filling_the_whole_pool_runs(weights, reference):
    # 128 prompt tokens + 1 new one: the new token is never cached, so the 8-block pool holds
    # the request exactly (admission must not ask for a 129th slot), beside other requests.
    eng = Engine(session(weights, max_cache_tokens=128), step_tokens=32)
    reqs = [
        ([7] * 20, dict(max_new_tokens=30)),
        ([9] * 128, dict(max_new_tokens=1)),
        ([11] * 30, dict(max_new_tokens=20, temperature=1.0, seed=3)),
    ]
    out, _ = run(eng, reqs)
    assert out == [reference.generate([p], **kw)[0] for p, kw in reqs]
    assert_pools_whole(eng, 8)
