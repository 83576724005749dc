"""Token ids -> text as they are generated: incremental detokenisation and stop strings.

IncrementalDecoder turns one request's tokens into text pieces as they come. Each piece is the
text that a window of the last tokens adds (the offsets scheme of text-generation-inference and
vLLM): a piece is released only once it no longer ends in an unfinished UTF-8 character (U+FFFD
from a partial byte sequence), and a word that spans several tokens comes out with the spacing
that decoding the whole sequence gives it. The pieces concatenated equal
tokenizer.decode(all tokens) (finish() releases the rest).

TextRun drives one Session.generate call through its on_step hook: every request gets a decoder
and a StopStrings filter, pieces go to a callback as soon as they are final, and the call stops
early when every request is finished (a stop token, a stop string or a closed stream).
"""

from __future__ import annotations

import threading

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self._tok = tokenizer
        self._skip = skip_special_tokens
        # Tokens after which no text is released: byte-fallback tokens (a run of them decodes
        # as a whole) and, when they are skipped, special tokens (the run goes on across them).
        self._hold = tokenizer.byte_token_ids
        if skip_special_tokens and self._hold:
            self._hold = self._hold | tokenizer.special_token_ids
        self.ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # tokens before this one have been released
        self.text = ""  # all text released so far

    def _decode(self, ids) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def push(self, token: int) -> str:
        """The new final text after `token` ("" while it is not final yet)."""
        self.ids.append(int(token))
        if int(token) in self._hold:
            return ""  # a run of byte tokens decodes as a whole: wait for its end
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if (
            len(after) > len(before)
            and not after.endswith(REPLACEMENT)
            and after.startswith(before)
        ):
            piece = after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
            self.text += piece
            return piece
        return ""

    def finish(self) -> str:
        """The text not released yet (an unfinished character stays U+FFFD, as in decode())."""
        full = self._decode(self.ids)
        if full.startswith(self.text):
            rest = full[len(self.text) :]
        else:  # cannot happen with byte-level or sentencepiece decoders; keep the window's view
            before = self._decode(self.ids[self._prefix : self._read])
            rest = self._decode(self.ids[self._prefix :])[len(before) :]
        self.text += rest
        self._prefix = self._read = len(self.ids)
        return rest


class StopStrings:
    """Holds back text that may be the start of a stop string and cuts at the first one found.

    feed(piece) returns the text that is safe to show; .stopped is the stop string once one has
    appeared (the text is cut just before it; nothing after it is returned)."""

    def __init__(self, stops):
        self.stops = [s for s in stops]
        self._longest = max((len(s) for s in self.stops), default=0)
        self.text = ""  # everything fed
        self.sent = 0  # characters of self.text returned
        self.stopped = None

    def feed(self, piece: str, final: bool = False) -> str:
        if self.stopped is not None:
            return ""
        start = max(0, len(self.text) - self._longest + 1)
        self.text += piece
        if self.stops:
            hits = [(self.text.find(s, start), s) for s in self.stops]
            hits = [(pos, s) for pos, s in hits if pos >= 0]
            if hits:
                pos, self.stopped = min(hits)
                self.text = self.text[:pos]
                final = True
        end = len(self.text)
        if not final:
            for n in range(min(self._longest - 1, len(self.text)), 0, -1):
                tail = self.text[-n:]
                if any(s.startswith(tail) for s in self.stops):
                    end -= n
                    break
        out = self.text[self.sent : end]
        self.sent = max(self.sent, end)
        return out


def check_stop_strings(stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple, set, frozenset)):
        raise TypeError(f"stop must be a string or a list of strings, got {type(stop).__name__}")
    out = []
    for s in stop:
        if not isinstance(s, str):
            raise TypeError(f"stop strings must be str, got {type(s).__name__} {s!r}")
        if not s:
            raise ValueError("stop strings must not be empty")
        out.append(s)
    return out


class TextRun:
    """One batched generate() call seen as text.

    generate(batch, on_step) runs the model (Session.generate's raw call); emit(index, piece) is
    called with each final piece of text; stop_tokens end a request (their text is left out);
    stop strings end it and cut its text before them. cancel() (any thread) stops the call at
    the next step. After the call and finish(): texts, ids (up to the stop), finish_reasons
    ("stop", "length" or "cancelled"), stopped_by (the stop token id or string)."""

    def __init__(
        self,
        tokenizer,
        num_requests: int,
        stop_tokens=(),
        stop_strings=(),
        emit=None,
        skip_special_tokens: bool = True,
        user_hook=None,
        max_new_tokens: int | None = None,
    ):
        self.max_new_tokens = max_new_tokens
        self.stopped_early = False
        self.decoders = [
            IncrementalDecoder(tokenizer, skip_special_tokens) for _ in range(num_requests)
        ]
        self.filters = [StopStrings(stop_strings) for _ in range(num_requests)]
        self.stop_tokens = set(int(t) for t in stop_tokens)
        self.ids = [[] for _ in range(num_requests)]
        self.done = [False] * num_requests
        self.finish_reasons = ["length"] * num_requests
        self.stopped_by = [None] * num_requests
        self._emit = emit or (lambda i, piece: None)
        self._user_hook = user_hook
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def _out(self, i: int, piece: str, final: bool = False) -> None:
        text = self.filters[i].feed(piece, final)
        if self.filters[i].stopped is not None and not self.done[i]:
            self.done[i] = True
            self.finish_reasons[i] = "stop"
            self.stopped_by[i] = self.filters[i].stopped
        if text:
            self._emit(i, text)

    def on_step(self, tokens) -> bool:
        for i, token in tokens:
            if self.done[i]:
                continue
            self.ids[i].append(int(token))
            if int(token) in self.stop_tokens:
                self.done[i] = True
                self.finish_reasons[i] = "stop"
                self.stopped_by[i] = int(token)
                self._out(i, self.decoders[i].finish(), final=True)
                continue
            self._out(i, self.decoders[i].push(token))
        go_on = not all(self.done) and not self._cancel.is_set()
        if self._user_hook is not None and self._user_hook(tokens) is False:
            go_on = False
        self.stopped_early = self.stopped_early or (not go_on and not all(self.done))
        return go_on

    def finish(self) -> None:
        """Releases what the decoders and stop filters still hold (after the call returns)."""
        for i, dec in enumerate(self.decoders):
            if not self.done[i]:
                self._out(i, dec.finish(), final=True)
            if not self.done[i] and self.stopped_early and len(self.ids[i]) != self.max_new_tokens:
                self.finish_reasons[i] = "cancelled"

    @property
    def texts(self) -> list[str]:
        return [f.text[: f.sent] for f in self.filters]
