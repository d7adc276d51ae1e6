"""Shared fixtures and the hypothesis profiles: `ci` (default: derandomized, quick) and `dev` (deeper).

    HYPOTHESIS_PROFILE=dev pytest tests
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=12, derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=200, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED = os.path.join(ROOT, "weights", "agegender.onnx")


@pytest.fixture(scope="session")
def reference_model_path(tmp_path_factory):
    """An ONNX file with seeded random weights and non-trivial BatchNorm statistics (every layer matters)."""
    from refimpl import onnx_format
    from refimpl.reference_weights import reference_weights

    path = tmp_path_factory.mktemp("models") / "reference.onnx"
    onnx_format.write(reference_weights(seed=0), path, {"status": "test reference weights, seed 0"})
    return str(path)


@pytest.fixture(scope="session", params=["reference", "bundled"])
def model_path(request, reference_model_path):
    """Both the seeded reference weights and the bundled (trained) weights."""
    return reference_model_path if request.param == "reference" else BUNDLED


def ort_session(path, threads=1):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed for golden comparisons")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def assert_close(name, expected, got, atol):
    """Fail with the golden report (tensor, shape, max error, first mismatching indices) unless close."""
    from refimpl.golden import compare

    report = compare(name, expected, got, atol)
    assert report is None, report


def utkface_dir():
    return os.environ.get("AGEGENDER_UTKFACE", os.path.join(ROOT, "..", "shared", "datasets", "UTKFace"))


def random_batch(rng, n, kind="uniform"):
    """float32 [n, 3, 64, 64] images of a few input distributions."""
    shape = (n, 3, 64, 64)
    if kind == "uniform":
        return rng.random(shape, dtype=np.float32)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    if kind == "ones":
        return np.ones(shape, np.float32)
    if kind == "constant":
        return np.full(shape, rng.random(), np.float32)
    if kind == "small_noise":
        return (0.5 + 1e-3 * rng.standard_normal(shape)).astype(np.float32)
    raise ValueError(kind)


INPUT_KINDS = ("uniform", "zeros", "ones", "constant", "small_noise")


# Intermediate tensors: activations reach a few tens in size; 20 layers of float32 sums in a
# different order (ONNX Runtime's MLAS blocks and fuses; the kernels fold BatchNorm and use Winograd)
# differ by ~1e-6 relative. 1e-4 absolute plus 1e-5 relative of the tensor's largest value leaves a
# margin of ten.
def layer_tolerance(tensor):
    return 1e-4 + 1e-5 * float(np.abs(tensor).max())


def backend_param(name):
    """A pytest param for a kernels backend, skipped with the reason where it cannot run here."""
    import kernels

    try:
        kernels.backend(name)
        return pytest.param(name)
    except ImportError as exc:
        return pytest.param(name, marks=pytest.mark.skip(reason=str(exc)))


def assert_import_stays_light(statement, heavy_modules):
    """Run `statement` in a fresh interpreter and fail if any of `heavy_modules` got imported."""
    import subprocess
    import sys

    code = (f"import sys\n{statement}\nheavy = [m for m in {tuple(heavy_modules)!r} if m in sys.modules]\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
