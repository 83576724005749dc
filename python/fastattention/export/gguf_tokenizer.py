"""The tokenizer in a GGUF file's metadata -> tokenizer.json + tokenizer_config.json.

A GGUF file stores its tokenizer as llama.cpp keys: tokenizer.ggml.model ("gpt2": byte-level
BPE; "llama": SentencePiece BPE with byte fallback), .tokens, .token_type, .merges (or .scores
for SentencePiece files without merges), .pre (which split regex the vocabulary was trained
with), the special token ids, add_bos_token and tokenizer.chat_template. This builds the same
Hugging Face fast tokenizer that transformers builds from a GGUF file
(transformers.integrations.gguf): a byte-level BPE as GPT2Tokenizer's, a SentencePiece one as
LlamaTokenizer's (Metaspace, byte fallback), control tokens as special tokens, user-defined ones
as added tokens. One difference: for pre "smollm" the digits are split one by one first, as
llama.cpp and SmolLM's own tokenizer.json do (transformers' GGUF reader leaves that out).
"""

from __future__ import annotations

import json

CONTROL, USER_DEFINED = 3, 4
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> the split regex (others: GPT-2's own, inside ByteLevel).
PRE_TOKENIZER_SPLITS = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "dbrx": _LLAMA3_SPLIT,
    "falcon3": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
    "tekken": _TEKKEN_SPLIT,
}


def bytes_to_unicode() -> dict:
    """GPT-2's byte -> printable character map (the byte-level BPE alphabet)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def merges_from_scores(tokens: list, scores: list) -> list:
    """SentencePiece merges recovered from the vocabulary and its scores (best first), as
    transformers' generate_merges does for GGUF files without merges."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for token, score in zip(tokens, scores):
        local = [
            (token[:k], token[k:], score)
            for k in range(1, len(token))
            if token[:k] in vocab and token[k:] in vocab
        ]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _byte_level(tokens, merges, pre):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
        for i, t in enumerate(tokens)
    }
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[tuple(m.split(" ", 1)) for m in merges],
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    )
    split = PRE_TOKENIZER_SPLITS.get(pre)
    if split is not None:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok, spelling, alphabet


def _sentencepiece(tokens, merges, scores, add_prefix_space, unk):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(tokens)}
    if merges is not None:
        pairs = [tuple(m.split(" ", 1)) for m in merges]
    else:
        pairs = merges_from_scores(tokens, scores)
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=pairs, fuse_unk=True, byte_fallback=True, unk_token=unk)
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first" if add_prefix_space else "never", split=False
    )
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix_space:
        steps.append(decoders.Strip(content=" ", left=1))
    tok.decoder = decoders.Sequence(steps)
    return tok


def tokenizer_files_from_gguf(meta, vocab_size: int) -> dict:
    """{"tokenizer.json": text, "tokenizer_config.json": text} for the GGUF file's tokenizer
    ({} when it has none). ValueError naming the key for an unsupported tokenizer model or one
    whose tokens do not fit vocab_size (the embedding's rows)."""
    from tokenizers import AddedToken, processors

    model = meta.get("tokenizer.ggml.model")
    if model is None:
        return {}
    path = meta.path
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ValueError(f"{path}: tokenizer.ggml.tokens is missing or empty")
    if len(tokens) > vocab_size:
        raise ValueError(
            f"{path}: the tokenizer has {len(tokens)} tokens "
            f"(tokenizer.ggml.tokens) but token_embd.weight has {vocab_size} rows; "
            f"the tokenizer does not match the model"
        )
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise ValueError(
            f"{path}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
        )
    merges = meta.get("tokenizer.ggml.merges")

    def special(key):
        i = meta.get(f"tokenizer.ggml.{key}")
        if i is None:
            return None
        if not 0 <= i < len(tokens):
            raise ValueError(
                f"{path}: tokenizer.ggml.{key} {i} is outside the {len(tokens)} tokens"
            )
        return tokens[i]

    names = {
        "bos_token": special("bos_token_id"),
        "eos_token": special("eos_token_id"),
        "unk_token": special("unknown_token_id"),
        "pad_token": special("padding_token_id"),
    }
    if model == "gpt2":
        if merges is None:
            raise ValueError(f"{path}: a byte-level BPE tokenizer without tokenizer.ggml.merges")
        tok, _, alphabet = _byte_level(tokens, merges, meta.get("tokenizer.ggml.pre"))
        add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
        control = [t for t, k in zip(tokens, types) if k == CONTROL and set(t) <= alphabet]
    elif model == "llama":
        scores = meta.get("tokenizer.ggml.scores")
        if merges is None and (scores is None or len(scores) != len(tokens)):
            raise ValueError(
                f"{path}: a SentencePiece tokenizer needs tokenizer.ggml.merges or "
                f"one tokenizer.ggml.scores entry per token"
            )
        tok = _sentencepiece(
            tokens,
            merges,
            scores,
            bool(meta.get("tokenizer.ggml.add_space_prefix", True)),
            names["unk_token"],
        )
        add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", True))
        control = [t for t, k in zip(tokens, types) if k == CONTROL]
    else:
        raise ValueError(
            f"{path}: tokenizer model '{model}' (tokenizer.ggml.model) is not "
            f"supported; supported: gpt2 (byte-level BPE), llama (SentencePiece)"
        )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    vocab = tok.get_vocab()
    tok.add_tokens(
        [
            AddedToken(t, normalized=False, special=False)
            for t, k in zip(tokens, types)
            if k == USER_DEFINED and t in vocab
        ]
    )
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    bos, eos = names["bos_token"], names["eos_token"]
    added = [(t, on) for t, on in ((bos, add_bos), (eos, add_eos)) if on and t]
    if added:
        single = (
            ([f"{bos}:0"] if add_bos and bos else [])
            + ["$A:0"]
            + ([f"{eos}:0"] if add_eos and eos else [])
        )
        tok.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(t, tok.token_to_id(t)) for t, _ in added]
        )
    config = {k: v for k, v in names.items() if v is not None}
    config.update(
        {
            "add_bos_token": add_bos,
            "add_eos_token": add_eos,
            "clean_up_tokenization_spaces": False,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
    )
    chat_template = meta.get("tokenizer.chat_template")
    if chat_template is not None:
        config["chat_template"] = chat_template
    return {
        "tokenizer.json": tok.to_str(),
        "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
    }
