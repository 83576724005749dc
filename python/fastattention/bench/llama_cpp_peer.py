"""llama.cpp as a peer of `bench e2e --device cpu` (`--peer llama.cpp`; issue 18).

llama.cpp runs through llama-cpp-python (the `llama_cpp` module) on a GGUF file that llama.cpp's
own `convert_hf_to_gguf.py` makes from the same Hugging Face checkpoint as our export, at the same
weight precision (f32, bf16, f16). Same threads, same prompt token ids, greedy (argmax of the
last position's logits, as our sampler with temperature 0), timed the same way as the other
engines: prefill = one forward over the prompt with the logits of its last position and the
argmax; decode = each step one token in, logits, argmax; model load and GGUF conversion are not
timed. Nothing here is needed by the rest of the bench: without llama-cpp-python, or without
the conversion script, the peer is skipped with a message that says which is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

import numpy as np

PEER = "llama.cpp"
SCRIPT = "convert_hf_to_gguf.py"
ENV = "LLAMA_CPP_CONVERT"  # the script (or its folder) when --llama-cpp-convert is not given
# Our weight dtype -> convert_hf_to_gguf.py --outtype.
OUTTYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
# Our KV dtype -> ggml's type enum (ggml.h: GGML_TYPE_F32 0, F16 1, BF16 30).
GGML_TYPES = {"float32": 0, "float16": 1, "bfloat16": 30}
KV_CHOICES = ("same", "float32", "float16", "bfloat16")
INSTALL_HINT = (
    'CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python  '
    "(builds llama.cpp from source; several minutes on 2 cores)"
)
SCRIPT_HINT = (
    f"{SCRIPT} is in llama.cpp's source tree, next to its conversion/ and gguf-py/ "
    "folders (`git clone --depth 1 https://github.com/ggml-org/llama.cpp`, or the "
    "llama-cpp-python sdist's vendor/llama.cpp/); pass --llama-cpp-convert "
    f"PATH/TO/{SCRIPT} (or the folder holding it)"
)


class ConvertScriptNotFound(FileNotFoundError):
    """llama.cpp's convert_hf_to_gguf.py was not found; the message lists where it was looked for."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peer",
        choices=[PEER],
        default=None,
        help="cpu: also time llama.cpp (llama-cpp-python, if installed) on the "
        "same checkpoint converted to GGUF at each --dtypes precision; "
        "skipped with a message when the module or the conversion script "
        "is missing",
    )
    add_convert_argument(parser, f"--peer {PEER}")
    add_kv_argument(parser)


def add_convert_argument(parser: argparse.ArgumentParser, peer_option: str) -> None:
    """--llama-cpp-convert: llama.cpp's conversion script (for `peer_option`, say --peer llama.cpp)."""
    parser.add_argument(
        "--llama-cpp-convert",
        default=None,
        metavar="PATH",
        help=f"llama.cpp's {SCRIPT} (or its folder) for {peer_option} "
        f"(default: ${ENV}, else a copy vendored beside the llama_cpp "
        f"module, else {SCRIPT} on PATH)",
    )


def add_kv_argument(parser: argparse.ArgumentParser) -> None:
    """--llama-cpp-kv: llama.cpp's KV cache dtype."""
    parser.add_argument(
        "--llama-cpp-kv",
        choices=KV_CHOICES,
        default="float16",
        help="llama.cpp's KV cache dtype (default float16, llama.cpp's own "
        "default; 'same': our session's, float32 on the CPU, which runs "
        "llama.cpp's decode much slower: 40-80 vs 30 ms/step in the bench "
        "on the 2-core VM, docs/CPU_DECODE.md)",
    )


def validate_arguments(args: argparse.Namespace) -> None:
    """ValueError for options that contradict each other or name a missing file (checked before
    any model is built)."""
    peer = getattr(args, "peer", None)
    if peer is None:
        for name in ("llama_cpp_convert",):
            if getattr(args, name, None) is not None:
                raise ValueError(f"--{name.replace('_', '-')} needs --peer {PEER}")
        if getattr(args, "llama_cpp_kv", "float16") != "float16":
            raise ValueError(f"--llama-cpp-kv needs --peer {PEER}")
        return
    if args.device != "cpu":
        raise ValueError(f"--peer {PEER} is a CPU peer (--device cpu), got --device {args.device}")
    if args.llama_cpp_convert is not None:
        find_convert_script(args.llama_cpp_convert)  # raises ConvertScriptNotFound


