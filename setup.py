"""Build: the C++ engine (pybind11, its own thread pool, one translation unit per instruction set,
each with its own flags), the Cython DNA module and, when nvcc is found, the CUDA engine
(a separate module, basenji2_fast._cuda). Metadata lives in pyproject.toml.

BASENJI2_FAST_CUDA=auto (default: build the CUDA module when nvcc is found) | 1 (build it or
fail) | 0 (skip it). BASENJI2_FAST_CUDA_EMULATOR=1|0 (default 1) also builds basenji2_fast._cuda_emu: the CUDA engine's
own source compiled for the CPU emulator of csrc/cuda/emulator.h (host compiler only), which
the tests run where no GPU is. BASENJI2_FAST_CUDA_ARCHS="80,90" picks the GPU architectures (cubins for
each, plus PTX of the newest for later GPUs). nvcc: $CUDA_HOME/bin/nvcc, else the one on PATH.

BASENJI2_FAST_SANITIZE=1 builds the engine and the CUDA emulator module with AddressSanitizer +
UndefinedBehaviorSanitizer (-O1, frame pointers, any finding aborts); the CUDA module is then
skipped unless BASENJI2_FAST_CUDA=1. For tests only: build it into a separate folder
(`python setup.py build_ext -f -b DIR -t DIR/build`) and run Python with the ASan runtime
preloaded, as .ci/run does.
"""
import glob
import os
import shutil
import subprocess

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
# Sources of the engine with flags of their own, on every architecture. The backward pass's
# elementwise loops (GELU' with its clamps, max-pool selection) vectorise only when float
# compares may be executed speculatively: -fno-trapping-math changes no value, only the
# assumption that a compare could trap.
SOURCE_FLAGS = {"csrc/engine/backward.cpp": ["-fno-trapping-math"]}


CUDA_MODE = os.environ.get("BASENJI2_FAST_CUDA", "auto").strip().lower()
if CUDA_MODE not in ("auto", "1", "0"):
    raise SystemExit(f"BASENJI2_FAST_CUDA={CUDA_MODE!r}: expected auto, 1 or 0")
SANITIZE = os.environ.get("BASENJI2_FAST_SANITIZE", "0").strip() == "1"
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
CUDA_ARCHS = [a.strip() for a in os.environ.get("BASENJI2_FAST_CUDA_ARCHS", "80,90").split(",") if a.strip()]
CUDA_SOURCES = ["csrc/cuda/cuda_engine.cu"]


def find_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def cuda_home(nvcc):
    # nvcc may be a wrapper script (e.g. /usr/local/bin/nvcc); ask it where its tree is.
    out = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True).stderr
    for line in out.splitlines():
        if "TOP=" in line:
            return os.path.realpath(line.split("TOP=", 1)[1].strip())
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def nvcc_flags():
    flags = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC", "-Icsrc/include", "-Icsrc",
             f'-DB2F_CUDA_ARCHS="{",".join(CUDA_ARCHS)}"']
    for a in CUDA_ARCHS:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    # PTX of the newest architecture too: a later GPU compiles it at load time.
    flags += ["-gencode", f"arch=compute_{CUDA_ARCHS[-1]},code=compute_{CUDA_ARCHS[-1]}"]
    return flags


class BuildExt(build_ext):
    """Compiles each ISA's kernels (and SOURCE_FLAGS' sources) with their own flags, then links
    them into _engine; compiles the .cu sources with nvcc and links them (with the static CUDA
    runtime) into _cuda."""

    def build_extension(self, ext):
        if ext.name == "basenji2_fast._cuda":
            self.build_cuda_objects(ext)
        if ext.name == "basenji2_fast._engine":
            objects = []
            for src, flags in {**(ISA_SOURCES if X86 else {}), **SOURCE_FLAGS}.items():
                objects += self.compiler.compile(
                    [src], output_dir=self.build_temp, include_dirs=ext.include_dirs,
                    macros=ext.define_macros, extra_postargs=ext.extra_compile_args + flags)
            ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)

    def build_cuda_objects(self, ext):
        target = self.get_ext_fullpath(ext.name)
        inputs = list(ext.sources) + list(ext.depends) + CUDA_SOURCES
        if (not self.force and os.path.exists(target)
                and max(os.path.getmtime(f) for f in inputs) <= os.path.getmtime(target)):
            return  # up to date (build_ext then skips the link too)
        nvcc = find_nvcc()
        objects = []
        for src in CUDA_SOURCES:
            obj = os.path.join(self.build_temp, "cuda", os.path.basename(src) + ".o")
            os.makedirs(os.path.dirname(obj), exist_ok=True)
            cmd = [nvcc, "-c", src, "-o", obj] + nvcc_flags()
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            objects.append(obj)
        ext.extra_objects = objects


