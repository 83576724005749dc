"""Text in, text out for Session: generate() on strings, chat() and stream() (see Session).

Session inherits TextGeneration; these methods use its tokenizer (the model directory's
tokenizer.json, fastattention.tokenizer) and its raw generate call with the on_step hook
(fastattention.streaming.TextRun does the decoding and the stop strings).
"""

from __future__ import annotations

import dataclasses
import queue
import threading

from fastattention.streaming import TextRun, check_stop_strings
from fastattention.tokenizer import check_messages


class Completion(str):
    """The text of one request: a str (it prints and compares as the text) that also carries
    token_ids (the new tokens, a stop token included, up to where a stop string was found),
    finish_reason ("stop": a stop token or string; "length": max_new_tokens; "cancelled") and
    stop (the stop token id or stop string that ended it, else None)."""

    def __new__(cls, text: str, token_ids, finish_reason: str, stop=None):
        self = super().__new__(cls, text)
        self.token_ids = list(token_ids)
        self.finish_reason = finish_reason
        self.stop = stop
        return self

    def __reduce__(self):  # pickling (e.g. to other processes) keeps the ids and reasons
        return (Completion, (str(self), self.token_ids, self.finish_reason, self.stop))

    def __repr__(self) -> str:
        return (
            f"Completion({str.__repr__(self)}, finish_reason={self.finish_reason!r}, "
            f"{len(self.token_ids)} tokens)"
        )


_DONE = object()


@dataclasses.dataclass(frozen=True)
class TextRequest:
    """What a text generate(), stream() or chat() call asks for, as its paths pass it on."""

    batch: list  # the prompts as token ids
    single: bool  # one text prompt: one result, not a list
    max_new_tokens: int
    sampling: dict  # temperature, top_k, top_p, seed
    stop_tokens: object
    stop: object  # stop strings
    skip_special_tokens: bool


class TextGeneration:
    """The text methods of Session (documented there)."""

    tokenizer = None

    def _init_text(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        if tokenizer is not None:
            tokenizer.check_vocab(self.config["vocab_size"])

    def _need_tokenizer(self, what: str):
        if self.tokenizer is None:
            where = self.model_dir or "this in-memory model"
            raise ValueError(
                f"{what} needs a tokenizer, and {where} has none (no tokenizer.json; "
                f"export the model with its tokenizer, or pass token ids)"
            )
        return self.tokenizer

    def _encode_prompts(self, prompts):
        """(batch of token-id prompts or None when they are ids, single text?)"""
        if isinstance(prompts, str):
            return [self._need_tokenizer("a text prompt").encode(prompts)], True
        if (
            isinstance(prompts, (list, tuple))
            and prompts
            and all(isinstance(p, str) for p in prompts)
        ):
            tok = self._need_tokenizer("a text prompt")
            return [tok.encode(p) for p in prompts], False
        if isinstance(prompts, (list, tuple)) and any(isinstance(p, str) for p in prompts):
            raise TypeError("prompts: mix of strings and token ids; pass all text or all ids")
        return None, False

    def _text_run(self, request: TextRequest, emit=None, user_hook=None):
        """(TextRun, checked batch, keyword arguments of the raw generate call)."""
        tok = self._need_tokenizer("text output")
        stops = check_stop_strings(request.stop)
        batch, args = self._check_generate(
            request.batch,
            request.max_new_tokens,
            stop_tokens=request.stop_tokens,
            on_step=user_hook,
            **request.sampling,
        )
        run = TextRun(
            tok,
            len(batch),
            args["stop_tokens"],
            stops,
            emit=emit,
            skip_special_tokens=request.skip_special_tokens,
            user_hook=user_hook,
            max_new_tokens=args["max_new_tokens"],
        )
        args["on_step"] = run.on_step
        return run, batch, args

    @staticmethod
    def _completions(run: TextRun, ids) -> list:
        out = []
        for i, tokens in enumerate(ids):
            if run.finish_reasons[i] == "stop" and isinstance(run.stopped_by[i], str):
                tokens = run.ids[i]  # cut after the token that completed the stop string
            out.append(Completion(run.texts[i], tokens, run.finish_reasons[i], run.stopped_by[i]))
        return out

    def _generate_text(self, request: TextRequest, on_step, as_ids=False):
        run, batch, args = self._text_run(request, user_hook=on_step)
        ids = self._session.generate(batch, **args)
        run.finish()
        out = self._completions(run, ids)
        if as_ids:
            return [c.token_ids for c in out]
        return out[0] if request.single else out

    # -- stream ---------------------------------------------------------------------------------
    def stream(
        self,
        prompts,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop_tokens=(),
        stop=None,
        skip_special_tokens: bool = True,
    ):
        """An iterator over the text as it is generated (Session's docstring has the rules)."""
        batch, single = self._encode_prompts(prompts)
        sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        batch = prompts if batch is None else batch
        return self._stream(
            TextRequest(
                batch, single, max_new_tokens, sampling, stop_tokens, stop, skip_special_tokens
            )
        )

    def _stream(self, request: TextRequest):
        # Everything is checked here, at the call, before the first next().
        pieces: queue.Queue = queue.Queue()
        run, batch, args = self._text_run(request, emit=lambda i, piece: pieces.put((i, piece)))
        return self._stream_pieces(run, pieces, batch, args, request.single)

    def _stream_pieces(self, run, pieces, batch, args, single):
        def work():
            try:
                self._session.generate(batch, **args)
                run.finish()
            except BaseException as e:  # handed to the reader, raised there
                pieces.put((_DONE, e))
            else:
                pieces.put((_DONE, None))

        # The runtime serialises calls on a session (its generate holds a lock, without the
        # GIL), so other calls made while this one runs wait for it.
        worker = threading.Thread(target=work, name="fastattention-stream", daemon=True)
        worker.start()
        try:
            while True:
                i, piece = pieces.get()
                if i is _DONE:
                    if piece is not None:
                        raise piece
                    return
                yield piece if single else (i, piece)
        finally:
            run.cancel()  # a closed or interrupted stream stops the call at the next step
            while worker.is_alive():  # closed only once the call has returned
                try:
                    worker.join()
                except KeyboardInterrupt:  # a second Ctrl-C: the call ends at its next step
                    continue

    # -- chat -----------------------------------------------------------------------------------
    def chat(
        self,
        messages,
        max_new_tokens: int = 512,
        *,
        stream: bool = False,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop_tokens=None,
        stop=None,
        add_generation_prompt: bool = True,
        skip_special_tokens: bool = True,
        **template_kwargs,
    ):
        """The assistant's answer to a chat (Session's docstring has the rules)."""
        tok = self._need_tokenizer("chat()")
        single = (
            isinstance(messages, (list, tuple)) and bool(messages) and isinstance(messages[0], dict)
        )
        if (
            isinstance(messages, (list, tuple))
            and messages
            and not single
            and all(isinstance(m, (list, tuple)) for m in messages)
        ):
            chats = list(messages)
        else:
            chats = [check_messages(messages)]
        for c, conv in enumerate(chats):
            try:
                check_messages(conv)
            except (TypeError, ValueError) as e:
                raise type(e)(f"chat {c}: {e}") from None
        batch = [tok.encode_chat(conv, add_generation_prompt, **template_kwargs) for conv in chats]
        if stop_tokens is None:
            stop_tokens = sorted(set(tok.end_of_turn_ids()) | set(self.config["eos_token_id"]))
        sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        request = TextRequest(
            batch, single, max_new_tokens, sampling, stop_tokens, stop, skip_special_tokens
        )
        return self._stream(request) if stream else self._generate_text(request, None)
