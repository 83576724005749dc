"""FasterTransformer import (fastattention.export.export_ft, `fastattention export --ft`).

The FT directories are built the way FasterTransformer's converters build them, from tiny
random transformers models:
  * GPT-NeoX (examples/pytorch/gptneox/utils/huggingface_gptneox_convert.py): every weight
    transposed to [in, out]; the fused QKV reordered from GPT-NeoX's per-head [q, k, v] to
    [H, 3, heads * head_dim] and split over the ranks on its last axis; dense / dense_4h_to_h
    split on axis 0, dense_h_to_4h on its last axis; attention.dense.bias and
    mlp.dense_4h_to_h.bias divided by the split; LayerNorms, wte and lm_head whole; config.ini
    [gptneox] with the converter's keys; files in fp32 or fp16.
  * GPT-2 ([gpt], learned positions): tests/python/test_export_ft_gpt.py.

The exported model runs in a CPU Session and its logits match transformers' in float32 (max abs
diff < 2e-5; measured 1.7e-6 on logits of magnitude 4), from FT splits of 1 and 2; output splits
1 and 2 are checked against each other; an fp16 source converts exactly; bad input raises
ValueError naming the file or key.
"""

from __future__ import annotations

import configparser
import json
import os
import pathlib

import numpy as np
import pytest
from cli_helpers import run_cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import ft_helpers  # noqa: E402

from fastattention.export import export_ft  # noqa: E402
from fastattention.session import Session  # noqa: E402

NEOX = dict(
    vocab_size=301,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=96,
    max_position_embeddings=128,
    layer_norm_eps=1e-5,
    use_parallel_residual=False,
    hidden_act="gelu_new",  # FT's GeLU is the tanh form
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=2,
)


@pytest.fixture(scope="module")
def neox():
    model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**NEOX))
    return ft_helpers.randomize(model, 0, norm_marks=("layernorm", "layer_norm"))


# ---------------------------------------------------------------------------------------------
# FasterTransformer's converter layouts


