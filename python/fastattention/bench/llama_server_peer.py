"""llama.cpp's `llama-server` as a peer of `bench serve` (`--peer llama-server`; issue 20).

The random model the bench serves is written as a Hugging Face checkpoint (the same tensors,
split back into q / k / v and gate / up; write_hf_checkpoint) and converted to GGUF by llama.cpp's
own convert_hf_to_gguf.py at the same precision, as `bench e2e --peer llama.cpp` does
(bench/llama_cpp_peer.py: the script is found the same way, plus beside the llama-server binary
of a llama.cpp build tree). llama-server then runs on 127.0.0.1 (an ephemeral port) with the
same threads as our server, --parallel = our max batch, a context of max batch x the longest
request, continuous batching, tokens per forward pass = our --step-tokens, no prompt cache
(our server has none), and serves the same seeded requests through the same client code
(bench/serve.py). Nothing here is needed by the rest of the bench: without a llama-server
binary or the conversion script the peer is skipped with a message that says which is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

import numpy as np

from fastattention.bench import llama_cpp_peer

PEER = "llama-server"
ENV = "LLAMA_SERVER"  # the binary when --llama-server is not given
BUILD_HINT = (
    "build it from llama.cpp's sources (README, `bench serve`): git clone --depth 1 "
    "https://github.com/ggml-org/llama.cpp && cmake -S llama.cpp -B llama.cpp/build "
    "-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF && cmake --build "
    "llama.cpp/build --target llama-server -j 2; then pass --llama-server "
    "llama.cpp/build/bin/llama-server (or set $LLAMA_SERVER, or put it on PATH)"
)
# Our KV dtype -> llama-server's --cache-type-k / --cache-type-v.
CACHE_TYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
# The model name the bench's client asks for (as it does of our server: --served-model-name).
MODEL_NAME = "bench"
# llama-server's /metrics counters -> the names of our server's (bench/serve.py summarise()).
METRICS = {
    "n_decode_total": "engine_steps_total",
    "prompt_tokens_total": "prompt_tokens_total",
    "tokens_predicted_total": "generated_tokens_total",
}
# Bytes 0x00-0x7F get byte tokens in the GGUF's placeholder vocabulary: every token then
# decodes to whole UTF-8 text, so llama-server streams each token as its own chunk
# (llama_cpp_peer.write_placeholder_tokenizer).
BYTE_TOKENS = 128


class LlamaServerNotFound(FileNotFoundError):
    """No llama-server binary; the message says where it was looked for and how to build one."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--peer",
        choices=[PEER],
        default=None,
        help="CPU: also serve the same requests with llama.cpp's llama-server on the same "
        "weights converted to GGUF (skipped with a message when llama-server or llama.cpp's "
        f"{llama_cpp_peer.SCRIPT} is missing)",
    )
    p.add_argument(
        "--llama-server",
        default=None,
        metavar="PATH",
        help=f"the llama-server binary for --peer {PEER} (default: ${ENV}, else llama-server "
        "on PATH)",
    )
    llama_cpp_peer.add_convert_argument(p, f"--peer {PEER}")
    llama_cpp_peer.add_kv_argument(p)


