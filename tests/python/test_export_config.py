"""export_hf's config mapping (both transformers spellings) and its errors on bad input."""

import json
import re
import shutil

import numpy as np
import pytest

from fastattention.export import export_hf, runtime_config

BASE = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 96,
    "vocab_size": 300,
    "max_position_embeddings": 128,
}


def mapped(tmp_path, tp=1, generation=None, **changes):
    hf = {**BASE, **changes}
    return runtime_config(
        {k: v for k, v in hf.items() if v is not None}, str(tmp_path), tp, "float16", generation
    )


def write_config(path, **changes):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({**BASE, **changes}))
    return path


# ---- mapping -------------------------------------------------------------------------------


def test_transformers4_rope_spelling(tmp_path):
    cfg = mapped(tmp_path, rope_theta=250000.0, rope_scaling={"type": "dynamic", "factor": 4.0})
    assert cfg["rope"] == {
        "theta": 250000.0,
        "style": "neox",
        "rotary_dim": 16,
        "scaling": {"type": "dynamic", "factor": 4.0, "original_max_position": 128},
    }
    cfg = mapped(
        tmp_path,
        rope_theta=5e5,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    assert cfg["rope"]["theta"] == 5e5
    assert cfg["rope"]["scaling"]["original_max_position"] == 8192
    assert mapped(tmp_path)["rope"]["theta"] == 10000.0  # nothing given: Hugging Face's default


def test_transformers5_rope_spelling(tmp_path):
    cfg = mapped(
        tmp_path, rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.5}
    )
    assert cfg["rope"]["scaling"] == {"type": "linear", "factor": 2.5}
    nested = {"full_attention": {"rope_type": "default", "rope_theta": 7.0}}
    assert mapped(tmp_path, rope_parameters=nested)["rope"]["theta"] == 7.0


def test_derived_and_defaulted_fields(tmp_path):
    cfg = mapped(
        tmp_path,
        tp=4,
        num_key_value_heads=None,
        hidden_act="gelu_pytorch_tanh",
        eos_token_id=[5, 6],
        bos_token_id=None,
    )
    assert (cfg["num_kv_heads"], cfg["head_dim"], cfg["vocab_size_padded"]) == (4, 16, 300)
    assert cfg["activation"] == "gelu_tanh" and cfg["eos_token_id"] == [5, 6]
    assert cfg["bos_token_id"] is None and cfg["tie_word_embeddings"] is False
    assert mapped(tmp_path, head_dim=32)["head_dim"] == 32
    assert mapped(tmp_path, tp=8, vocab_size=301)["vocab_size_padded"] == 304
    assert mapped(tmp_path, hidden_act="gelu")["activation"] == "gelu"
    # generate() uses generation_config.json's ids where it sets them
    gen = mapped(
        tmp_path,
        bos_token_id=7,
        eos_token_id=2,
        generation={"eos_token_id": [2, 9], "bos_token_id": None},
    )
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (7, [2, 9])
    gen = mapped(tmp_path, bos_token_id=7, eos_token_id=2, generation={"bos_token_id": 3})
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (3, [2])


def test_sliding_window_mapping(tmp_path):
    qwen = {"model_type": "qwen2", "sliding_window": 16}
    assert mapped(tmp_path, **qwen, use_sliding_window=False)["sliding_window"] is None
    assert (
        mapped(tmp_path, **qwen, use_sliding_window=True, max_window_layers=0)["sliding_window"]
        == 16
    )
    assert (
        mapped(tmp_path, **qwen, use_sliding_window=True, max_window_layers=2)["sliding_window"]
        is None
    )  # no layer reaches it
    assert (
        mapped(tmp_path, **qwen, use_sliding_window=True, layer_types=["sliding_attention"] * 2)[
            "sliding_window"
        ]
        == 16
    )
    with pytest.raises(ValueError, match=r"applies to 1 of 2 layers only.*per-layer windows"):
        mapped(tmp_path, **qwen, use_sliding_window=True, max_window_layers=1)
    with pytest.raises(ValueError, match="1 of 2 layers only"):
        mapped(
            tmp_path,
            **qwen,
            use_sliding_window=True,
            layer_types=["full_attention", "sliding_attention"],
        )
    assert mapped(tmp_path, model_type="mistral", sliding_window=4096)["sliding_window"] == 4096
    assert mapped(tmp_path, model_type="mistral", sliding_window=None)["sliding_window"] is None
    assert mapped(tmp_path, sliding_window=8)["sliding_window"] is None  # llama has none


def test_architecture_from_architectures_field(tmp_path):
    cfg = mapped(tmp_path, model_type=None, architectures=["MistralForCausalLM"])
    assert cfg["architecture"] == "mistral"


# ---- config errors ---------------------------------------------------------------------------