def write_ft_neox(model, out: pathlib.Path, factor: int, weight_type: str = "fp32"):
    """What huggingface_gptneox_convert.py -i_g FACTOR -weight_data_type TYPE writes into
    <saved_dir>/<FACTOR>-gpu/ (returned)."""
    np_type = {"fp32": np.float32, "fp16": np.float16}[weight_type]
    cfg = model.config
    d = out / f"{factor}-gpu"
    d.mkdir(parents=True)
    heads, head_size = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    ini = configparser.ConfigParser()
    ini["gptneox"] = {
        "model_name": "tiny-neox",
        "head_num": str(heads),
        "size_per_head": str(head_size),
        "inter_size": str(cfg.intermediate_size),
        "num_layer": str(cfg.num_hidden_layers),
        "rotary_embedding": str(int(head_size * cfg.rope_parameters["partial_rotary_factor"])),
        "vocab_size": str(cfg.vocab_size),
        "start_id": str(cfg.bos_token_id),
        "end_id": str(cfg.eos_token_id),
        "use_gptj_residual": str(int(cfg.use_parallel_residual)),
        "weight_data_type": weight_type,
    }
    with open(d / "config.ini", "w") as f:
        ini.write(f)

    def split(val, axis, key):
        for j, part in enumerate(np.split(val, factor, axis=axis)):
            part.tofile(d / f"model.{key}.{j}.bin")

    for name, param in model.named_parameters():
        array = param.detach().numpy().astype(np_type)
        if name == "gpt_neox.embed_in.weight":
            array.tofile(d / "model.wte.bin")
            continue
        if name.startswith("gpt_neox.final_layer_norm."):
            array.tofile(d / f"model.final_layernorm.{name.rsplit('.', 1)[1]}.bin")
            continue
        if name in ("embed_out.weight", "lm_head.weight"):  # transformers 5 names it lm_head
            array.tofile(d / "model.lm_head.weight.bin")
            continue
        key, val = name.replace("gpt_neox.", ""), array.T
        if "layernorm" in key:
            val.tofile(d / f"model.{key}.bin")
        elif key.endswith(("attention.dense.bias", "mlp.dense_4h_to_h.bias")):
            (val / factor if factor > 1 else val).tofile(d / f"model.{key}.bin")
        elif key.endswith(("attention.dense.weight", "mlp.dense_4h_to_h.weight")):
            split(val, 0, key)
        elif "dense_h_to_4h" in key:
            split(val, -1, key)
        elif key.endswith("query_key_value.bias"):
            local = val.shape[-1] // 3
            val = val.reshape(heads, 3, local // heads).transpose(1, 0, 2).reshape(3, local)
            split(val, -1, key)
        elif key.endswith("query_key_value.weight"):
            hidden, local = val.shape[0], val.shape[-1] // 3
            val = val.reshape(hidden, heads, 3, local // heads).transpose(0, 2, 1, 3)
            split(val.reshape(hidden, 3, local), -1, key)
        else:
            raise AssertionError(f"unmapped parameter {name}")
    return d


@pytest.fixture(scope="module")
def ft_dirs(neox, tmp_path_factory):
    """FT GPT-NeoX directories by (split, weight_data_type), built once."""
    cache = {}

    def get(factor, weight_type="fp32"):
        if (factor, weight_type) not in cache:
            base = tmp_path_factory.mktemp(f"ft-neox-{factor}-{weight_type}")
            cache[factor, weight_type] = write_ft_neox(neox, base, factor, weight_type)
        return cache[factor, weight_type]

    return get


# ---------------------------------------------------------------------------------------------
# round trip


@pytest.mark.parametrize("factor", [1, 2])
def test_neox_logits_match_transformers(neox, ft_dirs, tmp_path, factor):
    out = tmp_path / "model"
    cfg = export_ft(ft_dirs(factor), out, tp=1, dtype="float32", progress=False)
    assert cfg["architecture"] == "gpt" and cfg["norm_type"] == "layernorm"
    assert cfg["rope"]["rotary_dim"] == 8 and cfg["activation"] == "gelu_tanh"
    assert cfg["source"]["ft_tensor_para_size"] == factor
    assert cfg["bos_token_id"] == 0 and cfg["eos_token_id"] == [2]
    session = Session(out, max_batch=2, max_seq_len=64, kv_block_size=4)
    rng = np.random.default_rng(factor)
    ft_helpers.assert_logits_match(neox, session, rng, (1, 13, 40), f"FT split {factor}")
    prompt = rng.integers(0, NEOX["vocab_size"], size=9).tolist()
    ft_helpers.assert_greedy_matches(neox, session, prompt, 12)


def test_any_split_in_any_split_out(ft_dirs, tmp_path):
    """FT split 1 and 2 give identical exports; the tp=2 output holds the tp=1 tensors split as
    docs/FORMAT.md says (heads, FFN columns and the padded vocabulary per rank)."""
    export_ft(ft_dirs(1), tmp_path / "tp1", tp=1, dtype="float32", progress=False)
    one = ft_helpers.exported_tensors(tmp_path / "tp1", 0)
    for factor in (1, 2):
        out = tmp_path / f"tp2-from-{factor}"
        cfg = export_ft(ft_dirs(factor), out, tp=2, dtype="float32", progress=False)
        assert cfg["tp_size"] == 2 and cfg["vocab_size_padded"] == 302
        # 4 heads of 16: rank r holds heads 2r, 2r+1 = rows 32r..32r+31 of each of q, k, v
        ft_helpers.assert_tp2_split(one, [ft_helpers.exported_tensors(out, r) for r in (0, 1)])


@pytest.mark.parametrize("weight_type", ["fp16"])
def test_fp16_source_converts_exactly(neox, ft_dirs, tmp_path, weight_type):
    out = tmp_path / "m"
    export_ft(ft_dirs(2, weight_type), out, tp=1, dtype="float32", progress=False)
    t = ft_helpers.exported_tensors(out, 0)
    sd = {k: v.detach().numpy() for k, v in neox.state_dict().items()}
    f16 = lambda x: x.astype(np.float16).astype(np.float32)  # noqa: E731
    np.testing.assert_array_equal(t["embed.weight"], f16(sd["gpt_neox.embed_in.weight"]))
    lm_head = neox.get_output_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(t["lm_head.weight"], f16(lm_head))
    p = "gpt_neox.layers.1."
    qkv = sd[p + "attention.query_key_value.weight"].reshape(4, 3, 16, 64)
    want = np.concatenate([qkv[:, i].reshape(64, 64) for i in range(3)])
    np.testing.assert_array_equal(t["layers.1.attn.qkv.weight"], f16(want))
    for ours, theirs in (
        ("attn.o.bias", "attention.dense.bias"),
        ("ffn.down.bias", "mlp.dense_4h_to_h.bias"),
        ("ffn.up.weight", "mlp.dense_h_to_4h.weight"),
        ("ffn.down.weight", "mlp.dense_4h_to_h.weight"),
        ("ffn_norm.bias", "post_attention_layernorm.bias"),
    ):
        np.testing.assert_array_equal(t[f"layers.1.{ours}"], f16(sd[p + theirs]), err_msg=ours)


def test_cli_export_ft(neox, ft_dirs, tmp_path):
    out = tmp_path / "cli"
    args = ["export", "--ft", ft_dirs(2), "--out", out, "--tp", 2, "--dtype", "float32"]
    res = run_cli(*args, "--max-positions", 96, "--quiet", timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"-> {out}" in res.stdout
    assert (out / "rank1" / "layers.1.attn.qkv.weight.fat").exists()
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 96


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--out", "x"], 2, "the following arguments are required: --hf (or --ft, --gguf)"),
        (["--hf", ".", "--ft", ".", "--out", "x"], 2, "not allowed with argument"),
        (["--hf", ".", "--out", "x", "--max-positions", "5"], 2, "--max-positions applies to --ft"),
        (["--ft", "/nonexistent/ft", "--out", "x"], 1, "/nonexistent/ft does not exist"),
    ],
)
def test_cli_usage_errors(args, code, message):
    res = run_cli("export", *args, timeout=60)
    assert res.returncode == code and message in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.fixture
def broken(ft_dirs, tmp_path):
    """A fresh copy of the split-2 fp32 FT directory to damage."""
    return ft_helpers.copy_to_damage(ft_dirs(2), tmp_path)


def _export(d, tmp_path):
    return export_ft(d, tmp_path / "out", tp=1, dtype="float32", progress=False)


@pytest.mark.parametrize(
    "victim",
    [
        "model.layers.1.mlp.dense_4h_to_h.weight.1.bin",
        "model.final_layernorm.bias.bin",
        "model.wte.bin",
    ],
)
def test_missing_file_is_named(broken, tmp_path, victim):
    os.remove(broken / victim)
    with pytest.raises(ValueError, match=f"{victim} is missing"):
        _export(broken, tmp_path)
    assert not (tmp_path / "out" / "config.json").exists()


def test_wrong_size_is_named(broken, tmp_path):
    victim = broken / "model.layers.0.attention.query_key_value.bias.1.bin"
    victim.write_bytes(victim.read_bytes()[:-4])
    with pytest.raises(
        ValueError,
        match=r"query_key_value\.bias\.1\.bin is 380 bytes; .*config"
        r"\.ini \(weight_data_type fp32\) implies a tensor of "
        r"shape \[3, 32\] = 384 bytes",
    ):
        _export(broken, tmp_path)


def test_fp16_files_declared_fp32_are_caught(ft_dirs, tmp_path):
    """weight_data_type must match the files: half-size files fail the size check by name."""
    d = ft_helpers.copy_to_damage(ft_dirs(2, "fp16"), tmp_path)
    text = (
        (d / "config.ini").read_text().replace("weight_data_type = fp16", "weight_data_type = fp32")
    )
    (d / "config.ini").write_text(text)
    with pytest.raises(ValueError, match=r"model\.wte\.bin is 38528 bytes"):
        _export(d, tmp_path)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(head_num=None), r"\[gptneox\] head_num is missing"),
        (
            dict(inter_size="ninety-six"),
            r"\[gptneox\] inter_size must be an integer, got 'ninety-six'",
        ),
        (dict(rotary_embedding="7"), r"\[gptneox\] rotary_embedding must be even"),
        (dict(use_gptj_residual="1"), r"\[gptneox\] use_gptj_residual = 1 .* parallel residual"),
        (dict(use_gptj_residual=None), r"\[gptneox\] use_gptj_residual = 1 \(or missing"),
        (dict(weight_data_type="int8"), r"\[gptneox\] weight_data_type is 'int8'"),
        (
            dict(tensor_para_size="4"),
            r"\[gptneox\] tensor_para_size is 4 but the weight files are split 2 ways",
        ),
        (
            dict(head_num="3"),
            r"\[gptneox\] head_num 3 .* multiples of the files' tensor-parallel split 2",
        ),
    ],
)
def test_bad_config_ini(broken, tmp_path, changes, message):
    ft_helpers.edit_ft_ini(broken, "gptneox", **changes)
    with pytest.raises(ValueError, match=r"config\.ini: " + message):
        _export(broken, tmp_path)


