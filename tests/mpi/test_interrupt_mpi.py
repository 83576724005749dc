"""Ctrl-C under mpirun (issue 17 item 6): a SIGINT ends a long generate on every rank at the
same step (the signalled ranks raise KeyboardInterrupt, the others return their tokens so far),
and the ranks then generate together again."""

from __future__ import annotations

import json
import pathlib

import pytest

WORKER = pathlib.Path(__file__).resolve().parent / "interrupt_worker.py"


@pytest.mark.parametrize("who", ["rank0", "all"])
def test_sigint_ends_generate_on_every_rank(mpi, who):
    res = mpi.run(2, who, script=WORKER, timeout=120)
    reports = sorted(
        (json.loads(line) for line in res.output.splitlines() if line.startswith("{")),
        key=lambda r: r["rank"],
    )
    assert [r["rank"] for r in reports] == [0, 1], res.output
    for r in reports:
        signalled = who == "all" or r["rank"] == 0
        if signalled:
            assert r["ended"] == "KeyboardInterrupt", res.output
        else:  # stopped with the others at the same step, not after 8000 tokens
            assert r["ended"].startswith("returned") and r["ended"] != "returned 8000 tokens"
        assert r["seconds"] < 10, res.output
    assert reports[0]["again"] == reports[1]["again"]
