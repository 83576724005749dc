#!/usr/bin/env bash
# One call on the lent GPU machine: build FastAttention with CUDA (every MMA path compiled for the
# local GPU, so the 884 / 1688 numerics are checked there too), run the GPU tests, the bank-conflict
# measurement of the Volta layout and the attention benchmark. Logs go to $OUT (device tool).
#   bash tests/gpu/run_on_device.sh [MODE[,MODE...]]   (default: all)
#   modes: tests (all of tests/gpu), attn-tests (the attention kernel tests only), infer-tests
#   (every other GPU test: kernels, decode, session), sanitize, ncu, profile, bench (attention),
#   spill-cpu (bench spill-cpu, the CPU attention over host KV vs a read loop, on the machine's CPU
#   at each thread count of FA_SPILL_CPU_THREADS, default "1 16"; FA_SPILL_CPU_ARGS, default
#   --quick; set it empty for every shape),
#   decode (bench decode), e2e (bench e2e --device cuda), spill (bench spill), demo256k (bench
#   spill --demo), debug, all (tests sanitize ncu bench), graphs (the decode CUDA graph tests),
#   pangu1 (examples/pangu38b_infer.py on one GPU: FA_PANGU1_ARGS), pytest (the test files in
#   FA_PYTEST_FILES), gemv (bench gemv: FA_GEMV_ARGS), decode-splits (bench decode --step-shapes
#   at each split count of FA_DECODE_SPLITS, default "0 1 2 4 8"; 0 = the heuristic)
#   e2e-cublas: bench e2e with FASTATTN_SMALL_BATCH_GEMV=0 (every linear on cuBLAS).
#   step-profile: bench step-profile (kernel time per decode step, by kernel): FA_STEP_PROFILE_ARGS.
#   serve: bench serve --device cuda --shape 7b, in-flight vs static batching (FA_SERVE_ARGS); needs
#   the serve wheels in .whl/ (tests/gpu/README.md). FA_ALL_IMPLS=0 FA_HEAD_DIMS=128 suffice for it.
#   FA_KEEP_BUILD=1 keeps build/gpu from an earlier call on the same warm machine (incremental).
#   Tensor parallelism (2+ GPUs, e.g. nvidia-h200-x2; the build then needs MPI and NCCL): tp-tests
#   (tests/gpu/test_tp_nccl.py), tp-bench (bench allreduce-overlap sweeps: FA_TP_SWEEP="NAME=ENV
#   ..." runs, FA_TP_BENCH_ARGS), tp-e2e (bench tp-e2e, tp=1 vs tp=2: FA_TP_E2E_MODELS, default
#   llama-7b), pangu (examples/pangu38b_infer.py, full 38B shape at tp=2: FA_PANGU_ARGS)
#   cpp-embed: tests/install_check.sh with DEVICE=cuda on this build (the C++ example against the
#   installed package, its generation on the GPU against transformers).
#   FA_ALL_IMPLS=0 builds only the GPU's native MMA path (faster; 884 / 1688 tests then skip).
#   FA_HEAD_DIMS limits the attention instances (default all: 64;80;96;128;256).
# Needs the wheels the machine lacks in .whl/ (scipy-openblas32, nlohmann-json): see tests/gpu/README.md.
set -uo pipefail
export PYTHONUNBUFFERED=1
what=",${1:-all},"
has() { [[ $what == *",$1,"* || ( $what == ",all," && " tests sanitize ncu bench " == *" $1 "* ) ]]; }
out=${OUT:-/tmp/fa_out}; mkdir -p "$out"
cd "$(dirname "$0")/../.."
root=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$root/python
nvidia-smi --query-gpu=name,compute_cap,memory.total,clocks.sm --format=csv,noheader
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)

