"""The OpenAI-compatible request and response bodies of fastattention.server.

parse_completion / parse_chat check a request body and return a GenerationRequest, or raise
RequestError (an HTTP status, a message naming the field at fault, OpenAI's error type, param
and code). Response bodies (whole and streamed chunks) are built by the functions below.
"""

from __future__ import annotations

import numbers
import random
import time
import uuid
from dataclasses import dataclass, field

from fastattention.streaming import check_stop_strings
from fastattention.tokenizer import check_messages

DEFAULT_MAX_TOKENS = {"completion": 16, "chat": 256}  # OpenAI's default for completions is 16


class RequestError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status,
            message,
            param,
            code,
            kind,
        )

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class GenerationRequest:
    kind: str  # "completion" or "chat"
    prompt_ids: list
    max_tokens: int
    stream: bool
    stop: list = field(default_factory=list)
    stop_tokens: list = field(default_factory=list)
    sampling: dict = field(default_factory=dict)  # temperature, top_p, top_k, seed
    include_usage: bool = False
    id: str = ""
    created: int = 0


def _number(body: dict, name: str, default, lo=None, hi=None, integer=False, lo_open=False):
    value = body.get(name, default)
    if value is None:
        value = default
    ok_type = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, ok_type):
        raise RequestError(
            400,
            f"{name}: must be {'an integer' if integer else 'a number'}, got "
            f"{type(value).__name__} {value!r:.40}",
            name,
        )
    if lo is not None and (value <= lo if lo_open else value < lo) or hi is not None and value > hi:
        span = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
        raise RequestError(400, f"{name}: must be in {span}, got {value}", name)
    return int(value) if integer else float(value)


def _common(
    body, kind: str, model_name: str, max_seq_len: int, prompt_ids, eos
) -> GenerationRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "model: required (a string); GET /v1/models lists it", "model")
    if model != model_name:
        raise RequestError(
            404,
            f"model '{model}' does not exist; this server serves '{model_name}'",
            "model",
            "model_not_found",
        )
    if _number(body, "n", 1, 1, integer=True) != 1:
        raise RequestError(400, "n: this server returns one choice per request (n = 1)", "n")
    limit = body.get("max_completion_tokens") if kind == "chat" else None
    name = "max_completion_tokens" if limit is not None else "max_tokens"
    max_tokens = _number(body, name, DEFAULT_MAX_TOKENS[kind], 1, integer=True)
    if len(prompt_ids) + max_tokens > max_seq_len:
        raise RequestError(
            400,
            f"this model's context is {max_seq_len} tokens; the prompt has "
            f"{len(prompt_ids)} and {name} is {max_tokens} "
            f"({len(prompt_ids) + max_tokens} in all): shorten the prompt or "
            f"lower {name}",
            "messages" if kind == "chat" else "prompt",
            "context_length_exceeded",
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, f"stream: must be true or false, got {stream!r:.40}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError(400, "stream_options: must be an object", "stream_options")
    try:
        stop = check_stop_strings(body.get("stop"))
    except (TypeError, ValueError) as e:
        raise RequestError(400, f"stop: {e}", "stop") from None
    if len(stop) > 4:
        raise RequestError(400, f"stop: at most 4 stop strings, got {len(stop)}", "stop")
    ignore_eos = body.get("ignore_eos", False)  # an extension (vLLM's): for load tests
    if not isinstance(ignore_eos, bool):
        raise RequestError(
            400, f"ignore_eos: must be true or false, got {ignore_eos!r:.40}", "ignore_eos"
        )
    seed = body.get("seed")
    sampling = dict(
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        top_k=_number(body, "top_k", 0, 0, integer=True),  # an extension (vLLM has it too)
        seed=random.getrandbits(63)
        if seed is None
        else _number(body, "seed", 0, 0, 2**64 - 1, integer=True),
    )
    return GenerationRequest(
        kind,
        prompt_ids,
        max_tokens,
        stream,
        stop,
        [] if ignore_eos else list(eos),
        sampling,
        bool(options.get("include_usage", False)),
        f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}",
        int(time.time()),
    )


def parse_completion(
    body, tokenizer, model_name: str, max_seq_len: int, vocab: int, eos
) -> GenerationRequest:
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if not prompt:
            raise RequestError(400, "prompt: empty string", "prompt")
        ids = tokenizer.encode(prompt)
    elif (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in prompt)
    ):
        ids = [int(t) for t in prompt]
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise RequestError(
                400, f"prompt: token id {bad[0]} is out of range [0, {vocab})", "prompt"
            )
    else:
        raise RequestError(
            400,
            "prompt: must be one string or one list of token ids (this "
            "server takes one prompt per request)",
            "prompt",
        )
    return _common(body, "completion", model_name, max_seq_len, ids, eos)


def parse_chat(body, tokenizer, model_name: str, max_seq_len: int, eos) -> GenerationRequest:
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object")
    try:
        messages = check_messages(body.get("messages"))
        ids = tokenizer.encode_chat(messages, True)
    except (TypeError, ValueError) as e:
        raise RequestError(400, str(e), "messages") from None
    except Exception as e:  # the chat template raised (e.g. raise_exception for a bad role)
        raise RequestError(400, f"messages: the chat template failed: {e}", "messages") from None
    return _common(body, "chat", model_name, max_seq_len, ids, eos)


def _usage(req: GenerationRequest, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": len(req.prompt_ids),
        "completion_tokens": completion_tokens,
        "total_tokens": len(req.prompt_ids) + completion_tokens,
    }


def _body(
    req: GenerationRequest, model: str, obj: str, choices: list, usage: dict | None = None
) -> dict:
    """A response object or stream chunk: the fields every one has, and usage where given."""
    body = {"id": req.id, "object": obj, "created": req.created, "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def response_body(
    req: GenerationRequest, model: str, text: str, finish_reason: str, completion_tokens: int
) -> dict:
    if req.kind == "chat":
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return _body(req, model, obj, [choice], usage=_usage(req, completion_tokens))


def chunk_body(
    req: GenerationRequest,
    model: str,
    text: str | None,
    finish_reason: str | None = None,
    first: bool = False,
) -> dict:
    if req.kind == "chat":
        delta = {}
        if first:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return _body(req, model, obj, [choice])


def usage_chunk(req: GenerationRequest, model: str, completion_tokens: int) -> dict:
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    return _body(req, model, obj, [], usage=_usage(req, completion_tokens))
