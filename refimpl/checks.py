"""The input contract every backend checks before it runs: float32 [N, 3, 64, 64], N >= 1, finite."""
import numpy as np

from . import spec
from .errors import InputError


def check_input(x):
    """Validate a batch for any backend; InputError in one line naming what is wrong. Returns it C-contiguous."""
    if not isinstance(x, np.ndarray):
        raise InputError(f"input is a {type(x).__name__}, expected a numpy float32 array [N, 3, 64, 64]")
    if x.ndim != 4 or x.shape[1:] != spec.INPUT_SHAPE:
        hint = " (one image? add a batch axis: x[None])" if x.shape == spec.INPUT_SHAPE else ""
        hint = hint or (" (NHWC? use x.transpose(0, 3, 1, 2))" if x.shape[1:] == (64, 64, 3) else "")
        raise InputError(f"input shape is {list(x.shape)}, expected [N, 3, 64, 64]{hint}")
    if x.dtype != np.float32:
        raise InputError(f"input dtype is {x.dtype}, expected float32 with values in [0, 1] "
                         f"(refimpl.preprocess makes it from a uint8 image)")
    if x.shape[0] == 0:
        raise InputError("input batch is empty (N = 0), expected at least one image")
    finite = np.isfinite(x)
    if not finite.all():
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InputError(f"input holds {int((~finite).sum())} NaN or Inf values (first at index {first})")
    return np.ascontiguousarray(x)
