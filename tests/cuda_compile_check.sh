#!/usr/bin/env bash
# CI check for machines without a GPU: compiles every CUDA attention instance each arch needs and
# checks the SASS uses the intended tensor-core instruction.
#   sm_75 / sm_80 / sm_90 with the system nvcc (CUDA 12/13): 1688 on sm_75, 16816 on sm_80 and sm_90
#   sm_70 with a compile-only CUDA 11.8 assembled by tests/tools/cuda118-compile-only.sh from
#   Debian's non-free nvidia-cuda-toolkit and cu11 wheels (CUDA 13 dropped Volta): 884
# Skips (exit 0, saying so) where no nvcc is installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
JOBS="${FASTATTN_JOBS:-$(nproc)}"
say() { printf '\n=== [cuda_compile_check] %s\n' "$*"; }

configure_build() {  # build_dir nvcc archs impls [extra cmake args...]
  local dir=$1 nvcc=$2 archs=$3 impls=$4; shift 4
  cmake -S "$ROOT" -B "$dir" -G Ninja -DPython3_EXECUTABLE="$(command -v "$PYTHON")" \
    -DFASTATTN_BUILD_TESTS=OFF -DFASTATTN_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DFASTATTN_CUDA_ARCHS="$archs" -DFASTATTN_CUDA_IMPLS="$impls" -DFASTATTN_WERROR=ON "$@" > "$dir.configure.log" 2>&1 \
    || { tail -30 "$dir.configure.log"; exit 1; }
  cmake --build "$dir" -j "$JOBS" --target fastattn
}

# expect_sass cuobjdump object arch instruction
expect_sass() {
  local n
  n=$("$1" --dump-sass --gpu-architecture "sm_$3" "$2" 2>/dev/null | grep -c "$4" || true)
  if [[ "$n" -eq 0 ]]; then echo "FAIL: no $4 in the sm_$3 code of $(basename "$2")"; exit 1; fi
  echo "ok: $(basename "$2") sm_$3 has $n $4 instructions"
}

# cuBLAS / NCCL headers and libraries from a PyPI wheel (the system CUDA here has none): pkg,
# folder in it.
wheel_root() {
  local dir="$ROOT/build/cuda-tools/$1"
  [[ -d "$dir/nvidia" ]] || "$PYTHON" -m pip install -q --no-deps --target "$dir" "$1" >&2
  echo "$dir/nvidia/$2"
}

SYS_NVCC=$(command -v nvcc || true)
if [[ -z "$SYS_NVCC" ]]; then
  say "no nvcc on this machine: CUDA compile check skipped"
  exit 0
fi

say "sm_75 / sm_80 / sm_90 with $($SYS_NVCC --version | tail -1)"
T=$(date +%s)
B="$ROOT/build/cuda-check"
# NCCL (the tensor-parallel GPU backend) from its wheel too: FASTATTN_NCCL=ON makes a missing
# NCCL or MPI fail here instead of silently compiling without the backend.
configure_build "$B" "$SYS_NVCC" "75;80;90" "1688;16816" \
  -DFASTATTN_CUBLAS_ROOT="$(wheel_root nvidia-cublas cu13)" \
  -DFASTATTN_NCCL=ON -DFASTATTN_NCCL_ROOT="$(wheel_root nvidia-nccl-cu13 nccl)"
OBJ="$B/CMakeFiles/fastattn.dir/generated/attention"
# The system CUDA may lack cuobjdump / nvdisasm: take CUDA 13's from their PyPI wheels.
CUOBJDUMP=$(command -v cuobjdump || true)
if [[ -z "$CUOBJDUMP" ]] || ! command -v nvdisasm >/dev/null; then
  TOOLS="$ROOT/build/cuda-tools"
  for pkg in nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm; do
    [[ -d "$TOOLS/$pkg" ]] || "$PYTHON" -m pip install -q --target "$TOOLS/$pkg" "$pkg==13.2.*"
  done
  export PATH="$TOOLS/nvidia-cuda-cuobjdump/nvidia/cu13/bin:$TOOLS/nvidia-cuda-nvdisasm/nvidia/cu13/bin:$PATH"
  CUOBJDUMP=$(command -v cuobjdump)
fi
for f in "$OBJ"/fmha_1688_*.cu.o; do expect_sass "$CUOBJDUMP" "$f" 75 "HMMA.1688"; done
for f in "$OBJ"/fmha_16816_*.cu.o; do
  expect_sass "$CUOBJDUMP" "$f" 80 "HMMA.16816"
  expect_sass "$CUOBJDUMP" "$f" 90 "HMMA.16816"
done
echo "took $(( $(date +%s) - T ))s"

say "sm_70 with a compile-only CUDA 11.8"
T=$(date +%s)
CUDA118="${FASTATTN_CUDA118:-/tmp/cuda118}"
if [[ ! -x "$CUDA118/bin/nvcc" ]]; then
  # About 15 s. A download that fails is not a compile failure: say so loudly and stop here.
  if ! bash "$ROOT/tests/tools/cuda118-compile-only.sh" "$CUDA118"; then
    echo "WARNING: could not assemble the CUDA 11.8 toolkit (network?): sm_70 compile check NOT run"
    exit 0
  fi
fi
B70="$ROOT/build/cuda-check-sm70"
configure_build "$B70" "$CUDA118/bin/nvcc" "70" "884" "-DCMAKE_CUDA_FLAGS=-allow-unsupported-compiler -cudart shared" \
  -DFASTATTN_CUBLAS_ROOT="$(wheel_root nvidia-cublas-cu11 cublas)"
for f in "$B70"/CMakeFiles/fastattn.dir/generated/attention/fmha_884_*.cu.o; do
  expect_sass "$CUDA118/bin/cuobjdump" "$f" 70 "HMMA.884"
done
echo "took $(( $(date +%s) - T ))s"
say "CUDA compile check passed"
