"""kernels.load(...).forward against refimpl, ONNX Runtime and the golden vectors, for each backend.

Tolerances: the contract's (refimpl.golden.tolerance: 1e-3 years, 1e-5 probability) for the eight
outputs; the kernels differ from refimpl only by float32 summation order, FMA contraction and
BatchNorm folded into the weights (one extra rounding of w * s). Intermediate stages: as
bench/bounds.py's layer_tolerance, 1e-4 absolute + 1e-5 of the tensor's largest value.
"""
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernels
import refimpl
from conftest import (BUNDLED, INPUT_KINDS, ROOT, assert_close, assert_import_stays_light, backend_param,
                      layer_tolerance, ort_session, random_batch)
from refimpl import InputError, ModelFileError, golden, spec
from refimpl.golden import tolerance






BACKENDS = [backend_param(name) for name in kernels.BACKENDS]


@pytest.fixture(scope="module", params=BACKENDS)
def backend_name(request):
    return request.param


@pytest.fixture(scope="module")
def models(backend_name, reference_model_path):
    """(kernels model with 2 threads, kernels model with 1 thread, refimpl model) on the seeded weights."""
    return (kernels.load(reference_model_path, backend_name, threads=2),
            kernels.load(reference_model_path, backend_name, threads=1),
            refimpl.load(reference_model_path))


@pytest.fixture(scope="module")
def session(reference_model_path):
    return ort_session(reference_model_path)


def make_input(rng, n, kind, layout):
    x = random_batch(rng, n, kind)
    if layout == "strided":                      # every other channel plane of a larger array
        big = np.zeros((n, 6, 64, 64), np.float32)
        big[:, ::2] = x
        x = big[:, ::2]
    elif layout == "transposed":                 # W and H swapped in memory
        x = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert x.flags.c_contiguous == (layout == "contiguous")
    return x


@given(n=st.integers(1, 9), kind=st.sampled_from(INPUT_KINDS), layout=st.sampled_from(["contiguous", "strided",
                                                                                         "transposed"]),
       seed=st.integers(0, 2**31))
def test_forward_matches_refimpl_and_onnxruntime(models, session, n, kind, layout, seed):
    fast, fast1, ref = models
    x = make_input(np.random.default_rng(seed), n, kind, layout)
    got, got1 = fast.forward(x), fast1.forward(x)
    expected_ref = ref.forward(x)
    expected_ort = dict(zip(spec.OUTPUT_NAMES, session.run(None, {"image": np.ascontiguousarray(x)})))
    assert list(got) == list(spec.OUTPUT_NAMES)
    for name in spec.OUTPUT_NAMES:
        assert got[name].dtype == np.float32 and got[name].shape == (n, 1)
        assert_close(f"{name} vs refimpl", expected_ref[name], got[name], tolerance(name))
        assert_close(f"{name} vs onnxruntime", expected_ort[name], got[name], tolerance(name))
        np.testing.assert_array_equal(got1[name], got[name], err_msg=f"{name}: threads 1 and 2 differ")