common = ["-O3", "-fno-math-errno"] + (SANITIZE_FLAGS + ["-O1"] if SANITIZE else [])
engine = Pybind11Extension(
    "basenji2_fast._engine",
    sources=["csrc/python/module.cpp", "csrc/engine/engine.cpp", "csrc/engine/incremental.cpp", "csrc/engine/parallel.cpp",
             "csrc/cpu/dispatch.cpp", "csrc/cpu/kernels_generic.cpp", "csrc/cpu/peak.cpp"],
    include_dirs=["csrc/include", "csrc"],
    # every source and header, so that a change in any (the ISA units included) relinks
    depends=sorted(glob.glob("csrc/**/*.h", recursive=True) + glob.glob("csrc/**/*.cpp", recursive=True)),
    define_macros=[("B2F_HAVE_X86_KERNELS", "1")] if X86 else [],
    extra_compile_args=common,
    extra_link_args=["-pthread"] + (SANITIZE_FLAGS if SANITIZE else []),
    cxx_std=17,
)


def cuda_extension():
    """basenji2_fast._cuda, or None when this build skips CUDA."""
    if SANITIZE and CUDA_MODE != "1":
        return None  # its host code would not be sanitized; the emulator module is
    nvcc = find_nvcc() if CUDA_MODE != "0" else None
    if nvcc is None:
        if CUDA_MODE == "1":
            raise SystemExit("BASENJI2_FAST_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
        return None
    home = cuda_home(nvcc)
    libdirs = [d for d in (os.path.join(home, "lib64"), os.path.join(home, "lib")) if os.path.isdir(d)]
    return Pybind11Extension(
        "basenji2_fast._cuda",
        sources=["csrc/cuda/module.cpp"],
        include_dirs=["csrc/include", "csrc"],
        depends=sorted(glob.glob("csrc/cuda/*") + glob.glob("csrc/include/**/*.h", recursive=True) +
                       ["csrc/python/args.h", "csrc/engine/engine.h", "csrc/engine/buffers.h"]),
        library_dirs=libdirs,
        # The runtime linked statically: the module imports without libcudart or a driver,
        # and reports "no usable CUDA device" when asked to compute.
        libraries=["cudart_static", "rt", "pthread", "dl"],
        extra_compile_args=["-O2"],
        cxx_std=17,
    )


def cuda_emulator_extension():
    """basenji2_fast._cuda_emu: the CUDA engine and kernels on the CPU stand-in (tests only)."""
    if os.environ.get("BASENJI2_FAST_CUDA_EMULATOR", "1").strip() == "0":
        return None
    return Pybind11Extension(
        "basenji2_fast._cuda_emu",
        sources=["csrc/cuda/module.cpp", "csrc/cuda/emulator.cpp"],
        include_dirs=["csrc/include", "csrc"],
        depends=sorted(glob.glob("csrc/cuda/*") + glob.glob("csrc/include/**/*.h", recursive=True) +
                       ["csrc/python/args.h", "csrc/engine/engine.h", "csrc/engine/buffers.h"]),
        define_macros=[("B2F_CUDA_EMULATOR", "1"), ("B2F_CUDA_MODULE_NAME", "_cuda_emu"),
                       ("B2F_CUDA_ARCHS", '"emulator"')],
        extra_compile_args=["-O2", "-Wno-unknown-pragmas", "-fno-strict-aliasing"]  # CUDA-style vector casts
        + (SANITIZE_FLAGS + ["-O1"] if SANITIZE else []),
        extra_link_args=SANITIZE_FLAGS if SANITIZE else [],
        cxx_std=17,
    )


def dna_extension():
    from Cython.Build import cythonize

    return cythonize([Extension("basenji2_fast._dna", ["basenji2_fast/_dna.pyx"], extra_compile_args=["-O3"])],
                     compiler_directives={"language_level": 3}, quiet=True)


optional = [e for e in (cuda_extension(), cuda_emulator_extension()) if e is not None]
setup(ext_modules=[engine] + optional + dna_extension(), cmdclass={"build_ext": BuildExt})
