"""The `fastattention` command line run as a subprocess, as the CLI tests run it."""

from __future__ import annotations

import subprocess
import sys

# `bench e2e` on the CPU with its quick settings and two threads (callers add --dtypes etc.).
QUICK_CPU_E2E = ("bench", "e2e", "--device", "cpu", "--quick", "--threads", 2)


def run_cli(*args, stdin=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Runs `python -m fastattention.cli ARGS` (each argument str()-ed) with stdout and stderr
    captured as text; stdin: text fed to it; env: its environment (None: this one's)."""
    return subprocess.run(
        [sys.executable, "-m", "fastattention.cli", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
