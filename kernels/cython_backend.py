"""The Cython backend: refimpl's operations and the whole network on conv_kernel.h via _cython_kernels.pyx.

conv_kernel.h (the C micro-kernel, Winograd, the heads) driven by the Cython executor of _cython_kernels.pyx,
one image per OpenMP thread; how and why it is fast, and how it is built: kernels/README.md. Importing this
module raises ImportError when the extension was not built (kernels.available_backends() then omits it).
"""
import numpy as np

from . import ops
from ._cython_kernels import ISA, LAYOUTS, MAX_HEAD, OPENMP, run_network  # noqa: F401
from ._cython_kernels import conv_layer as _conv_layer

NAME = "cython"
THREADING = "OpenMP" if OPENMP else "none (built without OpenMP: one thread)"

MAX_THREADS = 256      # OpenMP runs more threads than CPUs; each thread's workspace is about 1.1 MB


def thread_limit():
    """(the most threads this backend can run, why)."""
    if not OPENMP:
        return MAX_THREADS, "built without OpenMP, its threads run one after the other"
    return MAX_THREADS, f"OpenMP may run more threads than CPUs; {MAX_THREADS} workspaces of about 1.1 MB at most"


def tables(plan):
    """The plan's records as the executor takes them: (image, stages, pools, head steps) as bytes (uint8 views),
    read in C as conv_kernel.h's structs."""
    return tuple(np.ascontiguousarray(a).view(np.uint8) for a in (plan.image, plan.stages_table, plan.pools,
                                                                  plan.head_steps))


def conv_layer(src, dst, stages, weights, biases, scratch):
    """Every stage of a plan.STAGE array on one image (src, dst: the flat buffers its offsets point into)."""
    _conv_layer(src, dst, np.ascontiguousarray(stages).view(np.uint8), weights, biases, scratch)


globals().update(ops.bind(conv_layer))
__all__ = ["run_network", "conv_layer", *ops.__all__]
