"""The Cython backend: refimpl's operations and the whole network on conv_kernel.h via _cython_kernels.pyx.

Strategy: the C micro-kernel of conv_kernel.h (register-blocked direct convolution in NHWC,
GCC vector extensions, AVX2/FMA picked at run time on x86-64, NEON on aarch64), driven by a
Cython executor that runs the whole plan (kernels/plan.py) for one image per OpenMP thread.
Compiled by setup.py with the flags of kernels/build_flags.py (see there, and conv_kernel.h's header, for the
flags relied on and the Jetson Nano route: AGEGENDER_NATIVE=1 pip install . -> gcc -mcpu=native, NEON);
importing this module raises ImportError when the extension was not built (kernels.available_backends() then
omits it).
"""
from . import ops
from ._cython_kernels import HEAD_SIZE, ISA, OPENMP, conv_layer, run_network  # noqa: F401

NAME = "cython"
THREADING = "OpenMP" if OPENMP else "none (built without OpenMP: one thread)"

MAX_THREADS = 256      # OpenMP runs more threads than CPUs; each thread's workspace is about 1.1 MB


def thread_limit():
    """(the most threads this backend can run, why)."""
    if not OPENMP:
        return MAX_THREADS, "built without OpenMP, its threads run one after the other"
    return MAX_THREADS, f"OpenMP may run more threads than CPUs; {MAX_THREADS} workspaces of about 1.1 MB at most"


globals().update(ops.bind(conv_layer))
__all__ = ["run_network", "conv_layer", *ops.__all__]
