"""Compiler flags of the Cython backend, in one place (setup.py imports cython_extensions() from here).

Default (portable, what `pip install .` does anywhere):
    -O3 -funroll-loops      the micro-kernel's constant RX x NV loops unrolled, accumulators in registers
    -fopenmp                threads over the batch (prange); dropped if the compiler rejects it
    -std=gnu11              GNU C: vector extensions, and gcc's default -ffp-contract=fast (a*b+c -> FMA)
  No -ffast-math (it would allow reassociation and flush NaN handling beyond the tolerances), no -march:
  on x86-64 conv_kernel.h compiles its kernel twice (baseline and target("avx2,fma")) and picks one at
  run time, so the wheel runs on any x86-64 and still uses AVX2/FMA where the CPU has them.
Environment (what each does, and the Jetson Nano route: kernels/README.md, "Building"):
    AGEGENDER_NATIVE=1 (-march/-mcpu=native), AGEGENDER_CFLAGS="..." (appended), AGEGENDER_NO_OPENMP=1
"""
import os
import platform
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

BASE_FLAGS = ["-O3", "-funroll-loops", "-std=gnu11", "-fno-strict-aliasing", "-Wno-psabi"]


def native_flags():
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64", "armv8l"):
        return ["-mcpu=native"]
    if machine in ("x86_64", "amd64", "i686", "x86"):
        return ["-march=native"]
    return []


def openmp_works(compiler="cc"):
    """True if the C compiler links a tiny OpenMP program (gcc does; Apple clang without libomp does not)."""
    if os.environ.get("AGEGENDER_NO_OPENMP") == "1":
        return False
    cc = os.environ.get("CC", compiler)
    if shutil.which(cc.split()[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        try:
            result = subprocess.run(cc.split() + ["-fopenmp", src, "-o", os.path.join(tmp, "omp")],
                                    capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0


def compile_flags():
    """(extra_compile_args, extra_link_args) for this build."""
    cflags, ldflags = list(BASE_FLAGS), []
    if os.environ.get("AGEGENDER_NATIVE") == "1":
        cflags += native_flags()
    cflags += os.environ.get("AGEGENDER_CFLAGS", "").split()
    if openmp_works():
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    return cflags, ldflags


def cython_extensions():
    """The setuptools Extension list of the Cython backend (raises ImportError without Cython)."""
    from Cython.Build import cythonize
    from setuptools import Extension
    import numpy  # noqa: F401  (the extension uses typed memoryviews only, no numpy headers)

    cflags, ldflags = compile_flags()
    ext = Extension("kernels._cython_kernels", [os.path.join("kernels", "_cython_kernels.pyx")],
                    include_dirs=[HERE], extra_compile_args=cflags, extra_link_args=ldflags,
                    depends=[os.path.join("kernels", "conv_kernel.h")])
    sys.stderr.write(f"kernels: building the Cython backend with {' '.join(cflags)}\n")
    return cythonize([ext], language_level=3, quiet=True)
