"""In-flight batching: requests join and leave the running batch at every step.

    from fastattention.session import Session
    from fastattention.engine import Engine
    s = Session("exported/llama", max_batch=8)
    e = Engine(s, step_tokens=256)
    a = e.add_request([1, 15043], max_new_tokens=32)
    b = e.add_request([1, 306, 626], max_new_tokens=8, temperature=0.8, seed=5)
    while e.has_work:
        for request, token, finished, reason in e.step():
            ...

Each step is one forward pass holding one new token of every decoding request plus chunks of
the prompts being prefilled (step_tokens tokens in all), so long prompts never stall the
decodes. A request's tokens equal Session.generate([prompt], ...) with the same seed, whatever
runs beside it. A request is admitted when the running batch has room (max_running) and the KV
pools can hold its prompt; when decodes outgrow the pools, the youngest running requests are
preempted to host memory and resumed later with the same tokens (preemption=False: admission
reserves prompt + max_new_tokens and nothing is preempted). The session is
borrowed: its own generate() / logits() refuse while the engine lives (see runtime/engine.h).

EngineLoop runs an Engine on its own thread and calls each request's callback with its events:
what the HTTP server (fastattention.server) uses.

Under mpirun (a tensor-parallel session) rank 0 schedules: only it takes requests, and every
rank steps in lock step (each step starts with rank 0 broadcasting the new requests and
cancellations). The other ranks run follow(engine), which steps until rank 0's shutdown();
rank 0's EngineLoop keeps stepping while idle so that they do not time out.
"""

from __future__ import annotations

import threading
import time

from fastattention._native import _C
from fastattention.session import _check_float, _check_int, _check_seed, _token_list


class Engine:
    """Step-wise in-flight batching over a Session (module docstring).

    max_running: requests in the running batch (None: the session's max_batch, the most).
    step_tokens: tokens of one forward pass, decodes and prompt chunks together (None: the
        session's prefill_chunk_tokens, the most; must exceed max_running).
    static_batching: admit new requests only when none is running (the static batching that
        in-flight batching is compared against in `fastattention bench serve`).
    preemption: under KV pressure, preempt the youngest running requests (their KV copied to
        host memory outside the pools, their blocks freed) and resume them, oldest first, when
        blocks are free again; admission then needs room for the prompt only. False: admission
        reserves prompt + max_new_tokens per request and nothing is preempted (static batching
        never preempts). See runtime/engine.h.
    max_preempted_kv_bytes: host memory the preempted requests' KV may hold at once (None: a
        quarter of the machine's memory, shared by the ranks under mpirun). A preemption past
        it drops the request's KV instead, and its prompt and generated tokens are prefilled
        again when it resumes (0: always so).
    """

    def __init__(
        self,
        session,
        *,
        max_running=None,
        step_tokens=None,
        static_batching: bool = False,
        preemption: bool = True,
        max_preempted_kv_bytes=None,
    ):
        opts = _C.EngineOptions()
        opts.max_running = 0 if max_running is None else _check_int("max_running", max_running, 1)
        opts.step_tokens = 0 if step_tokens is None else _check_int("step_tokens", step_tokens, 1)
        if not isinstance(static_batching, bool):
            raise TypeError(f"static_batching must be a bool, got {type(static_batching).__name__}")
        opts.static_batching = static_batching
        if not isinstance(preemption, bool):
            raise TypeError(f"preemption must be a bool, got {type(preemption).__name__}")
        opts.preemption = preemption
        opts.max_preempted_kv_bytes = (
            -1
            if max_preempted_kv_bytes is None
            else _check_int("max_preempted_kv_bytes", max_preempted_kv_bytes, 0)
        )
        self.session = session
        self._engine = _C.Engine(session._session, opts)

    def add_request(
        self,
        prompt,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop_tokens=(),
    ) -> int:
        """Queues a request (token ids); returns its id. Bad input raises TypeError / ValueError
        naming what is wrong (a context longer than max_seq_len or the KV pools: ValueError)."""
        stops = _token_list(
            list(stop_tokens) if isinstance(stop_tokens, (set, frozenset)) else stop_tokens,
            "stop_tokens",
        )
        return self._engine.add_request(
            _token_list(prompt, "prompt"),
            _check_int("max_new_tokens", max_new_tokens, 1),
            _check_float("temperature", temperature),
            _check_int("top_k", top_k, 0),
            _check_float("top_p", top_p),
            _check_seed(seed),
            stops,
        )

    def step(self) -> list:
        """[(request id, token (-1 for a cancelled request), finished, reason), ...]; reason is
        "" while running, else "stop", "length", "cancelled" or "error" (a failed forward pass
        ended the running requests, their blocks freed; last_error says why)."""
        return self._engine.step()

    def cancel(self, request: int) -> bool:
        return self._engine.cancel(request)

    def shutdown(self) -> None:
        """Makes the next step the last (on every rank): it cancels what is left."""
        self._engine.shutdown()

    @property
    def stopped(self) -> bool:
        return self._engine.stopped

    @property
    def rank(self) -> int:
        return self._engine.rank

    @property
    def world_size(self) -> int:
        return self._engine.world_size

    @property
    def has_work(self) -> bool:
        return self._engine.has_work

    @property
    def last_error(self) -> str:
        """The message of the last failed forward pass ("" if none)."""
        return self._engine.last_error

    @property
    def stats(self) -> dict:
        return self._engine.stats

    @property
    def max_running(self) -> int:
        return self._engine.max_running

    @property
    def step_tokens(self) -> int:
        return self._engine.step_tokens

    def close(self) -> None:
        """Detaches from the session (its generate() works again); the engine is unusable."""
        self._engine = None

    def run_all(self, requests) -> list:
        """Runs [(prompt, kwargs of add_request), ...] to the end; their token lists in order."""
        ids = [self.add_request(p, **kw) for p, kw in requests]
        out = {i: [] for i in ids}
        while self.has_work:
            for rid, token, _, _ in self.step():
                if token >= 0:
                    out[rid].append(token)
        return [out[i] for i in ids]


