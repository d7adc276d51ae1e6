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


def _spec_convs():
    """{refimpl name of a fused layer's output: (k, dilation, pad, h, w, c_in)} for every CBL of the spec, the input
    sizes walked through the blocks from the spec alone ('same' convs keep the size, each pool halves it)."""
    from refimpl import spec

    sizes, convs = {"image": spec.INPUT_SHAPE[1:]}, {}
    for block in spec.BLOCKS:
        source = spec.STEM_BLOCKS[0] if block.sources[0] == "stem" else block.sources[0]
        assert all(sizes[s] == sizes[source] for s in block.sources if s != "stem")
        h, w = sizes[source]
        layers = list(block.layers)
        for i, layer in enumerate(layers):
            if isinstance(layer, spec.Pool):
                h, w = h // 2, w // 2
                continue
            pooled = i + 1 < len(layers) and isinstance(layers[i + 1], spec.Pool)
            name = f"{block.name}.{layers[i + 1].name if pooled else layer.names[2]}"
            convs[name] = (layer.k, layer.dilation, layer.pad, h, w, layer.cin)
        sizes[block.name] = (h, w)
    return convs


def test_winograd_runs_the_3x3_stages_kernels_readme_names(reference_model_path):
    """kernels/README.md section 5: Winograd for the 3x3, pad 1, dilation 1 convs with an even output size, at
    least 64 output pixels and at least 8 input channels; every other conv direct, and all of them direct with
    winograd=False. Results would agree either way (within the bounds): this pins the speed choice."""
    import refimpl

    expected = {name: k == 3 and dilation == 1 and pad == 1 and h % 2 == 0 and w % 2 == 0 and h * w >= 64
                and c_in >= 8 for name, (k, dilation, pad, h, w, c_in) in _spec_convs().items()}
    # this spec: 13 of the 20 convs, all but the stems' first convs, stem_dilated's second, top's two and
    # low_branch's last (4 x 4 output pixels)
    assert sum(expected.values()) == 13 and len(expected) == 20
    model = refimpl.load(reference_model_path)
    for winograd in (True, False):
        p = plan.Plan(model.weights, model.attrs, winograd=winograd)
        got = {name: algo == plan.WINOGRAD for stage, algo in zip(p.stages, p.algos) for name in stage.outputs}
        assert got == {name: winograd and uses for name, uses in expected.items()}


def test_a_concat_slice_that_is_not_whole_vectors_is_refused(reference_model_path, monkeypatch):
    """Every stage writes whole LANES-channel vectors (its padding lanes too), so a block writing its channels into
    a concat buffer must start on a vector and fill whole ones, or it writes into its neighbour's channels. This
    network's concat slices are all whole (16 + 16 + 16 and 32 + 32): no weights file can reach the check, a spec
    edit can. One that gives stem_fine 12 output channels (stem then 44, its readers 44 inputs) is refused at its
    first slice, [0, 12)."""
    import dataclasses

    import refimpl
    from refimpl import spec

    def narrowed(block):
        layers = []
        for layer in block.layers:
            if block.name == "stem_fine" and isinstance(layer, spec.CBL) and layer.index == 2:
                layer = dataclasses.replace(layer, cout=12)
            elif block.sources == ("stem",) and isinstance(layer, spec.CBL) and layer.index == 1:
                layer = dataclasses.replace(layer, cin=44)
            layers.append(layer)
        return dataclasses.replace(block, layers=tuple(layers))

    model = refimpl.load(reference_model_path)
    blocks = tuple(narrowed(block) for block in spec.BLOCKS)
    monkeypatch.setattr(spec, "BLOCKS", blocks)
    monkeypatch.setattr(spec, "BLOCK_BY_NAME", {block.name: block for block in blocks})
    assert spec.block_channels("stem") == 44
    weights = {name: model.weights[name] if model.weights[name].shape == shape else np.ones(shape, np.float32)
               for name, shape in spec.parameter_shapes().items()}
    with pytest.raises(NotImplementedError, match=r"stem_fine\.act2: writes channels \[0, 12\) of 'stem', which is "
                                                  r"not a whole number of 8-channel vectors"):
        plan.Plan(weights, model.attrs)
