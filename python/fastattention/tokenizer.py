"""The model directory's tokenizer: text <-> token ids and the chat template.

An exported model directory may hold a Hugging Face tokenizer next to its config.json
(docs/FORMAT.md): `tokenizer.json` (read with the `tokenizers` library), `tokenizer_config.json`
(special tokens, add_bos_token, the chat template) and optionally `chat_template.jinja`. Chat
templates are rendered with Jinja2 in a sandbox set up as transformers sets it up, so the same
messages give the same text. transformers itself is not needed.

    tok = Tokenizer.from_dir("exported/llama")      # or load_tokenizer(dir) -> Tokenizer | None
    ids = tok.encode("Hello")
    text = tok.decode(ids)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_JSON = "chat_template.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
# Every file of a tokenizer that export copies (those present).
TOKENIZER_FILES = (
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    CHAT_TEMPLATE_FILE,
    CHAT_TEMPLATE_JSON,
)
# Special tokens that end an assistant turn in common chat templates (used when in the vocab).
END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<|eom_id|>",
)
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class TokenizerError(ValueError):
    """A tokenizer file that is missing, malformed or does not fit the model."""


def _token_text(value):
    """A special token in tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} is not a JSON object")
    return data


def read_chat_template(directory: str, config: dict):
    """The chat template of a tokenizer directory (chat_template.jinja, chat_template.json or
    tokenizer_config.json's "chat_template"), or None. A list of named templates gives the one
    named "default" (as transformers does)."""
    path = os.path.join(directory, CHAT_TEMPLATE_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    template = config.get("chat_template")
    path = os.path.join(directory, CHAT_TEMPLATE_JSON)
    if template is None and os.path.isfile(path):
        template = _read_json(path).get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is not None and not isinstance(template, str):
        raise TokenizerError(
            f"{directory}: chat_template must be a string, got {type(template).__name__}"
        )
    return template


def _compile_template(template: str):
    """The template compiled in the sandbox transformers uses (same globals and filters)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise TokenizerError(f"chat template: syntax error at line {e.lineno}: {e.message}") from e


def check_messages(messages) -> list:
    """A chat as a list of {"role": str, "content": str | list, ...} dicts, else TypeError /
    ValueError naming the message at fault."""
    if isinstance(messages, (str, bytes, dict)) or not isinstance(messages, (list, tuple)):
        raise TypeError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got "
            f"{type(messages).__name__}"
        )
    if not messages:
        raise ValueError("messages: empty list; pass at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise TypeError(
                f"messages[{i}] must be a dict with 'role' and 'content', got "
                f"{type(m).__name__} {m!r:.60}"
            )
        if not isinstance(m.get("role"), str) or not m["role"]:
            raise ValueError(
                f"messages[{i}]: 'role' must be a non-empty string, got {m.get('role')!r}"
            )
        if "content" not in m:
            raise ValueError(f"messages[{i}] ({m['role']}): no 'content'")
        if not isinstance(m["content"], (str, list)) and m["content"] is not None:
            raise TypeError(
                f"messages[{i}] ({m['role']}): 'content' must be a string, got "
                f"{type(m['content']).__name__}"
            )
    return list(messages)


class Tokenizer:
    """A Hugging Face fast tokenizer (tokenizer.json) with its config and chat template."""

    def __init__(
        self,
        backend,
        config: dict | None = None,
        chat_template: str | None = None,
        source: str = "<memory>",
    ):
        self.backend = backend
        self.config = dict(config or {})
        self.chat_template = chat_template
        self.source = source
        self._template = None
        self._byte_ids = None
        self._special_ids = None
        self.special_tokens = {k: _token_text(self.config.get(k)) for k in _SPECIAL_KEYS}

    @classmethod
    def from_dir(cls, directory) -> "Tokenizer":
        """The tokenizer of a model directory; TokenizerError naming the file if unreadable."""
        from tokenizers import Tokenizer as Backend

        directory = os.fspath(directory)
        path = os.path.join(directory, TOKENIZER_FILE)
        if not os.path.isfile(path):
            raise TokenizerError(f"no {TOKENIZER_FILE} in {directory}")
        try:
            backend = Backend.from_file(path)
        except Exception as e:  # tokenizers raises a bare Exception for bad JSON or models
            raise TokenizerError(f"cannot load {path}: {e}") from e
        config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
        config = _read_json(config_path) if os.path.isfile(config_path) else {}
        return cls(backend, config, read_chat_template(directory, config), directory)

    # -- sizes and special tokens ---------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Token ids the tokenizer can produce: 1 + the largest id (added tokens included)."""
        vocab = self.backend.get_vocab(with_added_tokens=True)
        return 1 + max(vocab.values()) if vocab else 0

    def check_vocab(self, model_vocab_size: int) -> None:
        """TokenizerError unless every token id fits the model's vocabulary."""
        if self.vocab_size > model_vocab_size:
            raise TokenizerError(
                f"{self.source}: the tokenizer has token ids up to {self.vocab_size - 1} but the "
                f"model's vocab_size is {model_vocab_size}; the tokenizer does not belong to "
                f"this model"
            )

    def token_to_id(self, token: str):
        return self.backend.token_to_id(token)

    @property
    def special_token_ids(self) -> frozenset:
        """Ids of the special added tokens (those decode(skip_special_tokens=True) leaves out)."""
        if self._special_ids is None:
            self._special_ids = frozenset(
                i for i, t in self.backend.get_added_tokens_decoder().items() if t.special
            )
        return self._special_ids

    @property
    def byte_token_ids(self) -> frozenset:
        """Ids of the <0xNN> tokens of a byte-fallback (SentencePiece-style) BPE, else empty.
        decode() renders a run of them together (a run that is not valid UTF-8 becomes one
        U+FFFD per byte), so streamed text holds such a run back until it ends."""
        if self._byte_ids is None:
            model = self.backend.model
            ids = ()
            if getattr(model, "byte_fallback", False):
                ids = (
                    i
                    for t, i in self.backend.get_vocab(with_added_tokens=False).items()
                    if _BYTE_TOKEN.fullmatch(t)
                )
            self._byte_ids = frozenset(ids)
        return self._byte_ids

    def end_of_turn_ids(self) -> list[int]:
        """The eos token and the usual end-of-turn specials (<|im_end|>, <|eot_id|>, ...) that
        the vocabulary has."""
        names = [self.special_tokens.get("eos_token")] + list(END_OF_TURN_TOKENS)
        ids = [self.backend.token_to_id(n) for n in names if n]
        return sorted({i for i in ids if i is not None})

    # -- text <-> ids ---------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # -- chat ----------------------------------------------------------------------------------
    def apply_chat_template(self, messages, add_generation_prompt: bool = True, **kwargs) -> str:
        """The prompt text for a chat (a list of {"role", "content"} dicts), rendered as
        transformers renders it (the special tokens and add_generation_prompt are visible to
        the template; extra keyword arguments too)."""
        messages = check_messages(messages)
        if self.chat_template is None:
            raise TokenizerError(f"{self.source}: the tokenizer has no chat template")
        if self._template is None:
            self._template = _compile_template(self.chat_template)
        import jinja2

        values = {k: v for k, v in self.special_tokens.items() if v is not None}
        values.update(kwargs)
        try:
            return self._template.render(
                messages=messages, add_generation_prompt=add_generation_prompt, **values
            )
        except jinja2.exceptions.TemplateError as e:
            raise ValueError(f"chat template ({self.source}): {e}") from e

    def encode_chat(self, messages, add_generation_prompt: bool = True, **kwargs) -> list[int]:
        """Token ids of the rendered chat (no special tokens added: the template writes them)."""
        return self.encode(
            self.apply_chat_template(messages, add_generation_prompt, **kwargs),
            add_special_tokens=False,
        )


def load_tokenizer(directory):
    """Tokenizer.from_dir(directory) when it holds a tokenizer.json, else None."""
    if directory is None or not os.path.isfile(os.path.join(os.fspath(directory), TOKENIZER_FILE)):
        return None
    return Tokenizer.from_dir(directory)
