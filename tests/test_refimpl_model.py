"""The whole reference network against ONNX Runtime running the same file, and its invariants."""
import subprocess
import sys

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refimpl
from conftest import (BUNDLED, INPUT_KINDS, ROOT, assert_close, assert_import_stays_light, layer_tolerance,
                      ort_session, random_batch)
from refimpl import golden, spec
from refimpl.golden import AGE_TOLERANCE, GENDER_TOLERANCE, tolerance



@pytest.fixture(scope="module")
def sessions(model_path):
    return refimpl.load(model_path), ort_session(model_path)


@given(n=st.integers(1, 16), kind=st.sampled_from(INPUT_KINDS), seed=st.integers(0, 2**31))
def test_forward_matches_onnxruntime(sessions, n, kind, seed):
    model, session = sessions
    x = random_batch(np.random.default_rng(seed), n, kind)
    expected = dict(zip(spec.OUTPUT_NAMES, session.run(None, {"image": x})))
    got = model.forward(x)
    assert list(got) == list(spec.OUTPUT_NAMES)
    for name in spec.OUTPUT_NAMES:
        assert got[name].dtype == np.float32 and got[name].shape == (n, 1)
        assert_close(name, expected[name], got[name], tolerance(name))


def test_contract_tolerances():
    assert (AGE_TOLERANCE, GENDER_TOLERANCE) == (1e-3, 1e-5)     # the foundation issue's acceptance bounds


@pytest.fixture(scope="module")
def all_tensors_session(reference_model_path, tmp_path_factory):
    """A copy of the model whose graph outputs every intermediate tensor."""
    model = onnx.load(reference_model_path)
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name not in known:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    path = tmp_path_factory.mktemp("all") / "all_tensors.onnx"
    onnx.save(model, str(path))
    session = ort_session(path)
    return session, [o.name for o in session.get_outputs()]


@given(n=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_every_layer_matches_onnxruntime(reference_model_path, all_tensors_session, n, seed):
    session, names = all_tensors_session
    x = random_batch(np.random.default_rng(seed), n)
    expected = dict(zip(names, session.run(names, {"image": x})))
    trace = refimpl.load(reference_model_path).trace(x)
    compared = [name for name in trace if name in expected]
    assert len(compared) >= 80, f"only {len(compared)} traced layers are ONNX tensors"
    for name in compared:
        assert_close(name, expected[name], trace[name], layer_tolerance(expected[name]))


def test_trace_is_in_execution_order(reference_model_path):
    from refimpl import graph

    trace = refimpl.load(reference_model_path).trace(np.zeros((1, 3, 64, 64), np.float32))
    order = [n.outputs[0] for n in graph.nodes()]
    positions = [order.index(name) for name in trace if name in order]
    assert positions == sorted(positions)
    assert set(spec.OUTPUT_NAMES) <= set(trace)


@given(n=st.integers(2, 8), index=st.integers(0, 7), seed=st.integers(0, 2**31))
def test_sample_does_not_depend_on_its_batch(reference_model_path, n, index, seed):
    model = refimpl.load(reference_model_path)
    x = random_batch(np.random.default_rng(seed), n)
    index %= n
    alone, together = model.forward(x[index:index + 1]), model.forward(x)
    for name in spec.OUTPUT_NAMES:
        # BLAS may block a batch differently from a single image: same sums, other order
        assert_close(name, alone[name][0], together[name][index], tolerance(name))


def test_repeated_calls_are_identical(reference_model_path):
    model = refimpl.load(reference_model_path)
    x = random_batch(np.random.default_rng(3), 5)
    first, second = model.forward(x), model.forward(x.copy())
    for name in spec.OUTPUT_NAMES:
        np.testing.assert_array_equal(first[name], second[name])


def test_non_contiguous_input_gives_the_same_result(reference_model_path):
    model = refimpl.load(reference_model_path)
    base = random_batch(np.random.default_rng(4), 6)
    strided = base[::2]                                          # every other image: not C-contiguous
    transposed = np.ascontiguousarray(base[:3].transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    for x in (strided, transposed):
        assert not x.flags.c_contiguous
        a, b = model.forward(x), model.forward(np.ascontiguousarray(x))
        for name in spec.OUTPUT_NAMES:
            np.testing.assert_array_equal(a[name], b[name])


def test_golden_vectors_are_current():
    """weights/golden.npz equals what ONNX Runtime computes now from weights/agegender.onnx."""
    from bench.golden import make_golden

    x, expected, sha = golden.load_golden()
    assert sha == golden.file_sha256(BUNDLED), "golden.npz was made from another model: python -m bench.golden"
    fresh = make_golden(BUNDLED)
    np.testing.assert_array_equal(fresh["inputs"], x)
    for name in spec.OUTPUT_NAMES:
        # a tenth of the contract: a stale file (another model, another export) is off by far more, while ONNX
        # Runtime on another CPU (aarch64's MLAS) sums in another order: 1.5e-5 years at age 80, two float32 steps
        assert_close(name, fresh[name], expected[name], tolerance(name) / 10)


def test_bundled_model_matches_golden_without_onnxruntime():
    x, expected, _ = golden.load_golden()
    reports = golden.check_outputs(refimpl.load(BUNDLED).forward(x), expected)
    assert not reports, "\n".join(reports)


def test_bundled_file_holds_the_specified_parameter_counts():
    model = onnx.load(BUNDLED)
    trainable = sum(int(np.prod(t.dims)) for t in model.graph.initializer
                    if not spec.is_running_statistic(t.name))
    running = sum(int(np.prod(t.dims)) for t in model.graph.initializer if spec.is_running_statistic(t.name))
    assert (trainable, running) == (99_202, 920)                # docs/architecture.md, "Counts"
    ops = [n.op_type for n in model.graph.node]
    assert (ops.count("Conv"), ops.count("BatchNormalization"), ops.count("MaxPool"), ops.count("Gemm")) == \
        (20, 20, 11, 6)
    assert [o.name for o in model.graph.output] == list(spec.OUTPUT_NAMES)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param       # dynamic batch
    assert {p.key for p in model.metadata_props} >= {"architecture"}


def test_summary_totals_match_the_spec(reference_model_path):
    from refimpl.summary import format_table, layer_table

    rows = layer_table(refimpl.load(reference_model_path))
    assert round(sum(r[5] for r in rows) / 1e6, 1) == 97.0                      # docs/architecture.md: 97.0 MFLOP
    assert sum(r[4] for r in rows) == 99_202 + 920
    assert "99,202 trainable" in format_table(rows)


def test_import_refimpl_stays_light():
    assert_import_stays_light("import refimpl, refimpl.onnx_format, refimpl.golden",
                              ("torch", "onnxruntime", "kernels", "training", "bench", "scipy", "PIL"))


def test_command_line_verify_and_summary():
    run = subprocess.run([sys.executable, "-m", "refimpl", "verify"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0 and "OK:" in run.stdout, run.stdout + run.stderr
    run = subprocess.run([sys.executable, "-m", "refimpl", "summary"], cwd=ROOT, capture_output=True, text=True)
    assert "97.0 M" in run.stdout and "99,202" in run.stdout
