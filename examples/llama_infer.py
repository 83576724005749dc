"""Llama inference on the CPU with FastAttention, end to end.

    python examples/llama_infer.py                   # a small random-initialised Llama (seconds)
    python examples/llama_infer.py --hf HF_DIR       # a Hugging Face checkpoint (exported first)
    python examples/llama_infer.py --model DIR       # an already-exported model (fastattention export)

With no arguments it builds a small Llama-shaped model with seeded random weights (4 layers,
hidden 384, 6 heads with 2 KV heads (GQA), vocab 32000), saves it as a Hugging Face checkpoint
(config.json + model.safetensors) in the cache dir, exports it to the FastAttention format
(docs/FORMAT.md) with export_hf, loads a Session, generates greedily for a batch of prompts of
different lengths, and prints the new token ids with the prefill and decode speed.

The default model is built with transformers (LlamaForCausalLM) when torch and transformers are
installed, else directly with numpy + safetensors, so the example needs only `pip install .`.
Random weights make the generated ids meaningless; the point is the pipeline and its speed.

Tensor parallelism: run the same command under MPI, one process per rank,

    mpirun -n 2 python examples/llama_infer.py                 # the default model, exported --tp 2
    mpirun -n 2 python examples/llama_infer.py --model DIR     # DIR exported with --tp 2

Rank 0 builds and exports the model (with tp = the number of ranks) while the others wait; every
rank then loads its shard and they generate together; only rank 0 prints.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

DEFAULT_SHAPE = dict(
    vocab_size=32000,
    hidden_size=384,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=2,
    intermediate_size=1024,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    initializer_range=0.02,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)


def cache_root() -> str:
    if os.environ.get("FASTATTENTION_CACHE"):
        return os.environ["FASTATTENTION_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastattention")


def hf_llama_config(shape: dict) -> dict:
    """config.json of a Hugging Face LlamaForCausalLM with the given sizes."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "head_dim": shape["hidden_size"] // shape["num_attention_heads"],
        "rope_scaling": None,
        "torch_dtype": "float32",
        "use_cache": True,
        **shape,
    }


def build_with_numpy(out_dir: str, shape: dict, seed: int) -> None:
    """Writes a Hugging Face Llama checkpoint directly: N(0, initializer_range) linear and
    embedding weights, unit norm weights, as LlamaForCausalLM initialises them."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    std = shape["initializer_range"]
    h, inter, vocab = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    head_dim = h // shape["num_attention_heads"]
    q_out, kv_out = shape["num_attention_heads"] * head_dim, shape["num_key_value_heads"] * head_dim

    def normal(*dims):
        return (rng.standard_normal(dims, dtype=np.float32) * std).astype(np.float32)

    tensors = {"model.embed_tokens.weight": normal(vocab, h)}
    for i in range(shape["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = np.ones(h, np.float32)
        tensors[p + "self_attn.q_proj.weight"] = normal(q_out, h)
        tensors[p + "self_attn.k_proj.weight"] = normal(kv_out, h)
        tensors[p + "self_attn.v_proj.weight"] = normal(kv_out, h)
        tensors[p + "self_attn.o_proj.weight"] = normal(h, q_out)
        tensors[p + "post_attention_layernorm.weight"] = np.ones(h, np.float32)
        tensors[p + "mlp.gate_proj.weight"] = normal(inter, h)
        tensors[p + "mlp.up_proj.weight"] = normal(inter, h)
        tensors[p + "mlp.down_proj.weight"] = normal(h, inter)
    tensors["model.norm.weight"] = np.ones(h, np.float32)
    if not shape["tie_word_embeddings"]:
        tensors["lm_head.weight"] = normal(vocab, h)
    # format=pt: transformers refuses safetensors files without it.
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_llama_config(shape), f, indent=2)


def build_with_transformers(out_dir: str, shape: dict, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        **{k: v for k, v in shape.items() if k != "rope_theta"},
        rope_parameters={"rope_type": "default", "rope_theta": shape["rope_theta"]},
    )
    LlamaForCausalLM(config).eval().save_pretrained(out_dir)


def pick_builder(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return "numpy"
    return "transformers"


def default_checkpoint(builder: str, seed: int) -> str:
    """The default model's HF checkpoint, built once into the cache dir (atomically)."""
    root = cache_root()
    path = os.path.join(root, f"default-llama-{builder}-seed{seed}")
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".building-", dir=root)
    t0 = time.perf_counter()
    try:
        (build_with_transformers if builder == "transformers" else build_with_numpy)(
            tmp, DEFAULT_SHAPE, seed
        )
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"built the default model with {builder} in {time.perf_counter() - t0:.1f} s: {path}")
    return path