@given(n=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_every_fused_stage_matches_the_refimpl_composition(models, n, seed):
    fast, _, ref = models
    x = random_batch(np.random.default_rng(seed), n)
    stages, trace = fast.run_stages(x), ref.trace(x)
    produced = [name for stage in fast.stage_names() for name in stage.split("|")]
    assert len(produced) == 20                     # one per CBL of the spec: 18 stages, one of them makes 3
    for name in produced:
        assert_close(name, trace[name], stages[name], layer_tolerance(trace[name]))
    heads = [name for name in fast.plan.head_slots if name not in spec.OUTPUT_NAMES]
    assert {"top_head.gap", "top_head.fc1", "top_head.act1", "low_head.gender_logit"} <= set(heads)
    for name in heads:                             # the compiled heads, step by step
        assert_close(name, trace[name], stages[name], layer_tolerance(trace[name]))
    for name in spec.OUTPUT_NAMES:
        assert_close(name, trace[name], stages[name], tolerance(name))


def test_bundled_model_matches_the_golden_vectors(backend_name):
    x, expected, _ = golden.load_golden()
    reports = golden.check_outputs(kernels.load(BUNDLED, backend_name).forward(x), expected)
    assert not reports, "\n".join(reports)


def test_sample_does_not_depend_on_batch_or_threads(models):
    """Images run one per thread in their own workspace: bit-identical whatever the batch around them."""
    fast, fast1, _ = models
    x = random_batch(np.random.default_rng(7), 7)
    together, alone = fast.forward(x), [fast1.forward(x[i:i + 1]) for i in range(7)]
    again = fast.forward(x[:3])                    # a smaller batch after a larger one: workspaces reused
    for name in spec.OUTPUT_NAMES:
        np.testing.assert_array_equal(together[name], np.concatenate([a[name] for a in alone]))
        np.testing.assert_array_equal(together[name][:3], again[name])


BAD_INPUTS = [
    np.zeros((3, 64, 64), np.float32), np.zeros((1, 64, 64, 3), np.float32), np.zeros((1, 3, 32, 32), np.float32),
    np.zeros((1, 3, 64, 64), np.float64), np.zeros((1, 3, 64, 64), np.uint8), np.zeros((0, 3, 64, 64), np.float32),
    [[0.0]], "image.png", None,
]


@pytest.mark.parametrize("x", BAD_INPUTS, ids=lambda x: type(x).__name__ + str(getattr(x, "shape", "")))
def test_bad_input_is_refused_exactly_as_refimpl_does(models, x):
    fast, _, ref = models
    with pytest.raises(Exception) as expected:
        ref.forward(x)
    with pytest.raises(type(expected.value)) as got:
        fast.forward(x)
    assert type(got.value) is type(expected.value) and str(got.value) == str(expected.value)
    assert isinstance(got.value, InputError)


@given(value=st.sampled_from([np.nan, np.inf, -np.inf]), flat_index=st.integers(0, 2 * 3 * 64 * 64 - 1))
def test_nan_and_inf_are_refused_exactly_as_refimpl_does(models, value, flat_index):
    fast, _, ref = models
    x = np.full((2, 3, 64, 64), 0.5, np.float32)
    x.reshape(-1)[flat_index] = value
    with pytest.raises(InputError) as expected:
        ref.forward(x)
    with pytest.raises(InputError) as got:
        fast.forward(x)
    assert str(got.value) == str(expected.value)


def test_load_errors(backend_name, tmp_path):
    with pytest.raises(ModelFileError):
        kernels.load(tmp_path / "missing.onnx", backend_name)
    (tmp_path / "garbage.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelFileError):
        kernels.load(tmp_path / "garbage.onnx", backend_name)
    with pytest.raises(ValueError, match="threads"):
        kernels.load(BUNDLED, backend_name, threads=0)


def test_unknown_backend_and_available_backends():
    with pytest.raises(ValueError, match="unknown backend"):
        kernels.load(BUNDLED, backend="cuda")
    available = kernels.available_backends()
    assert set(available) <= set(kernels.BACKENDS)
    for name in set(kernels.BACKENDS) - set(available):
        assert name in kernels.unavailable_reasons()


def test_model_reports_its_setup(models, backend_name, reference_model_path):
    fast = models[0]
    assert fast.threads == 2 and fast.backend_name == backend_name
    t0 = time.perf_counter()
    loaded = kernels.load(reference_model_path, backend_name, threads=1)
    assert 0 < loaded.first_call_seconds <= time.perf_counter() - t0      # paid inside load()
    flops = fast.stage_flops()
    assert list(flops) == fast.stage_names()
    assert round(sum(flops.values()) / 1e6, 1) == 97.0           # docs/architecture.md: 97.0 MFLOP per image


def test_time_stages_reports_the_median_of_the_timed_runs(models, monkeypatch):
    """Each stage (and 'input', 'heads') runs repeat + 1 times; the first is a warm-up, left out of the median.
    A fake clock makes every timed interval known: 1000 s for the warm-up, then 1, 3, 2 (s): median 2, where a
    median with the warm-up would be 2.5 and a mean 2 only without it."""
    import kernels.model as model_module

    fast = models[0]
    intervals = iter([1000.0, 1.0, 3.0, 2.0] * (len(fast.stage_names()) + 2))
    now = [0.0]
    readings = []

    def clock():                      # start and stop of each interval: stop = start + the next interval
        if len(readings) % 2:
            now[0] += next(intervals)
        readings.append(now[0])
        return now[0]

    monkeypatch.setattr(model_module.time, "perf_counter", clock)
    times = fast.time_stages(random_batch(np.random.default_rng(0), 2), repeat=3)
    assert list(times) == ["input", *fast.stage_names(), "heads"]
    assert times == {name: 2.0 for name in times}
    assert len(readings) == 2 * 4 * len(times)


def test_import_kernels_stays_light():
    assert_import_stays_light("import kernels",
                              ("numba", "kernels._cython_kernels", "torch", "onnxruntime", "training", "bench"))


def test_kernels_never_import_training_bench_torch_or_onnxruntime():
    import pathlib
    import re

    for path in pathlib.Path(ROOT, "kernels").glob("*.py*"):
        if path.suffix not in (".py", ".pyx"):
            continue
        text = path.read_text()
        bad = re.findall(r"^\s*(?:from|import)\s+(torch|onnxruntime|training|bench)\b", text, re.M)
        assert not bad, f"{path.name} imports {bad}"
