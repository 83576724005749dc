"""FasterTransformer GPT checkpoint directory -> FastAttention model directory (docs/FORMAT.md).

    from fastattention.export import export_ft
    config = export_ft("ft_models/2-gpu", "out", tp=1, dtype="float16")

The input is what FasterTransformer's converters write (examples/pytorch/gpt/utils/*_convert.py,
examples/pytorch/gptneox/utils/*_convert.py): a `config.ini` and headerless raw `model.*.bin`
files, one tensor each, in the config's weight_data_type (fp32 | fp16 | bf16), little-endian:

    model.wte.bin                                       [vocab, H]
    model.wpe.bin                                       [max_pos_seq_len, H] ([gpt] only)
    model.lm_head.weight.bin                            [vocab, H] (absent: tied to wte)
    model.final_layernorm.{weight,bias}.bin             [H]
    model.layers.{i}.input_layernorm.{weight,bias}.bin  [H]
    model.layers.{i}.post_attention_layernorm.{weight,bias}.bin [H]
    model.layers.{i}.attention.query_key_value.weight.{r}.bin   [H, 3, H/N]
    model.layers.{i}.attention.query_key_value.bias.{r}.bin     [3, H/N]
    model.layers.{i}.attention.dense.weight.{r}.bin             [H/N, H]
    model.layers.{i}.attention.dense.bias.bin                   [H] (NeoX: divided by N)
    model.layers.{i}.mlp.dense_h_to_4h.{weight,bias}.{r}.bin    [H, I/N], [I/N]
    model.layers.{i}.mlp.dense_4h_to_h.weight.{r}.bin           [I/N, H]
    model.layers.{i}.mlp.dense_4h_to_h.bias.bin                 [H] (NeoX: divided by N)

with H = head_num * size_per_head, I = inter_size and N the tensor-parallel size the converter
split for ({r} = 0 .. N-1; N is counted from the files). Linear weights are stored transposed,
[in_features, out_features]. The fused QKV of rank r is [H, 3, H/N]: for each input feature,
q then k then v, each holding that rank's heads r*h/N .. (r+1)*h/N - 1 (h = head_num) one after
the other, size_per_head values each; FasterTransformer's QKV kernels read it that way, whatever
the source model's own order (the converters reorder GPT-NeoX's per-head [q, k, v] into it).

Model families (config.ini section):
  [gptneox]  GPT-NeoX: LayerNorm, rotary positions on the first `rotary_embedding` dims of each
             head (rotate-halves style, base 10000), GeLU FFN, biases everywhere, untied LM head.
             FasterTransformer's GPT-NeoX converters store attention.dense.bias and
             mlp.dense_4h_to_h.bias divided by N (each rank adds its share before the
             all-reduce); they are multiplied back here. Supported with use_gptj_residual = 0
             (sequential residual); the parallel residual (use_gptj_residual = 1, the GPT-NeoX and
             Pythia default) is not a graph the runtime has yet.
  [gpt]      GPT-2 / Megatron GPT through FasterTransformer's ParallelGpt (what
             examples/pytorch/gpt/utils/huggingface_gpt_convert.py writes): LayerNorm, learned
             absolute position embeddings (model.wpe.bin, max_pos_seq_len rows, required),
             GeLU FFN, biases everywhere, stored whole (ParallelGpt adds the row-parallel biases
             once, after the all-reduce), LM head tied to wte (no lm_head file written).
             config.ini keys as ParallelGpt's Triton model reads them, with its defaults:
             layernorm_eps (1e-6 when absent: the converter writes none, so FT ran GPT-2 with
             1e-6, not Hugging Face's 1e-5, and so does the export), activation_type Gelu (tanh
             form), layernorm_type pre_layernorm, has_positional_encoding 1,
             has_post_decoder_layernorm 1; anything else (OPT / BLOOM variants: model_variant,
             ReLU, post-LayerNorm, ALiBi via use_attention_linear_bias, no positions,
             has_pre_decoder_layernorm, adapters) is refused naming the key. The runtime config
             gets position_embedding "learned" and pos_embed.weight (wpe's first
             max_position_embeddings rows, replicated on every rank); max_positions may only
             shorten the table.
  [gptj]     GPT-J: parallel attention + FFN on one LayerNorm, LM head bias: refused.

The runtime config keys (both families): architecture "gpt", layernorm, activation gelu_tanh
(FasterTransformer computes GeLU with the tanh approximation, so that is what the FT deployment
ran), plain (ungated) FFN, q/k/v, o and FFN biases. Tensors are merged over FT's split,
converted to the target dtype and split again for `tp` by the Hugging Face exporter's machinery
(convert.py).
"""

