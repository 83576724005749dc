"""FasterTransformer [gpt] import: GPT-2 through ParallelGpt's layout, learned absolute positions.

The FT directories are built the way examples/pytorch/gpt/utils/huggingface_gpt_convert.py builds
them from a tiny random transformers GPT-2 (GPT2Model: wte / wpe / ln_f whole, no lm_head file,
the LM head is tied to wte): config.ini [gpt] with the converter's keys only (no layernorm_eps,
so FasterTransformer's default 1e-6 applies: the tiny model uses that epsilon), Conv1D weights
already [in, out], the fused QKV [H, 3H] reshaped to [H, 3, H] (bias [3, H]) and split over the
ranks on its last axis, attention.dense / dense_4h_to_h weights split on axis 0, dense_h_to_4h on
its last axis, every other tensor (biases included, not divided) whole, in fp32.

The exported model (position_embedding "learned", pos_embed.weight) runs in a CPU Session and its
logits match transformers' in float32 (max abs diff < 2e-5) from FT splits 1 and 2 and output
splits 1 and 2 (tensors checked against each other), greedy generation matches; positions past
max_position_embeddings are refused; bad input raises ValueError naming the file or key.
"""

from __future__ import annotations

import configparser
import os
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import ft_helpers  # noqa: E402

from fastattention.export import export_ft  # noqa: E402
from fastattention.session import Session  # noqa: E402

GPT2 = dict(
    vocab_size=97,
    n_positions=64,
    n_embd=64,
    n_layer=2,
    n_head=4,
    layer_norm_epsilon=1e-6,  # FT's [gpt] default: the converter writes no epsilon
    activation_function="gelu_new",  # GPT-2's GeLU, the tanh form (FT's Gelu)
    bos_token_id=5,
    eos_token_id=6,
    tie_word_embeddings=True,
)


def random_gpt2(seed: int):
    """The tiny GPT2 model with seeded weights, in eval mode. wpe gets the embeddings' scale: a
    model that ignored positions would be far off."""
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2))
    return ft_helpers.randomize(model, seed, norm_marks=(".ln_",))


@pytest.fixture(scope="module")
def gpt2():
    return random_gpt2(3)