class EngineLoop:
    """An Engine stepped on its own thread. submit() queues a request with a callback
    on_event(token, finished, reason) called on the loop thread (keep it short: hand the event
    to another thread or event loop). A forward pass that fails (e.g. out of memory) ends the
    running requests with reason "error: <message>"; the loop goes on with the others.
    stop() cancels what is left and joins the thread."""

    HEARTBEAT = 0.5  # seconds

    def __init__(self, engine: Engine):
        if engine.rank != 0:
            raise ValueError(
                f"EngineLoop: rank {engine.rank}: under mpirun rank 0 runs the loop "
                f"and takes requests; the other ranks run follow(engine)"
            )
        self.engine = engine
        self._callbacks: dict[int, object] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._tokens_window: list[tuple[float, int]] = []  # (time, tokens) of recent steps
        self._thread = threading.Thread(target=self._run, name="fastattention-engine", daemon=True)
        self._thread.start()

    def submit(self, prompt, on_event, **params) -> int:
        with self._lock:
            if self._stopping:
                raise RuntimeError("the engine is shutting down")
            rid = self.engine.add_request(prompt, **params)
            self._callbacks[rid] = on_event
        self._wake.set()
        return rid

    def cancel(self, request: int) -> None:
        if self.engine.cancel(request):
            self._wake.set()

    def tokens_per_second(self, window: float = 10.0) -> float:
        now = time.monotonic()
        with self._lock:
            recent = [(t, n) for t, n in self._tokens_window if now - t <= window]
            self._tokens_window = recent
        return sum(n for _, n in recent) / window

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._callbacks)

    def _dispatch(self, events) -> None:
        generated = 0
        for rid, token, finished, reason in events:
            generated += token >= 0
            if reason == "error":
                reason = f"error: {self.engine.last_error}"
            with self._lock:
                cb = self._callbacks.pop(rid, None) if finished else self._callbacks.get(rid)
            if cb is not None:
                cb(token, finished, reason)
        if generated:
            with self._lock:
                self._tokens_window.append((time.monotonic(), generated))

    def _run(self) -> None:
        # Under mpirun an idle rank 0 still steps every HEARTBEAT seconds: the other ranks wait
        # for its broadcast, and a collective wait gives up after FASTATTN_COMM_TIMEOUT.
        tp = self.engine.world_size > 1
        while not self.engine.stopped:
            with self._lock:
                if self._stopping and not self.engine.has_work:
                    self.engine.shutdown()  # the last step, on every rank
            if not self.engine.has_work:
                self._wake.wait(self.HEARTBEAT)
                self._wake.clear()
                if not tp:
                    continue
            self._dispatch(self.engine.step())

    def stop(self, timeout: float | None = None) -> None:
        """Cancels every request left and joins the loop thread."""
        with self._lock:
            self._stopping = True
            ids = list(self._callbacks)
        for rid in ids:
            self.engine.cancel(rid)
        self._wake.set()
        self._thread.join(timeout)


def follow(engine: Engine) -> None:
    """The loop of a rank other than 0 under mpirun: steps in lock step with rank 0 until its
    shutdown(). SIGINT and SIGTERM (mpirun passes them on) are ignored here: the job stops
    when rank 0, which shuts down gracefully on them, says so."""
    import signal

    if engine.rank == 0:
        raise ValueError("follow(engine) is for ranks other than 0; rank 0 runs an EngineLoop")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while not engine.stopped:
        engine.step()
