"""Session text API on a tiny random model with a tokenizer built here: text generate equals the
ids path decoded, streaming equals non-streaming (one request and a batch, whose streams are
independent), incremental detokenisation never splits a character, stop strings cut exactly,
closing a stream early stops the generation and leaves the session usable, chat stops at
end-of-turn tokens."""

from __future__ import annotations

import random

import pytest
import text_helpers as h

from fastattention import random_weights
from fastattention.session import Session
from fastattention.streaming import IncrementalDecoder, StopStrings
from fastattention.tokenizer import Tokenizer

SPECIAL_CONFIG = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


@pytest.fixture(scope="module", params=["byte_level", "sentencepiece"])
def tokenizer(request):
    backend = (
        h.train_byte_level() if request.param == "byte_level" else h.train_sentencepiece_like()
    )
    return Tokenizer(backend, SPECIAL_CONFIG, h.CHAT_TEMPLATE)


def make_session(tokenizer, **config) -> Session:
    cfg = h.tiny_config(tokenizer.vocab_size, **config)
    return Session.from_memory(
        cfg,
        random_weights.shard_tensors(cfg, 0, seed=3),
        tokenizer=tokenizer,
        max_batch=4,
        num_threads=1,
    )


@pytest.fixture(scope="module")
def session(tokenizer):
    return make_session(tokenizer)


PROMPTS = ["Hello world", "你好，世界 😀", "  spaces\tand\nlines"]
SAMPLED = dict(temperature=1.0, seed=11)  # random tokens: byte pieces, CJK, spaces, specials


def test_text_generate_is_the_ids_path_decoded(session, tokenizer):
    for kw in ({}, SAMPLED):
        texts = session.generate(PROMPTS, 24, **kw)
        ids = session.generate([tokenizer.encode(p) for p in PROMPTS], 24, **kw)
        assert [t.token_ids for t in texts] == ids
        assert [str(t) for t in texts] == [tokenizer.decode(i) for i in ids]
        assert all(t.finish_reason == "length" and t.stop is None for t in texts)
    one = session.generate(PROMPTS[0], 24, **SAMPLED)
    assert isinstance(one, str) and one == session.generate(PROMPTS, 24, **SAMPLED)[0]


def test_stream_equals_generate(session):
    for kw in ({}, SAMPLED):
        full = session.generate(PROMPTS[1], 40, **kw)
        pieces = list(session.stream(PROMPTS[1], 40, **kw))
        assert "".join(pieces) == full and all(pieces)
        batch = session.generate(PROMPTS, 40, **kw)
        per_request = ["", "", ""]
        for i, piece in session.stream(PROMPTS, 40, **kw):
            per_request[i] += piece
        assert per_request == [str(t) for t in batch]


def test_batch_streams_are_independent(session):
    """Request i of a batch streams what it streams alone (sampled with seed + i), and the
    requests' pieces interleave rather than coming one request after the other."""
    order, texts = [], ["", "", ""]
    for i, piece in session.stream(PROMPTS, 30, temperature=1.0, seed=5):
        order.append(i)
        texts[i] += piece
    for i, prompt in enumerate(PROMPTS):
        assert texts[i] == "".join(session.stream(prompt, 30, temperature=1.0, seed=5 + i))
    assert order != sorted(order)


@pytest.mark.parametrize("seed", range(6))
def test_incremental_decoding_never_splits_a_character(tokenizer, seed):
    """Random ids (byte pieces, specials) and real multi-byte text: the pieces joined are
    decode(ids), and no piece but the last ends in an unfinished character."""
    rng = random.Random(seed)
    text_ids = tokenizer.encode("".join(rng.choice(h.test_strings(60)) for _ in range(6)), False)
    random_ids = [rng.randrange(tokenizer.vocab_size) for _ in range(200)]
    for ids in (text_ids, random_ids):
        dec = IncrementalDecoder(tokenizer)
        pieces = [dec.push(t) for t in ids]
        assert all(not p.endswith("\ufffd") for p in pieces)
        pieces.append(dec.finish())
        assert "".join(pieces) == tokenizer.decode(ids)
    # Text that needs several byte tokens per character comes out whole characters only.
    dec = IncrementalDecoder(tokenizer)
    pieces = [dec.push(t) for t in tokenizer.encode("中文😀👍🏽 é", False)] + [dec.finish()]
    assert "".join(pieces) == "中文😀👍🏽 é" and not any("\ufffd" in p for p in pieces)


