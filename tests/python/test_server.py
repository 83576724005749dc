"""The OpenAI-compatible server (fastattention.server) on 127.0.0.1 (an ephemeral port) over a tiny
random model with a tokenizer built here: the official `openai` client gets Session.chat's and
Session.generate's text, streamed and whole alike; bad requests get a 4xx naming the field and
the server keeps serving; concurrent streaming clients, some disconnecting midway, all finish
or are cancelled with no KV block left behind; shutdown cancels what runs and gives the
session back whole."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import openai  # the test extra has it, starlette and uvicorn
import pytest
import text_helpers as h

from fastattention import random_weights
from fastattention.server import Server, make_uvicorn
from fastattention.session import Session
from fastattention.tokenizer import Tokenizer

MODEL = "tiny-chat"
CHATS = [
    [{"role": "user", "content": "Hello world"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好 😀"}],
    [{"role": "user", "content": "def f(x):\n    return x"}],
]


@pytest.fixture(scope="module")
def model():
    tok = Tokenizer(
        h.train_byte_level(),
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        h.CHAT_TEMPLATE,
    )
    cfg = h.tiny_config(tok.vocab_size, max_position_embeddings=1024)
    return tok, cfg, random_weights.shard_tensors(cfg, 0, seed=3)


def make_session(model, **options) -> Session:
    tok, cfg, w = model
    options = {"max_batch": 8, "num_threads": 1, **options}
    return Session.from_memory(cfg, w, tokenizer=tok, **options)


class Running:
    """A Server on a uvicorn thread at 127.0.0.1:<ephemeral port>."""

    def __init__(self, server: Server, graceful_seconds: float = 5.0):
        self.server = server
        self.uvicorn = make_uvicorn(server, "127.0.0.1", 0, graceful_seconds, "warning")
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        self.port = self.uvicorn.servers[0].sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"

    def client(self, cls=None):
        return (cls or openai.OpenAI)(
            base_url=self.base + "/v1", api_key="unused", max_retries=0, timeout=60
        )

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive()

    def wait_idle(self, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            s = self.server.engine.stats
            if (
                s["running"] == s["waiting"] == s["preempted"] == 0
                and self.server.loop.pending == 0
            ):
                return s
            assert time.monotonic() < deadline, f"engine not idle: {s}"
            time.sleep(0.02)


@pytest.fixture(scope="module")
def served(model):
    run = Running(Server(make_session(model), MODEL, step_tokens=48))
    yield run
    run.stop()


@pytest.fixture(scope="module")
def reference(model):
    return make_session(model)


def http(run: Running, path: str, body=None, raw: bytes | None = None):
    """(status, parsed JSON or text) of a GET (body None) or POST."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(
        run.base + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


@pytest.mark.parametrize("sampling", [dict(temperature=0.0), dict(temperature=1.0, seed=17)])
def test_chat_equals_session_chat_streamed_or_not(served, reference, sampling):
    client = served.client()
    for messages in CHATS:
        expect = reference.chat(messages, 24, **sampling)
        whole = client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=24, **sampling
        )
        assert whole.choices[0].message.content == str(expect)
        assert whole.choices[0].finish_reason == expect.finish_reason
        assert whole.usage.completion_tokens == len(expect.token_ids)
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=messages,
                max_tokens=24,
                stream=True,
                stream_options={"include_usage": True},
                **sampling,
            )
        )
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == str(expect)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expect.finish_reason
        assert chunks[-1].usage.completion_tokens == len(expect.token_ids)


def test_completions_equal_session_generate(served, reference):
    client = served.client()
    for prompt, stop in [("Hello world", None), ("The quick brown", ["e"]), ("你好", None)]:
        expect = reference.generate(
            prompt,
            20,
            temperature=0.8,
            seed=3,
            stop=stop,
            stop_tokens=reference.config["eos_token_id"],
        )
        whole = client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=20, temperature=0.8, seed=3, stop=stop
        )
        assert whole.choices[0].text == str(expect)
        assert whole.choices[0].finish_reason == expect.finish_reason
        streamed = client.completions.create(
            model=MODEL,
            prompt=prompt,
            max_tokens=20,
            temperature=0.8,
            seed=3,
            stop=stop,
            stream=True,
        )
        assert "".join(c.choices[0].text for c in streamed) == str(expect)
    ids = reference.tokenizer.encode("Hello")
    whole = client.completions.create(model=MODEL, prompt=ids, max_tokens=5, temperature=0)
    assert whole.choices[0].text == str(reference.generate("Hello", 5, stop_tokens=[2]))


def test_models_health_metrics(served):
    assert http(served, "/health") == (200, {"status": "ok"})
    assert [m.id for m in served.client().models.list().data] == [MODEL]
    status, text = http(served, "/metrics")
    assert status == 200
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    for name in (
        "queue_length",
        "running_requests",
        "tokens_per_second",
        "kv_usage_ratio",
        "kv_blocks_used",
        "generated_tokens_total",
    ):
        assert f"fastattention_{name}" in values, name
    assert (
        int(values["fastattention_kv_blocks_total"])
        == served.server.engine.stats["kv_blocks_total"]
    )