def test_config_size_mismatch_names_the_file(broken, tmp_path):
    ft_helpers.edit_ft_ini(broken, "gptneox", vocab_size="300")
    with pytest.raises(ValueError, match=r"model\.wte\.bin is 77056 bytes; .*\[300, 64\]"):
        _export(broken, tmp_path)


def test_unreadable_or_missing_config(broken, tmp_path):
    (broken / "config.ini").write_text("head_num = 4\n")  # no section header
    with pytest.raises(ValueError, match=r"cannot read FasterTransformer config .*config\.ini"):
        _export(broken, tmp_path)
    (broken / "config.ini").write_text("[bert]\nhead_num = 4\n")
    with pytest.raises(ValueError, match=r"no \[gptneox\] or \[gpt\] section \(found: bert\)"):
        _export(broken, tmp_path)
    (broken / "config.ini").write_text("[gptj]\nhead_num = 4\n")
    with pytest.raises(ValueError, match=r"\[gptj\] \(GPT-J"):
        _export(broken, tmp_path)
    os.remove(broken / "config.ini")
    with pytest.raises(
        ValueError, match=r"FasterTransformer config not found: .*2-gpu/config\.ini"
    ):
        _export(broken, tmp_path)


def test_parent_folder_hint(ft_dirs, tmp_path):
    with pytest.raises(ValueError, match=r"found 2-gpu: pass that folder"):
        _export(ft_dirs(2).parent, tmp_path)


