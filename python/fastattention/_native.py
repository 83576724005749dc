"""Loads the compiled core.

The extension links OpenBLAS from the `scipy-openblas32` wheel, whose library is not on the
loader's search path: it is loaded here first (RTLD_GLOBAL), so the extension's dependency on
it resolves to the already-loaded library.
"""

import ctypes
import os


def _preload_openblas() -> None:
    try:
        import scipy_openblas32
    except ImportError:  # built against a system BLAS
        return
    path = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True))
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


# OpenMP's wait policy, read once when the OpenMP runtime loads (with _C below). By default
# libgomp's idle threads spin for a while at every barrier: on an idle machine that saves a few
# microseconds per parallel region, but beside one CPU-bound neighbour per two cores the spinning
# threads take the cores from the thread that has work, and decode got 3-8x slower in our
# measurements (README, "Errors and limits"). Passive waits (sleep at once) held it to
# 1.0-1.8x. Only when the user has not chosen: any of these variables set wins. The variable is
# removed again after loading, so that other libraries (torch's own OpenMP) and child processes
# see the environment as it was.
_OMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _load_core():
    chosen = any(k in os.environ for k in _OMP_WAIT_VARIABLES)
    if not chosen:
        os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        from fastattention import _C
    finally:
        if not chosen:
            del os.environ["OMP_WAIT_POLICY"]
    return _C


_preload_openblas()
_C = _load_core()

WeightFileError = _C.WeightFileError
