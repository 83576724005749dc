"""The model directory's tokenizer against transformers' on the same files: export copies the
tokenizer; encode / decode ids and chat templates equal transformers' for a few hundred strings
(ASCII, CJK, emoji, whitespace runs, special tokens); bad tokenizers and chat messages fail with
clear errors and nothing written."""

from __future__ import annotations

import shutil

import pytest
import text_helpers as h

from fastattention.export import export_hf
from fastattention.session import Session
from fastattention.tokenizer import Tokenizer, TokenizerError

transformers = pytest.importorskip("transformers")

TOKENIZERS = {"byte_level": h.train_byte_level, "sentencepiece": h.train_sentencepiece_like}
CHATS = [
    [{"role": "user", "content": "Hello!"}],
    [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "你好 😀"},
        {"role": "assistant", "content": "  Bonjour  "},
        {"role": "user", "content": "and\n\nthen?"},
    ],
]


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def exported(request, hf_model_factory, tmp_path_factory):
    """(HF dir with a tokenizer, exported dir) for a tiny llama whose vocab fits the tokenizer."""
    src = tmp_path_factory.mktemp(f"hf-tok-{request.param}")
    out = tmp_path_factory.mktemp(f"fa-tok-{request.param}")
    h.export_llama_with_tokenizer(hf_model_factory, TOKENIZERS[request.param](), src, out)
    return src, out


def test_export_copies_the_tokenizer_files(exported):
    src, out = exported
    copied = {p.name for p in out.iterdir()} - {"config.json", "rank0"}
    assert copied and copied == {
        p.name for p in src.iterdir() if p.name.startswith(("tokenizer", "chat_template"))
    }
    for name in copied:
        assert (out / name).read_bytes() == (src / name).read_bytes()


def test_ids_and_text_equal_transformers(exported):
    src, out = exported
    ours = Tokenizer.from_dir(out)
    theirs = transformers.AutoTokenizer.from_pretrained(src)
    strings = h.test_strings(300)
    for text in strings:
        for special in (True, False):
            ids = ours.encode(text, add_special_tokens=special)
            assert ids == theirs.encode(text, add_special_tokens=special), (text, special)
        assert ours.decode(ids) == theirs.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        ), text
        assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(
            ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        ), text


@pytest.mark.parametrize("generation_prompt", [True, False])
def test_chat_template_equals_transformers(exported, generation_prompt):
    src, out = exported
    ours = Tokenizer.from_dir(out)
    theirs = transformers.AutoTokenizer.from_pretrained(src)
    for chat in CHATS:
        text = theirs.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=generation_prompt
        )
        assert ours.apply_chat_template(chat, generation_prompt) == text
        assert ours.encode_chat(chat, generation_prompt) == theirs.encode(
            text, add_special_tokens=False
        )
    assert "<s><|im_start|>system\nYou are helpful.<|im_end|>" in ours.apply_chat_template(CHATS[0])


def test_session_reads_the_exported_tokenizer(exported):
    _, out = exported
    s = Session(out, max_batch=2)
    assert s.tokenizer is not None and s.tokenizer.chat_template is not None
    text = s.generate("Hello world", 6)
    assert text.token_ids == s.generate([s.tokenizer.encode("Hello world")], 6)[0]
    assert str(text) == s.tokenizer.decode(text.token_ids)


def test_tokenizer_larger_than_the_vocabulary_is_refused(hf_model_factory, tmp_path):
    hf = hf_model_factory("llama")  # vocab 301
    src = tmp_path / "hf"
    shutil.copytree(hf.path, src)
    tok = h.train_sentencepiece_like(400)
    h.save_hf_tokenizer(tok, src)
    out = tmp_path / "out"
    with pytest.raises(
        TokenizerError,
        match=rf"token ids up to {tok.get_vocab_size() - 1} but "
        r"the model's vocab_size is 301",
    ):
        export_hf(src, out, progress=False)
    assert not out.exists()


def test_broken_tokenizer_json_is_refused(hf_model_factory, tmp_path):
    hf = hf_model_factory("llama")
    src = tmp_path / "hf"
    shutil.copytree(hf.path, src)
    (src / "tokenizer.json").write_text("{not json")
    out = tmp_path / "out"
    with pytest.raises(TokenizerError, match="cannot load .*tokenizer.json"):
        export_hf(src, out, progress=False)
    assert not out.exists()


def test_model_without_tokenizer_keeps_working_with_ids(exported_model_factory):
    s = Session(exported_model_factory("llama").path)
    assert s.tokenizer is None
    assert len(s.generate([[1, 2, 3]], 4)[0]) == 4
    with pytest.raises(ValueError, match=r"needs a tokenizer.*no tokenizer.json"):
        s.generate("Hello", 4)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        s.chat([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "messages, error, match",
    [
        ("hello", TypeError, "messages must be a list"),
        ({"role": "user", "content": "hi"}, TypeError, "messages must be a list"),
        ([], ValueError, "empty list"),
        (["hi"], TypeError, r"messages\[0\] must be a dict"),
        ([{"content": "hi"}], ValueError, r"messages\[0\]: 'role' must be a non-empty string"),
        ([{"role": "user"}], ValueError, r"messages\[0\] \(user\): no 'content'"),
        ([{"role": "user", "content": 5}], TypeError, "'content' must be a string, got int"),
        (
            [[{"role": "user", "content": "ok"}], [{"role": "user"}]],
            ValueError,
            r"chat 1: messages\[0\] \(user\): no 'content'",
        ),
        ([{"role": "tool", "content": "x"}], ValueError, "chat template .*unknown role tool"),
    ],
)
def test_malformed_chat_messages(exported, messages, error, match):
    _, out = exported
    s = Session(out, max_batch=2)
    with pytest.raises(error, match=match):
        s.chat(messages, 4)


TEMPLATE_FEATURES = (
    "{% set ns = namespace(count=0) %}{{ messages | tojson }}\n{{ tools | tojson(indent=2) }}\n"
    "{% for m in messages %}{% if m['role'] == 'stop' %}{% break %}{% endif %}"
    "{% set ns.count = ns.count + 1 %}{{ m['content'] | upper }}{% endfor %}{{ ns.count }}"
    "{{ eos_token }}{% if add_generation_prompt %}>{% endif %}"
)


def test_template_sandbox_features_equal_transformers(exported):
    """tojson (non-ASCII kept, indent), namespace, loop controls, filters, extra variables."""
    src, out = exported
    loaded = Tokenizer.from_dir(out)
    ours = Tokenizer(loaded.backend, loaded.config, TEMPLATE_FEATURES)
    theirs = transformers.AutoTokenizer.from_pretrained(src)
    chat = [
        {"role": "user", "content": "héllo 你好 <b>"},
        {"role": "stop", "content": "x"},
        {"role": "user", "content": "never"},
    ]
    tools = [{"name": "f", "description": "é"}]
    expected = theirs.apply_chat_template(
        chat,
        chat_template=TEMPLATE_FEATURES,
        tools=tools,
        tokenize=False,
        add_generation_prompt=True,
    )
    assert ours.apply_chat_template(chat, tools=tools) == expected
    assert "1</s>>" in expected and "你好" in expected