from __future__ import annotations

import configparser
import dataclasses
import glob
import os

import numpy as np

from fastattention.export import tokenizer_files
from fastattention.export import tp as tpsplit
from fastattention.export.format import bfloat16_bits_to_float32
from fastattention.export.model_writer import Exporter, check_dtype, check_out_dir, write_model

CONFIG_FILE = "config.ini"
# weight_data_type -> numpy storage dtype (bfloat16 as uint16 bits); FT matches these substrings.
_FT_DTYPES = {"fp32": np.dtype("<f4"), "fp16": np.dtype("<f2"), "bf16": np.dtype("<u2")}
_FT_DTYPE_ALIASES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
DEFAULT_MAX_POSITIONS = 2048  # Hugging Face GPTNeoXConfig's default; config.ini has none
_NEOX_ROTARY_BASE = 10000.0  # fixed in FasterTransformer's GPT-NeoX
_NEOX_LAYERNORM_EPS = 1e-5  # GptNeoX::layernorm_eps_ in FasterTransformer
_GPT_LAYERNORM_EPS = 1e-6  # gptVariantParams::layernorm_eps, ParallelGpt's default


@dataclasses.dataclass(frozen=True)
class FtConfig:
    """What config.ini (and the file names) say about a FasterTransformer checkpoint."""

    path: str  # the config.ini
    family: str  # gptneox | gpt
    head_num: int
    size_per_head: int
    inter_size: int
    num_layer: int
    vocab_size: int
    weight_data_type: str  # fp32 | fp16 | bf16
    ft_tp: int  # the tensor-parallel split of the files
    rotary_dim: int  # gptneox; 0 for gpt (learned positions: model.wpe.bin)
    layernorm_eps: float
    max_positions: int | None  # max_pos_seq_len when given (gpt: always, the wpe table's rows)
    start_id: int | None
    end_id: int | None

    @property
    def hidden(self) -> int:
        return self.head_num * self.size_per_head


# ---------------------------------------------------------------------------------------------
# config.ini


_REQUIRED = object()


