#!/usr/bin/env bash
# THE test command: builds and runs the C++ unit tests (ctest), then the Python tests (pytest).
#
#   bash tests/run_all.sh
#
# Run it from a Python environment where the package is installed (`pip install ".[test]"`).
# The C++ tests are built with CMake into build/tests, against the current Python's
# scipy-openblas32 (BLAS) and nlohmann-json wheels, with warnings as errors.
# Environment knobs:
#   PYTHON                      interpreter to use (default: python3 on PATH, else python)
#   FASTATTN_TEST_BUILD_DIR     C++ test build directory (default: <repo>/build/tests)
#   FASTATTN_JOBS               parallel build jobs (default: all cores)
#   FASTATTN_SKIP_CPP=1         skip the C++ part;  FASTATTN_SKIP_PY=1  skip the Python part
#   FASTATTN_SKIP_MPI=1         skip the multi-rank (mpirun) tests
#   FASTATTN_SKIP_INSTALL=1     skip the C++ install / embedding check
# Exits non-zero if any build step or test fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if command -v python3 >/dev/null 2>&1; then PYTHON=python3; else PYTHON=python; fi
fi
BUILD_DIR="${FASTATTN_TEST_BUILD_DIR:-$ROOT/build/tests}"
JOBS="${FASTATTN_JOBS:-$(nproc 2>/dev/null || echo 2)}"

say() { printf '\n=== [run_all] %s\n' "$*"; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }
T_ALL=$(date +%s)

# Build tools: cmake and ninja (pip wheels or system), nlohmann-json and scipy-openblas32 (wheels,
# found through $PYTHON by cmake/FastAttn*.cmake). Missing wheels are installed into the current
# environment; they are the package's build requirements, so `pip install .` already needed them.
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v ninja >/dev/null 2>&1 || missing+=(ninja)
"$PYTHON" -c "import nlohmann_json" >/dev/null 2>&1 || missing+=(nlohmann-json)
"$PYTHON" -c "import scipy_openblas32" >/dev/null 2>&1 || missing+=(scipy-openblas32)
if [[ -z "${FASTATTN_SKIP_CPP:-}" && ${#missing[@]} -gt 0 ]]; then
  say "installing build tools into $("$PYTHON" -c 'import sys; print(sys.prefix)'): ${missing[*]}"
  "$PYTHON" -m pip install -q "${missing[@]}"
  hash -r
fi

if [[ -z "${FASTATTN_SKIP_CPP:-}" ]]; then
  say "C++: configure + build in $BUILD_DIR (-j$JOBS, FASTATTN_WERROR=ON)"
  T=$(date +%s)
  GEN=()
  # An existing build dir keeps its generator; a new one uses Ninja when available.
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi
  cmake -S "$ROOT" -B "$BUILD_DIR" "${GEN[@]}" \
    -DPython3_EXECUTABLE="$(command -v "$PYTHON")" \
    -DFASTATTN_BUILD_TESTS=ON -DFASTATTN_BUILD_PYTHON=OFF -DFASTATTN_WERROR=ON \
    -DCMAKE_BUILD_TYPE=Release
  cmake --build "$BUILD_DIR" -j "$JOBS"
  echo "C++ build: $(elapsed "$T")"

  say "C++: ctest"
  T=$(date +%s)
  (cd "$BUILD_DIR" && ctest --output-on-failure)
  echo "ctest: $(elapsed "$T")"
fi

if [[ -z "${FASTATTN_SKIP_PY:-}" ]]; then
  say "Python: pytest tests/python"
  T=$(date +%s)
  # Run from the repo root: tests import the installed package `fastattention`.
  (cd "$ROOT" && "$PYTHON" -m pytest tests/python -q)
  echo "pytest: $(elapsed "$T")"
fi

if [[ -z "${FASTATTN_SKIP_PY:-}" && -z "${FASTATTN_SKIP_MPI:-}" ]]; then
  # Tensor parallelism: mpirun -n 2 / -n 4 on CPU ranks (skipped, saying why, without mpirun).
  say "Python: pytest tests/mpi (multi-rank, mpirun)"
  T=$(date +%s)
  bash "$ROOT/tests/mpi/run_mpi_tests.sh" -q
  echo "pytest tests/mpi: $(elapsed "$T")"
fi

if [[ -z "${FASTATTN_SKIP_CPP:-}" && -z "${FASTATTN_SKIP_PY:-}" && -z "${FASTATTN_SKIP_INSTALL:-}" ]]; then
  # C++ embedding: cmake --install, then examples/cpp built against the installed package.
  say "C++ embedding: install + examples/cpp (tests/install_check.sh)"
  T=$(date +%s)
  PYTHON="$PYTHON" bash "$ROOT/tests/install_check.sh" "$BUILD_DIR"
  echo "install check: $(elapsed "$T")"
fi

say "all tests passed ($(elapsed "$T_ALL"))"