def test_bad_arguments(ft_dirs, tmp_path):
    with pytest.raises(ValueError, match="--dtype 'int8' is not supported"):
        export_ft(ft_dirs(1), tmp_path / "o", dtype="int8")
    with pytest.raises(ValueError, match="tp=3 does not divide num_heads=4"):
        export_ft(ft_dirs(1), tmp_path / "o", tp=3, progress=False)
    with pytest.raises(ValueError, match="max_positions must be a positive integer"):
        export_ft(ft_dirs(1), tmp_path / "o", max_positions=0)


def test_tokenizer_kept_in_the_ft_dir_is_copied(broken, tmp_path):
    """A tokenizer.json (with its config and chat template) in the FT folder travels with the
    export, checked against vocab_size; a model without one has none."""
    import text_helpers as h

    from fastattention.session import Session

    tok = h.train_byte_level(NEOX["vocab_size"])
    h.save_hf_tokenizer(tok, broken)
    out = _export(broken, tmp_path)
    assert out["vocab_size"] == NEOX["vocab_size"]
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tmp_path / "out" / name).read_bytes() == (broken / name).read_bytes()
    s = Session(tmp_path / "out")
    assert s.generate("Hello", 3).token_ids == s.generate([tok.encode("Hello").ids], 3)[0]
    (broken / "tokenizer.json").unlink()
    _export(broken, tmp_path)  # re-export without a tokenizer: the old files are removed
    assert not (tmp_path / "out" / "tokenizer.json").exists()
    assert Session(tmp_path / "out").tokenizer is None
