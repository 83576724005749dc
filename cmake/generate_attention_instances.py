#!/usr/bin/env python3
"""Generates the CUDA attention kernel instances, both kinds from one list of head dims:

  FlashAttention-2 (prefill): one .cu file per (MMA path, head dim, dtype);
  split-KV decode:            one .cu file per (head dim, dtype), holding its row tiles;

so builds run in parallel and FASTATTN_CUDA_HEAD_DIMS narrows both. Also writes the one registry
table (attention_registry_table.cc, read through kernels/cuda/attention/attention_registry.h)
that lists every instance with the kernel it belongs to and the SASS targets it was compiled for
(its arch field: the run-time dispatcher runs an instance only on a GPU that one of them runs
on), and a manifest telling CMake which targets each file is compiled for.

  native mode (default): each MMA path is compiled for the architectures it is native to
    (884 -> sm_70, 1688 -> sm_75, 16816 -> sm_80 and later) among those requested;
  --all-impls: each MMA path for every requested architecture that can run it, so one GPU
    (e.g. an sm_90 test machine) can check the numerics of all three paths.
The decode kernel is compiled for every requested architecture; its cp.async copy path is
registered for sm_80 and later only.
"""

import argparse
import os

GENERATOR = "cmake/generate_attention_instances.py"

# MMA path -> (lowest compute capability that runs it, compute capabilities it is native to)
IMPLS = {
    "884": (70, range(70, 75)),
    "1688": (75, range(75, 80)),
    "16816": (80, range(80, 200)),
}
MMA_TYPE = {"884": "Mma884", "1688": "Mma1688", "16816": "Mma16816"}
LAUNCH_HEADER = {
    "884": "fastattn/kernels/cuda/attention/fmha/fmha_launch_sm70.cuh",
    "1688": "fastattn/kernels/cuda/attention/fmha/fmha_launch_impl.cuh",
    "16816": "fastattn/kernels/cuda/attention/fmha/fmha_launch_impl.cuh",
}
# dtype -> (CUDA element type, DType enumerator)
DTYPES = {
    "float16": ("__half", "kFloat16"),
    "bfloat16": ("__nv_bfloat16", "kBFloat16"),
    "float32": ("float", "kFloat32"),
}

# The decode kernel's tiling (decode_common.cuh's DecodeTraits) is laid out for these head dims;
# a requested head dim outside them gets FlashAttention-2 instances only.
DECODE_HEAD_DIMS = (64, 80, 96, 128, 256)
DECODE_DTYPES = ("float16", "bfloat16", "float32")
DECODE_ASYNC_MIN_ARCH = 80  # cp.async


def fmha_dtypes(impl):
    return ["float16", "bfloat16"] if impl == "16816" else ["float16"]