# The image's /opt/gcc g++ (also its CUDAHOSTCXX) links libstdc++ statically: a module linked
# with it carries its own C++ runtime, whose iostreams crash formatting a number inside a process
# that already uses the shared one. Build with the system compiler, which links libstdc++.so.
cxx=g++; [[ -x /usr/bin/g++ ]] && cxx=/usr/bin/g++
unset CUDAHOSTCXX
# Tensor-parallel modes need MPI (the system Open MPI) and NCCL (the nvidia-nccl wheel): required.
tp=OFF; [[ $what == *,tp-* || $what == *,pangu,* ]] && tp=ON
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[[ $tp == ON ]] && { which mpirun mpicc; mpirun --version | head -1; nvidia-smi topo -m | head -4; }
t0=$(date +%s)
[[ ${FA_KEEP_BUILD:-0} == 1 && -f build/gpu/build.ninja ]] || rm -rf build/gpu
[[ -f build/gpu/build.ninja ]] || cmake -S . -B build/gpu -G Ninja -DPython3_EXECUTABLE="$(which python3)" \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DFASTATTN_BUILD_PYTHON=ON \
  -DCMAKE_CXX_COMPILER="$cxx" \
  -DFASTATTN_BUILD_TESTS=OFF -DFASTATTN_CUDA=ON -DFASTATTN_MPI=$( [[ $tp == ON ]] && echo ON || echo AUTO) \
  -DFASTATTN_NCCL=$( [[ $tp == ON ]] && echo ON || echo AUTO) -DFASTATTN_CUDA_ARCHS="$cc" \
  -DFASTATTN_CUDA_ALL_IMPLS=${FA_ALL_IMPLS:-1} -DFASTATTN_CUDA_PTXAS_VERBOSE=ON \
  -DFASTATTN_CUDA_HEAD_DIMS="${FA_HEAD_DIMS:-64;80;96;128;256}" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$root/python/fastattention" > "$out/configure.log" 2>&1 \
  || { tail -30 "$out/configure.log"; exit 1; }