def test_stop_strings_filter_cuts_exactly():
    rng = random.Random(0)
    text = "alpha beta STOP gamma ST delta STOP"
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(text)), 6))
        parts = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        f = StopStrings(["STOP", "never"])
        out = "".join(f.feed(p) for p in parts) + f.feed("", final=True)
        assert out == "alpha beta " and f.stopped == "STOP"
    f = StopStrings(["xyz"])
    assert f.feed("abcx") == "abc" and f.feed("y") == "" and f.feed("q", final=True) == "xyq"


def test_stop_strings_in_generation(session, tokenizer):
    full = session.generate(PROMPTS[0], 40, **SAMPLED)
    # three characters from the second half, none of them U+FFFD (an invalid byte's rendering,
    # which an unfinished character shows too)
    starts = [i for i in range(len(full) // 2, len(full) - 3) if "\ufffd" not in full[i : i + 3]]
    stop = full[starts[0] : starts[0] + 3]
    cut = full.index(stop)
    out = session.generate(PROMPTS[0], 40, stop=[stop, "\x00never"], **SAMPLED)
    assert out == full[:cut] and out.finish_reason == "stop" and out.stop == stop
    # ids end where the stop string was found: at the token completing it, or at the end of
    # the run of byte tokens it ends in (such a run's text is released when the run ends)
    n = len(out.token_ids)
    assert out.token_ids == full.token_ids[:n]
    assert stop in tokenizer.decode(full.token_ids[:n])
    held = tokenizer.byte_token_ids | tokenizer.special_token_ids
    released = n - 1
    while released > 0 and full.token_ids[released - 1] in held:
        released -= 1
    assert stop not in tokenizer.decode(full.token_ids[:released])
    assert "".join(session.stream(PROMPTS[0], 40, stop=stop, **SAMPLED)) == out
    # ids in, stop strings: the ids are cut the same way
    assert session.generate([tokenizer.encode(PROMPTS[0])], 40, stop=stop, **SAMPLED) == [
        out.token_ids
    ]


def test_closing_a_stream_stops_generation(session):
    reference = session.generate(PROMPTS[0], 8)
    stream = session.stream(PROMPTS[0], 400)
    next(stream)
    stream.close()
    assert session.timings["decode_steps"] < 100
    assert session.generate(PROMPTS[0], 8) == reference  # usable, same tokens
    count = 0
    for _ in session.stream(PROMPTS, 400, **SAMPLED):
        count += 1
        if count == 3:
            break
    assert session.generate(PROMPTS[0], 8) == reference


def test_user_hook_and_errors_in_streams(session):
    seen = []
    out = session.generate(PROMPTS[0], 50, on_step=lambda toks: seen.append(toks) or len(seen) < 5)
    assert len(out.token_ids) == 5 and len(seen) == 5
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        session.stream(PROMPTS[0], -1)  # checked at the call, not at the first next()
    with pytest.raises(TypeError, match="stop strings must be str"):
        session.generate(PROMPTS[0], 4, stop=[3])
    with pytest.raises(TypeError, match="mix of strings and token ids"):
        session.generate(["a", [1, 2]], 4)


def test_chat_stops_at_end_of_turn(tokenizer):
    session = make_session(tokenizer)
    chat = [{"role": "user", "content": "Hi"}]
    free = session.chat(chat, 30, stop_tokens=[])
    assert free.token_ids == session.generate([tokenizer.encode_chat(chat)], 30)[0]
    # Make the 4th greedy token the model's end-of-turn (its config eos): chat stops there.
    eot = free.token_ids[3]
    first = free.token_ids.index(eot)
    session = make_session(tokenizer, eos_token_id=[eot])
    out = session.chat(chat, 30)
    assert out.token_ids == free.token_ids[: first + 1]
    assert out.finish_reason == "stop" and out.stop == eot
    assert out == tokenizer.decode(free.token_ids[:first])  # the stop token's text left out
    assert "".join(session.chat(chat, 30, stream=True)) == out
    assert tokenizer.token_to_id("<|im_end|>") in tokenizer.end_of_turn_ids()
    batch = session.chat(
        [
            chat,
            chat + [{"role": "assistant", "content": "yo"}, {"role": "user", "content": "again"}],
        ],
        30,
    )
    assert batch[0] == out and len(batch) == 2


def test_calls_during_an_open_stream_wait_for_it(session):
    """A call made while a stream is open (same thread) runs after the stream's generation; the
    stream still yields all of its text."""
    full = session.generate(PROMPTS[1], 60, **SAMPLED)
    stream = session.stream(PROMPTS[1], 60, **SAMPLED)
    first = next(stream)
    assert session.generate(PROMPTS[0], 8) == session.generate(PROMPTS[0], 8)
    assert first + "".join(stream) == full
