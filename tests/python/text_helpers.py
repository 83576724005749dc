"""Tokenizers built here with the `tokenizers` library (nothing is downloaded), test strings, and a
tiny random model to run them: shared by the text tests (test_text_*.py, test_gguf*.py); the tiny
model's config (tiny_config) also by test_session.py and tests/mpi/test_engine_tp.py."""

from __future__ import annotations

import random
import shutil

from fastattention import random_weights

CORPUS = [
    "Hello world, this is a small test of the tokenizer.",
    "The quick brown fox jumps over the lazy dog. It's 2024; don't panic!",
    "你好，世界！这是一个中文测试。我们喜欢自然语言处理。",
    "日本語のテキストも少し。カタカナとひらがな。",
    "emoji 😀🎉🚀 party 👍🏽 and flags 🇫🇷",
    "numbers 12345 67890 3.14159 and    spaces\n\ttabs\r\nnewlines",
    "def f(x):\n    return x * 2  # code\n",
    "Ünïcödé àccents, naïve café, Straße, Ελληνικά, русский текст.",
] * 8
SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set sys = 'You are helpful.' %}{% endif %}"
    "{{ bos_token }}<|im_start|>system\n{{ sys }}<|im_end|>\n"
    "{% for m in messages %}"
    "{% if m['role'] not in ['user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_byte_level(vocab_size: int = 300):
    """A byte-level BPE (GPT-2 / Qwen2 style) trained on CORPUS; BOS added by the post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def train_sentencepiece_like(vocab_size: int = 400):
    """A SentencePiece-style BPE (Llama 2 / Mistral): Metaspace, byte fallback <0xNN> tokens."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first", split=False
    )
    # A fixed ASCII alphabet (deterministic: limit_alphabet breaks frequency ties at random);
    # everything else (CJK, emoji, accents, capitals past E) goes through the byte tokens.
    alphabet = list("\u2581abcdefghijklmnopqrstuvwxyzABCDE0123456789.,'!?;:()#*=")
    trained.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=vocab_size - 256,
            special_tokens=["<unk>", "<s>", "</s>"],
            initial_alphabet=alphabet,
            limit_alphabet=len(alphabet),
        ),
    )
    model = json.loads(trained.to_str())["model"]
    # As in Llama's tokenizer.json: <unk> <s> </s>, then the 256 byte tokens, then the pieces.
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tok.pre_tokenizer = trained.pre_tokenizer
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("\u2581", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_special_tokens(["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"])
    return tok


def save_hf_tokenizer(tok, directory, chat_template: str | None = CHAT_TEMPLATE) -> None:
    """Saves `tok` as transformers saves a fast tokenizer (tokenizer.json, tokenizer_config.json,
    chat_template.jinja)."""
    import transformers

    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(directory)


def export_llama_with_tokenizer(hf_model_factory, tok, src, out) -> None:
    """conftest's tiny llama with its vocabulary sized to `tok`, copied to src with `tok` saved
    beside it (a Hugging Face checkpoint with its tokenizer), exported in float32 to out."""
    from fastattention.export import export_hf

    hf = hf_model_factory("llama", vocab_size=tok.get_vocab_size())
    shutil.copytree(hf.path, src, dirs_exist_ok=True)
    save_hf_tokenizer(tok, src)
    export_hf(src, out, dtype="float32", progress=False)


def test_strings(n: int = 300, seed: int = 0) -> list[str]:
    """ASCII, CJK, emoji, whitespace runs, special tokens in text, and random mixes of them."""
    base = [line for line in dict.fromkeys(CORPUS)] + [
        "",
        " ",
        "  ",
        "\n",
        "\n\n\n",
        "\t \t",
        "a",
        " a",
        "a ",
        "  leading",
        "trailing  ",
        "multiple     spaces    here",
        "tabs\t\tand\nnewlines\r\n",
        "你",
        "好的",
        "😀",
        "👍🏽",
        "🇫🇷🇩🇪",
        "<s>",
        "</s>",
        "<|im_start|>user\nhi<|im_end|>",
        "text<|im_end|>more",
        "<s><s></s>",
        "x" * 50,
        "1234567890",
        "ÀÉÎÕÜ",
        "\u200b zero width",
        "z\u0301alg\u0308o",
        "emoji😀inside",
        "日本語とEnglish混在",
        "'s 're 've 'll",
        "CAPS lower MiXeD",
    ]
    rng = random.Random(seed)
    pieces = [w for s in base for w in s.split(" ") if w] + [" ", "  ", "\n", "😀", "中"]
    out = list(base)
    while len(out) < n:
        out.append(
            "".join(
                rng.choice(pieces) + rng.choice(["", " ", "", "\n"])
                for _ in range(rng.randint(1, 8))
            )
        )
    return out


def tiny_config(vocab_size: int, **overrides) -> dict:
    """A tiny llama-shaped runtime config (random weights from fastattention.random_weights)."""
    cfg = random_weights.llama_config(
        vocab_size=vocab_size,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=96,
        max_position_embeddings=512,
    )
    cfg.update(overrides)
    return cfg