def llama_cpp_module() -> Tuple[Optional[object], str]:
    """(the llama_cpp module, "") when importable, else (None, why not)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        return None, (
            f"the llama_cpp module (llama-cpp-python) is not importable ({e}); "
            f"install it with {INSTALL_HINT}"
        )
    except Exception as e:  # a broken build (missing shared library) fails with OSError etc.
        return None, f"importing llama_cpp failed: {type(e).__name__}: {e}"
    return llama_cpp, ""


def _script_in(path: Path) -> Optional[Path]:
    if path.is_file():
        return path
    if path.is_dir() and (path / SCRIPT).is_file():
        return path / SCRIPT
    return None


def vendored_candidates(module_file: Optional[str] = None) -> List[Path]:
    """Where a llama-cpp-python install may hold llama.cpp's sources: an editable install or a
    source tree keeps them in vendor/llama.cpp/ beside the llama_cpp package (a wheel built by
    pip does not keep them)."""
    if module_file is None:
        try:
            import importlib.util

            spec = importlib.util.find_spec("llama_cpp")
        except (ImportError, ValueError):
            spec = None
        module_file = spec.origin if spec is not None and spec.origin else None
    if module_file is None:
        return []
    pkg = Path(module_file).resolve().parent
    return [
        pkg / "vendor" / "llama.cpp" / SCRIPT,
        pkg.parent / "vendor" / "llama.cpp" / SCRIPT,
        pkg / SCRIPT,
    ]


def find_convert_script(
    explicit: Optional[str] = None, candidates: Optional[Iterable[Path]] = None
) -> Path:
    """llama.cpp's convert_hf_to_gguf.py: `explicit` (the --llama-cpp-convert file or folder)
    when given, else $LLAMA_CPP_CONVERT when set, else the first of `candidates` (default:
    vendored_candidates()) that exists, else one on PATH. ConvertScriptNotFound names every
    place looked at."""
    for what, value in (("--llama-cpp-convert", explicit), (f"${ENV}", os.environ.get(ENV))):
        if value is None or (what != "--llama-cpp-convert" and not value):
            continue
        found = _script_in(Path(value))
        if found is None:
            raise ConvertScriptNotFound(
                f"{what} {value}: no such file, nor a folder holding {SCRIPT}; " + SCRIPT_HINT
            )
        return found.resolve()
    looked = list(vendored_candidates() if candidates is None else candidates)
    for c in looked:
        found = _script_in(Path(c))
        if found is not None:
            return found.resolve()
    on_path = shutil.which(SCRIPT)
    if on_path:
        return Path(on_path).resolve()
    where = ", ".join(str(c) for c in looked) or "(no llama_cpp package found)"
    raise ConvertScriptNotFound(
        f"llama.cpp's {SCRIPT} not found: neither --llama-cpp-convert "
        f"nor ${ENV} given; looked beside the llama_cpp module ({where}) and on "
        f"PATH. {SCRIPT_HINT}"
    )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def write_placeholder_tokenizer(out_dir: str, vocab_size: int, byte_tokens: int = 256) -> None:
    """A Llama-style byte-fallback BPE tokenizer with exactly `vocab_size` entries (<unk>, <s>,
    </s>, byte tokens for the bytes below `byte_tokens`, then placeholders): convert_hf_to_gguf.py
    needs a vocabulary to write a GGUF, and the bench's random checkpoint has none. The benchmark
    feeds token ids, so the texts of the tokens never matter, except to a streaming server:
    byte_tokens=128 (ASCII only) makes every token decode to whole UTF-8 text (a byte 0x80-0xFF
    alone is an unfinished character, whose chunk llama-server holds back)."""
    if not 0 <= byte_tokens <= 256:
        raise ValueError(f"byte_tokens must be in 0..256, got {byte_tokens}")
    if vocab_size < 3 + byte_tokens:
        raise ValueError(
            f"a placeholder tokenizer needs a vocabulary of at least {3 + byte_tokens} tokens "
            f"(3 special + {byte_tokens} bytes), got {vocab_size}"
        )
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(byte_tokens):
        vocab[f"<0x{b:02X}>"] = 3 + b
    for i in range(3 + byte_tokens, vocab_size):
        vocab[f"\u2581t{i}"] = i
    special = [
        dict(
            id=i,
            content=t,
            single_word=False,
            lstrip=False,
            rstrip=False,
            normalized=False,
            special=True,
        )
        for t, i in list(vocab.items())[:3]
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": special,
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "\u2581"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
            ],
        },
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [],
        },
    }
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    config = {
        "tokenizer_class": "LlamaTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": False,
        "add_eos_token": False,
        "legacy": False,
        "model_max_length": 1 << 20,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)


def conversion_source(hf_dir: str, work_dir: str, byte_tokens: int = 256) -> str:
    """The folder to convert: `hf_dir` itself when it has a tokenizer, else `work_dir` with links
    to hf_dir's files and a placeholder tokenizer (write_placeholder_tokenizer's, with
    `byte_tokens`; hf_dir, which our export reads, is left as it is)."""
    if any(os.path.isfile(os.path.join(hf_dir, f)) for f in TOKENIZER_FILES):
        return hf_dir
    os.makedirs(work_dir, exist_ok=True)
    for name in os.listdir(hf_dir):
        src, dst = os.path.abspath(os.path.join(hf_dir, name)), os.path.join(work_dir, name)
        if not os.path.lexists(dst):
            os.symlink(src, dst)
    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
        vocab_size = int(json.load(f)["vocab_size"])
    write_placeholder_tokenizer(work_dir, vocab_size, byte_tokens)
    return work_dir


def convert_to_gguf(
    hf_dir: str, out_path: str, dtype: str, script: Path, timeout: float = 3600
) -> str:
    """`python convert_hf_to_gguf.py hf_dir --outfile out_path --outtype f32|bf16|f16`;
    RuntimeError with the tail of the script's output when it fails."""
    if dtype not in OUTTYPES:
        raise ValueError(
            f"no GGUF outtype for weight dtype {dtype!r} (expected one of {', '.join(OUTTYPES)})"
        )
    script = Path(script)
    if not script.is_file():
        raise ConvertScriptNotFound(f"{script}: no such file. {SCRIPT_HINT}")
    cmd = [sys.executable, str(script), hf_dir, "--outfile", out_path, "--outtype", OUTTYPES[dtype]]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0 or not os.path.isfile(out_path):
        out = (res.stdout + res.stderr).strip()
        tail = "\n".join(out.splitlines()[-15:])
        hint = ""
        missing = re.search(r"No module named '([\w.]+)'", out)
        if missing:
            hint = (
                f"\n(the converter needs the Python module {missing.group(1)!r}: pip install "
                f"{missing.group(1).split('.')[0]}; its full list is llama.cpp's "
                "requirements/requirements-convert_hf_to_gguf.txt)"
            )
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {res.returncode}):\n{tail}{hint}")
    return out_path


