#!/usr/bin/env bash
# C++ embedding check (CI): the installed package works from another project.
#
#   bash tests/install_check.sh [BUILD_DIR]
#
#  1. configures (if new) and builds the core library in BUILD_DIR (default build/install-check;
#     pass an existing build directory to reuse its objects: only the library target is built);
#  2. `cmake --install BUILD_DIR --prefix TMP/prefix`;
#  3. builds examples/cpp against the installed package (find_package(FastAttention),
#     FastAttention::fastattn) in TMP/example, runs it without a model (fmha_forward on strided
#     [B, H, S, D] buffers against a float64 reference);
#  4. makes a tiny random Llama with transformers, exports it with export_hf (float32), runs the
#     program on it (on the CPU, or DEVICE) and checks its greedy tokens equal transformers'
#     generate();
#  5. checks that a missing model directory is an error naming config.json.
# Needs the Python package importable (pip install ".[test]": torch, transformers) for step 4.
# Environment: PYTHON (default python3, else python), FASTATTN_JOBS (default: all cores),
# DEVICE (cpu, the default, or cuda: with a CUDA build dir given, step 4 runs on the GPU in
# float32), KEEP_TMP=1 keeps the temporary directory. Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$(realpath -m "${1:-$ROOT/build/install-check}")"
if [[ -z "${PYTHON:-}" ]]; then
  if command -v python3 >/dev/null 2>&1; then PYTHON=python3; else PYTHON=python; fi
fi
PYTHON="$(command -v "$PYTHON")"
JOBS="${FASTATTN_JOBS:-$(nproc 2>/dev/null || echo 2)}"
DEVICE="${DEVICE:-cpu}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/fastattn-install-check.XXXXXX")"
if [[ -z "${KEEP_TMP:-}" ]]; then trap 'rm -rf "$TMP"' EXIT; fi
T0=$(date +%s)
say() { printf '=== [install_check %ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
fail() { printf 'install_check: FAILED: %s\n' "$*" >&2; exit 1; }

GEN=()
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi

say "library: configure + build in $BUILD_DIR (-j$JOBS)"
if [[ -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" >/dev/null  # keeps the directory's own options
else
  cmake -S "$ROOT" -B "$BUILD_DIR" "${GEN[@]}" -DPython3_EXECUTABLE="$PYTHON" \
    -DFASTATTN_BUILD_TESTS=OFF -DFASTATTN_BUILD_PYTHON=OFF -DFASTATTN_CUDA=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" --target fastattn -j "$JOBS"

say "install to $TMP/prefix"
cmake --install "$BUILD_DIR" --prefix "$TMP/prefix" --component fastattn >/dev/null
for f in include/fastattn/fastattn.h include/fastattn/version.h include/fastattn/runtime/session.h \
         include/fastattn/kernels/attention/fmha.h lib/libfastattn.a \
         lib/cmake/FastAttention/FastAttentionConfig.cmake \
         lib/cmake/FastAttention/FastAttentionConfigVersion.cmake; do
  [[ -f "$TMP/prefix/$f" ]] || fail "$f is not installed"
done

say "examples/cpp against the installed package"
cmake -S "$ROOT/examples/cpp" -B "$TMP/example" "${GEN[@]}" \
  -DCMAKE_PREFIX_PATH="$TMP/prefix" >/dev/null
cmake --build "$TMP/example" -j "$JOBS"
EXE="$TMP/example/fastattn_embed"
"$EXE" | tee "$TMP/attention.txt"
grep -q -- "-> OK" "$TMP/attention.txt" || fail "the attention check of fastattn_embed did not pass"

say "tiny random Llama: transformers -> export_hf -> fastattn_embed on $DEVICE"
PROMPT_A="3 17 101 5 42 7"
PROMPT_B="250 9"
NEW=10
"$PYTHON" - "$TMP" "$NEW" "$PROMPT_A" "$PROMPT_B" > "$TMP/expected.txt" <<'PY'
import sys
import torch
import transformers
from fastattention.export import export_hf

tmp, new, prompts = sys.argv[1], int(sys.argv[2]), [list(map(int, p.split())) for p in sys.argv[3:]]
transformers.utils.logging.disable_progress_bar()
# head dim 64: a size the CUDA kernels have too (DEVICE=cuda)
cfg = transformers.LlamaConfig(vocab_size=301, hidden_size=128, intermediate_size=192,
                               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                               max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1,
                               eos_token_id=2, tie_word_embeddings=False)
torch.manual_seed(0)
model = transformers.LlamaForCausalLM(cfg).eval()
with torch.no_grad():
    for name, p in model.named_parameters():  # no default ones / zeros: a mapping slip shows
        p.copy_(1.0 + 0.2 * torch.randn(p.shape) if "norm" in name else 0.1 * torch.randn(p.shape))
model.save_pretrained(f"{tmp}/hf")
export_hf(f"{tmp}/hf", f"{tmp}/model", tp=1, dtype="float32", progress=False)
model.generation_config.eos_token_id = None
for i, ids in enumerate(prompts):
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=new,
                             pad_token_id=0,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    print(f"generated[{i}]: " + " ".join(str(t) for t in out[0, len(ids):].tolist()))
PY
"$EXE" "$TMP/model" --prompt "$PROMPT_A" --prompt "$PROMPT_B" --max-new-tokens "$NEW" \
  --threads 2 --device "$DEVICE" | tee "$TMP/run.txt"
grep '^generated\[' "$TMP/run.txt" > "$TMP/got.txt" || true
if ! diff -u "$TMP/expected.txt" "$TMP/got.txt"; then
  fail "fastattn_embed's tokens differ from transformers' greedy generate (expected - / got +)"
fi

say "bad input: a missing model directory"
if "$EXE" "$TMP/no-such-model" > "$TMP/bad.txt" 2>&1; then
  fail "fastattn_embed accepted a missing model directory"
fi
grep -q "no-such-model/config.json" "$TMP/bad.txt" \
  || fail "the error does not name config.json: $(cat "$TMP/bad.txt")"

say "PASSED (C++ embedding: install, find_package, fmha_forward, InferenceSession)"
