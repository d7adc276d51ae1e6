"""Golden vectors: fixed inputs and ONNX Runtime's eight outputs for them, in weights/golden.npz.

They let a board without onnxruntime (a Jetson often lacks it) check refimpl and
the kernels against the golden model. `bench.golden` (which needs onnxruntime)
writes them; this module only reads and compares, with numpy.
"""

import numpy as np

from . import _bundled, spec
from .errors import ModelFileError

DEFAULT_GOLDEN = _bundled("golden.npz")

# Tolerances, from float32 accumulation: a conv output sums up to 48*9 = 432 products, and
# 20 layers deep the summation order (BLAS blocking, SIMD lanes, BN folded or not) moves
# a result by some hundred ulps of the largest partial sums. Relative 2e-5 on ages near
# 30 years is 6e-4 years; gender is a probability in [0, 1] whose sigmoid slope is at
# most 1/4, so its logits' error shrinks.
AGE_TOLERANCE = 1e-3        # years (the contract: |d age| <= 1e-3)
GENDER_TOLERANCE = 1e-5     # probability (the contract: |d gender| <= 1e-5)


def tolerance(output_name):
    return AGE_TOLERANCE if output_name.startswith("age") else GENDER_TOLERANCE


def golden_inputs():
    """float32 [6, 3, 64, 64]: seeded uniform noise, all 0, all 1, mid-grey, a smooth gradient, a checkerboard."""
    rng = np.random.default_rng(20261128)
    _, h, w = spec.INPUT_SHAPE
    yy, xx = np.mgrid[0:h, 0:w] / np.float32(h - 1)
    gradient = np.stack([yy, xx, (yy + xx) / 2])
    checker = np.broadcast_to(((np.arange(h)[:, None] // 8 + np.arange(w)[None, :] // 8) % 2), (3, h, w))
    batch = [rng.random(spec.INPUT_SHAPE), np.zeros(spec.INPUT_SHAPE), np.ones(spec.INPUT_SHAPE),
             np.full(spec.INPUT_SHAPE, 0.5), gradient, checker]
    return np.stack(batch).astype(np.float32)


def load_golden(path=DEFAULT_GOLDEN):
    """-> (inputs [K, 3, 64, 64], {output name: [K, 1]}, model sha256 the vectors were made from)."""
    import zipfile

    try:
        with np.load(path) as f:
            return f["inputs"], {name: f[name] for name in spec.OUTPUT_NAMES}, str(f["model_sha256"])
    except (ValueError, KeyError, EOFError, AttributeError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{path}: not a golden-vectors file of python -m bench.golden "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})") from None


def compare(name, expected, got, atol):
    """None if |got - expected| <= atol everywhere, else a report: tensor, shape, errors, first mismatches."""
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.shape != got.shape:
        return f"{name}: shape {list(got.shape)}, expected {list(expected.shape)}"
    err = np.abs(got.astype(np.float64) - expected)
    bad = ~(err <= atol)                                    # NaN counts as bad
    if not bad.any():
        return None
    rel = err / np.maximum(np.abs(expected), 1e-12)
    first = [tuple(int(i) for i in idx) for idx in np.argwhere(bad)[:5]]
    where = ", ".join(f"{i}: expected {expected[i]:.7g} got {got[i]:.7g}" for i in first)
    return (f"{name} {list(expected.shape)}: max abs error {np.nanmax(err):.3g} (tolerance {atol:g}), max rel "
            f"{np.nanmax(rel):.3g}, {int(bad.sum())} of {bad.size} elements off; first {where}")


def check_outputs(outputs, expected, tolerances=tolerance):
    """Compare every output; returns the list of mismatch reports (empty when all agree)."""
    reports = [compare(name, expected[name], outputs[name], tolerances(name)) for name in spec.OUTPUT_NAMES]
    return [r for r in reports if r]


def file_sha256(path):
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
