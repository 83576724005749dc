"""A random-weight model directory with a tokenizer, for `fastattention bench serve`.

The weights come from fastattention.random_weights (seeded; float32, or float16 for a GPU). The
tokenizer is built here (nothing downloaded): a word-level vocabulary of the model's size whose
tokens are short ASCII strings, so that every generated token decodes to its own piece of text (a
streamed chunk per token, which is what the latency measurements count). Prompts are sent as
token ids.
"""

from __future__ import annotations

import itertools
import json
import os
import string

from fastattention import random_weights
from fastattention.bench.tp_e2e import LLAMA_7B_SHAPE

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
    # The Llama-7B shape of `bench e2e` and `bench tp-e2e` (6.74B parameters: 13.5 GB in
    # float16), for the GPU.
    "7b": dict(
        {k: v for k, v in LLAMA_7B_SHAPE.items() if k not in ("max_position_embeddings", "dtype")},
        tie_word_embeddings=False,
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
# The shapes' own max_position_embeddings (SmolLM-135M 2048, Llama-2-7B 4096): a model is
# written with max(this, the benchmark's longest request), so that runs of other request
# lengths can reuse a model kept in a --work-dir.
POSITIONS = {"135m": 2048, "7b": 4096, "tiny": 512}
SPECIALS = ["<unk>", "<s>", "</s>"]


def model_config(shape: str, max_positions: int, dtype: str = "float32") -> dict:
    """The Llama config of `shape` with max_position_embeddings max(max_positions, the shape's
    own) and weights of `dtype` (float32 or float16)."""
    return random_weights.llama_config(
        **SHAPES[shape],
        max_position_embeddings=max(max_positions, POSITIONS[shape]),
        dtype=dtype,
    )


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


def write_bench_model(cfg: dict, out_dir: str, seed: int = 0) -> None:
    """The model of `cfg` (model_config) with random weights from `seed` and its tokenizer."""
    random_weights.write_model(cfg, out_dir, seed=seed)
    write_tokenizer(out_dir, cfg["vocab_size"])
