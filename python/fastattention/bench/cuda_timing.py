"""CUDA-event timing shared by the GPU benchmarks (attention, decode, gemv)."""

from __future__ import annotations

import itertools
import statistics
import sys
from typing import Callable


def median_ms_per_call(
    fn: Callable[[int], object], repeats: int, calls: int = 1, warmup: int = 3, graph: bool = False
) -> float:
    """The median over `repeats` samples of `calls` back-to-back calls, in ms per call, timed with
    CUDA events on the current stream. fn(n) gets the running count of its calls (warm-up
    included), so a caller can rotate over copies of its inputs (n % copies) and keep them out of
    L2. graph: the `calls` calls are captured once as a CUDA graph and its replay is timed, so
    short kernels are not hidden behind the host's launch time (as in a decode step replayed
    from a graph); a capture that fails falls back to eager timing and says so on stderr."""
    import torch

    counter = itertools.count()

    def call():
        return fn(next(counter))

    def run():
        for _ in range(calls):
            call()

    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    if graph:
        g = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            call()
        torch.cuda.current_stream().wait_stream(side)
        try:
            # Captured on the warm-up stream: per-stream state a kernel sets up on its first call
            # there (the split decode's arrival counters) exists before the capture.
            with torch.cuda.graph(g, stream=side):
                run()
            run = g.replay
        except RuntimeError as e:  # not capturable here: time eagerly and say so
            print(f"(CUDA graph capture failed, timed eagerly: {e})", file=sys.stderr)
            torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)
