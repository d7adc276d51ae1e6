"""The tables the compiled backends run, written once: conv_kernel.h's structs are plan.py's NumPy dtypes.

The Cython module exports each struct's fields with offsetof and sizeof (conv_kernel.h's *_layout arrays, made
from the same X-macros as the structs); they must match the dtypes field by field, or the C code would read a
stage's `cin` where NumPy wrote its `k`. The Numba backend reads the dtypes' fields by name.
"""
import numpy as np
import pytest

from kernels import plan

C_TYPES = {"int64_t": np.dtype(np.int64), "float": np.dtype(np.float32)}
RECORDS = {"agk_stage": plan.STAGE, "agk_view": plan.VIEW, "agk_head_step": plan.HEAD_STEP}


@pytest.fixture(scope="module")
def layouts():
    cython = pytest.importorskip("kernels._cython_kernels", reason="the Cython backend is not built")
    return cython.LAYOUTS


@pytest.mark.parametrize("struct", sorted(RECORDS))
def test_numpy_record_has_the_c_struct_layout(layouts, struct):
    fields, size = layouts[struct]
    dtype = RECORDS[struct]
    assert [name for name, _, _ in fields] == list(dtype.names), f"{struct}: fields or their order differ"
    for name, c_type, offset in fields:
        numpy_type, numpy_offset = dtype.fields[name][:2]
        assert (C_TYPES[c_type], offset) == (numpy_type, numpy_offset), \
            f"{struct}.{name}: C {c_type} at byte {offset}, NumPy {numpy_type} at byte {numpy_offset}"
    assert dtype.itemsize == size, f"{struct}: sizeof {size}, NumPy itemsize {dtype.itemsize}"


def test_a_record_is_filled_by_name_or_not_at_all():
    record = np.zeros((), plan.VIEW)
    with pytest.raises(ValueError, match="missing"):
        plan.fill(record, off=1)
    with pytest.raises(ValueError, match="unknown"):
        plan.fill(record, off=1, wp=1, channels=1, pad=0, c0=0, c=1, h=1, w=1, dst=0, stride=2)


def test_heads_come_from_refimpls_graph(reference_model_path, monkeypatch):
    """The compiled heads are compiled from refimpl/graph.py's head nodes: every Gemm's weights are in the
    program, each node's output has a place in the head vector, and a node kind they do not know is refused."""
    import refimpl
    from refimpl import graph

    model = refimpl.load(reference_model_path)
    p = plan.Plan(model.weights, model.attrs)
    gemms = [n for n in graph.nodes() if n.op == "Gemm"]
    assert sum(p.head_steps["op"] == plan.FC) == len(gemms)
    assert p.head_params.size == sum(model.weights[n.inputs[1]].size + model.weights[n.inputs[2]].size for n in gemms)
    tensors = {out for n in graph.nodes() for out in n.outputs}
    assert {"top_head.act1", "low_head.gender_logit", "age", "gender"} <= set(p.head_slots) <= tensors
    original = graph.nodes

    def with_a_relu():
        return original() + [graph.Node("Relu", "extra", ["age"])]

    monkeypatch.setattr(graph, "nodes", with_a_relu)
    with pytest.raises(NotImplementedError, match="no Relu"):
        plan.Plan(model.weights, model.attrs)
