"""End-to-end GPU benchmark: FastAttention Session vs Hugging Face transformers, same GPU, same run.

    fastattention bench e2e --device cuda [--quick] [--prefill-lens 2048,16384] [--batches 1,16]

A Llama-7B-shaped model (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocab 32000) with
random fp16 weights is built by transformers on the GPU, saved, and exported with our exporter.
Both engines hold their weights on the GPU at once (our session's KV budget is capped by
--gpu-memory-fraction so transformers keeps room). Measured, best of --repeats:

  prefill tokens/s   batch 1, each --prefill-lens prompt (transformers: one forward with the LM
                     head on the last position, as generate() does; ours: the prompt in one
                     prefill chunk plus the first sampled token)
  decode ms/step     each --batches size, --new-tokens greedy steps after a 128-token prompt
                     (transformers: a manual greedy loop over past_key_values, attention
                     "sdpa" and "eager", the faster reported), ours with the decode step as a
                     CUDA graph (the default) and eagerly (cuda_graphs=False, a second session
                     loaded after the first is freed)
  step bound         (weight bytes read per step + KV bytes read per step) / the device-to-device
                     copy bandwidth measured in the same run (bytes read + written per second),
                     and each decode figure's ratio to it. Weights read per step: all but the
                     embedding table (a step gathers B rows of it); KV: every cached token of
                     every sequence at the mean context of the timed steps.

Prints a markdown table with the device name and date.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import tempfile
import time
from typing import Dict, List

import numpy as np

FULL = dict(
    hidden_size=4096,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    intermediate_size=11008,
    vocab_size=32000,
)
QUICK = dict(
    hidden_size=1024,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=8,
    intermediate_size=2816,
    vocab_size=32000,
)


def add_cuda_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prefill-lens",
        default=None,
        help="prefill prompt lengths (default 2048,16384; 512 with --quick)",
    )
    parser.add_argument("--batches", default="1,16", help="decode batch sizes")
    parser.add_argument(
        "--gpu-memory-fraction",
        type=float,
        default=0.55,
        help="our session's share of GPU memory (transformers needs the rest)",
    )
    parser.add_argument(
        "--attn-impls",
        default="sdpa,eager",
        help="transformers attention implementations to time for decode",
    )


def _sync_time(torch, fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def copy_bandwidth(torch, nbytes: int = 1 << 30, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth, bytes read + written per second (best of `repeats`)."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device="cuda").uniform_()
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        best = min(best, _sync_time(torch, lambda: dst.copy_(src)))
    # Not `del`: ruff's F821 misreads a del of names used by a closure above
    # (astral-sh/ruff#9858). Dropping the references frees the memory.
    src = dst = None
    torch.cuda.empty_cache()
    return 2 * nbytes / best


def step_bytes(shape: Dict[str, int], weight_bytes: int, batch: int, context: float) -> float:
    """Bytes a batch-`batch` decode step reads at a mean `context` tokens per sequence (fp16)."""
    H, V = shape["hidden_size"], shape["vocab_size"]
    layers, heads = shape["num_hidden_layers"], shape["num_attention_heads"]
    kv_heads = shape.get("num_key_value_heads", heads)
    head_dim = H // heads
    embedding = V * H * 2
    kv = batch * context * layers * 2 * kv_heads * head_dim * 2
    return weight_bytes - embedding + kv


def _build(torch, hf_dir: str, shape: Dict[str, int], seed: int) -> None:
    import transformers

    cfg = transformers.LlamaConfig(
        **shape,
        max_position_embeddings=32768,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device("cuda"):
            model = transformers.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.save_pretrained(hf_dir)
    del model
    gc.collect()
    torch.cuda.empty_cache()


def build_or_reuse(torch, root: str, shape: Dict[str, int], seed: int) -> tuple:
    """The random-weight HF checkpoint and its export under `root` (hf/, fa/), built unless a
    finished build of the same shape and seed is there already (a stamp written last), so that
    repeated runs with --work-dir skip the minutes of building. Returns (hf_dir, fa_dir)."""
    from fastattention.bench.work_dir import reuse_or_build
    from fastattention.export import export_hf

    hf_dir, fa_dir = os.path.join(root, "hf"), os.path.join(root, "fa")

    def build():
        _build(torch, hf_dir, shape, seed)
        export_hf(hf_dir, fa_dir, tp=1, dtype="float16", progress=False)

    reuse_or_build(os.path.join(root, "built.json"), {"shape": shape, "seed": seed}, build)
    return hf_dir, fa_dir


def _hf_prefill(torch, model, prompt) -> float:
    ids = torch.tensor([prompt], device="cuda")
    with torch.inference_mode():
        return _sync_time(torch, lambda: model(ids, logits_to_keep=1))


def _hf_decode(torch, model, prompts, steps: int):
    """ms per greedy step for a batch of equal-length prompts, and the tokens of row 0."""
    ids = torch.tensor(prompts, device="cuda")
    with torch.inference_mode():
        out = model(ids, use_cache=True, logits_to_keep=1)
        past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        tokens = [int(tok[0, 0])]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            out = model(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(int(tok[0, 0]))  # a host read per step, as a server does
        torch.cuda.synchronize()
        return 1e3 * (time.perf_counter() - t0) / steps, tokens


def _our_decode(sess, batch_prompts, steps: int, repeats: int):
    """Best ms/step and the tokens per batch size (a warm-up call first: graphs get captured)."""
    ms, toks = {}, {}
    for b, prompts in batch_prompts.items():
        sess.generate(prompts, max_new_tokens=4)
        best = float("inf")
        for _ in range(repeats):
            toks[b] = sess.generate(prompts, max_new_tokens=steps + 1)
            best = min(best, sess.timings["decode_ms_per_step"])
        ms[b] = best
    return ms, toks


def run_cuda(args: argparse.Namespace) -> int:
    import torch
    import transformers

    import fastattention
    from fastattention import Session

    if not fastattention.cuda_available():
        raise ValueError("--device cuda: this build has no CUDA kernels or no GPU is visible")
    transformers.utils.logging.disable_progress_bar()
    shape = QUICK if args.quick else FULL
    prefill_lens = [
        int(x) for x in (args.prefill_lens or ("512" if args.quick else "2048,16384")).split(",")
    ]
    batches = [int(x) for x in args.batches.split(",")]
    steps = args.new_tokens or (8 if args.quick else 32)
    repeats = args.repeats or (1 if args.quick else 3)
    rng = np.random.default_rng(args.seed)

    work = (
        tempfile.TemporaryDirectory(prefix="fastattention-e2e-cuda-")
        if args.work_dir is None
        else None
    )
    root = args.work_dir or work.name
    try:
        t0 = time.perf_counter()
        hf_dir, fa_dir = build_or_reuse(torch, root, shape, args.seed)
        print(
            f"model: Llama-shaped {shape}, random fp16 weights; built (or reused) and exported in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )

        rows: List[Dict] = []
        bandwidth = copy_bandwidth(torch)
        print(f"device-to-device copy: {bandwidth / 1e12:.2f} TB/s (read + written)", flush=True)
        impls = args.attn_impls.split(",")
        hf = {
            impl: transformers.LlamaForCausalLM.from_pretrained(
                hf_dir, torch_dtype=torch.float16, attn_implementation=impl
            )
            .cuda()
            .eval()
            for impl in impls[:1]
        }
        sess = Session(
            fa_dir,
            "cuda",
            max_batch=max(batches),
            max_seq_len=max(prefill_lens) + 8,
            prefill_chunk_tokens=max(prefill_lens),
            gpu_memory_fraction=args.gpu_memory_fraction,
            verbose=True,
        )
        print("memory plan:", sess.memory_plan, flush=True)

        for n in prefill_lens:
            prompt = [int(t) for t in rng.integers(3, shape["vocab_size"], size=n)]
            ours = theirs = float("inf")
            for _ in range(repeats):
                sess.generate([prompt], max_new_tokens=1)
                ours = min(ours, sess.timings["prefill_seconds"])
                theirs = min(theirs, _hf_prefill(torch, hf[impls[0]], prompt))
            rows.append(
                dict(
                    what=f"prefill {n} tokens (tok/s)",
                    ours=n / ours,
                    theirs=n / theirs,
                    ratio=theirs / ours,
                    peer=f"transformers {impls[0]}",
                )
            )
            print(rows[-1], flush=True)

        agree = ""
        batch_prompts = {
            b: [[int(t) for t in rng.integers(3, shape["vocab_size"], size=128)] for _ in range(b)]
            for b in batches
        }
        context = 128 + (steps + 1) / 2  # mean cached tokens per sequence over the timed steps
        ours_ms, ours_toks = _our_decode(sess, batch_prompts, steps, repeats)
        print(f"decode graphs: {sess.uses_cuda_graphs} {sess.cuda_graphs_off_reason}", flush=True)
        weight_bytes = sess.weight_bytes
        del sess
        gc.collect()
        eager = Session(
            fa_dir,
            "cuda",
            max_batch=max(batches),
            max_seq_len=max(prefill_lens) + 8,
            prefill_chunk_tokens=max(prefill_lens),
            cuda_graphs=False,
            gpu_memory_fraction=args.gpu_memory_fraction,
        )
        eager_ms, eager_toks = _our_decode(eager, batch_prompts, steps, repeats)
        del eager
        gc.collect()
        for b in batches:
            prompts = batch_prompts[b]
            ours, toks = ours_ms[b], ours_toks[b]
            bound = 1e3 * step_bytes(shape, weight_bytes, b, context) / bandwidth
            rows.append(
                dict(
                    what=f"decode batch {b} step bound (ms)",
                    ours=bound,
                    theirs=float("nan"),
                    ratio=float("nan"),
                    peer="weights + KV at the copy bandwidth",
                )
            )
            rows.append(
                dict(
                    what=f"decode batch {b}, eager (ms/step)",
                    ours=eager_ms[b],
                    theirs=float("nan"),
                    ratio=float("nan"),
                    peer=f"{eager_ms[b] / bound:.2f}x bound; graphs {eager_ms[b] / ours:.2f}x faster; "
                    f"tokens {'equal' if eager_toks[b] == toks else 'DIFFER'}",
                )
            )
            best, best_impl, hf_toks = float("inf"), "", []
            for impl in impls:
                if impl not in hf:
                    for m in hf.values():
                        del m
                    hf.clear()
                    gc.collect()
                    torch.cuda.empty_cache()
                    hf[impl] = (
                        transformers.LlamaForCausalLM.from_pretrained(
                            hf_dir, torch_dtype=torch.float16, attn_implementation=impl
                        )
                        .cuda()
                        .eval()
                    )
                for _ in range(repeats):
                    ms, t = _hf_decode(torch, hf[impl], prompts, steps)
                    if ms < best:
                        best, best_impl, hf_toks = ms, impl, t
            if b == 1:
                same = next(
                    (i for i, (x, y) in enumerate(zip(toks[0], hf_toks)) if x != y), len(hf_toks)
                )
                agree = f"batch-1 greedy tokens identical to transformers for the first {same} of {len(hf_toks)}"
            rows.append(
                dict(
                    what=f"decode batch {b} (ms/step)",
                    ours=ours,
                    theirs=best,
                    ratio=best / ours,
                    peer=f"transformers {best_impl}; ours {ours / bound:.2f}x bound",
                )
            )
            rows.append(
                dict(
                    what=f"decode batch {b} (tokens/s)",
                    ours=1e3 * b / ours,
                    theirs=1e3 * b / best,
                    ratio=best / ours,
                    peer=f"transformers {best_impl}",
                )
            )
            print(rows[-2], flush=True)
    finally:
        if work is not None:
            work.cleanup()

    print()
    print(
        f"{torch.cuda.get_device_name()}, {datetime.date.today().isoformat()}, fp16, "
        f"{shape['num_hidden_layers']} layers x hidden {shape['hidden_size']}; transformers "
        f"{transformers.__version__}, torch {torch.__version__}"
    )

    def num(x, suffix=""):
        return "" if x != x else f"{x:.2f}{suffix}"  # nan: no figure

    print(
        f"copy bandwidth {bandwidth / 1e12:.2f} TB/s; step bound at a mean context of "
        f"{context:.0f} tokens"
    )
    print()
    print("| measurement | FastAttention | transformers | speed-up | peer |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['what']} | {num(r['ours'])} | {num(r['theirs'])} | {num(r['ratio'], 'x')} | {r['peer']} |"
        )
    if agree:
        print()
        print(agree)
    return 0