cmake --build build/gpu -j"$(nproc)" > "$out/build.log" 2>&1 || { grep -B2 -A10 -m5 "error" "$out/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
# Registers / shared memory / spills per kernel instance.
grep -E "Compiling entry function|Used [0-9]+ registers|spill stores" "$out/build.log" \
  | sed -E 's/.*entry function .(_Z[^ ]*)./\1/' | paste - - - 2>/dev/null | head -60 > "$out/ptxas.txt" || true
python3 -c "import fastattention as f; print('instances:', *f._C.fmha_cuda_instances(), sep='\n  ')"

if has tests; then
  python3 -m pytest tests/gpu -q -p no:cacheprovider 2>&1 | tee "$out/pytest_gpu.log" | tail -40
fi
if has pytest; then
  python3 -m pytest ${FA_PYTEST_FILES:?set FA_PYTEST_FILES} -q -p no:cacheprovider 2>&1 | tee "$out/pytest_files.log" | tail -40
fi
if has gemv; then
  python3 -m fastattention.cli bench gemv ${FA_GEMV_ARGS:-} 2>&1 | tee "$out/bench_gemv.md" | tail -40
fi
if has decode-splits; then
  for s in ${FA_DECODE_SPLITS:-0 1 2 4 8}; do
    python3 -m fastattention.cli bench decode --step-shapes --dtype float16 --num-splits $s 2>&1 \
      | tee "$out/bench_decode_steps_splits$s.md" | tail -12
  done
fi
if has step-profile; then
  python3 -m fastattention.cli bench step-profile --work-dir /tmp/fa_profile ${FA_STEP_PROFILE_ARGS:-} 2>&1 \
    | tee "$out/bench_step_profile.md" | tail -45
fi
if has graphs; then
  python3 -m pytest tests/gpu/test_decode_graphs_cuda.py -v -p no:cacheprovider 2>&1 | tee "$out/pytest_graphs.log" | tail -40
fi
if has attn-tests; then
  python3 -m pytest tests/gpu/test_fmha_cuda.py -q -p no:cacheprovider 2>&1 | tee "$out/pytest_gpu_attn.log" | tail -25
fi
if has infer-tests; then
  python3 -m pytest tests/gpu -q -p no:cacheprovider --ignore tests/gpu/test_fmha_cuda.py \
    2>&1 | tee "$out/pytest_gpu_infer.log" | tail -60
fi
if has tests || has sanitize; then
  # compute-sanitizer on one small case of each path (memcheck and racecheck).
  for tool in memcheck racecheck; do
    for impl in 884 1688 16816; do
      compute-sanitizer --tool $tool --kernel-name kns=fmha_fwd --error-exitcode 9 \
        python3 tests/gpu/small_case.py $impl \
        > "$out/sanitizer_${tool}_${impl}.log" 2>&1
      echo "compute-sanitizer $tool $impl: rc=$? $(grep -c 'ERROR SUMMARY: 0 errors' "$out/sanitizer_${tool}_${impl}.log") clean summaries"
    done
  done
fi
if has debug; then
  g++ --version | head -1; nvcc --version | tail -1
  ldd python/fastattention/_C*.so | grep -E "stdc|gcc_s|gomp|cudart|openblas"
  python3 tests/gpu/bad_input_case.py 2>&1 | tail -20
  cuda-gdb -batch -ex run -ex bt --args python3 tests/gpu/bad_input_case.py > "$out/debug.log" 2>&1
  grep -E "calling|ValueError|SIGSEGV|^#[0-9] " "$out/debug.log" | head -20
fi
if has ncu; then
  for impl in 884 884-plain; do
    ncu --clock-control none --kernel-name regex:fmha_fwd_sm70 --launch-count 1 \
      --metrics l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum,smsp__inst_executed_op_shared_ld.sum,gpu__time_duration.sum \
      python3 tests/gpu/small_case.py $impl 1024 > "$out/ncu_$impl.log" 2>&1
    echo "== ncu $impl"; grep -E "bank_conflicts|wavefronts|inst_executed|duration" "$out/ncu_$impl.log"
  done
fi
if has profile; then
  # Where the 16816 kernel's time goes: warp stalls, pipe utilisation, occupancy.
  ncu --clock-control none --kernel-name regex:fmha_fwd_kernel --launch-count 1 \
    --section WarpStateStats --section ComputeWorkloadAnalysis --section Occupancy \
    --section LaunchStats --section SpeedOfLight \
    python3 tests/gpu/small_case.py 16816 4096 > "$out/ncu_profile_16816.log" 2>&1
  grep -E "Stall|stall|Pipe|Throughput|Occupancy|Registers|Warp Cycles|Issued|Eligible|Duration" "$out/ncu_profile_16816.log" | head -60
fi
if has bench; then
  python3 -m fastattention.cli bench attention --device cuda 2>&1 | tee "$out/bench_attention_cuda.md" | tail -40
fi
if has decode; then
  python3 -m fastattention.cli bench decode 2>&1 | tee "$out/bench_decode.md" | tail -30
fi
if has spill; then
  python3 -m fastattention.cli bench spill --work-dir /tmp/fa_spill ${FA_SPILL_ARGS:-} 2>&1 \
    | tee "$out/bench_spill.md" | tail -30
fi
if has spill-cpu; then  # the host-part CPU attention vs a read loop on this machine's cores (issue 14)
  for n in ${FA_SPILL_CPU_THREADS:-1 16}; do
    python3 -m fastattention.cli bench spill-cpu --threads "$n" ${FA_SPILL_CPU_ARGS---quick} 2>&1 \
      | tee "$out/bench_spill_cpu_threads$n.md" | tail -14
  done
fi
if has demo256k; then
  python3 -m fastattention.cli bench spill --demo --work-dir /tmp/fa_spill ${FA_DEMO_ARGS:-} 2>&1 \
    | tee "$out/demo_256k.md" | tail -30
fi
if has e2e; then
  python3 -m fastattention.cli bench e2e --device cuda --work-dir /tmp/fa_e2e ${FA_E2E_ARGS:-} 2>&1 \
    | tee "$out/bench_e2e_cuda.md" | tail -30
fi
if has e2e-cublas; then  # the same bench with every linear on cuBLAS (no small-batch GEMV)
  FASTATTN_SMALL_BATCH_GEMV=0 python3 -m fastattention.cli bench e2e --device cuda --work-dir /tmp/fa_e2e \
    ${FA_E2E_ARGS:-} 2>&1 | tee "$out/bench_e2e_cuda_cublas.md" | tail -30
fi
if has serve; then
  # The load test of README "bench serve" on the GPU: a Llama-7B-shaped model (random float16
  # weights, 13.5 GB, written once into /tmp/fa_serve and reused by later calls on the same warm
  # machine), in-flight vs static batching of the same 1536 requests. 64 streaming clients, twice
  # the running batch of 32, so that a static batch finds 32 requests waiting when the last one
  # ends; prompts 16-256 tokens, outputs exponential with mean 128 clipped to 8-512 (~124 on
  # average after clipping: ~191K output tokens, ~210K prompt tokens).
  # Time at ~6 ms per decode step (13.5 GB of weights read at ~3 TB/s is 4.5 ms; then the KV and
  # the launches of eager steps), from a step-by-step simulation of both schedules:
  #   in flight: ~30 tokens per step -> ~6,300 steps -> ~40 s; longer if the HTTP side cannot
  #     stream ~5,000 tokens/s (the table's "engine busy" then falls well below 100%);
  #   static: 48 batches of 32, each as long as its longest output (the mean of the largest of 32
  #     draws is ~455 tokens) -> ~22,000 steps -> ~2.2 min.
  # With the model's write (about a minute), two server starts (the weights to the GPU) and the
  # build, about 6 minutes of a 10-minute call; at 8 ms per step about 7. FA_SERVE_ARGS is appended,
  # so its options win (e.g. FA_SERVE_ARGS="--requests 512 --modes inflight,static,reserve").
  python3 -c "import openai, starlette, uvicorn" || {
    echo "serve: openai, starlette and uvicorn must come as wheels in .whl/ (tests/gpu/README.md)"
    exit 1
  }
  python3 -m fastattention.cli bench serve --device cuda --shape 7b --work-dir /tmp/fa_serve \
    --requests 1536 --concurrency 64 --max-batch 32 --step-tokens 256 --prompt-len 16,256 \
    --output-mean 128 --output-len 8,512 --modes inflight,static --json "$out/bench_serve_cuda.json" \
    --server-log-dir "$out" ${FA_SERVE_ARGS:-} 2>&1 | tee "$out/bench_serve_cuda.md" | tail -20
fi
if has tp-tests; then
  python3 -m pytest tests/gpu/test_tp_nccl.py -v -p no:cacheprovider 2>&1 | tee "$out/pytest_tp.log" | tail -15
fi
# A variant "NAME=A,B,...": each A is an environment setting (VAR=value) or a bench option (--x=y).
split_variant() {
  vname=${1%%=*}; venv=(); vargs=()
  local item; for item in $(tr , ' ' <<< "${1#*=}"); do
    if [[ $item == --* ]]; then vargs+=("$item"); else venv+=("$item"); fi
  done
}
if has tp-bench; then
  # One launch per NCCL set-up (read when the communicator starts); --gemm-sms sweeps in-process.
  for run in ${FA_TP_SWEEP:-default=}; do
    split_variant "$run"
    echo "== allreduce-overlap: $vname (${venv[*]} ${vargs[*]})"
    env "${venv[@]}" mpirun -n 2 --bind-to none python3 -m fastattention.cli bench allreduce-overlap \
      --device cuda --json "$out/allreduce_$vname.json" ${FA_TP_BENCH_ARGS:-} "${vargs[@]}" 2>&1 \
      | tee "$out/allreduce_$vname.md" | tail -14
  done
fi
if has tp-e2e; then
  for model in ${FA_TP_E2E_MODELS:-llama-7b}; do
    python3 -m fastattention.cli bench tp-e2e --device cuda --model $model --json /tmp/tp1_$model.json \
      ${FA_TP_E2E_ARGS:-} 2>&1 | tail -12
    for run in ${FA_TP_E2E_VARIANTS:-default=}; do
      split_variant "$run"
      echo "== tp-e2e tp 2: $model $vname (${venv[*]} ${vargs[*]})"
      env "${venv[@]}" mpirun -n 2 --bind-to none python3 -m fastattention.cli bench tp-e2e --device cuda \
        --model $model --baseline /tmp/tp1_$model.json --json "$out/tp_e2e_${model}_$vname.json" \
        ${FA_TP_E2E_ARGS:-} "${vargs[@]}" 2>&1 | tee "$out/tp_e2e_${model}_$vname.md" | tail -12
    done
  done
fi
if has pangu; then
  mpirun -n 2 --bind-to none python3 examples/pangu38b_infer.py --random-weights --device cuda \
    ${FA_PANGU_ARGS:---batch 8 --prompt-len 2048 --new-tokens 32} 2>&1 | tee "$out/pangu_tp2.log" | tail -20
fi
if has pangu1; then
  # The Pangu-38B shape on one GPU (tp 1), cut to fit: FA_PANGU1_ARGS.
  python3 examples/pangu38b_infer.py --random-weights --device cuda \
    ${FA_PANGU1_ARGS:---num-layers 16 --batch 16 --prompt-len 128 --new-tokens 64} 2>&1 | tee "$out/pangu_tp1.log" | tail -12
fi
if has cpp-embed; then
  DEVICE=cuda FASTATTN_JOBS=$(nproc) bash tests/install_check.sh "$root/build/gpu" 2>&1 | tee "$out/install_check_cuda.log" | tail -25
fi
