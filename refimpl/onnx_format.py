"""Reading and writing the golden ONNX file (the contract of ARCHITECTURE.md).

`write` turns a {name: array} weight dict into the file; `read` returns the
weights and per-layer attributes of a file after checking, node by node and
initializer by initializer, that it is exactly the architecture of spec.py.
"""
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import graph, spec
from .errors import ModelFileError

ATTRIBUTES_READ = {"Conv": ("pads", "dilations"), "BatchNormalization": ("epsilon",), "LeakyRelu": ("alpha",)}


def write(weights, path, metadata=None, epsilon=spec.BN_EPSILON, alpha=spec.LEAKY_ALPHA):
    """Save `weights` ({initializer name: array}, names and shapes of spec.parameter_shapes()) as the ONNX model."""
    missing = [n for n in spec.parameter_shapes() if n not in weights]
    if missing:
        raise ModelFileError(f"weights: missing '{missing[0]}' of shape {list(spec.parameter_shapes()[missing[0]])}")
    _check_weights(weights)
    onnx.save(build(weights, metadata, epsilon, alpha), os.fspath(path))


def build(weights, metadata=None, epsilon=spec.BN_EPSILON, alpha=spec.LEAKY_ALPHA):
    nodes = [helper.make_node(n.op, n.inputs, n.outputs, name=n.name, **n.attrs) for n in graph.nodes(epsilon, alpha)]
    initializers = [numpy_helper.from_array(np.asarray(weights[name], dtype=np.float32), name)
                    for name in spec.parameter_shapes()]
    batch = "N"
    inputs = [helper.make_tensor_value_info(spec.INPUT_NAME, onnx.TensorProto.FLOAT, [batch, *spec.INPUT_SHAPE])]
    outputs = [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [batch, 1]) for name in spec.OUTPUT_NAMES]
    g = helper.make_graph(nodes, "agegender", inputs, outputs, initializers)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", spec.OPSET)],
                              producer_name="agegender-kit", ir_version=7)
    helper.set_model_props(model, {"architecture": spec.ARCH_VERSION, **(metadata or {})})
    onnx.checker.check_model(model)
    return model


def read(path):
    """-> (weights {name: float32 array}, attrs {node name: {attr: value}}, metadata {key: str}).

    Raises ModelFileError, one line naming the layer and what was expected, for anything that is
    not this architecture."""
    model = _load(path)
    where = os.path.basename(os.fspath(path))
    g = model.graph
    _check_io(g, where)
    weights = _read_initializers(g, where)
    attrs = _check_nodes(g, where)
    return weights, attrs, {p.key: p.value for p in model.metadata_props}


def _load(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such file (expected an ONNX model such as weights/agegender.onnx)")
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf raises several types for garbage bytes
        raise ModelFileError(f"{path}: not an ONNX file ({type(exc).__name__}: {str(exc)[:80]})") from None


def _dims(value_info):
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _check_io(g, where):
    inputs = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
    if len(inputs) != 1 or inputs[0].name != spec.INPUT_NAME:
        raise ModelFileError(f"{where}: graph inputs {[i.name for i in inputs]}, expected one input "
                             f"'{spec.INPUT_NAME}'")
    dims = _dims(inputs[0])
    if dims[1:] != list(spec.INPUT_SHAPE) or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ModelFileError(f"{where}: input '{spec.INPUT_NAME}' is {dims}, expected float32 [N, 3, 64, 64]")
    names = tuple(o.name for o in g.output)
    if names != spec.OUTPUT_NAMES:
        raise ModelFileError(f"{where}: outputs {list(names)}, expected {list(spec.OUTPUT_NAMES)} in this order")


def _read_initializers(g, where):
    expected = spec.parameter_shapes()
    weights = {}
    for tensor in g.initializer:
        if tensor.name not in expected:
            raise ModelFileError(f"{where}: unexpected initializer '{tensor.name}' (not a layer of the architecture)")
        weights[tensor.name] = numpy_helper.to_array(tensor)
    missing = [name for name in expected if name not in weights]
    if missing:
        raise ModelFileError(f"{where}: missing initializer '{missing[0]}' of shape {list(expected[missing[0]])}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    _check_weights(weights, where)
    return {name: np.ascontiguousarray(weights[name]) for name in expected}


def _check_weights(weights, where="weights"):
    expected = spec.parameter_shapes()
    for name, array in weights.items():
        array = np.asarray(array)
        if name not in expected:
            raise ModelFileError(f"{where}: unexpected weight '{name}'")
        if array.shape != expected[name]:
            raise ModelFileError(f"{where}: '{name}' has shape {list(array.shape)}, expected {list(expected[name])}")
        if array.dtype != np.float32:
            raise ModelFileError(f"{where}: '{name}' is {array.dtype}, expected float32")
        bad = ~np.isfinite(array)
        if bad.any():
            raise ModelFileError(f"{where}: '{name}' holds {int(bad.sum())} NaN or Inf values "
                                 f"(first at index {tuple(int(i) for i in np.argwhere(bad)[0])})")
        if name.endswith(".running_var") and (array < 0).any():
            raise ModelFileError(f"{where}: '{name}' has negative variances")


def _check_nodes(g, where):
    """Every node the spec expects, with the same op, inputs and outputs, and nothing else."""
    by_name = {}
    for node in g.node:
        by_name[node.name] = node
    attrs = {}
    expected_nodes = graph.nodes()
    for want in expected_nodes:
        got = by_name.pop(want.name, None)
        if got is None:
            raise ModelFileError(f"{where}: missing node '{want.name}' ({want.op})")
        if got.op_type != want.op:
            raise ModelFileError(f"{where}: node '{want.name}' is {got.op_type}, expected {want.op}")
        if list(got.input) != want.inputs or list(got.output) != want.outputs:
            raise ModelFileError(f"{where}: node '{want.name}' maps {list(got.input)} -> {list(got.output)}, "
                                 f"expected {want.inputs} -> {want.outputs}")
        found = {a.name: helper.get_attribute_value(a) for a in got.attribute}
        for key, value in want.attrs.items():
            if key in ("epsilon", "alpha"):
                continue
            if found.get(key, _onnx_default(want.op, key)) != value:
                raise ModelFileError(f"{where}: node '{want.name}' has {key}={found.get(key)}, expected {value}")
        read = {k: found[k] for k in ATTRIBUTES_READ.get(want.op, ()) if k in found}
        if want.op in ("BatchNormalization", "LeakyRelu"):
            key = ATTRIBUTES_READ[want.op][0]
            read.setdefault(key, _onnx_default(want.op, key))
            if not np.isfinite(read[key]) or (key == "epsilon" and read[key] <= 0):
                raise ModelFileError(f"{where}: node '{want.name}' has {key}={read[key]}")
        if read:
            attrs[want.name] = read
    if by_name:
        extra = next(iter(by_name.values()))
        raise ModelFileError(f"{where}: unexpected node '{extra.name}' ({extra.op_type}); the architecture has "
                             f"{len(expected_nodes)} nodes")
    return attrs


def _onnx_default(op, key):
    return {("BatchNormalization", "epsilon"): 1e-5, ("LeakyRelu", "alpha"): 0.01, ("Conv", "group"): 1,
            ("Conv", "strides"): [1, 1], ("Conv", "dilations"): [1, 1], ("Conv", "pads"): [0, 0, 0, 0],
            ("MaxPool", "pads"): [0, 0, 0, 0], ("MaxPool", "strides"): [1, 1],
            ("Gemm", "transB"): 0, ("Flatten", "axis"): 1}.get((op, key))