def check_arguments(args: argparse.Namespace) -> None:
    """ValueError for peer options that contradict the others or name a missing file (checked
    before any model is written)."""
    if args.peer is None:
        for name in ("llama_server", "llama_cpp_convert"):
            if getattr(args, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} needs --peer {PEER}")
        if args.llama_cpp_kv != "float16":
            raise ValueError(f"--llama-cpp-kv needs --peer {PEER}")
        return
    if args.device != "cpu":
        raise ValueError(f"--peer {PEER} is a CPU peer (--device cpu), got --device {args.device}")
    if args.model is not None:
        raise ValueError(
            f"--peer {PEER} serves the random --shape model (written as a GGUF with the same "
            f"weights), not a --model directory"
        )
    if args.llama_server is not None:
        find_llama_server(args.llama_server)
    if args.llama_cpp_convert is not None:
        llama_cpp_peer.find_convert_script(args.llama_cpp_convert)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_llama_server(explicit: Optional[str] = None) -> Path:
    """The llama-server binary: `explicit` (--llama-server) when given, else $LLAMA_SERVER when
    set, else llama-server on PATH. LlamaServerNotFound says what was looked at."""
    for what, value in (("--llama-server", explicit), (f"${ENV}", os.environ.get(ENV))):
        if not value:
            continue
        path = Path(value)
        if not path.exists():
            raise LlamaServerNotFound(f"{what} {value}: no such file; {BUILD_HINT}")
        if not _executable(path):
            raise LlamaServerNotFound(f"{what} {value}: not an executable file")
        return path.resolve()
    on_path = shutil.which(PEER)
    if on_path:
        return Path(on_path).resolve()
    raise LlamaServerNotFound(
        f"llama-server not found: neither --llama-server nor ${ENV} given, and none on PATH; "
        + BUILD_HINT
    )


def convert_script_candidates(server: Path) -> List[Path]:
    """Where llama.cpp's conversion script may be: the source tree above a llama-server built in
    it (build/bin/llama-server), then beside the llama_cpp module (llama_cpp_peer)."""
    near = [parent / llama_cpp_peer.SCRIPT for parent in list(Path(server).parents)[:3]]
    return near + llama_cpp_peer.vendored_candidates()


def server_version(server: Path) -> str:
    """`llama-server --version`'s version line ("version: 1 (0c1e570)"), or why there is none."""
    try:
        res = subprocess.run([str(server), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({type(e).__name__}: {e})"
    found = re.search(r"^version: .*$", res.stdout + res.stderr, re.MULTILINE)
    return found.group(0) if found else f"unknown (--version exited {res.returncode})"


def hf_config_of(cfg: dict) -> dict:
    """The Hugging Face LlamaForCausalLM config.json of our Llama config `cfg` (tp 1); ValueError
    for what a Llama checkpoint cannot hold."""
    from fastattention.bench.random_model import llama_hf_config

    rope = cfg.get("rope") or {}
    wrong = {
        "architecture": (cfg.get("architecture"), "llama"),
        "tp_size": (cfg.get("tp_size"), 1),
        "norm_type": (cfg.get("norm_type"), "rmsnorm"),
        "activation": (cfg.get("activation"), "silu"),
        "gated_ffn": (cfg.get("gated_ffn"), True),
        "qkv_bias": (cfg.get("qkv_bias"), False),
        "o_bias": (cfg.get("o_bias"), False),
        "mlp_bias": (cfg.get("mlp_bias"), False),
        "sliding_window": (cfg.get("sliding_window"), None),
        "rope.style": (rope.get("style"), "neox"),
        "rope.rotary_dim": (rope.get("rotary_dim"), cfg.get("head_dim")),
        "rope.scaling": ((rope.get("scaling") or {}).get("type"), "none"),
    }
    bad = [f"{k} {got!r} (expected {want!r})" for k, (got, want) in wrong.items() if got != want]
    if cfg.get("dtype") not in ("float32", "float16"):
        bad.append(f"dtype {cfg.get('dtype')!r} (expected 'float32' or 'float16')")
    if bad:
        raise ValueError(
            "not a plain Llama model that a Hugging Face checkpoint holds: " + ", ".join(bad)
        )
    hf = llama_hf_config(
        cfg["hidden_size"],
        cfg["num_layers"],
        cfg["num_heads"],
        cfg["num_kv_heads"],
        cfg["intermediate_size"],
        cfg["vocab_size"],
        cfg["max_position_embeddings"],
    )
    eos = cfg.get("eos_token_id")
    hf.update(
        head_dim=cfg["head_dim"],
        rms_norm_eps=cfg["norm_eps"],
        rope_theta=rope["theta"],
        tie_word_embeddings=bool(cfg["tie_word_embeddings"]),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=eos[0] if isinstance(eos, list) and len(eos) == 1 else eos,
        torch_dtype=cfg["dtype"],
    )
    return hf


def write_hf_checkpoint(model_dir: str, out_dir: str) -> dict:
    """Writes our exported Llama model (tp 1, float32 or float16) as a Hugging Face checkpoint:
    config.json and model.safetensors with the same tensors, the fused QKV rows split back into
    q / k / v and the fused gate / up rows into gate / up (the exporter's layout, reversed:
    export.model_writer). Returns the config.json written."""
    from safetensors.numpy import save_file

    from fastattention.export import hf_config as hfmap
    from fastattention.export.format import read_tensor

    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    hf = hf_config_of(cfg)

    def tensor(name):
        return read_tensor(os.path.join(model_dir, "rank0", name + ".fat"), mmap=True)

    q_rows = cfg["num_heads"] * cfg["head_dim"]
    kv_rows = cfg["num_kv_heads"] * cfg["head_dim"]
    inter = cfg["intermediate_size"]
    out = {hfmap.EMBED: tensor("embed.weight")}
    for i in range(cfg["num_layers"]):
        n, p = hfmap.layer_names(i), f"layers.{i}."
        qkv = tensor(p + "attn.qkv.weight")
        gate_up = tensor(p + "ffn.gate_up.weight")
        out.update(
            {
                n["attn_norm"]: tensor(p + "attn_norm.weight"),
                n["q"]: qkv[:q_rows],
                n["k"]: qkv[q_rows : q_rows + kv_rows],
                n["v"]: qkv[q_rows + kv_rows :],
                n["o"]: tensor(p + "attn.o.weight"),
                n["ffn_norm"]: tensor(p + "ffn_norm.weight"),
                n["gate"]: gate_up[:inter],
                n["up"]: gate_up[inter:],
                n["down"]: tensor(p + "ffn.down.weight"),
            }
        )
    out[hfmap.FINAL_NORM] = tensor("final_norm.weight")
    if not cfg["tie_word_embeddings"]:
        out[hfmap.LM_HEAD] = tensor("lm_head.weight")
    os.makedirs(out_dir, exist_ok=True)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in out.items()},
        os.path.join(out_dir, "model.safetensors"),
        metadata={"format": "pt"},
    )
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf, f, indent=2)
    return hf


