"""Build the C++ kernels (``fastsac._core``) through CMake.

Metadata lives in pyproject.toml; this file only drives CMake, in the manner of
pybind/cmake_example. Set ``FASTSAC_DEBUG=1`` for a debug build and
``CMAKE_ARGS`` to pass extra options (e.g. ``-DFASTSAC_OPENMP=OFF``).
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: str = "") -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        ext_fullpath = Path.cwd() / self.get_ext_fullpath(ext.name)
        extdir = ext_fullpath.parent.resolve()
        cfg = "Debug" if os.environ.get("FASTSAC_DEBUG") else "Release"
        import pybind11

        cmake_args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={cfg}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ]
        if "CMAKE_ARGS" in os.environ:
            cmake_args += [a for a in os.environ["CMAKE_ARGS"].split(" ") if a]
        build_args = ["--config", cfg, f"-j{os.cpu_count() or 2}"]
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cmake", ext.sourcedir, *cmake_args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", *build_args], cwd=build_temp, check=True)


setup(ext_modules=[CMakeExtension("fastsac._core")], cmdclass={"build_ext": CMakeBuild})
