"""Shared pytest fixtures: tiny random Hugging Face models, saved to disk, and their exports.

Both fixtures are session-scoped factories with a cache: the same arguments return the same
directory, built once per test session, so every test file can use them freely. They need torch
and transformers (tests using them are skipped when either is missing).

hf_model_factory(name, *, dtype="float32", sharded=False, seed=0, **config_overrides) -> HfModel
    Builds MODEL_SPECS[name] with transformers (config overrides applied on top, e.g.
    num_hidden_layers=3), gives EVERY parameter seeded random values (norm weights 1 + 0.2 * N(0,1),
    all other weights and biases 0.1 * N(0,1): no zeros, no ones, so a mapping mistake shows),
    casts it to `dtype` ("float32" | "float16" | "bfloat16") and saves it with save_pretrained
    (safetensors; sharded=True writes many small shards plus model.safetensors.index.json).
    HfModel fields: name, path (pathlib.Path), model_type, dtype, sharded, config (the saved
    config.json as a dict). Methods:
      load_model(dtype=torch.float32) -> the transformers model, in eval mode (oracle for
          forward / generate tests);
      state_dict() -> {HF tensor name: float32 numpy array}, read from the saved files (exact;
          tied models have no "lm_head.weight" entry, as in the files).

exported_model_factory(name, *, tp=1, dtype="float32", hf_dtype="float32", sharded=False, seed=0,
                       **config_overrides) -> ExportedModel
    hf_model_factory(name, dtype=hf_dtype, ...) exported with fastattention.export.export_hf.
    ExportedModel fields: path (the model dir: config.json, rank0/ ...), config (the written
    config dict), hf (the HfModel it came from).

MODEL_SPECS (every model: hidden_size 64, a handful of layers, vocabulary of a few hundred):
    llama       LlamaForCausalLM, 4 heads / 2 KV heads (GQA), head_dim 16, vocab 301 (odd, so
                tp=2 and tp=4 pad it), untied LM head, default RoPE.
    llama_kv4   LlamaForCausalLM, 8 heads / 4 KV heads, head_dim 8, llama3 RoPE scaling.
    llama_bias  LlamaForCausalLM with attention_bias and mlp_bias, 4 heads (MHA), tied
                embeddings, linear RoPE scaling.
    qwen2       Qwen2ForCausalLM (q/k/v bias), 4 heads / 2 KV heads, 3 layers, tied embeddings.
    qwen2_swa   qwen2 with use_sliding_window, sliding_window 8 on every layer.
    mistral     MistralForCausalLM, 4 heads / 1 KV head (MQA), sliding_window 8.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import pytest

# What the Llama-family specs share; each spec below names only where it differs.
_LLAMA_BASE = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)
_QWEN2 = dict(
    _LLAMA_BASE,
    vocab_size=320,
    num_hidden_layers=3,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    bos_token_id=None,
    eos_token_id=3,
    tie_word_embeddings=True,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
)

MODEL_SPECS = {
    "llama": ("LlamaForCausalLM", dict(_LLAMA_BASE, vocab_size=301)),
    "llama_kv4": (
        "LlamaForCausalLM",
        dict(
            _LLAMA_BASE,
            vocab_size=300,
            intermediate_size=128,
            num_attention_heads=8,
            num_key_value_heads=4,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
    ),
    "llama_bias": (
        "LlamaForCausalLM",
        dict(
            _LLAMA_BASE,
            vocab_size=288,
            num_key_value_heads=4,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            attention_bias=True,
            mlp_bias=True,
            rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
        ),
    ),
    "qwen2": ("Qwen2ForCausalLM", _QWEN2),
    "qwen2_swa": (
        "Qwen2ForCausalLM",
        dict(
            _QWEN2,
            num_hidden_layers=2,
            use_sliding_window=True,
            sliding_window=8,
            max_window_layers=0,
        ),
    ),
    "mistral": (
        "MistralForCausalLM",
        dict(
            _LLAMA_BASE,
            vocab_size=512,
            intermediate_size=128,
            num_key_value_heads=1,
            max_position_embeddings=512,
            sliding_window=8,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
    ),
}

_TORCH_DTYPES = ("float32", "float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class HfModel:
    name: str
    path: pathlib.Path
    model_type: str
    dtype: str
    sharded: bool
    config: dict

    def load_model(self, dtype=None):
        import torch
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(
            self.path, dtype=dtype or torch.float32
        )
        return model.eval()

    def state_dict(self) -> dict:
        from safetensors.torch import load_file

        index = self.path / "model.safetensors.index.json"
        if index.exists():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        out = {}
        for name in files:
            for key, t in load_file(self.path / name).items():
                out[key] = t.float().numpy()
        return out


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    path: pathlib.Path
    config: dict
    hf: HfModel


def _randomize(model, seed: int) -> None:
    """Seeded values for every parameter (tied ones once): no default zeros or ones survive."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            p.copy_(1.0 + 0.2 * noise if "norm" in name else 0.1 * noise)


