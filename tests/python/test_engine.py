"""The in-flight batching engine (fastattention.engine, runtime/engine.h) on a tiny random model:
each request's tokens equal the same request run alone by Session.generate (greedy and seeded
sampling, stop tokens), whatever runs beside it and however its prompt is chunked; requests wait
when the KV pool is short and run when blocks come back; older blocks spill to a host pool as
in a session; cancellation frees every block (the pool is whole afterwards); bad requests and options get errors naming what is wrong."""

from __future__ import annotations

import random

import pytest
from engine_model import VOCAB, reference, session, weights  # noqa: F401 (fixtures)

from fastattention.engine import Engine


def random_requests(n: int, seed: int, max_prompt: int = 70, max_new: int = 20):
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        prompt = [rng.randrange(3, VOCAB) for _ in range(rng.randint(1, max_prompt))]
        kw = dict(max_new_tokens=rng.randint(1, max_new), seed=rng.randrange(1000))
        if i % 2:
            kw.update(
                temperature=rng.choice([0.7, 1.0, 1.5]),
                top_k=rng.choice([0, 5, 50]),
                top_p=rng.choice([1.0, 0.9]),
            )
        if i % 5 == 0:
            kw["stop_tokens"] = rng.sample(range(3, VOCAB), 30)  # some stop early
        reqs.append((prompt, kw))
    return reqs


def alone(reference, prompt, kw):
    return reference.generate([prompt], **kw)[0]


def run_staggered(engine: Engine, reqs, per_step: int = 2):
    """Adds `per_step` requests before each step (so requests join a running batch); returns
    {request index: tokens}, {index: finish reason} and the largest running batch seen."""
    ids, out, reasons, widest, pending = {}, {}, {}, 0, list(enumerate(reqs))
    while pending or engine.has_work:
        for _ in range(per_step):
            if pending:
                i, (prompt, kw) = pending.pop(0)
                ids[engine.add_request(prompt, **kw)] = i
                out[i] = []
        for rid, token, finished, reason in engine.step():
            if token >= 0:
                out[ids[rid]].append(token)
            if finished:
                reasons[ids[rid]] = reason
        widest = max(widest, engine.stats["running"])
    return out, reasons, widest


@pytest.mark.parametrize("step_tokens", [9, 40, 2048])
def test_each_request_equals_it_run_alone(weights, reference, step_tokens):
    eng = Engine(session(weights), step_tokens=step_tokens)
    reqs = random_requests(18, seed=step_tokens)
    out, reasons, widest = run_staggered(eng, reqs)
    assert widest == eng.max_running == 6  # the batch really ran full, requests joining it
    for i, (prompt, kw) in enumerate(reqs):
        expect = alone(reference, prompt, kw)
        assert out[i] == expect, (i, kw)
        stopped = expect[-1] in kw.get("stop_tokens", ())
        assert reasons[i] == ("stop" if stopped else "length")
    s = eng.stats
    assert s["kv_blocks_free"] == s["kv_blocks_total"] and s["running"] == s["waiting"] == 0
    assert s["finished"] == len(reqs)
    assert s["generated_tokens"] == sum(len(o) for o in out.values())
    assert s["prompt_tokens"] == sum(len(p) for p, _ in reqs)
    if step_tokens == 9:  # long prompts were spread over several steps, mixed with decodes
        assert s["steps"] > s["prompt_tokens"] / 9


def test_requests_wait_for_kv_blocks(weights, reference):
    # Without preemption each request's whole context is reserved at admission: 8 blocks of 16
    # tokens, each request needs 4-5 blocks, so at most two run at once (with preemption:
    # test_engine_preemption.py).
    eng = Engine(session(weights, max_cache_tokens=128), step_tokens=32, preemption=False)
    rng = random.Random(7)
    reqs = [
        (
            [rng.randrange(3, VOCAB) for _ in range(rng.randint(40, 55))],
            dict(max_new_tokens=20, seed=i, temperature=1.0),
        )
        for i in range(6)
    ]
    ids = [eng.add_request(p, **kw) for p, kw in reqs]
    out = {i: [] for i in ids}
    widest, waited = 0, 0
    while eng.has_work:
        for rid, token, _, _ in eng.step():
            out[rid].append(token)
        s = eng.stats
        assert s["kv_blocks_reserved"] <= s["kv_blocks_total"]
        widest, waited = max(widest, s["running"]), max(waited, s["waiting"])
    assert widest == 2 and waited >= 3
    for rid, (prompt, kw) in zip(ids, reqs):
        assert out[rid] == alone(reference, prompt, kw)
    assert eng.stats["kv_blocks_free"] == eng.stats["kv_blocks_total"] == 8


