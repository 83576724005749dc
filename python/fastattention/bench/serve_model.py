"""A random-weight model directory with a tokenizer, for `fastattention bench serve`.

The weights come from fastattention.random_weights (seeded, float32). The tokenizer is built
here (nothing downloaded): a word-level vocabulary of the model's size whose tokens are short
ASCII strings, so that every generated token decodes to its own piece of text (a streamed chunk
per token, which is what the latency measurements count). Prompts are sent as token ids.
"""

from __future__ import annotations

import itertools
import json
import os
import string

from fastattention import random_weights

SHAPES = {
    # The SmolLM-135M shape (the "135M-class model").
    "135m": dict(
        hidden_size=576,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        intermediate_size=1536,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    # A tiny shape for quick runs and tests.
    "tiny": dict(
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=96,
        vocab_size=512,
        tie_word_embeddings=False,
    ),
}
SPECIALS = ["<unk>", "<s>", "</s>"]


def model_config(shape: str, max_positions: int) -> dict:
    return random_weights.llama_config(**SHAPES[shape], max_position_embeddings=max_positions)


def _words(n: int):
    """n distinct short ASCII words: a..z, then two letters, then three."""
    letters = string.ascii_lowercase
    words = itertools.chain.from_iterable(
        ("".join(p) for p in itertools.product(letters, repeat=k)) for k in range(1, 5)
    )
    return list(itertools.islice(words, n))


def write_tokenizer(out_dir: str, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in _words(vocab_size - len(SPECIALS)):
        vocab[" " + w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.Strip(" ", 0, 0)  # keeps the words' leading spaces
    tok.add_special_tokens(SPECIALS)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, f)


def write_bench_model(out_dir: str, shape: str, max_positions: int, seed: int = 0) -> dict:
    cfg = model_config(shape, max_positions)
    random_weights.write_model(cfg, out_dir, seed=seed)
    write_tokenizer(out_dir, cfg["vocab_size"])
    return cfg
