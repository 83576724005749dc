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


_preload_openblas()

from fastattention import _C  # noqa: E402

WeightFileError = _C.WeightFileError