def write_gguf(model_dir: str, gguf_path: str, script: Path, scratch: str) -> str:
    """Our model at `model_dir` as a GGUF at `gguf_path`, at its own precision: a Hugging Face
    checkpoint of it in `scratch` (write_hf_checkpoint) with a placeholder vocabulary
    (BYTE_TOKENS), converted by llama.cpp's `script`."""
    hf = write_hf_checkpoint(model_dir, os.path.join(scratch, "hf"))
    src = llama_cpp_peer.conversion_source(
        os.path.join(scratch, "hf"), os.path.join(scratch, "gguf-src"), BYTE_TOKENS
    )
    return llama_cpp_peer.convert_to_gguf(src, gguf_path, hf["torch_dtype"], script)


def server_command(
    server: Path, gguf_path: str, args: argparse.Namespace, max_seq_len: int
) -> List[str]:
    """llama-server's command line for the bench's settings (on 127.0.0.1, an ephemeral port):
    the threads of our server (--threads, else every CPU this process may run on, as our
    server's OpenMP default), one slot per sequence of our running batch, each slot's context the
    longest request (+1: llama-server stops a slot one token before its context is full), tokens
    per forward pass = --step-tokens, --llama-cpp-kv's KV cache, flash attention on (llama.cpp's
    default on the CPU, 'auto'), no prompt cache (ours has none), /metrics on."""
    threads = args.threads or len(os.sched_getaffinity(0))
    kv = CACHE_TYPES["float32" if args.llama_cpp_kv == "same" else args.llama_cpp_kv]
    return [
        str(server),
        "--model",
        gguf_path,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--alias",
        MODEL_NAME,
        "--threads",
        str(threads),
        "--threads-batch",
        str(threads),
        "--parallel",
        str(args.max_batch),
        "--cont-batching",
        "--ctx-size",
        str(args.max_batch * (max_seq_len + 1)),
        "--batch-size",
        str(args.step_tokens),
        "--ubatch-size",
        str(args.step_tokens),
        "--flash-attn",
        "on",
        "--cache-type-k",
        kv,
        "--cache-type-v",
        kv,
        "--no-cache-prompt",
        "--cache-ram",
        "0",
        "--metrics",
        "--no-webui",
    ]


