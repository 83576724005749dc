#!/usr/bin/env bash
# The decode attention's checks in one call on the lent GPU machine (a quicker sibling of
# run_on_device.sh: only the FlashAttention-2 instances the routing tests need are built).
#   bash tests/gpu/run_decode_on_device.sh [tests|sanitize|ncu|bench|all]   (default: all)
# Needs the wheels the machine lacks in .whl/ (see tests/gpu/README.md). Logs go to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
what=${1:-all}
out=${OUT:-/tmp/fa_out}; mkdir -p "$out"
cd "$(dirname "$0")/../.."
root=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$root/python
nvidia-smi --query-gpu=name,compute_cap,clocks.sm --format=csv,noheader
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
cxx=g++; [[ -x /usr/bin/g++ ]] && cxx=/usr/bin/g++  # see run_on_device.sh
unset CUDAHOSTCXX
t0=$(date +%s)
cmake -S . -B build/gpu-decode -G Ninja -DPython3_EXECUTABLE="$(which python3)" \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DFASTATTN_BUILD_PYTHON=ON \
  -DCMAKE_CXX_COMPILER="$cxx" -DFASTATTN_BUILD_TESTS=OFF -DFASTATTN_CUDA=ON \
  -DFASTATTN_CUDA_ARCHS="$cc" -DFASTATTN_CUDA_HEAD_DIMS=128 -DFASTATTN_CUDA_IMPLS=16816 \
  -DFASTATTN_CUDA_PTXAS_VERBOSE=ON \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$root/python/fastattention" > "$out/configure.log" 2>&1 \
  || { tail -30 "$out/configure.log"; exit 1; }
cmake --build build/gpu-decode -j"$(nproc)" > "$out/build.log" 2>&1 \
  || { grep -B2 -A12 -m5 "error" "$out/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
grep -A3 "entry function '.*decode_split" "$out/build.log" | grep -E "entry|Used|spill" \
  | sed -E 's/.*decode_split_kernelI([^E]*E[^E]*ELi[0-9]+ELi[0-9]+ELb[01]).*/\1/' \
  | paste - - - > "$out/ptxas_decode.txt" || true

if [[ $what == all || $what == tests ]]; then
  python3 -m pytest tests/gpu/test_decode_cuda.py -q --maxfail=20 -p no:cacheprovider 2>&1 \
    | tee "$out/pytest_decode.log" | tail -30
fi
if [[ $what == all || $what == sanitize ]]; then
  for tool in memcheck racecheck; do
    for impl in decode-async decode-regstage; do
      for block in 16 0; do
        compute-sanitizer --tool $tool --kernel-name kns=decode_ --error-exitcode 9 \
          python3 tests/gpu/decode_case.py --impl $impl --block $block > "$out/san_${tool}_${impl}_${block}.log" 2>&1
        echo "compute-sanitizer $tool $impl block $block: rc=$? $(grep -cE 'ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards' "$out/san_${tool}_${impl}_${block}.log") clean summaries"
      done
    done
  done
fi
if [[ $what == all || $what == ncu ]]; then
  # Kernel times and DRAM throughput of the split and merge kernels, per copy path.
  m=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
  for cfg in "--batch 8 --kv 8192 --block 0" "--batch 8 --kv 8192 --block 16" "--batch 1 --kv 131072 --block 16"; do
    for impl in decode-regstage decode-async; do
      echo "== $cfg $impl"
      ncu --clock-control none --kernel-name regex:decode_ --launch-skip 4 --launch-count 2 --metrics $m \
        python3 tests/gpu/decode_case.py --sq 1 --hq 32 --hk 8 --splits 0 --repeat 3 --impl $impl $cfg 2>&1 \
        | grep -E "decode_(split|merge)|duration|throughput" | sed -E 's/\(DecodeDeviceParams\).*//; s/ +/ /g' | paste - - -
    done
  done | tee "$out/ncu_decode.txt"
fi
if [[ $what == all || $what == bench ]]; then
  python3 -m fastattention.cli bench decode 2>&1 | tee "$out/bench_decode.md"
fi
