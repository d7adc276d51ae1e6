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


# The data sets are not in the repository (their licenses forbid it): tests that need one read its folder from an
# environment variable and skip, saying how to get it, where it is unset or missing. .ci/run sets both.
DATASETS = {
    "AGEGENDER_UTKFACE": "UTKFace's 'aligned and cropped' face chips (susanqq.github.io/UTKFace)",
    "AGEGENDER_AAF": "All-Age-Faces' images/ and labels.csv (github.com/JingchunCheng/All-Age-Faces-Dataset)",
}


def dataset_dir(env):
    """The folder the environment variable `env` names, or skip saying how to get the data set."""
    folder = os.environ.get(env, "")
    if not folder:
        pytest.skip(f"{env} is not set: point it at the folder of {DATASETS[env]}")
    if not os.path.isdir(folder):
        pytest.skip(f"{env}={folder} is not a folder: point it at the folder of {DATASETS[env]}")
    return folder


def utkface_dir():
    """The UTKFace folder (AGEGENDER_UTKFACE), or skip saying why."""
    return dataset_dir("AGEGENDER_UTKFACE")


def aaf_dir():
    """The All-Age-Faces folder (AGEGENDER_AAF), or skip saying why."""
    return dataset_dir("AGEGENDER_AAF")


def one_image(rng, kind):
    """float32 [3, 64, 64] in [0, 1] of one input kind (INPUT_KINDS); the random ones draw from `rng`."""
    shape = (3, 64, 64)
    yy, xx = np.mgrid[0:64, 0:64] / np.float32(63)
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
    if kind == "gradient":                       # a linear ramp in a random direction, per-channel ends
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
        lo, hi = rng.random((2, 3, 1, 1))
        return (lo + (hi - lo) * ramp).astype(np.float32)
    if kind == "checkerboard":                   # random period and phase, two random colours
        period = int(rng.choice([1, 2, 3, 4, 8, 16]))
        dy, dx = rng.integers(0, 2 * period, 2)
        cells = ((np.arange(64)[:, None] + dy) // period + (np.arange(64)[None, :] + dx) // period) % 2
        a, b = rng.random((2, 3, 1, 1))
        return np.where(cells, a, b).astype(np.float32)
    if kind == "blobs":                          # natural-like: a soft background ramp, Gaussian blobs, grain
        image = rng.random((3, 1, 1)) * (0.6 + 0.4 * (np.cos(rng.uniform(0, 6.3)) * xx + yy) / 2)
        for _ in range(int(rng.integers(2, 7))):
            cy, cx, radius = rng.random(), rng.random(), rng.uniform(0.05, 0.35)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))
            image = image + rng.uniform(-0.6, 0.6, (3, 1, 1)) * blob
        image = image + 0.02 * rng.standard_normal(shape)
        return np.clip(image, 0, 1).astype(np.float32)
    if kind == "patches":                        # coarse random colour fields, 4 to 16 cells a side, upsampled
        cells = int(rng.choice([4, 8, 16]))
        coarse = rng.random((3, cells, cells))
        return np.repeat(np.repeat(coarse, 64 // cells, axis=1), 64 // cells, axis=2).astype(np.float32)
    raise ValueError(f"unknown input kind {kind!r}, expected one of {INPUT_KINDS}")


INPUT_KINDS = ("uniform", "zeros", "ones", "constant", "small_noise", "gradient", "checkerboard", "blobs", "patches")
FLAT_KINDS = ("zeros", "ones", "constant", "small_noise")       # one value (or nearly) over the whole image


def batch_kinds(n, kind="uniform"):
    """The kinds of random_batch's n images: `kind` first, then every other kind in turn."""
    start = INPUT_KINDS.index(kind)
    return [INPUT_KINDS[(start + i) % len(INPUT_KINDS)] for i in range(n)]


def random_batch(rng, n, kind="uniform"):
    """float32 [n, 3, 64, 64]: image 0 of `kind`, the next ones cycling through the other INPUT_KINDS.

    So every drawn batch mixes noise, flat, smooth and sharp images, and a hypothesis run that draws
    (n, kind) covers every kind after a few examples (tests/test_strategies.py counts them)."""
    return np.stack([one_image(rng, k) for k in batch_kinds(n, kind)])


def one_kind_batch(rng, n, kind):
    """float32 [n, 3, 64, 64], all n images of one kind."""
    return np.stack([one_image(rng, kind) for _ in range(n)])


from bench.bounds import layer_tolerance  # noqa: E402,F401  (one definition, shared with bench/)


def backend_param(name):
    """A pytest param for a kernels backend: skipped with the reason where it cannot run here, but failing
    with that reason where AGEGENDER_REQUIRE_BACKENDS names it (CI: a missing kernel is never a skip)."""
    import kernels

    try:
        kernels.backend(name)
        return pytest.param(name)
    except ImportError as exc:
        if name in required_backends():
            return pytest.param(name, marks=pytest.mark.required_backend_missing(reason=str(exc)))
        return pytest.param(name, marks=pytest.mark.skip(reason=str(exc)))


# --- CI guards: required kernel backends, tests that must run a kernel, no unexpected skip ---------------------
# .ci/run exports AGEGENDER_REQUIRE_BACKENDS=cython,numba and AGEGENDER_CI_NO_SKIP=1; on a user's machine neither
# is set, and a missing backend or data set is a skip with its reason.
REQUIRE_BACKENDS_ENV = "AGEGENDER_REQUIRE_BACKENDS"
NO_SKIP_ENV = "AGEGENDER_CI_NO_SKIP"

# Tests that claim to exercise a kernel backend through the estimator's "auto" choice (they compare it with
# refimpl, share it between threads, measure its memory). Where a kernel backend is usable, every "auto" load in
# them must give one and its forward must run, or they would compare refimpl with refimpl and prove nothing.
KERNEL_BACKEND_TESTS = {
    "test_estimator.py": ("test_auto_backend_agrees_with_the_reference",
                          "test_four_threads_give_the_same_results_as_one",
                          "test_memory_stays_flat_with_the_real_backend"),
}

# Skips that are legitimately impossible to avoid in CI: (nodeid regex, reason regex), each with why.
# None today: every data set, extra and interpreter the suite can use is there in CI.
ALLOWED_CI_SKIPS = ()

_skips = []                                     # (nodeid, reason) of every skip in this session


def required_backends():
    """The kernels backends AGEGENDER_REQUIRE_BACKENDS names (comma or space separated); empty when unset."""
    return [n for n in os.environ.get(REQUIRE_BACKENDS_ENV, "").replace(",", " ").split() if n]


def missing_required_backends():
    """{required backend: why it cannot run here}; an unknown name is an error of the variable itself."""
    import kernels

    missing = {}
    for name in required_backends():
        if name not in kernels.BACKENDS:
            raise pytest.UsageError(f"{REQUIRE_BACKENDS_ENV} names {name!r}; expected names from "
                                    f"{', '.join(kernels.BACKENDS)}")
        try:
            kernels.backend(name)
        except ImportError as exc:
            missing[name] = str(exc)
    return missing


def pytest_configure(config):
    config.addinivalue_line("markers", "required_backend_missing(reason): a required kernels backend is missing; "
                                       "the test fails with the reason")
    missing = missing_required_backends()
    if missing:
        raise pytest.UsageError(f"{REQUIRE_BACKENDS_ENV}={os.environ[REQUIRE_BACKENDS_ENV]} but "
                                + "; ".join(missing.values()))


def pytest_report_header(config):
    import kernels

    required = required_backends()
    return (f"agegender kernels backends here: {', '.join(kernels.available_backends()) or 'none'}; required: "
            f"{', '.join(required) or 'none'} ({REQUIRE_BACKENDS_ENV}); unexpected skips fail the run: "
            f"{'yes' if os.environ.get(NO_SKIP_ENV) == '1' else 'no'} ({NO_SKIP_ENV})")


def pytest_runtest_setup(item):
    marker = item.get_closest_marker("required_backend_missing")
    if marker is not None:
        pytest.fail(f"required by {REQUIRE_BACKENDS_ENV}: {marker.kwargs['reason']}", pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """A name in KERNEL_BACKEND_TESTS that its module no longer defines would silently lose the check."""
    for item in items:
        names = KERNEL_BACKEND_TESTS.get(item.path.name, ())
        gone = [n for n in names if getattr(item, "module", None) is not None and not hasattr(item.module, n)]
        if gone:
            raise pytest.UsageError(f"conftest.KERNEL_BACKEND_TESTS names {', '.join(gone)}, which "
                                    f"{item.path.name} does not define: update the list")


@pytest.fixture(autouse=True)
def _kernel_backend_really_runs(request):
    """For KERNEL_BACKEND_TESTS: record every "auto" load and its forward calls; pytest_runtest_call checks them."""
    if request.node.originalname not in KERNEL_BACKEND_TESTS.get(request.node.path.name, ()):
        return
    from agegender import backends

    loads, load = [], backends.load

    def recording_load(weights=None, backend="auto", threads=None):
        model, name = load(weights, backend, threads)
        if backend == "auto":
            calls, forward = [], model.forward
            model.forward = lambda x: calls.append(len(x)) or forward(x)       # counts, then runs the real one
            loads.append((name, calls))
        return model, name

    def check():
        usable = backends.kernel_backends()
        assert loads, f"{request.node.name} claims to test the kernels through 'auto' but never loaded 'auto'"
        if usable or required_backends():
            there = ", ".join(usable) or "a required backend"
            assert all(name != backends.REFERENCE for name, _ in loads), (
                f"{request.node.name}: 'auto' fell back to refimpl although {there} is there: the test "
                f"compared refimpl with refimpl")
            assert all(calls for _, calls in loads), f"{request.node.name}: a kernels model was loaded, never run"

    request.getfixturevalue("monkeypatch").setattr(backends, "load", recording_load)
    request.node.kernel_backend_check = check


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After a test passed, the check its fixture left (a failure of the test itself, not a teardown error)."""
    result = yield
    check = getattr(item, "kernel_backend_check", None)
    if check is not None:
        check()
    return result


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skips.append((report.nodeid, _skip_reason(report)))


def pytest_collectreport(report):
    if report.skipped:
        _skips.append((report.nodeid, _skip_reason(report)))


def _skip_reason(report):
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text[len("Skipped: "):] if text.startswith("Skipped: ") else text


def unexpected_skips(skips=None):
    """The skips no ALLOWED_CI_SKIPS entry allows (all of them when the list is empty)."""
    import re

    return [(nodeid, reason) for nodeid, reason in (_skips if skips is None else skips)
            if not any(re.search(n, nodeid) and re.search(r, reason) for n, r in ALLOWED_CI_SKIPS)]


def pytest_terminal_summary(terminalreporter):
    if os.environ.get(NO_SKIP_ENV) == "1" and unexpected_skips():
        terminalreporter.section(f"unexpected skips ({NO_SKIP_ENV}=1: each fails the run)", red=True)
        for nodeid, reason in unexpected_skips():
            terminalreporter.line(f"{nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get(NO_SKIP_ENV) == "1" and unexpected_skips() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def assert_import_stays_light(statement, heavy_modules):
    """Run `statement` in a fresh interpreter and fail if any of `heavy_modules` got imported."""
    import subprocess
    import sys

    code = (f"import sys\n{statement}\nheavy = [m for m in {tuple(heavy_modules)!r} if m in sys.modules]\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
