"""Build: the C++ engine (pybind11, OpenMP, one translation unit per instruction set,
each with its own flags) and the Cython DNA module. Metadata lives in pyproject.toml."""
import glob
import os

from pybind11.setup_helpers import Pybind11Extension
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ISA_SOURCES = {
    # source: compiler flags of that instruction set (chosen at run time by csrc/cpu/dispatch.cpp)
    "csrc/cpu/kernels_avx512.cpp": ["-mavx512f", "-mfma", "-Wno-maybe-uninitialized"],
    "csrc/cpu/kernels_avx512bf16.cpp": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mfma",
                                        "-Wno-maybe-uninitialized"],
    "csrc/cpu/kernels_avx2.cpp": ["-mavx2", "-mfma"],
}
X86 = os.uname().machine in ("x86_64", "AMD64", "i686")


class BuildExt(build_ext):
    """Compiles each ISA's kernels with its own flags, then links them into _engine."""

    def build_extension(self, ext):
        if ext.name == "basenji2_fast._engine" and X86:
            objects = []
            for src, flags in ISA_SOURCES.items():
                objects += self.compiler.compile(
                    [src], output_dir=self.build_temp, include_dirs=ext.include_dirs,
                    macros=ext.define_macros, extra_postargs=ext.extra_compile_args + flags)
            ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


common = ["-O3", "-fopenmp", "-fno-math-errno"]
engine = Pybind11Extension(
    "basenji2_fast._engine",
    sources=["csrc/python/module.cpp", "csrc/engine/engine.cpp", "csrc/engine/incremental.cpp", "csrc/cpu/dispatch.cpp",
             "csrc/cpu/kernels_generic.cpp"],
    include_dirs=["csrc/include", "csrc"],
    # every source and header, so that a change in any (the ISA units included) relinks
    depends=sorted(glob.glob("csrc/**/*.h", recursive=True) + glob.glob("csrc/**/*.cpp", recursive=True)),
    define_macros=[("B2F_HAVE_X86_KERNELS", "1")] if X86 else [],
    extra_compile_args=common,
    extra_link_args=["-fopenmp"],
    cxx_std=17,
)


def dna_extension():
    from Cython.Build import cythonize

    return cythonize([Extension("basenji2_fast._dna", ["basenji2_fast/_dna.pyx"], extra_compile_args=["-O3"])],
                     compiler_directives={"language_level": 3}, quiet=True)


setup(ext_modules=[engine] + dna_extension(), cmdclass={"build_ext": BuildExt})
