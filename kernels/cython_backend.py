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

globals().update(ops.bind(conv_layer))
__all__ = ["run_network", "conv_layer", *ops.__all__]