def make_prompts(batch: int, prompt_len: int, vocab_size: int, bos: int, seed: int):
    """`batch` prompts of lengths prompt_len, prompt_len - 3, ... (at least 1), starting with BOS."""
    rng = np.random.default_rng(seed + 1)
    prompts = []
    for i in range(batch):
        n = max(prompt_len - 3 * i, 1)
        ids = rng.integers(3, vocab_size, size=n).tolist()
        ids[0] = bos
        prompts.append(ids)
    return prompts


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--hf", metavar="DIR", help="Hugging Face checkpoint to export and run")
    src.add_argument("--model", metavar="DIR", help="already-exported FastAttention model")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="keep the export here (default: the cache dir "
        "for the default model, a temp dir for --hf)",
    )
    p.add_argument(
        "--dtype",
        choices=["float16", "bfloat16", "float32"],
        default="bfloat16",
        help="weight dtype of the export (default bfloat16)",
    )
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=4, help="number of prompts (default 4)")
    p.add_argument("--prompt-len", type=int, default=64, help="longest prompt (default 64)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="weights and prompts seed")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument(
        "--builder",
        choices=["auto", "transformers", "numpy"],
        default="auto",
        help="how the default model is built (auto: transformers if installed)",
    )
    p.add_argument(
        "--no-tp-overlap",
        action="store_true",
        help="under mpirun: one GEMM then one all-reduce (no tiling-AllReduce)",
    )
    p.add_argument(
        "--tp-tiles",
        type=int,
        default=None,
        help="under mpirun: row tiles of the tiling-AllReduce (default: from the token count)",
    )
    args = p.parse_args(argv)
    for name in ("max_new_tokens", "batch", "prompt_len"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.threads is not None and args.threads <= 0:
        p.error("--threads must be positive")
    if args.tp_tiles is not None and args.tp_tiles <= 0:
        p.error("--tp-tiles must be positive")
    return args


def export_once(args, world: int, is_main: bool):
    """The model directory to load: exported by rank 0 (tp = the number of ranks) while the other
    ranks wait. Returns (model_dir, temporary directory to clean up or None)."""
    from fastattention import distributed
    from fastattention.export import export_hf

    if args.model:
        return args.model, None
    tmp = None
    model_dir = args.out
    if is_main:
        hf_dir = args.hf or default_checkpoint(pick_builder(args.builder), args.seed)
        if model_dir is None and args.hf:
            tmp = tempfile.TemporaryDirectory(prefix="fastattention-export-")
            model_dir = tmp.name
        elif model_dir is None:
            model_dir = f"{hf_dir}-export-{args.dtype}" + (f"-tp{world}" if world > 1 else "")
        t0 = time.perf_counter()
        export_hf(hf_dir, model_dir, tp=world, dtype=args.dtype, progress=False)
        print(
            f"exported {hf_dir} -> {model_dir} ({args.dtype}"
            + (f", tp {world}" if world > 1 else "")
            + f") in {time.perf_counter() - t0:.1f} s"
        )
    if world > 1:
        # The other ranks learn the directory from rank 0 (a temp dir name is rank 0's choice).
        model_dir = distributed.broadcast_str(model_dir)
    return model_dir, tmp


def main(argv=None) -> int:
    args = parse_args(argv)
    from fastattention import distributed
    from fastattention.session import Session

    distributed.abort_on_error()  # under mpirun: a failing rank ends the job, none waits for it
    world = distributed.world_size()
    is_main = distributed.is_main()
    say = print if is_main else (lambda *a, **k: None)
    tmp = None
    try:
        model_dir, tmp = export_once(args, world, is_main)
        t0 = time.perf_counter()
        session = Session(
            model_dir,
            num_threads=args.threads,
            max_batch=args.batch,
            tp_overlap=not args.no_tp_overlap,
            tp_tiles=args.tp_tiles,
        )
        cfg = session.config
        tp_note = (
            f", tensor parallel over {session.world_size} ranks" if session.world_size > 1 else ""
        )
        say(
            f"loaded in {time.perf_counter() - t0:.2f} s: {cfg.get('architecture')}, "
            f"{cfg.get('num_layers')} layers, hidden {cfg.get('hidden_size')}, "
            f"{cfg.get('num_heads')} heads / {cfg.get('num_kv_heads')} KV heads, vocab "
            f"{cfg.get('vocab_size')}, weights {cfg.get('dtype')}{tp_note}"
        )

        bos = cfg.get("bos_token_id")
        prompts = make_prompts(
            args.batch,
            args.prompt_len,
            int(cfg["vocab_size"]),
            1 if bos is None else int(bos),
            args.seed,
        )
        outputs = session.generate(
            prompts, args.max_new_tokens, temperature=args.temperature, seed=args.seed
        )
        for i, (prompt, out) in enumerate(zip(prompts, outputs)):
            say(
                f"[{i}] prompt {len(prompt)} tokens -> {len(out)} new: "
                f"{' '.join(str(int(t)) for t in out)}"
            )
        t = session.timings
        say(
            f"prefill: {t['prefill_tokens']} tokens in {t['prefill_seconds']:.3f} s = "
            f"{t['prefill_tokens_per_s']:.0f} tokens/s"
        )
        say(
            f"decode:  {t['decode_steps']} steps (batch {len(prompts)}) in "
            f"{t['decode_seconds']:.3f} s = {t['decode_ms_per_step']:.2f} ms/step"
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


def run(argv=None) -> int:
    """main() with the runtime's errors (which name the file or option at fault) printed plainly."""
    try:
        return main(argv)
    except (ValueError, MemoryError, OSError) as e:
        print(f"llama_infer: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
