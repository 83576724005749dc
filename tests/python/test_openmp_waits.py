"""Busy machines (issue 17 item 12): importing fastattention makes OpenMP's idle threads wait
passively unless the user chose a policy, and leaves the environment as it found it.

libgomp prints its settings at start-up with OMP_DISPLAY_ENV=verbose, among them GOMP_SPINCOUNT,
the spins before an idle thread sleeps (300000 by default, 0 when passive): that is what is
checked (the
speed itself, idle vs beside busy neighbours, is measured by `fastattention bench e2e --device
cpu --busy-neighbour`; README)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cli_helpers import QUICK_CPU_E2E, run_cli


def _import_with(env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(OMP_DISPLAY_ENV="verbose", **env_extra)
    code = (
        "import os, fastattention; "
        "print('after:', os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def _spin_count(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.strip().startswith("GOMP_SPINCOUNT"):
            return line.split("=", 1)[1].strip().strip("'")
    pytest.skip("the OpenMP runtime does not print GOMP_SPINCOUNT (not libgomp)")


def test_default_is_passive_and_environment_is_restored():
    res = _import_with({})
    assert res.returncode == 0, res.stderr
    assert _spin_count(res.stderr) == "0"  # libgomp's default is 300000 spins
    assert "after: None None" in res.stdout


@pytest.mark.parametrize(
    "extra, spins",
    [({"OMP_WAIT_POLICY": "active"}, None), ({"GOMP_SPINCOUNT": "100000"}, "100000")],
)
def test_the_users_choice_wins(extra, spins):
    res = _import_with(extra)
    assert res.returncode == 0, res.stderr
    if spins is None:
        assert "OMP_WAIT_POLICY = 'ACTIVE'" in res.stderr
    else:
        assert _spin_count(res.stderr) == spins
    name, value = next(iter(extra.items()))
    assert (
        f"after: {value if name == 'OMP_WAIT_POLICY' else None} "
        f"{value if name == 'GOMP_SPINCOUNT' else None}" in res.stdout
    )


def test_neighbours_spin_and_are_stopped():
    from fastattention.bench import busy

    assert busy.neighbour_count(2) == 1 and busy.neighbour_count(16) == 8
    with busy.Neighbours(2) as n:
        assert [p.poll() for p in n.procs] == [None, None]  # running
        procs = list(n.procs)
    assert all(p.poll() is not None for p in procs)


def test_bench_e2e_busy_neighbour_quick():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    args = ["--dtypes", "float32", "--busy-neighbour", "--repeats", 2]
    res = run_cli(*QUICK_CPU_E2E, *args, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [
        line
        for line in res.stdout.splitlines()
        if line.startswith(("| transformers | float32 | ", "| fastattention | float32 | "))
        and line.endswith("x |")
        and "(" in line
    ]
    assert len(rows) == 2, res.stdout  # idle / loaded medians with ranges, per engine