def test_older_blocks_spill_to_the_host_pool(weights, reference):
    # A device pool of 6 blocks for 4 running requests of ~100 tokens: their older blocks move
    # to the host pool as they grow (as in a session's generate), and the tokens stay the same.
    sess = session(
        weights, max_batch=4, max_cache_tokens=96, host_kv_tokens=512, prefill_chunk_tokens=32
    )
    eng = Engine(sess, step_tokens=32)
    rng = random.Random(1)
    reqs = [
        (
            [rng.randrange(3, VOCAB) for _ in range(rng.randint(40, 70))],
            dict(max_new_tokens=30, seed=i, temperature=[0.0, 1.0][i % 2]),
        )
        for i in range(8)
    ]
    out = eng.run_all(reqs)
    assert sess.spilled_blocks > 10
    for (prompt, kw), tokens in zip(reqs, out):
        assert tokens == alone(reference, prompt, kw)
    assert eng.stats["kv_blocks_free"] == eng.stats["kv_blocks_total"] == 6 + 32


def test_cancel_frees_every_block(weights, reference):
    sess = session(weights, max_batch=3, max_cache_tokens=3 * 96)
    eng = Engine(sess, step_tokens=16)
    reqs = random_requests(6, seed=5, max_prompt=60)
    reqs = [(p, dict(kw, max_new_tokens=30, stop_tokens=())) for p, kw in reqs]
    ids = [eng.add_request(p, **kw) for p, kw in reqs]
    out = {i: [] for i in ids}

    def step():
        events = eng.step()
        for rid, token, finished, why in events:
            if token >= 0:
                out[rid].append(token)
            if rid == ids[2] and len(out[rid]) == 3 and not finished:
                assert eng.cancel(rid)  # cancelled mid-decode
        return events

    for _ in range(6):  # the first three are running (some still prefilling), three wait
        step()
    assert eng.stats["running"] == 3 and eng.stats["waiting"] == 3
    assert eng.stats["kv_blocks_free"] < eng.stats["kv_blocks_total"]
    assert eng.cancel(ids[0]) and eng.cancel(ids[4])  # one running, one waiting
    events = step()
    assert sorted((r, t, f, why) for r, t, f, why in events if why == "cancelled") == [
        (ids[0], -1, True, "cancelled"),
        (ids[4], -1, True, "cancelled"),
    ]
    assert not eng.cancel(ids[0]) and not eng.cancel(12345)  # finished / unknown
    while eng.has_work:
        step()
    for k in (1, 3, 5):
        assert out[ids[k]] == alone(reference, *reqs[k])
    assert len(out[ids[2]]) == 3 and out[ids[2]] == alone(reference, *reqs[2])[:3]
    s = eng.stats
    assert s["kv_blocks_free"] == s["kv_blocks_total"] and s["cancelled"] == 3
    # The pool is whole: once the engine is closed, a batch needing every block runs.
    eng.close()
    full = [[5] * 95, [6] * 95, [7] * 95]
    assert sess.generate(full, 2) == reference.generate(full, 2)


def test_session_refuses_while_an_engine_drives_it(weights):
    sess = session(weights)
    eng = Engine(sess)
    with pytest.raises(ValueError, match="driven by an Engine"):
        sess.generate([[1, 2, 3]], 2)
    with pytest.raises(ValueError, match="driven by an Engine"):
        sess.logits([1, 2, 3])
    with pytest.raises(ValueError, match="already has an engine"):
        Engine(sess)
    eng.close()
    assert len(sess.generate([[1, 2, 3]], 2)[0]) == 2


@pytest.mark.parametrize(
    "prompt, kw, message",
    [
        ([], {}, "prompt 0 is empty"),
        ([1, 300], {}, "token id 300 is out of range"),
        ([1, 2], {"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ([1] * 500, {"max_new_tokens": 20}, "exceeds max_seq_len = 512"),
        ([1] * 200, {"max_new_tokens": 20}, "more than the pools hold"),
        ([1, 2], {"temperature": -1.0}, "temperature: must be >= 0"),
        ([1, 2], {"top_p": 0.0}, "top_p: must be in"),
        ([1, 2], {"stop_tokens": [400]}, "stop_tokens: token id 400"),
        ("text", {}, "must be a list of token ids"),
    ],
)
def test_bad_requests_are_refused_by_name(weights, prompt, kw, message):
    eng = Engine(session(weights, max_cache_tokens=160))
    kw = {"max_new_tokens": 4, **kw}
    with pytest.raises((ValueError, TypeError), match=message):
        eng.add_request(prompt, **kw)
    assert eng.run_all([([1, 2, 3], dict(max_new_tokens=2))])[0]  # still serving


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(max_running=7), "max_running 7 exceeds the session's max_batch = 6"),
        (dict(step_tokens=6), r"step_tokens \(6\) must exceed max_running \(6\)"),
        (dict(step_tokens=5000), "step_tokens 5000 exceeds the session's prefill_chunk_tokens"),
        (dict(max_running=0), "max_running must be >= 1"),
    ],
)
def test_bad_engine_options(weights, options, message):
    with pytest.raises(ValueError, match=message):
        Engine(session(weights), **options)