class _Section:
    """Typed reads from one config.ini section; errors name the file, the section and the key."""

    def __init__(self, parser: configparser.ConfigParser, name: str, path: str):
        self.s, self.name, self.path = parser[name], name, path

    def fail(self, key, what):
        raise ValueError(f"{self.path}: [{self.name}] {key} {what}")

    def has(self, key) -> bool:
        return key in self.s and self.s[key].strip() != ""

    def integer(self, key, minimum=None, default=_REQUIRED):
        if not self.has(key):
            if default is _REQUIRED:
                self.fail(key, "is missing")
            return default
        text = self.s[key].split(";")[0].strip()  # FT's INI reader allows inline ; comments
        try:
            value = int(text)
        except ValueError:
            self.fail(key, f"must be an integer, got {text!r}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, key, default):
        if not self.has(key):
            return default
        text = self.s[key].split(";")[0].strip()
        try:
            return float(text)
        except ValueError:
            self.fail(key, f"must be a number, got {text!r}")

    def boolean(self, key, default):
        if not self.has(key):
            return default
        text = self.s[key].split(";")[0].strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        self.fail(key, f"must be a boolean (1/0, true/false), got {text!r}")


def _config_path(ft_dir: str) -> str:
    path = os.path.join(ft_dir, CONFIG_FILE)
    if os.path.isfile(path):
        return path
    if not os.path.isdir(ft_dir):
        raise ValueError(f"FasterTransformer checkpoint directory {ft_dir} does not exist")
    hint = ""
    sub = sorted(
        os.path.basename(os.path.dirname(p))
        for p in glob.glob(os.path.join(ft_dir, "*-gpu", CONFIG_FILE))
    )
    if sub:
        hint = (
            f"; FasterTransformer's converters write into <out>/<N>-gpu/, found "
            f"{', '.join(sub)}: pass that folder"
        )
    raise ValueError(f"FasterTransformer config not found: {path}{hint}")


def _weight_dtype(section: _Section) -> str:
    if not section.has("weight_data_type"):
        return "fp32"  # FasterTransformer's own default (getModelFileType)
    text = section.s["weight_data_type"].split(";")[0].strip().lower()
    text = _FT_DTYPE_ALIASES.get(text, text)
    if text not in _FT_DTYPES:
        section.fail("weight_data_type", f"is {text!r}; expected one of {', '.join(_FT_DTYPES)}")
    return text


def _count_ranks(ft_dir: str) -> int:
    """FT's tensor-parallel size: how many rank files layer 0's fused QKV weight has."""
    stem = os.path.join(ft_dir, "model.layers.0.attention.query_key_value.weight")
    n = 0
    while os.path.isfile(f"{stem}.{n}.bin"):
        n += 1
    if n == 0:
        raise ValueError(f"FasterTransformer weight file {stem}.0.bin is missing")
    return n


def _check_gpt(sec: _Section) -> None:
    """[gpt]: the variant keys ParallelGpt reads (its Triton model's config.ini reader), with its
    defaults; everything but GPT-2's graph (pre-LayerNorm, learned positions, GeLU, a final
    LayerNorm) is refused naming the key."""
    if sec.has("model_variant") and sec.s["model_variant"].split(";")[0].strip() != "gpt":
        sec.fail(
            "model_variant",
            f"is {sec.s['model_variant'].strip()!r}: only the plain GPT "
            f"variant (GPT-2 / Megatron GPT) is supported, not OPT or BLOOM",
        )
    if sec.boolean("use_attention_linear_bias", False):
        sec.fail(
            "use_attention_linear_bias",
            "= 1 (ALiBi, BLOOM) is not supported by the FastAttention runtime yet",
        )
    if not sec.boolean("has_positional_encoding", True):
        sec.fail(
            "has_positional_encoding",
            "= 0 (no position information besides ALiBi) is not "
            "supported: the runtime has learned or rotary "
            "positions",
        )
    for key, default, wanted in (
        ("layernorm_type", "pre_layernorm", "pre_layernorm"),
        ("activation_type", "Gelu", "gelu"),
    ):
        value = sec.s.get(key, default).split(";")[0].strip() or default
        if value.lower() != wanted:
            sec.fail(
                key,
                f"is {value!r}; the FastAttention runtime runs FasterTransformer's "
                f"default GPT ({key} = {default}) only",
            )
    for key, default in (
        ("has_pre_decoder_layernorm", False),
        ("has_post_decoder_layernorm", True),
        ("has_adapters", False),
    ):
        if sec.boolean(key, default) != default:
            sec.fail(
                key,
                f"= {int(not default)} is not supported (the FastAttention runtime "
                f"runs GPT-2's graph: {key} = {int(default)})",
            )


def _config_sizes(sec: _Section, ft_dir: str) -> dict:
    """The keys both families share (sizes, dtype, split, token ids)."""
    layers_key = (
        "num_layer" if sec.has("num_layer") or not sec.has("decoder_layers") else "decoder_layers"
    )
    ft_tp = _count_ranks(ft_dir)
    declared = sec.integer("tensor_para_size", 1, default=None)
    if declared is not None and declared != ft_tp:
        sec.fail(
            "tensor_para_size",
            f"is {declared} but the weight files are split {ft_tp} ways "
            f"(model.layers.0.attention.query_key_value.weight.*.bin)",
        )
    return dict(
        path=sec.path,
        family=sec.name,
        head_num=sec.integer("head_num", 1),
        size_per_head=sec.integer("size_per_head", 1),
        inter_size=sec.integer("inter_size", 1),
        num_layer=sec.integer(layers_key, 1),
        vocab_size=sec.integer("vocab_size", 1),
        weight_data_type=_weight_dtype(sec),
        ft_tp=ft_tp,
        start_id=sec.integer("start_id", 0, default=None),
        end_id=sec.integer("end_id", 0, default=None),
    )


def read_ft_config(ft_dir) -> FtConfig:
    """Parses DIR/config.ini; ValueError naming the file and key for anything unsupported."""
    ft_dir = os.fspath(ft_dir)
    path = _config_path(ft_dir)
    parser = configparser.ConfigParser(
        inline_comment_prefixes=(";",), strict=False, interpolation=None
    )
    try:
        with open(path) as f:
            parser.read_file(f)
    except (OSError, configparser.Error, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read FasterTransformer config {path}: {e}") from e
    if "gptj" in parser:
        raise ValueError(
            f"{path}: [gptj] (GPT-J: attention and FFN in parallel from one shared "
            f"LayerNorm, LM head bias) is not a graph the FastAttention runtime has"
        )
    if "gptneox" in parser:
        sec = _Section(parser, "gptneox", path)
        if sec.integer("use_gptj_residual", default=1) != 0:
            raise ValueError(
                f"{path}: [gptneox] use_gptj_residual = 1 (or missing: FasterTransformer's "
                f"default) means the parallel residual x + attn(ln1(x)) + mlp(ln2(x)); the "
                f"FastAttention runtime has the sequential residual only (use_gptj_residual = 0)"
            )
        size_per_head = sec.integer("size_per_head", 1)
        rotary = sec.integer("rotary_embedding", 0)
        if rotary < 2 or rotary > size_per_head or rotary % 2:
            sec.fail(
                "rotary_embedding",
                f"must be even and in 2..size_per_head ({size_per_head}), got {rotary}",
            )
        cfg = FtConfig(
            **_config_sizes(sec, ft_dir),
            rotary_dim=rotary,
            layernorm_eps=sec.number("layernorm_eps", _NEOX_LAYERNORM_EPS),
            max_positions=sec.integer("max_pos_seq_len", 1, default=None),
        )
    elif "gpt" in parser:
        sec = _Section(parser, "gpt", path)
        _check_gpt(sec)
        cfg = FtConfig(
            **_config_sizes(sec, ft_dir),
            rotary_dim=0,
            layernorm_eps=sec.number("layernorm_eps", _GPT_LAYERNORM_EPS),
            max_positions=sec.integer("max_pos_seq_len", 1),
        )
    else:
        raise ValueError(
            f"{path}: no [gptneox] or [gpt] section (found: "
            f"{', '.join(parser.sections()) or 'none'})"
        )
    if cfg.head_num % cfg.ft_tp or cfg.inter_size % cfg.ft_tp:
        raise ValueError(
            f"{path}: [{cfg.family}] head_num {cfg.head_num} and inter_size "
            f"{cfg.inter_size} must be multiples of the files' tensor-parallel "
            f"split {cfg.ft_tp}"
        )
    if not cfg.layernorm_eps > 0:
        raise ValueError(
            f"{path}: [{cfg.family}] layernorm_eps must be > 0, got {cfg.layernorm_eps}"
        )
    return cfg


def runtime_config(
    ft: FtConfig, ft_dir: str, tp: int, dtype: str, max_positions: int | None = None
) -> dict:
    """The runtime config.json (every key of docs/FORMAT.md) for a FasterTransformer config."""
    learned = ft.family == "gpt"
    if max_positions is None:
        max_positions = ft.max_positions or DEFAULT_MAX_POSITIONS
    elif learned and max_positions > ft.max_positions:
        raise ValueError(
            f"max_positions {max_positions} exceeds {ft.path}'s max_pos_seq_len "
            f"{ft.max_positions}: model.wpe.bin has no rows for later positions"
        )
    return {
        "format": "fastattention",
        "format_version": 1,
        "architecture": "gpt",
        "dtype": dtype,
        "tp_size": tp,
        "vocab_size": ft.vocab_size,
        "vocab_size_padded": -(-ft.vocab_size // tp) * tp,
        "hidden_size": ft.hidden,
        "num_layers": ft.num_layer,
        "num_heads": ft.head_num,
        "num_kv_heads": ft.head_num,
        "head_dim": ft.size_per_head,
        "intermediate_size": ft.inter_size,
        "max_position_embeddings": int(max_positions),
        "norm_type": "layernorm",
        "norm_eps": float(ft.layernorm_eps),
        "activation": "gelu_tanh",
        "gated_ffn": False,
        "qkv_bias": True,
        "o_bias": True,
        "mlp_bias": True,
        "tie_word_embeddings": not os.path.isfile(os.path.join(ft_dir, "model.lm_head.weight.bin")),
        "position_embedding": "learned" if learned else "rotary",
        "rope": None
        if learned
        else {
            "theta": _NEOX_ROTARY_BASE,
            "style": "neox",
            "rotary_dim": ft.rotary_dim,
            "scaling": {"type": "none"},
        },
        "sliding_window": None,
        "bos_token_id": ft.start_id,
        "eos_token_id": [] if ft.end_id is None else [ft.end_id],
        "source": {
            "type": "fastertransformer",
            "path": os.path.abspath(ft_dir),
            "model_type": ft.family,
            "ft_tensor_para_size": ft.ft_tp,
            "weight_data_type": ft.weight_data_type,
        },
    }


# ---------------------------------------------------------------------------------------------
# weight files


# Rank-split tensors: file-name suffix -> (shape of one rank's file, axis the ranks concatenate on).
def _split_specs(c: FtConfig) -> dict:
    local_h, local_i, h = c.hidden // c.ft_tp, c.inter_size // c.ft_tp, c.hidden
    return {
        "attention.query_key_value.weight": ((h, 3, local_h), -1),
        "attention.query_key_value.bias": ((3, local_h), -1),
        "attention.dense.weight": ((local_h, h), 0),
        "mlp.dense_h_to_4h.weight": ((h, local_i), -1),
        "mlp.dense_h_to_4h.bias": ((local_i,), -1),
        "mlp.dense_4h_to_h.weight": ((local_i, h), 0),
    }


# Biases the GPT-NeoX converters store divided by the tensor-parallel size (GPT's converter stores
# them whole: ParallelGpt adds them once, after the all-reduce).
_DIVIDED_BIASES = ("attention.dense.bias", "mlp.dense_4h_to_h.bias")
_QKV_PART = {"q": 0, "k": 1, "v": 2}


class FtTensors:
    """The tensors of a FasterTransformer checkpoint as full (unsplit) float32 arrays, weights in
    the Hugging Face orientation [out_features, in_features], so the exporter can treat them as a
    checkpoint. A name is a file stem without the rank (`model.layers.0.attention.dense.weight`),
    with `:q` / `:k` / `:v` picking one part of a fused QKV tensor."""

    def __init__(self, ft_dir: str, cfg: FtConfig):
        self.hf_dir = ft_dir  # the exporter's messages name the source directory by this
        self.cfg = cfg
        self._storage = _FT_DTYPES[cfg.weight_data_type]
        self._splits = _split_specs(cfg)
        self._qkv = (None, None)  # (stem, merged array): q, k and v come from one read

    def _read(self, path: str, shape: tuple) -> np.ndarray:
        count = int(np.prod(shape))
        expected = count * self._storage.itemsize
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            raise ValueError(f"FasterTransformer weight file {path} is missing") from None
        except OSError as e:
            raise ValueError(f"cannot read FasterTransformer weight file {path}: {e}") from e
        if size != expected:
            raise ValueError(
                f"FasterTransformer weight file {path} is {size} bytes; {self.cfg.path} "
                f"(weight_data_type {self.cfg.weight_data_type}) implies a tensor of shape "
                f"{list(shape)} = {expected} bytes"
            )
        data = np.fromfile(path, dtype=self._storage, count=count).reshape(shape)
        if self.cfg.weight_data_type == "bf16":
            return bfloat16_bits_to_float32(data)
        return data.astype(np.float32)

    def _merged(self, stem: str, suffix: str) -> np.ndarray:
        shape, axis = self._splits[suffix]
        parts = [self._read(f"{stem}.{r}.bin", shape) for r in range(self.cfg.ft_tp)]
        return np.concatenate(parts, axis=axis)

    def _load(self, stem: str, part: str, shape) -> np.ndarray:
        path_stem = os.path.join(self.hf_dir, stem)
        suffix = next((s for s in self._splits if stem.endswith(s)), None)
        if suffix is None:
            array = self._read(path_stem + ".bin", shape)
            if self.cfg.family == "gptneox" and stem.endswith(_DIVIDED_BIASES):
                array = array * np.float32(self.cfg.ft_tp)
            return array
        if suffix.startswith("attention.query_key_value"):
            if self._qkv[0] != stem:
                self._qkv = (stem, self._merged(path_stem, suffix))
            fused = self._qkv[1]  # weight [H, 3, H], bias [3, H]
            if part not in _QKV_PART:
                raise KeyError(f"{stem}: a fused QKV tensor is read as {stem}:q, :k or :v")
            return fused[:, _QKV_PART[part]].T if fused.ndim == 3 else fused[_QKV_PART[part]]
        merged = self._merged(path_stem, suffix)
        return merged.T if merged.ndim == 2 else merged  # [in, out] -> [out, in]

    def get(self, name: str, expected_shape=None) -> np.ndarray:
        """The tensor as float32 [out, in]; expected_shape is required (raw files carry none)."""
        if expected_shape is None:
            raise TypeError("FtTensors.get needs expected_shape (FT files have no header)")
        stem, _, part = name.partition(":")
        array = np.ascontiguousarray(self._load(stem, part, tuple(expected_shape)))
        if array.shape != tuple(expected_shape):  # a mapping bug, not a user error
            raise AssertionError(f"{name}: read shape {array.shape}, expected {expected_shape}")
        return array


class _FtExporter(Exporter):
    """The Hugging Face exporter's writer, dtype conversion and tp split, over a GPT-style graph:
    LayerNorm with bias, fused QKV with bias, plain GeLU FFN with biases."""

    def column_parallel(self, name, src, shape):
        w = self.load(src, shape)
        self.write(name, [tpsplit.column_shard(w, self.tp, r) for r in range(self.tp)])

    def position_table(self, name):
        """model.wpe.bin [max_pos_seq_len, H], its first max_position_embeddings rows, whole on
        every rank (the runtime adds it after the embedding's all-reduce)."""
        ft = self.ckpt.cfg
        table = self.load("model.wpe", (ft.max_positions, self.cfg["hidden_size"]))
        self.write(name, [table[: self.cfg["max_position_embeddings"]]] * self.tp)

    def tasks(self) -> list:
        c = self.cfg
        h, i_size = c["hidden_size"], c["intermediate_size"]
        vec = (h,)
        tasks = [("embed.weight", self.vocab_parallel, ("model.wte",))]
        if c["position_embedding"] == "learned":
            tasks.append(("pos_embed.weight", self.position_table, ()))  # after embed: FORMAT.md
        for i in range(c["num_layers"]):
            src, p = f"model.layers.{i}.", f"layers.{i}."
            qkv = {
                f"{x}{sfx}": f"{src}attention.query_key_value.{kind}:{x}"
                for x in "qkv"
                for sfx, kind in (("", "weight"), ("_bias", "bias"))
            }
            tasks += [
                (p + "attn_norm.weight", self.replicated, (src + "input_layernorm.weight", vec)),
                (p + "attn_norm.bias", self.replicated, (src + "input_layernorm.bias", vec)),
                (p + "attn.qkv.weight", self.qkv, (qkv, "")),
                (p + "attn.qkv.bias", self.qkv, (qkv, "_bias")),
                (p + "attn.o.weight", self.row_parallel, (src + "attention.dense.weight", (h, h))),
                (p + "attn.o.bias", self.replicated, (src + "attention.dense.bias", vec)),
                (
                    p + "ffn_norm.weight",
                    self.replicated,
                    (src + "post_attention_layernorm.weight", vec),
                ),
                (
                    p + "ffn_norm.bias",
                    self.replicated,
                    (src + "post_attention_layernorm.bias", vec),
                ),
                (
                    p + "ffn.up.weight",
                    self.column_parallel,
                    (src + "mlp.dense_h_to_4h.weight", (i_size, h)),
                ),
                (
                    p + "ffn.up.bias",
                    self.column_parallel,
                    (src + "mlp.dense_h_to_4h.bias", (i_size,)),
                ),
                (
                    p + "ffn.down.weight",
                    self.row_parallel,
                    (src + "mlp.dense_4h_to_h.weight", (h, i_size)),
                ),
                (p + "ffn.down.bias", self.replicated, (src + "mlp.dense_4h_to_h.bias", vec)),
            ]
        tasks.append(("final_norm.weight", self.replicated, ("model.final_layernorm.weight", vec)))
        tasks.append(("final_norm.bias", self.replicated, ("model.final_layernorm.bias", vec)))
        if not c["tie_word_embeddings"]:
            tasks.append(("lm_head.weight", self.vocab_parallel, ("model.lm_head.weight",)))
        return tasks


def export_ft(ft_dir, out_dir, tp=1, dtype="float16", progress=True, max_positions=None) -> dict:
    """Exports a FasterTransformer GPT-NeoX or GPT checkpoint directory to the runtime format.

    ft_dir: the folder holding config.ini and the model.*.bin files (the converters' <N>-gpu/),
    split for any tensor-parallel size. out_dir: as export_hf. tp: the output's tensor-parallel
    size (independent of the input's). dtype: float32 | float16 | bfloat16.
    max_positions: max_position_embeddings of the output (default: config.ini's max_pos_seq_len,
    else 2048); with rotary positions it only sets the session's default sequence limit; with
    learned ones ([gpt]) it is a hard limit and at most max_pos_seq_len (the table is cut).
    A tokenizer.json (with tokenizer_config.json, chat template) kept in ft_dir is checked and
    copied as export_hf copies one.
    Returns the written config dict. Bad input (missing or wrongly sized file, bad config.ini,
    an unsupported family) raises ValueError naming the file.
    """
    ft_dir, out_dir = os.fspath(ft_dir), os.fspath(out_dir)
    check_dtype(dtype)
    tpsplit.check_tp_value(tp)
    tp = int(tp)
    check_out_dir(ft_dir, out_dir, tp)
    if max_positions is not None and (
        isinstance(max_positions, bool)
        or not isinstance(max_positions, (int, np.integer))
        or max_positions < 1
    ):
        raise ValueError(f"max_positions must be a positive integer, got {max_positions!r}")
    ft = read_ft_config(ft_dir)
    cfg = runtime_config(ft, ft_dir, tp, dtype, max_positions)
    tpsplit.check_tp(tp, cfg["num_heads"], cfg["num_kv_heads"], cfg["intermediate_size"])
    tokenizer = tokenizer_files.read_tokenizer_files(ft_dir, cfg["vocab_size"])
    return write_model(_FtExporter(FtTensors(ft_dir, ft), cfg, out_dir), progress, tokenizer)
