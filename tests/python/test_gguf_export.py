"""GGUF import: small GGUF files written here with the `gguf` package (every supported tensor type),
exported, and compared against the de-quantised tensors, the original weights, and transformers'
own GGUF loading (logits and greedy tokens, tokenizer ids); bad files fail naming the problem,
with nothing written."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import text_helpers as h
from gguf_helpers import byte_tokenizer_meta, permute, random_state, sentencepiece_vocab, write_gguf

from fastattention.export import read_tensor
from fastattention.export.gguf import SUPPORTED_TYPES, export_gguf
from fastattention.session import Session

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers needs it to load GGUF files

PROMPT = [1, 17, 99, 123, 45, 67, 200, 5]


@pytest.fixture(scope="module")
def byte_tok():
    return h.train_byte_level(300)


def check_against_transformers(path, out, prompt=PROMPT, atol=2e-4):
    """Our logits and greedy tokens vs transformers loading the same GGUF file."""
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        ref = model(torch.tensor([prompt])).logits[0].numpy()
        greedy = model.generate(
            torch.tensor([prompt]), max_new_tokens=8, do_sample=False, min_new_tokens=8
        )[0, len(prompt) :].tolist()
    session = Session(out)
    ours = session.logits(prompt)
    scale = float(np.abs(ref).max())
    assert np.abs(ours - ref).max() <= atol * max(scale, 1.0), (np.abs(ours - ref).max(), scale)
    assert session.generate([prompt], 8) == [greedy]
    return model


@pytest.mark.parametrize("kind", SUPPORTED_TYPES)
def test_llama_every_tensor_type_matches_transformers(kind, byte_tok, tmp_path):
    config, state = random_state("llama", byte_tok.get_vocab_size(), tied=False)
    path = tmp_path / f"tiny-{kind}.gguf"
    write_gguf(path, "llama", config, state, kind, tokenizer=byte_tokenizer_meta(byte_tok))
    out = tmp_path / "out"
    cfg = export_gguf(path, out, dtype="float32", progress=False)
    assert cfg["architecture"] == "llama" and not cfg["tie_word_embeddings"]
    assert cfg["num_kv_heads"] == 2 and cfg["rope"]["theta"] == 10000.0
    assert cfg["norm_eps"] == pytest.approx(1e-5)
    # Every exported tensor is the de-quantised GGUF tensor (q / k rows un-permuted).
    reader = gguf.GGUFReader(path)
    deq = {
        t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(
            [int(n) for n in reversed(t.shape)]
        )
        for t in reader.tensors
    }
    qkv = read_tensor(out / "rank0" / "layers.1.attn.qkv.weight.fat")
    q, k = qkv[:256], qkv[256:384]
    np.testing.assert_array_equal(q, permute_back(deq["blk.1.attn_q.weight"], 4))
    np.testing.assert_array_equal(k, permute_back(deq["blk.1.attn_k.weight"], 2))
    np.testing.assert_array_equal(qkv[384:], deq["blk.1.attn_v.weight"])
    np.testing.assert_array_equal(
        read_tensor(out / "rank0" / "layers.0.ffn.down.weight.fat"), deq["blk.0.ffn_down.weight"]
    )
    np.testing.assert_array_equal(
        read_tensor(out / "rank0" / "lm_head.weight.fat"), deq["output.weight"]
    )
    if kind == "F32":  # exact: the un-permuted rows are the original Hugging Face weights
        np.testing.assert_array_equal(q, state["model.layers.1.self_attn.q_proj.weight"])
        np.testing.assert_array_equal(k, state["model.layers.1.self_attn.k_proj.weight"])
    check_against_transformers(path, out)


def permute_back(w, n_head):
    out = (
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )
    np.testing.assert_array_equal(permute(out, n_head), w)
    return out


def test_qwen2_tied_with_bias_matches_transformers(byte_tok, tmp_path):
    config, state = random_state("qwen2", byte_tok.get_vocab_size(), tied=True)
    path = tmp_path / "qwen.gguf"
    write_gguf(
        path,
        "qwen2",
        config,
        state,
        {"token_embd.weight": "Q8_0", "blk.0.attn_q.weight": "Q4_K", "blk.1.ffn_up.weight": "F16"},
        tokenizer=byte_tokenizer_meta(byte_tok),
    )
    out = tmp_path / "out"
    cfg = export_gguf(path, out, dtype="float32", progress=False)
    assert cfg["architecture"] == "qwen2" and cfg["tie_word_embeddings"] and cfg["qkv_bias"]
    assert not (out / "rank0" / "lm_head.weight.fat").exists()
    # Qwen2 files are not permuted: the F32 k rows are the original weights.
    qkv = read_tensor(out / "rank0" / "layers.1.attn.qkv.weight.fat")
    np.testing.assert_array_equal(qkv[256:384], state["model.layers.1.self_attn.k_proj.weight"])
    check_against_transformers(path, out)


def test_mistral_by_name_and_bfloat16_export(byte_tok, tmp_path):
    config, state = random_state("llama", byte_tok.get_vocab_size(), tied=False, seed=1)
    path = tmp_path / "mistral.gguf"
    write_gguf(
        path,
        "llama",
        config,
        state,
        "F16",
        name="Mistral tiny",
        tokenizer=byte_tokenizer_meta(byte_tok),
    )
    out = tmp_path / "out"
    cfg = export_gguf(path, out, dtype="bfloat16", progress=False)
    assert cfg["architecture"] == "mistral" and cfg["dtype"] == "bfloat16"
    check_against_transformers(path, out, atol=3e-2)


def one_layer_llama(vocab: int) -> tuple:
    """random_state's tied llama cut to its first layer: (HF config, state) for the tokenizer
    tests, which need no more."""
    config, state = random_state("llama", vocab, tied=True)
    config["num_hidden_layers"] = 1
    return config, {k: v for k, v in state.items() if ".layers.1." not in k}


@pytest.mark.parametrize("pre", ["qwen2", "llama-bpe", "default"])
def test_byte_level_tokenizer_matches_transformers(byte_tok, tmp_path, pre):
    config, state = one_layer_llama(byte_tok.get_vocab_size())
    path = tmp_path / "tok.gguf"
    write_gguf(path, "llama", config, state, "F16", tokenizer=byte_tokenizer_meta(byte_tok, pre))
    out = tmp_path / "out"
    export_gguf(path, out, dtype="float16", progress=False)
    compare_tokenizers(path, out)
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["chat_template"] == h.CHAT_TEMPLATE and tok_config["eos_token"] == "</s>"


def test_sentencepiece_tokenizer_matches_transformers(tmp_path):
    tok = h.train_sentencepiece_like(400)
    config, state = one_layer_llama(tok.get_vocab_size())
    tokens, types, scores = sentencepiece_vocab(tok)
    path = tmp_path / "spm.gguf"
    write_gguf(
        path,
        "llama",
        config,
        state,
        "F16",
        tokenizer=dict(
            model="llama", tokens=tokens, types=types, scores=scores, bos=1, eos=2, add_bos=True
        ),
    )
    out = tmp_path / "out"
    export_gguf(path, out, dtype="float16", progress=False)
    compare_tokenizers(path, out)
    assert Session(out).tokenizer.encode("Hello")[0] == 1  # add_bos_token


def compare_tokenizers(path, out):
    from fastattention.tokenizer import Tokenizer

    theirs = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ours = Tokenizer.from_dir(out)
    for text in h.test_strings(200):
        ids = ours.encode(text)
        assert ids == theirs.encode(text), text
        assert ours.decode(ids) == theirs.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        ), text


# ------------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def good_gguf(byte_tok, tmp_path_factory):
    config, state = random_state("llama", byte_tok.get_vocab_size(), tied=True)
    path = tmp_path_factory.mktemp("gguf") / "good.gguf"
    write_gguf(path, "llama", config, state, "Q8_0", tokenizer=byte_tokenizer_meta(byte_tok))
    return path, config, state


def refused(path, tmp_path, match):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        export_gguf(path, out, progress=False)
    assert not out.exists()


def test_truncated_and_corrupt_files(good_gguf, tmp_path):
    data = good_gguf[0].read_bytes()
    short = tmp_path / "short.gguf"
    short.write_bytes(data[: len(data) * 2 // 3])
    refused(
        short,
        tmp_path,
        r"short.gguf: (truncated: tensor '[\w.]+' ends at byte|not a "
        r"readable GGUF file)",
    )
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(data[:100])
    refused(header_only, tmp_path, "header.gguf: not a readable GGUF file")
    bad_magic = tmp_path / "magic.gguf"
    bad_magic.write_bytes(b"GGML" + data[4:])
    refused(bad_magic, tmp_path, "magic.gguf: not a readable GGUF file")
    refused(tmp_path / "missing.gguf", tmp_path, "GGUF file not found")


@pytest.mark.parametrize("kind", ["Q5_0", "Q2_K"])
def test_unsupported_tensor_type(byte_tok, tmp_path, kind):
    config, state = random_state("llama", byte_tok.get_vocab_size(), tied=True)
    path = tmp_path / "q.gguf"
    write_gguf(path, "llama", config, state, {"blk.1.ffn_up.weight": kind})
    refused(
        path,
        tmp_path,
        rf"tensor 'blk.1.ffn_up.weight' has type {kind}, which export "
        r"cannot de-quantise; supported: F32, F16, BF16, Q8_0",
    )


def test_unsupported_architecture_and_tensors(byte_tok, tmp_path):
    config, state = random_state("llama", byte_tok.get_vocab_size(), tied=True)
    path = tmp_path / "phi.gguf"
    write_gguf(path, "phi3", config, state, "F16")
    refused(path, tmp_path, r"unsupported architecture 'phi3'; supported: llama, qwen2 \(Mistral")
    path = tmp_path / "freqs.gguf"
    write_gguf(
        path,
        "llama",
        config,
        state,
        "F16",
        extra_tensors={"rope_freqs.weight": np.ones(32, np.float32)},
    )
    refused(path, tmp_path, "tensor 'rope_freqs.weight': per-frequency rope factors")


def test_tokenizer_that_does_not_match_the_vocabulary(byte_tok, tmp_path):
    vocab = byte_tok.get_vocab_size()
    config, state = random_state("llama", vocab - 20, tied=True)
    path = tmp_path / "tok.gguf"
    write_gguf(path, "llama", config, state, "F16", tokenizer=byte_tokenizer_meta(byte_tok))
    refused(
        path,
        tmp_path,
        rf"the tokenizer has {vocab} tokens \(tokenizer.ggml.tokens\) but "
        rf"token_embd.weight has {vocab - 20} rows",
    )
    meta = byte_tokenizer_meta(byte_tok)
    meta["model"] = "bert"
    config, state = random_state("llama", vocab, tied=True)
    write_gguf(path, "llama", config, state, "F16", tokenizer=meta)
    refused(path, tmp_path, "tokenizer model 'bert' .* is not supported")


def test_gguf_without_tokenizer_exports_for_ids(byte_tok, tmp_path):
    config, state = random_state("llama", 300, tied=True)
    path = tmp_path / "bare.gguf"
    write_gguf(path, "llama", config, state, "Q4_0")
    export_gguf(path, tmp_path / "out", progress=False)
    s = Session(tmp_path / "out")
    assert s.tokenizer is None and len(s.generate([[1, 2, 3]], 3)[0]) == 3