GOOD_CHAT = {"model": MODEL, "messages": CHATS[0], "max_tokens": 4}


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/chat/completions", b"[1, 2]", 400, "must be a JSON object"),
        (
            "/v1/chat/completions",
            {**GOOD_CHAT, "model": "gpt-4"},
            404,
            "model 'gpt-4' does not exist",
        ),
        ("/v1/chat/completions", {**GOOD_CHAT, "max_tokens": -3}, 400, "max_tokens: must be in"),
        ("/v1/chat/completions", {**GOOD_CHAT, "max_tokens": 1020}, 400, "context is 1024 tokens"),
        ("/v1/chat/completions", {**GOOD_CHAT, "messages": "hi"}, 400, "messages must be a list"),
        ("/v1/chat/completions", {**GOOD_CHAT, "temperature": 3}, 400, "temperature: must be in"),
        ("/v1/chat/completions", {**GOOD_CHAT, "n": 2}, 400, "one choice per request"),
        ("/v1/chat/completions", {**GOOD_CHAT, "stream": "yes"}, 400, "stream: must be true"),
        (
            "/v1/chat/completions",
            {k: v for k, v in GOOD_CHAT.items() if k != "model"},
            400,
            "model: required",
        ),
        ("/v1/completions", {"model": MODEL, "prompt": 5}, 400, "prompt: must be one string"),
        ("/v1/completions", {"model": MODEL, "prompt": [1, 99999]}, 400, "token id 99999"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "stop": ["a", ""]}, 400, "stop:"),
    ],
)
def test_bad_requests_get_4xx_and_the_server_keeps_serving(served, path, body, status, message):
    raw = body if isinstance(body, bytes) else None
    got, answer = http(served, path, None if raw else body, raw)
    assert got == status, answer
    assert message in answer["error"]["message"], answer
    assert http(served, "/v1/chat/completions", GOOD_CHAT)[0] == 200


def test_concurrent_streams_with_disconnects_leave_no_blocks(served, reference):
    n, leavers = 32, set(range(0, 32, 4))  # every 4th client disconnects after 2 chunks
    client = served.client(openai.AsyncOpenAI)
    before = served.server.engine.stats

    async def one(i):
        messages = [{"role": "user", "content": f"client {i} says hello"}]
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=messages,
            stream=True,
            max_tokens=900 if i in leavers else 12,
            temperature=1.0,
            seed=i,
            extra_body={"ignore_eos": i in leavers},
        )
        text, count = [], 0
        async for chunk in stream:
            count += 1
            if i in leavers and count == 2:
                await stream.close()
                return i, None
            if chunk.choices:
                text.append(chunk.choices[0].delta.content or "")
        return i, "".join(text)

    async def all_clients():
        return await asyncio.gather(*(one(i) for i in range(n)))

    results = asyncio.run(asyncio.wait_for(all_clients(), 120))
    for i, text in results:
        if i not in leavers:
            messages = [{"role": "user", "content": f"client {i} says hello"}]
            assert text == str(reference.chat(messages, 12, temperature=1.0, seed=i)), i
    s = served.wait_idle()
    assert s["kv_blocks_free"] == s["kv_blocks_total"]
    # The leavers ignore eos (900 tokens, about a second here): the disconnect cancels them.
    assert s["cancelled"] - before["cancelled"] == len(leavers)
    assert s["finished"] - before["finished"] == n - len(leavers)


def test_whole_request_disconnect_cancels_it(served):
    before = served.server.engine.stats["cancelled"]
    body = json.dumps(
        {
            **GOOD_CHAT,
            "max_tokens": 900,
            "ignore_eos": True,
            "messages": [{"role": "user", "content": "x"}],
        }
    ).encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
            b"application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        deadline = time.monotonic() + 30
        while (
            served.server.engine.stats["generated_tokens"] == 0 or served.server.loop.pending == 0
        ):
            assert time.monotonic() < deadline
            time.sleep(0.005)
    s = served.wait_idle()
    assert s["cancelled"] == before + 1 and s["kv_blocks_free"] == s["kv_blocks_total"]


def test_shutdown_cancels_running_requests_and_frees_the_session(model):
    sess = make_session(model)
    run = Running(Server(sess, MODEL, step_tokens=48), graceful_seconds=0.3)
    client = run.client()
    stream = client.chat.completions.create(
        model=MODEL, messages=CHATS[0], max_tokens=200, stream=True
    )
    next(iter(stream))  # it runs
    run.stop()  # graceful period over: the stream is cut, its request cancelled
    assert run.server.engine._engine is None  # closed with the app
    assert len(sess.generate([[1] * 200, [2] * 200], 50)) == 2  # the pool is whole


def test_requests_preempted_under_kv_pressure_get_their_whole_text(model, reference):
    """A KV pool of 12 blocks for 6 concurrent streams growing to 10 blocks each (long enough
    in engine time to overlap): the youngest are preempted to host memory and resumed; every
    stream gets Session.generate's text and the pool is whole afterwards; /metrics counts the
    preemptions."""
    run = Running(Server(make_session(model, max_cache_tokens=192), MODEL, step_tokens=48))
    client = run.client(openai.AsyncOpenAI)
    prompts = [f"request {i}: tell me" for i in range(6)]

    async def one(i):
        stream = await client.completions.create(
            model=MODEL,
            prompt=prompts[i],
            max_tokens=150,
            temperature=1.0,
            seed=i,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        return "".join([c.choices[0].text async for c in stream])

    async def all_clients():
        return await asyncio.gather(*(one(i) for i in range(6)))

    try:
        texts = asyncio.run(asyncio.wait_for(all_clients(), 120))
        for i, text in enumerate(texts):
            assert text == str(reference.generate(prompts[i], 150, temperature=1.0, seed=i)), i
        s = run.wait_idle()
        assert s["kv_blocks_free"] == s["kv_blocks_total"] == 12
        assert s["preemptions"] > 0 and s["resumed"] == s["preemptions"]
        _, text = http(run, "/metrics")
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
        assert int(values["fastattention_preemptions_total"]) == s["preemptions"]
        assert values["fastattention_preempted_requests"] == "0"
    finally:
        run.stop()