def _cache_key(*parts, overrides: dict) -> str:
    return json.dumps([parts, overrides], sort_keys=True, default=str)


@pytest.fixture(scope="session")
def hf_model_factory(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.utils.logging.disable_progress_bar()
    cache = {}

    def make(name, *, dtype="float32", sharded=False, seed=0, **config_overrides) -> HfModel:
        if name not in MODEL_SPECS:
            raise KeyError(f"unknown test model '{name}'; known: {', '.join(MODEL_SPECS)}")
        if dtype not in _TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {_TORCH_DTYPES}, got {dtype!r}")
        key = _cache_key(name, dtype, sharded, seed, overrides=config_overrides)
        if key in cache:
            return cache[key]
        class_name, spec = MODEL_SPECS[name]
        model_class = getattr(transformers, class_name)
        config = model_class.config_class(**{**spec, **config_overrides})
        torch.manual_seed(seed)
        model = model_class(config)
        _randomize(model, seed)
        model = model.to(getattr(torch, dtype)).eval()
        path = tmp_path_factory.mktemp(f"hf-{name}-{dtype}{'-sharded' if sharded else ''}")
        model.save_pretrained(path, max_shard_size="20KB" if sharded else "10GB")
        saved = json.loads((path / "config.json").read_text())
        cache[key] = HfModel(name, path, saved["model_type"], dtype, sharded, saved)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def exported_model_factory(hf_model_factory, tmp_path_factory):
    cache = {}

    def make(
        name,
        *,
        tp=1,
        dtype="float32",
        hf_dtype="float32",
        sharded=False,
        seed=0,
        **config_overrides,
    ) -> ExportedModel:
        from fastattention.export import export_hf

        key = _cache_key(name, tp, dtype, hf_dtype, sharded, seed, overrides=config_overrides)
        if key not in cache:
            hf = hf_model_factory(
                name, dtype=hf_dtype, sharded=sharded, seed=seed, **config_overrides
            )
            out = tmp_path_factory.mktemp(f"fa-{name}-tp{tp}-{dtype}")
            config = export_hf(hf.path, out, tp=tp, dtype=dtype, progress=False)
            cache[key] = ExportedModel(out, config, hf)
        return cache[key]

    return make


@pytest.fixture(autouse=True)
def poisoned_attention_outputs(monkeypatch):
    """Every output fastattention.ops allocates for an attention call (out, lse) starts as NaN,
    so an element a kernel fails to write shows up in the test's comparison instead of passing
    with whatever the allocator left there (torch.empty / np.empty)."""
    try:
        from fastattention import ops
    except ImportError:  # the extension is not built: the tests that need it skip
        return

    def poison(make):
        def poisoned(q, shape):
            out = make(q, shape)
            out[...] = float("nan")
            return out

        return poisoned

    monkeypatch.setattr(ops, "_empty_like_q", poison(ops._empty_like_q))
    monkeypatch.setattr(ops, "_empty_f32", poison(ops._empty_f32))
