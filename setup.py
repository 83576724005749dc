"""Builds the C++ core and the pybind11 extension `fastattention._C` through CMake.

`pip install .` runs this. Environment knobs:
  FASTATTN_BUILD_DIR   CMake build directory (default build/py<major><minor>, e.g. build/py311),
                       reused between builds
  FASTATTN_CMAKE_ARGS  extra CMake arguments, e.g. "-DFASTATTN_NATIVE=OFF"
  FASTATTN_JOBS        parallel build jobs (default: all cores)
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
MPI_SHIM = "libfastattn_mpi.so"  # tensor parallelism over MPI, loaded at run time when present


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        tag = f"py{sys.version_info.major}{sys.version_info.minor}"
        build_dir = Path(os.environ.get("FASTATTN_BUILD_DIR", ROOT / "build" / tag))
        build_dir.mkdir(parents=True, exist_ok=True)
        import pybind11

        args = [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build_dir),
            "-G",
            "Ninja",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            "-DFASTATTN_BUILD_PYTHON=ON",
            "-DFASTATTN_BUILD_TESTS=OFF",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        args += shlex.split(os.environ.get("FASTATTN_CMAKE_ARGS", ""))
        subprocess.check_call(args)
        jobs = os.environ.get("FASTATTN_JOBS", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", "--build", str(build_dir), "--target", "_C", "-j", jobs])
        # A build with MPI also writes the MPI shim beside the extension (cmake/FastAttnMpi.cmake).

    def _shim_paths(self):
        """(built, in-source) paths of the MPI shim for each extension."""
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
            yield (
                os.path.join(os.path.dirname(regular_file), MPI_SHIM),
                os.path.join(os.path.dirname(inplace_file), MPI_SHIM),
            )

    def copy_extensions_to_source(self) -> None:
        # Editable installs: setuptools copies the extension itself; the shim goes with it.
        super().copy_extensions_to_source()
        for built, inplace in self._shim_paths():
            if os.path.exists(built):
                self.copy_file(built, inplace, level=self.verbose)
            elif os.path.exists(inplace):
                os.remove(inplace)

    def get_outputs(self):
        outputs = super().get_outputs()
        if not self.inplace:
            outputs += [b for b, _ in self._shim_paths() if os.path.exists(b)]
        return outputs


setup(
    ext_modules=[CMakeExtension("fastattention._C")],
    cmdclass={"build_ext": CMakeBuild},
)