def test_unsupported_architecture(tmp_path):
    d = write_config(tmp_path / "gpt2", model_type="gpt2", architectures=["GPT2LMHeadModel"])
    want = f"unsupported architecture 'gpt2' in {d}/config.json; supported: llama, qwen2, mistral"
    with pytest.raises(ValueError, match=re.escape(want)):
        export_hf(d, tmp_path / "out", progress=False)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope scaling type 'yarn'"),
        ({"rope_scaling": {"rope_type": "linear"}}, "needs a numeric 'factor'"),
        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor 0.5"),
        ({"hidden_act": "relu2"}, "hidden_act 'relu2' is not supported"),
        ({"hidden_size": None}, "'hidden_size' must be a positive integer"),
        (
            {
                "rope_parameters": {
                    "full_attention": {"rope_theta": 1.0},
                    "sliding_attention": {"rope_theta": 2.0},
                }
            },
            "differ between layer",
        ),
    ],
)
def test_bad_config_fields(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        mapped(tmp_path, **changes)


def test_missing_or_broken_config(tmp_path):
    with pytest.raises(ValueError, match=r"Hugging Face config not found: .*empty/config.json"):
        export_hf(tmp_path / "empty", tmp_path / "out", progress=False)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read Hugging Face config"):
        export_hf(tmp_path / "broken", tmp_path / "out", progress=False)


@pytest.mark.parametrize("dtype", ["fp8", "float64", "int32", None, "fp16"])
def test_bad_dtype(tmp_path, dtype):
    d = write_config(tmp_path / "m")
    with pytest.raises(ValueError, match=re.escape(f"--dtype '{dtype}' is not supported")):
        export_hf(d, tmp_path / "out", dtype=dtype, progress=False)


@pytest.mark.parametrize(
    "changes, tp, match",
    [
        ({}, 3, "tp=3 does not divide num_heads=4"),
        (
            {"num_attention_heads": 6, "num_key_value_heads": 3, "hidden_size": 48},
            2,
            "tp=2 neither divides nor is a multiple of num_kv_heads=3",
        ),
        ({"intermediate_size": 90}, 4, "tp=4 does not divide intermediate_size=90"),
        ({}, 0, "tp must be a positive integer, got 0"),
        ({}, 2.0, "tp must be a positive integer, got 2.0"),
    ],
)
def test_bad_tp(tmp_path, changes, tp, match):
    d = write_config(tmp_path / "m", **changes)
    with pytest.raises(ValueError, match=match):
        export_hf(d, tmp_path / "out", tp=tp, progress=False)


# ---- weight errors ---------------------------------------------------------------------------


def test_missing_weight_file(tmp_path):
    d = write_config(tmp_path / "m")
    with pytest.raises(ValueError, match=f"no weight file in {d}: expected model.safetensors"):
        export_hf(d, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "config.json").exists()


def _copy(hf, dst):
    shutil.copytree(hf.path, dst)
    return dst


def test_missing_tensor(hf_model_factory, tmp_path):
    from safetensors.numpy import load_file, save_file

    d = _copy(hf_model_factory("llama"), tmp_path / "m")
    tensors = load_file(d / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    want = f"tensor 'model.layers.1.mlp.up_proj.weight' not found in checkpoint {d}"
    with pytest.raises(ValueError, match=re.escape(want)):
        export_hf(d, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "config.json").exists()


def test_missing_shard(hf_model_factory, tmp_path):
    d = _copy(hf_model_factory("mistral", sharded=True), tmp_path / "m")
    shard = sorted(d.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(ValueError, match=f"weight file {shard} listed in .*index.json is missing"):
        export_hf(d, tmp_path / "out", progress=False)


def test_shape_mismatch(hf_model_factory, tmp_path):
    d = _copy(hf_model_factory("llama"), tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        ValueError,
        match=r"'model.layers.0.mlp.gate_proj.weight' .* has shape "
        r"\[96, 64\]; config.json implies \[128, 64\]",
    ):
        export_hf(d, tmp_path / "out", progress=False)


def test_float16_overflow(hf_model_factory, tmp_path):
    from safetensors.numpy import load_file, save_file

    d = _copy(hf_model_factory("llama"), tmp_path / "m")
    tensors = load_file(d / "model.safetensors")
    tensors["model.layers.0.self_attn.k_proj.weight"][3, 5] = np.float32(1e6)
    save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ValueError,
        match=r"'model.layers.0.self_attn.k_proj.weight' .* beyond the "
        r"float16 range \(largest magnitude 1e\+06\)",
    ):
        export_hf(d, tmp_path / "out", dtype="float16", progress=False)
    export_hf(d, tmp_path / "out", dtype="bfloat16", progress=False)  # fits bfloat16
