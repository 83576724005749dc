"""Builds the C++ core and the pybind11 extension `fastattention._C` through CMake.

`pip install .` runs this. Environment knobs:
  FASTATTN_BUILD_DIR   CMake build directory (default build/py-<python tag>), reused between builds
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
            "cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
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


setup(
    ext_modules=[CMakeExtension("fastattention._C")],
    cmdclass={"build_ext": CMakeBuild},
)