def gguf_step_bytes(gguf_path: str, hf_dir: str, context: float, kv_dtype: str) -> float:
    """Bytes a batch-1 llama.cpp decode step reads: every tensor of the GGUF file but the token
    embedding (one row gathered) unless it is also the LM head (no output.weight), plus the KV
    cache of `context` tokens in `kv_dtype`; as the bench's decode_step_bytes for our session."""
    import gguf

    sizes = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(gguf_path).tensors}
    weights = sum(sizes.values())
    if "output.weight" in sizes:
        weights -= sizes.get("token_embd.weight", 0)
    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
        c = json.load(f)
    heads = c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // heads
    kv_heads = c.get("num_key_value_heads") or heads
    elem = {"float32": 4, "float16": 2, "bfloat16": 2}[kv_dtype]
    return weights + context * c["num_hidden_layers"] * 2 * kv_heads * head_dim * elem


class LlamaCppRunner:
    """One llama.cpp model and context (model load happens here, outside any timing); prefill()
    and decode() return seconds and seconds per step like the bench's other engines."""

    def __init__(
        self,
        gguf_path: str,
        threads: int,
        n_ctx: int,
        kv_dtype: str = "float32",
        flash_attn: bool = True,
    ):
        llama_cpp, why = llama_cpp_module()
        if llama_cpp is None:
            raise RuntimeError(why)
        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=gguf_path,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            flash_attn=flash_attn,
            type_k=GGML_TYPES[kv_dtype],
            type_v=GGML_TYPES[kv_dtype],
            logits_all=False,
            verbose=False,
        )
        self.ctx = self.llm.ctx
        self.n_vocab = self.llm.n_vocab()
        self.memory = llama_cpp.llama_get_memory(self.ctx)

    def _clear(self) -> None:
        self.lib.llama_memory_clear(self.memory, True)

    def _feed(self, ids: List[int]) -> int:
        """Decodes `ids` after what the KV cache holds; the argmax of the last position."""
        n_batch = self.llm.n_batch
        for i in range(0, len(ids), n_batch):
            chunk = ids[i : i + n_batch]
            arr = (self.lib.llama_token * len(chunk))(*chunk)
            rc = self.lib.llama_decode(self.ctx, self.lib.llama_batch_get_one(arr, len(chunk)))
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
        logits = np.ctypeslib.as_array(
            self.lib.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,)
        )
        return int(np.argmax(logits))

    def prefill(self, ids: List[int]) -> float:
        self._clear()
        t0 = time.perf_counter()
        self._feed(ids)
        return time.perf_counter() - t0

    def generate(self, ids: List[int], new_tokens: int) -> Tuple[List[int], float]:
        """Greedy: the first token from the prompt's forward, then new_tokens - 1 timed steps;
        (tokens, seconds per step)."""
        self._clear()
        tokens = [self._feed(ids)]
        t0 = time.perf_counter()
        for _ in range(new_tokens - 1):
            tokens.append(self._feed([tokens[-1]]))
        return tokens, (time.perf_counter() - t0) / max(new_tokens - 1, 1)

    def close(self) -> None:
        self.llm.close() if hasattr(self.llm, "close") else None