# llama-server's line once it listens (server.cpp: "main: listening on http://127.0.0.1:PORT").
LISTENING = r"listening on http://127\.0\.0\.1:(\d+)"


def engine_metrics(text: str) -> dict:
    """llama-server's /metrics text as our server's engine counters (METRICS; llama-server has
    no engine busy time)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("llamacpp:"):
            name, _, value = line[len("llamacpp:") :].partition(" ")
            if name in METRICS:
                out[METRICS[name]] = float(value)
    return out


def logprob_token_ids(choice) -> List[int]:
    """The generated token ids of a llama-server completion asked with logprobs: its
    choices[0].logprobs.content[i].id (llama.cpp's own form, which the openai client keeps as an
    extra field)."""
    content = getattr(choice.logprobs, "content", None) if choice.logprobs is not None else None
    if not isinstance(content, list) or not all(isinstance(c, dict) and "id" in c for c in content):
        raise RuntimeError(
            f"llama-server's completion has no token ids in logprobs.content: {choice!r:.300}"
        )
    return [int(c["id"]) for c in content]


# The correctness probe beside the peer: greedy completions of the first PROBE_PROMPTS prompts,
# PROBE_TOKENS tokens each, by our server and by the peer.
PROBE_PROMPTS, PROBE_TOKENS = 2, 16


def probe(port: int, reqs: list, logprobs: bool) -> list:
    """The probe's completions (not streamed, ignore_eos) through the openai client: their
    texts, or with logprobs (llama-server) their token ids."""
    import openai

    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=3600
    )
    out = []
    for ids, _ in reqs[:PROBE_PROMPTS]:
        extra = {"logprobs": 1} if logprobs else {}
        answer = client.completions.create(
            model="bench",
            prompt=ids,
            max_tokens=PROBE_TOKENS,
            temperature=0,
            extra_body={"ignore_eos": True},
            **extra,
        )
        choice = answer.choices[0]
        out.append(logprob_token_ids(choice) if logprobs else choice.text)
    client.close()
    return out


def word_vocab(model_dir: str) -> dict:
    """The random model's word-level vocabulary (bench/serve_model.py): {" word": id}."""
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)["model"]["vocab"]


def text_token_ids(vocab: dict, text: str) -> list:
    """Token ids of a text the random model's tokenizer decoded: its tokens are distinct words,
    each with one leading space (special tokens decode to nothing and are not seen)."""
    unknown = [word for word in text.split() if " " + word not in vocab]
    if unknown:
        raise RuntimeError(
            f"{unknown[0]!r} is not a word of the bench model's vocabulary: {text!r:.200}"
        )
    return [vocab[" " + word] for word in text.split()]


def agreement(results: list) -> str:
    """How many of the probe's greedy tokens llama-server and our server agree on (from the
    first; RuntimeError when a first token differs: not the same model, or not the same
    prompt)."""
    ours = next((r for r in results if r["mode"] != PEER and "probe_ids" in r))
    peer = next(r for r in results if r["mode"] == PEER)
    counts = []
    for i, (a, b) in enumerate(zip(ours["probe_ids"], peer["probe_ids"])):
        same = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        if same == 0:
            raise RuntimeError(
                f"greedy tokens of prompt {i}: the first differs between {ours['mode']} "
                f"({a[:4]}...) and {PEER} ({b[:4]}...): not the same model"
            )
        counts.append(f"{same}/{PROBE_TOKENS}")
    return (
        f"greedy tokens, {PEER} = {ours['mode']} (from the first, "
        f"{PROBE_PROMPTS} prompts, {PROBE_TOKENS} tokens each): {', '.join(counts)}"
    )
