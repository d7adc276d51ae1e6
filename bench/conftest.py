"""pytest-benchmark suites of the kit: `pytest bench --benchmark-only` (CI runs `pytest tests` only).

    pytest bench --benchmark-only                                  # whole network, fused stages, ops
    pytest bench/test_network.py --benchmark-only --benchmark-group-by=group
    pytest bench --benchmark-only --benchmark-json=bench.json      # pytest-benchmark's own JSON

Every benchmark first runs its work once and checks the result (against the golden outputs, or for a
stage or an op, against the reference's tensor, itself checked against the golden outputs); that call
is also the warm-up, outside the timing. Groups put the backends doing the same work side by side.
"""
import functools
import importlib.util

import pytest

import refimpl
from bench import backends as bk
from bench import machine
from bench.bounds import layer_tolerance  # noqa: F401  (bench/test_stages.py imports it from here)
from bench.run import Reference

try:
    import pytest_benchmark  # noqa: F401
except ImportError:          # say so instead of failing on a missing 'benchmark' fixture
    collect_ignore_glob = ["test_*.py"]
    MISSING = "pytest-benchmark is not installed (pip install pytest-benchmark): no benchmark collected"
else:
    MISSING = None

MODEL = refimpl.DEFAULT_WEIGHTS
BATCHES = (1, 8, 64)
THREADS = tuple(sorted({1, machine.cores()[0]}))


def pytest_report_header(config):
    if MISSING:
        return [MISSING]
    info = machine.describe()
    env = ", ".join(f"{k}={v}" for k, v in info["blas_env"].items()) or "OPENBLAS_CORETYPE/L2_SIZE unset"
    oracle = ("ONNX Runtime's layer outputs" if importlib.util.find_spec("onnxruntime") else
              "refimpl's own trace (onnxruntime missing: the numpy op rows check nothing)")
    return [f"agegender bench: {info['cpu']}, {info['cores']} cores, SIMD {' '.join(info['simd'])}; {env}; "
            f"load {info['load_average']}", f"stages and ops checked against {oracle}"]


@pytest.fixture(scope="session")
def reference():
    """Golden inputs and outputs (or ONNX Runtime's, where golden.npz is stale) for any batch size."""
    return Reference(MODEL, refimpl.golden.DEFAULT_GOLDEN)


@functools.lru_cache(maxsize=None)
def _runner(name, threads):
    try:
        return bk.make_runner(name, MODEL, threads)
    except bk.Unavailable as exc:
        return exc


@pytest.fixture
def make_runner():
    """(backend, threads) -> a Runner, cached for the session; skips with the reason where unavailable."""

    def make(name, threads):
        runner = _runner(name, threads)
        if isinstance(runner, Exception):
            pytest.skip(f"{bk.LABELS.get(name, name)} not available: {runner}")
        return runner

    return make


@functools.lru_cache(maxsize=None)
def _machine():
    return machine.describe()


def conditions(benchmark, **extra):
    """Record backend, batch, threads and machine next to the number (pytest-benchmark's extra_info)."""
    info = _machine()
    benchmark.extra_info.update(cpu=info["cpu"], cores=info["cores"], blas_env=info["blas_env"], **extra)


@pytest.fixture(scope="session")
def ref_model():
    return refimpl.load(MODEL)


def onnxruntime_layers(model_path, x):
    """{tensor name: array} of every node output for x, from ONNX Runtime on a copy of the graph that exposes
    them all; None where onnxruntime is not installed (a board often lacks it)."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        return None
    model = onnx.load(model_path)
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in node.output if n not in known)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": x})))


@pytest.fixture(scope="session")
def ref_trace(reference, ref_model):
    """(golden input 0, every layer's tensor): ONNX Runtime's where onnxruntime is installed, so that the numpy
    rows check refimpl's ops against another implementation; otherwise refimpl's own trace, which the numpy
    rows then merely repeat. Either way the eight outputs are first checked against the golden ones."""
    x, expected = reference.batch(1)
    trace = ref_model.trace(x)
    if expected is not None:
        reports = refimpl.golden.check_outputs({n: trace[n] for n in expected}, expected)
        assert not reports, "reference vs golden: " + "; ".join(reports)
    layers = onnxruntime_layers(MODEL, x)
    return x, trace if layers is None else {**trace, **layers}