def parse_list(text):
    return [x for x in text.replace(",", ";").split(";") if x]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--archs", required=True, help="e.g. 70;75;80;90")
    ap.add_argument("--head-dims", default="64;80;96;128;256")
    ap.add_argument("--impls", default="884;1688;16816")
    ap.add_argument("--all-impls", action="store_true")
    args = ap.parse_args()
    archs = sorted({int(a) for a in parse_list(args.archs)})
    head_dims = [int(d) for d in parse_list(args.head_dims)]
    impls = parse_list(args.impls)
    for d in head_dims:
        if d % 16 or not 16 <= d <= 256:
            raise SystemExit(
                f"FASTATTN_CUDA_HEAD_DIMS: head dim {d} is not a multiple of 16 in 16..256"
            )
    for i in impls:
        if i not in IMPLS:
            raise SystemExit(
                f"FASTATTN_CUDA_IMPLS: unknown MMA implementation '{i}' (known: {', '.join(IMPLS)})"
            )

    files = {}  # file name -> (text, SASS targets)
    rows = []  # registry rows: (AttentionKernel enumerator, head dim, dtype, targets, fmha launcher, decode entries fn)

    for impl in impls:
        lowest, native = IMPLS[impl]
        targets = (
            [a for a in archs if a >= lowest]
            if args.all_impls
            else [a for a in archs if a in native]
        )
        if not targets:
            continue
        for d in head_dims:
            for dt in fmha_dtypes(impl):
                launcher = f"launch_fmha<{MMA_TYPE[impl]}, {DTYPES[dt][0]}, {d}>"
                files[f"fmha_{impl}_hd{d}_{dt}.cu"] = (
                    fmha_text(LAUNCH_HEADER[impl], launcher),
                    targets,
                )
                rows.append((f"kFmha{impl}", d, dt, targets, "&" + launcher, "nullptr"))

    # The plain-layout 884 variant, for the bank-conflict comparison (test builds only).
    if args.all_impls and "884" in impls and 128 in head_dims:
        targets = [a for a in archs if a >= IMPLS["884"][0]]
        launcher = "launch_fmha_sm70<128, false>"
        files["fmha_884plain_hd128_float16.cu"] = (
            fmha_text(LAUNCH_HEADER["884"], launcher),
            targets,
        )
        rows.append(("kFmha884Plain", 128, "float16", targets, "&" + launcher, "nullptr"))

    async_targets = [a for a in archs if a >= DECODE_ASYNC_MIN_ARCH]
    for d in head_dims:
        if d not in DECODE_HEAD_DIMS:
            continue
        for dt in DECODE_DTYPES:
            fn = f"decode_entries_hd{d}_{dt}"
            files[f"decode_hd{d}_{dt}.cu"] = (decode_text(fn, DTYPES[dt], d), archs)
            rows.append(("kDecodeRegStaged", d, dt, archs, "nullptr", "&" + fn))
            if async_targets:
                rows.append(("kDecodeAsync", d, dt, async_targets, "nullptr", "&" + fn))

    os.makedirs(args.out, exist_ok=True)
    for name, (text, _) in files.items():
        write_if_changed(os.path.join(args.out, name), text)
    write_if_changed(os.path.join(args.out, "attention_registry_table.cc"), registry_text(rows))
    write_if_changed(
        os.path.join(args.out, "manifest.txt"),
        "".join(f"{name}|{';'.join(map(str, t))}\n" for name, (_, t) in files.items()),
    )
    for stale in os.listdir(args.out):
        if stale.endswith(".cu") and stale not in files:
            os.remove(os.path.join(args.out, stale))


def fmha_text(header, launcher):
    """A FlashAttention-2 instance file: the explicit instantiation of `launcher` from `header`."""
    return (
        f"// Generated by {GENERATOR}; do not edit.\n"
        f'#include "{header}"\n\n'
        "namespace fastattn::kernels::cuda {\n"
        f"template void {launcher}(const FmhaDeviceParams&, cudaStream_t);\n"
        "}  // namespace fastattn::kernels::cuda\n"
    )


def decode_text(fn, dtype, head_dim):
    """A decode instance file: the split kernels of every row tile of one (head dim, dtype)."""
    ctype, dcode = dtype
    return (
        f"// Generated by {GENERATOR}; do not edit.\n"
        '#include "fastattn/kernels/cuda/attention/decode/decode_instance.cuh"\n\n'
        "namespace fastattn::kernels::cuda {\n"
        f"const DecodeKernelEntry* {fn}(int* n) {{\n"
        f"  return decode::decode_entries<{ctype}, {head_dim}>(DType::{dcode}, n);\n"
        "}\n"
        "}  // namespace fastattn::kernels::cuda\n"
    )


def registry_text(rows):
    lines = [
        f"// Generated by {GENERATOR}; do not edit.",
        "#include <cuda_bf16.h>",
        "#include <cuda_fp16.h>",
        '#include "fastattn/kernels/cuda/attention/attention_registry.h"',
        '#include "fastattn/kernels/cuda/attention/fmha/fmha_launch.h"',
        "",
        "namespace fastattn::kernels::cuda {",
    ]
    # The decode instance files' entry functions (each registered for both copy paths).
    decode_fns = sorted({fn[1:] for *_, fn in rows if fn != "nullptr"})
    lines += [f"const DecodeKernelEntry* {fn}(int* n);" for fn in decode_fns]
    lines += ["", "namespace {", "const AttentionInstance kInstances[] = {"]
    for kernel, d, dt, targets, launch, entries in rows:
        lines.append(
            f'    {{AttentionKernel::{kernel}, {d}, DType::{DTYPES[dt][1]}, "{";".join(map(str, targets))}", '
            f"{launch}, {entries}}},"
        )
    if not rows:
        lines.append('    {AttentionKernel::kNone, 0, DType::kFloat16, "", nullptr, nullptr},')
    lines += [
        "};",
        "}  // namespace",
        "",
        "const AttentionInstance* attention_instance_table(int* n) {",
        f"  *n = {len(rows)};",
        "  return kInstances;",
        "}",
        "}  // namespace fastattn::kernels::cuda",
        "",
    ]
    return "\n".join(lines)


def write_if_changed(path, text):
    if os.path.exists(path) and open(path).read() == text:
        return
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
