"""An OpenAI-compatible HTTP server over an in-flight batching Engine (`fastattention serve`).

Endpoints: POST /v1/completions, POST /v1/chat/completions (whole or streamed by server-sent
events with "stream": true), GET /v1/models, GET /health, GET /metrics (Prometheus text).
Built on starlette + uvicorn (the `serve` extra: pip install 'fastattention[serve]').

The engine runs on its own thread (fastattention.engine.EngineLoop); each request's tokens come
back to the event loop and are turned into text by the text API's pieces (streaming.TextRun:
incremental detokenisation and stop strings), so a chat request gets exactly Session.chat's
text. Bad requests get a 4xx with OpenAI's error body naming the field at fault; a client that
disconnects cancels its request (its KV blocks are freed at the next step); on shutdown the
server stops accepting, lets running requests finish for a grace period, then cancels the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from fastattention.engine import Engine, EngineLoop
from fastattention.server_protocol import (
    RequestError,
    chunk_body,
    parse_chat,
    parse_completion,
    response_body,
    usage_chunk,
)
from fastattention.streaming import TextRun

FINISH_REASONS = ("stop", "length", "cancelled", "error")


class _Run:
    """One request in the engine, seen from the event loop: next() waits for its next tokens
    and returns the text pieces they complete; .finish_reason once it has finished."""

    def __init__(self, server: "Server", req):
        self.server, self.req = server, req
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pieces: list[str] = []
        self.text = TextRun(
            server.tokenizer,
            1,
            req.stop_tokens,
            req.stop,
            emit=lambda i, piece: self.pieces.append(piece),
            max_new_tokens=req.max_tokens,
        )
        self.finish_reason = None
        self.first_token_at = None

        def on_event(token, finished, reason):  # on the engine thread
            with contextlib.suppress(RuntimeError):  # the event loop has closed (shutdown)
                loop.call_soon_threadsafe(self.queue.put_nowait, (token, finished, reason))

        self.rid = server.loop.submit(
            req.prompt_ids,
            on_event,
            max_new_tokens=req.max_tokens,
            stop_tokens=req.stop_tokens,
            **req.sampling,
        )

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def completion_tokens(self) -> int:
        return len(self.text.ids[0])

    async def next(self) -> str:
        token, finished, reason = await self.queue.get()
        if token >= 0:
            self.text.on_step([(0, token)])
        if self.text.done[0] and not finished:  # a stop string: the engine does not know them
            self.server.loop.cancel(self.rid)
            finished, reason = True, "stop"
        if finished:
            if reason.startswith("error"):
                self.finish_reason = "error"
                self.server.count(self.finish_reason)
                raise RuntimeError(f"generation failed: {reason[len('error: ') :]}")
            if reason != "cancelled":
                self.text.finish()
            self.finish_reason = reason if reason == "cancelled" else self.text.finish_reasons[0]
            self.server.count(self.finish_reason)
        out = "".join(self.pieces)
        self.pieces.clear()
        return out

    def cancel(self) -> None:
        if not self.finished:
            self.server.loop.cancel(self.rid)
            self.finish_reason = "cancelled"
            self.server.count("cancelled")


def _error(e: RequestError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class _Disconnected(Exception):
    pass


async def _next_unless_gone(run: _Run, gone: asyncio.Future) -> str:
    """run.next(), or _Disconnected (the request cancelled) if the client leaves first."""
    if gone.done():
        run.cancel()
        raise _Disconnected
    nxt = asyncio.ensure_future(run.next())
    await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
    if nxt.done():
        return nxt.result()
    nxt.cancel()
    run.cancel()
    raise _Disconnected


class Server:
    """The app over a Session with a tokenizer (the engine borrows the session: its own
    generate() refuses while the server lives). model_name is the id clients pass as "model"."""

    def __init__(
        self,
        session,
        model_name: str,
        *,
        max_running=None,
        step_tokens=None,
        static_batching: bool = False,
        preemption: bool = True,
        max_preempted_kv_bytes=None,
    ):
        if session.tokenizer is None:
            raise ValueError(
                "serving needs the model's tokenizer (tokenizer.json in the model "
                "directory; export the model with its tokenizer)"
            )
        self.session = session
        self.tokenizer = session.tokenizer
        self.model_name = model_name
        self.max_seq_len = session.options.max_seq_len
        self.vocab = session.config["vocab_size"]
        self.eos = sorted(set(session.config["eos_token_id"]))
        self.chat_stops = sorted(set(self.tokenizer.end_of_turn_ids()) | set(self.eos))
        self.engine = Engine(
            session,
            max_running=max_running,
            step_tokens=step_tokens,
            static_batching=static_batching,
            preemption=preemption,
            max_preempted_kv_bytes=max_preempted_kv_bytes,
        )
        self.loop = EngineLoop(self.engine)
        self.created = int(time.time())
        self._counts = {r: 0 for r in FINISH_REASONS}
        self._counts_lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/health", self.health),
                Route("/metrics", self.metrics),
                Route("/v1/models", self.models),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        yield
        self.close()

    def close(self) -> None:
        """Cancels what is left and stops the engine thread; the session is usable again.
        Closing twice is harmless."""
        if self.engine._engine is None:
            return
        self.loop.stop(timeout=60)
        self.engine.close()

    def count(self, reason: str) -> None:
        with self._counts_lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1

    # -- simple endpoints ----------------------------------------------------------------------
    async def health(self, request: Request):
        return JSONResponse({"status": "ok"})

    async def models(self, request: Request):
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model_name,
                        "object": "model",
                        "created": self.created,
                        "owned_by": "fastattention",
                        "max_model_len": self.max_seq_len,
                    }
                ],
            }
        )

    async def metrics(self, request: Request):
        s = self.engine.stats
        with self._counts_lock:
            counts = dict(self._counts)
        used = s["kv_blocks_total"] - s["kv_blocks_free"]
        lines = []

        def metric(name, kind, help_, value, labels=""):
            if not lines or not lines[-1].startswith(f"fastattention_{name}"):
                lines.append(f"# HELP fastattention_{name} {help_}")
                lines.append(f"# TYPE fastattention_{name} {kind}")
            lines.append(f"fastattention_{name}{labels} {value}")

        metric("queue_length", "gauge", "Requests waiting for admission.", s["waiting"])
        metric("running_requests", "gauge", "Requests in the running batch.", s["running"])
        metric(
            "tokens_per_second",
            "gauge",
            "Generated tokens per second (last 10 s).",
            f"{self.loop.tokens_per_second():.3f}",
        )
        metric(
            "kv_blocks_total",
            "gauge",
            "KV-cache blocks (device + host pools).",
            s["kv_blocks_total"],
        )
        metric("kv_blocks_used", "gauge", "KV-cache blocks holding tokens.", used)
        metric(
            "kv_blocks_reserved",
            "gauge",
            "KV-cache blocks owed to running requests (the "
            "rest of their prompts; without preemption their whole contexts).",
            s["kv_blocks_reserved"],
        )
        metric(
            "kv_usage_ratio",
            "gauge",
            "Share of the KV-cache blocks holding tokens.",
            f"{used / max(s['kv_blocks_total'], 1):.4f}",
        )
        metric("generated_tokens_total", "counter", "Tokens generated.", s["generated_tokens"])
        metric("prompt_tokens_total", "counter", "Prompt tokens prefilled.", s["prompt_tokens"])
        metric("engine_steps_total", "counter", "Engine steps (forward passes).", s["steps"])
        metric(
            "engine_step_seconds_total",
            "counter",
            "Time in engine steps.",
            f"{s['step_seconds']:.6f}",
        )
        metric(
            "preempted_requests",
            "gauge",
            "Requests preempted under KV pressure (their KV in host memory), waiting to resume.",
            s["preempted"],
        )
        metric(
            "preempted_kv_bytes",
            "gauge",
            "Host memory holding preempted requests' KV.",
            s["preempted_kv_bytes"],
        )
        metric(
            "preemptions_total",
            "counter",
            "Requests preempted under KV pressure.",
            s["preemptions"],
        )
        metric(
            "preemptions_recomputed_total",
            "counter",
            "Preemptions that dropped the KV (the host cap was reached): recomputed on resumption.",
            s["recomputed"],
        )
        for reason in sorted(counts):
            metric(
                "requests_total",
                "counter",
                "Finished requests by finish reason.",
                counts[reason],
                f'{{finish_reason="{reason}"}}',
            )
        return PlainTextResponse(
            "\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    # -- generation ----------------------------------------------------------------------------
    async def completions(self, request: Request):
        return await self._generate(
            request,
            lambda body: parse_completion(
                body, self.tokenizer, self.model_name, self.max_seq_len, self.vocab, self.eos
            ),
        )

    async def chat_completions(self, request: Request):
        return await self._generate(
            request,
            lambda body: parse_chat(
                body, self.tokenizer, self.model_name, self.max_seq_len, self.chat_stops
            ),
        )

    async def _generate(self, request: Request, parse):
        try:
            raw = await request.body()
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RequestError(400, f"the request body is not valid JSON: {e}") from None
            req = parse(body)
            try:
                run = _Run(self, req)
            except (TypeError, ValueError) as e:  # the engine's checks (e.g. the KV pools)
                raise RequestError(400, str(e)) from None
            except RuntimeError as e:  # shutting down
                raise RequestError(503, str(e), kind="server_error") from None
        except RequestError as e:
            return _error(e)
        if req.stream:
            return StreamingResponse(
                self._stream(request, run),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return await self._whole(request, run)

    async def _whole(self, request: Request, run: _Run):
        gone = asyncio.ensure_future(_wait_disconnect(request))
        try:
            text = []
            while not run.finished:
                text.append(await _next_unless_gone(run, gone))
        except _Disconnected:
            return PlainTextResponse("client disconnected", status_code=499)
        except RuntimeError as e:
            return JSONResponse(RequestError(500, str(e), kind="server_error").body(), 500)
        finally:
            gone.cancel()
            run.cancel()  # a no-op once it has finished
        return JSONResponse(
            response_body(
                run.req, self.model_name, "".join(text), run.finish_reason, run.completion_tokens
            )
        )

    async def _stream(self, request: Request, run: _Run):
        # The server does not stop a streaming response whose client has left (writes to the
        # closed socket are dropped), so the disconnect is watched here.
        req = run.req
        gone = asyncio.ensure_future(_wait_disconnect(request))
        try:
            if req.kind == "chat":
                yield _sse(chunk_body(req, self.model_name, "", first=True))
            while not run.finished:
                piece = await _next_unless_gone(run, gone)
                if piece:
                    yield _sse(chunk_body(req, self.model_name, piece))
            yield _sse(
                chunk_body(
                    req, self.model_name, None if req.kind == "chat" else "", run.finish_reason
                )
            )
            if req.include_usage:
                yield _sse(usage_chunk(req, self.model_name, run.completion_tokens))
            yield "data: [DONE]\n\n"
        except _Disconnected:
            return
        except RuntimeError as e:
            yield _sse(RequestError(500, str(e), kind="server_error").body())
            yield "data: [DONE]\n\n"
        finally:  # a disconnect, an error, or the task cancelled at shutdown
            gone.cancel()
            run.cancel()


def make_uvicorn(
    server: Server, host: str, port: int, graceful_seconds: float = 30.0, log_level: str = "info"
):
    """A uvicorn.Server for the app (serve() runs it; tests run it on a thread)."""
    import uvicorn

    config = uvicorn.Config(
        server.app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=graceful_seconds,
        lifespan="on",
    )
    return uvicorn.Server(config)
