"""Busy neighbours for `fastattention bench e2e --device cpu --busy-neighbour`: CPU-bound
processes (one per two cores, as on a server that is rarely idle) started beside the benchmark,
and the decode speed of each engine measured without and with them, in alternating rounds."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Callable, List, Sequence, Tuple

# A pure-Python spin loop: one core's worth of work, no memory traffic to speak of.
_SPIN = "while True: pass"


def neighbour_count(cores: int | None = None) -> int:
    """One CPU-bound neighbour per two cores (at least one)."""
    return max(1, (cores or os.cpu_count() or 1) // 2)


class Neighbours:
    """`with Neighbours(n):` runs n spinning processes for the duration of the block."""

    def __init__(self, count: int):
        self.count = count
        self.procs: List[subprocess.Popen] = []

    def __enter__(self) -> "Neighbours":
        self.procs = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(self.count)]
        time.sleep(0.3)  # let them reach the run queue
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []


def measure_loaded(
    decoders: Sequence[Callable[[], float]], rounds: int, neighbours: int, settle: float = 0.25
) -> List[Tuple[List[float], List[float]]]:
    """Per decoder (a call returning seconds per decode step): its times without and with
    `neighbours` spinning processes, `rounds` alternating rounds of each."""
    unloaded: List[List[float]] = [[] for _ in decoders]
    loaded: List[List[float]] = [[] for _ in decoders]
    for _ in range(rounds):
        for i, decode in enumerate(decoders):
            time.sleep(settle)
            unloaded[i].append(decode())
        with Neighbours(neighbours):
            for i, decode in enumerate(decoders):
                time.sleep(settle)
                loaded[i].append(decode())
    return list(zip(unloaded, loaded))


def format_loaded_table(
    rows: Sequence[Tuple[str, str, List[float], List[float]]], neighbours: int
) -> str:
    """Markdown: median (min-max) ms/step unloaded and loaded, and the ratio of the medians."""

    def span(xs: List[float]) -> str:
        ms = [x * 1e3 for x in xs]
        return f"{statistics.median(ms):.2f} ({min(ms):.2f}-{max(ms):.2f})"

    lines = [
        f"| engine | weights | decode ms/step idle, median (range) | with {neighbours} busy "
        f"neighbour(s), median (range) | loaded / idle |",
        "|---|---|---:|---:|---:|",
    ]
    for engine, weights, idle, busy in rows:
        ratio = statistics.median(busy) / statistics.median(idle)
        lines.append(f"| {engine} | {weights} | {span(idle)} | {span(busy)} | {ratio:.2f}x |")
    return "\n".join(lines)