def write_ft_gpt2(model, out: pathlib.Path, factor: int) -> pathlib.Path:
    """What huggingface_gpt_convert.py -i_g FACTOR (fp32) writes into <out>/<FACTOR>-gpu/."""
    cfg = model.config
    d = out / f"{factor}-gpu"
    d.mkdir(parents=True)
    ini = configparser.ConfigParser()
    ini["gpt"] = {
        "model_name": "gpt",
        "head_num": str(cfg.n_head),
        "size_per_head": str(cfg.n_embd // cfg.n_head),
        "inter_size": str(4 * cfg.n_embd),
        "max_pos_seq_len": str(cfg.n_positions),
        "num_layer": str(cfg.n_layer),
        "vocab_size": str(cfg.vocab_size),
        "start_id": str(cfg.bos_token_id),
        "end_id": str(cfg.eos_token_id),
        "weight_data_type": "fp32",
        "tensor_para_size": str(factor),
    }
    with open(d / "config.ini", "w") as f:
        ini.write(f)
    renames = [
        ("ln_1", "input_layernorm"),
        ("attn.c_attn", "attention.query_key_value"),
        ("attn.c_proj", "attention.dense"),
        ("ln_2", "post_attention_layernorm"),
        ("mlp.c_fc", "mlp.dense_h_to_4h"),
        ("mlp.c_proj", "mlp.dense_4h_to_h"),
    ]
    top = {
        "wpe.weight": "model.wpe",
        "wte.weight": "model.wte",
        "ln_f.weight": "model.final_layernorm.weight",
        "ln_f.bias": "model.final_layernorm.bias",
    }
    for name, param in model.transformer.named_parameters():  # what GPT2Model holds
        val = param.detach().numpy().astype(np.float32)  # Conv1D weights are already [in, out]
        if name in top:
            val.tofile(d / f"{top[name]}.bin")
            continue
        key = name.replace("h.", "layers.", 1)
        for hf, ft in renames:
            key = key.replace(hf, ft)
        if "query_key_value" in key:
            val = val.reshape(3, -1) if val.ndim == 1 else val.reshape(val.shape[0], 3, -1)
        if any(s in key for s in ("query_key_value", "dense_h_to_4h")):
            for j, part in enumerate(np.split(val, factor, axis=-1)):
                part.tofile(d / f"model.{key}.{j}.bin")
        elif key.endswith(("attention.dense.weight", "dense_4h_to_h.weight")):
            for j, part in enumerate(np.split(val, factor, axis=0)):
                part.tofile(d / f"model.{key}.{j}.bin")
        else:  # LayerNorms and the row-parallel biases: whole, rank 0 writes them once
            val.tofile(d / f"model.{key}.bin")
    return d


@pytest.fixture(scope="module")
def ft_dir(gpt2, tmp_path_factory):
    cache = {}

    def get(factor):
        if factor not in cache:
            cache[factor] = write_ft_gpt2(gpt2, tmp_path_factory.mktemp(f"ft-gpt-{factor}"), factor)
        return cache[factor]

    return get


def _export(d, out, **kw):
    return export_ft(d, out, dtype="float32", progress=False, **kw)


# ---------------------------------------------------------------------------------------------
# round trip


@pytest.mark.parametrize("factor", [1, 2])
def test_gpt2_logits_match_transformers(gpt2, ft_dir, tmp_path, factor):
    out = tmp_path / "model"
    cfg = _export(ft_dir(factor), out, tp=1)
    assert cfg["position_embedding"] == "learned" and cfg["rope"] is None
    assert cfg["norm_eps"] == 1e-6 and cfg["activation"] == "gelu_tanh"
    assert cfg["tie_word_embeddings"] and cfg["max_position_embeddings"] == 64
    assert cfg["bos_token_id"] == 5 and cfg["eos_token_id"] == [6]
    assert cfg["source"]["model_type"] == "gpt" and cfg["source"]["ft_tensor_para_size"] == factor
    session = Session(out, max_batch=2, kv_block_size=4)
    assert session.config["max_position_embeddings"] == 64
    rng = np.random.default_rng(factor)
    ft_helpers.assert_logits_match(gpt2, session, rng, (1, 13, 64), f"FT split {factor}")
    # The same token at every position: only the position table tells the rows apart.
    same = session.logits([7] * 8)
    assert np.abs(same[1:] - same[:-1]).max() > 0.05
    prompt = rng.integers(0, GPT2["vocab_size"], size=9).tolist()
    ft_helpers.assert_greedy_matches(gpt2, session, prompt, 20)


def test_gpt2_any_split_in_any_split_out(gpt2, ft_dir, tmp_path):
    """FT splits 1 and 2 give identical tp=2 exports: the tp=1 tensors split as docs/FORMAT.md
    says, pos_embed.weight (= wpe) and the biases whole on both ranks; no lm_head (tied)."""
    _export(ft_dir(1), tmp_path / "tp1", tp=1)
    one = ft_helpers.exported_tensors(tmp_path / "tp1", 0)
    wpe = gpt2.transformer.wpe.weight.detach().numpy()
    np.testing.assert_array_equal(one["pos_embed.weight"], wpe)
    np.testing.assert_array_equal(
        one["layers.1.attn.o.bias"], gpt2.transformer.h[1].attn.c_proj.bias.detach().numpy()
    )
    assert "lm_head.weight" not in one
    for factor in (1, 2):
        out = tmp_path / f"tp2-from-{factor}"
        cfg = _export(ft_dir(factor), out, tp=2)
        assert cfg["tp_size"] == 2 and cfg["vocab_size_padded"] == 98
        ft_helpers.assert_tp2_split(one, [ft_helpers.exported_tensors(out, r) for r in (0, 1)])


def test_max_positions_shortens_the_table(gpt2, ft_dir, tmp_path):
    cfg = _export(ft_dir(1), tmp_path / "m", tp=1, max_positions=40)
    assert cfg["max_position_embeddings"] == 40
    np.testing.assert_array_equal(
        ft_helpers.exported_tensors(tmp_path / "m", 0)["pos_embed.weight"],
        gpt2.transformer.wpe.weight.detach().numpy()[:40],
    )
    with pytest.raises(
        ValueError,
        match=r"max_positions 65 exceeds .*config\.ini's "
        r"max_pos_seq_len 64: model\.wpe\.bin",
    ):
        _export(ft_dir(1), tmp_path / "m2", tp=1, max_positions=65)


# ---------------------------------------------------------------------------------------------
# the position limit


@pytest.fixture(scope="module")
def exported(ft_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt-exported") / "m"
    _export(ft_dir(2), out, tp=1)
    return out


def test_positions_past_the_table_are_refused(exported):
    with pytest.raises(
        ValueError,
        match=r"max_seq_len 65 exceeds the model's "
        r"max_position_embeddings 64: .*learned absolute "
        r"position embeddings",
    ):
        Session(exported, max_seq_len=65)
    session = Session(exported, max_batch=1)  # default max_seq_len = 64
    with pytest.raises(ValueError, match="max_seq_len"):
        session.generate([[1] * 60], 5)
    assert len(session.generate([[1] * 60], 4)[0]) == 4  # up to position 63 is fine


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.fixture
def broken(ft_dir, tmp_path):
    return ft_helpers.copy_to_damage(ft_dir(2), tmp_path)


def test_missing_wpe_is_named(broken, tmp_path):
    os.remove(broken / "model.wpe.bin")
    with pytest.raises(ValueError, match=r"model\.wpe\.bin is missing"):
        _export(broken, tmp_path / "out", tp=1)
    assert not (tmp_path / "out" / "config.json").exists()


def test_wrong_size_wpe_is_named(broken, tmp_path):
    victim = broken / "model.wpe.bin"
    victim.write_bytes(victim.read_bytes()[:-256])
    with pytest.raises(
        ValueError,
        match=r"model\.wpe\.bin is 16128 bytes; .*config\.ini "
        r"\(weight_data_type fp32\) implies a tensor of shape "
        r"\[64, 64\] = 16384 bytes",
    ):
        _export(broken, tmp_path / "out", tp=1)


def test_layernorm_eps_is_read(broken, tmp_path):
    ft_helpers.edit_ft_ini(broken, "gpt", layernorm_eps="1e-5")
    assert _export(broken, tmp_path / "out", tp=1)["norm_eps"] == 1e-5


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(max_pos_seq_len=None), r"\[gpt\] max_pos_seq_len is missing"),
        (dict(has_positional_encoding="0"), r"\[gpt\] has_positional_encoding = 0"),
        (dict(use_attention_linear_bias="1"), r"\[gpt\] use_attention_linear_bias = 1 \(ALiBi"),
        (dict(model_variant="opt-pre"), r"\[gpt\] model_variant is 'opt-pre'"),
        (dict(layernorm_type="post_layernorm"), r"\[gpt\] layernorm_type is 'post_layernorm'"),
        (dict(activation_type="Relu"), r"\[gpt\] activation_type is 'Relu'"),
        (dict(has_post_decoder_layernorm="0"), r"\[gpt\] has_post_decoder_layernorm = 0"),
        (dict(has_pre_decoder_layernorm="1"), r"\[gpt\] has_pre_decoder_layernorm = 1"),
        (dict(has_adapters="1"), r"\[gpt\] has_adapters = 1"),
        (
            dict(head_num="3"),
            r"\[gpt\] head_num 3 .* multiples of the files' tensor-parallel split",
        ),
        (
            dict(tensor_para_size="4"),
            r"\[gpt\] tensor_para_size is 4 but the weight files are "
            r"split 2 ways",
        ),
    ],
)
def test_bad_config_ini(broken, tmp_path, changes, message):
    ft_helpers.edit_ft_ini(broken, "gpt", **changes)
    with pytest.raises(ValueError, match=r"config\.ini: " + message):
        _export(broken, tmp_path / "out", tp=1)


def test_gptj_and_parallel_residual_still_refused(broken, tmp_path):
    (broken / "config.ini").write_text("[gptj]\nhead_num = 4\n")
    with pytest.raises(ValueError, match=r"\[gptj\] \(GPT-J"):
        _export(broken, tmp_path / "out", tp=1)
