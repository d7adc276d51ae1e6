"""Reading and writing the golden ONNX file (the contract of docs/architecture.md).

`write` turns a {name: array} weight dict into the file; `read` returns the
weights and per-layer attributes of a file after checking, node by node and
initializer by initializer, that it is exactly the architecture of spec.py.
"""
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import graph, spec
from .errors import ModelFileError, require_file

MAX_FILE_BYTES = 16 * 2**20       # this architecture's file is about 0.4 MB; anything far larger is not one
DEFAULT_DOMAINS = ("", "ai.onnx")
# attributes the writer leaves out that a file may carry, with the only value that means the same graph
_ANY, _NOT_ALLOWED = object(), object()
IGNORED_ATTRIBUTES = {("Conv", "auto_pad"): b"NOTSET", ("MaxPool", "auto_pad"): b"NOTSET",
                      ("MaxPool", "ceil_mode"): 0, ("MaxPool", "storage_order"): 0, ("MaxPool", "dilations"): [1, 1],
                      ("Gemm", "alpha"): 1.0, ("Gemm", "beta"): 1.0, ("Gemm", "transA"): 0,
                      ("BatchNormalization", "momentum"): _ANY,      # used in training only
                      ("BatchNormalization", "training_mode"): 0, ("BatchNormalization", "spatial"): 1,
                      ("Split", "split"): [1, 1]}
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
    not this architecture, and for every malformed file (nothing else escapes)."""
    model = _load(path)
    where = os.path.basename(os.fspath(path))
    try:
        return _read_model(model, where)
    except ModelFileError:
        raise
    except Exception as exc:  # a field no check above foresaw: still one line, never a traceback
        raise ModelFileError(f"{where}: malformed ONNX file ({type(exc).__name__}: {_first_line(exc)})") from None


def _read_model(model, where):
    _check_header(model, where)
    g = model.graph
    _check_no_external_data(g, where)
    _check_io(g, where)
    weights = _read_initializers(g, where)
    attrs = _check_nodes(g, where)
    _check_with_onnx_checker(model, where)
    return weights, attrs, {p.key: p.value for p in model.metadata_props}


def _first_line(exc, limit=120):
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:limit]


def _load(path):
    """The file's bytes parsed as a ModelProto. Never opens any other file: the bytes are read here and parsed
    from memory, so a tensor stored as external data (a path to another file) cannot be followed."""
    path = require_file(path, "an ONNX model file such as weights/agegender.onnx")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ModelFileError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB, expected an ONNX file of this "
                             f"architecture (about 0.4 MB)")
    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises several types for garbage bytes
        raise ModelFileError(f"{path}: not an ONNX file ({type(exc).__name__}: {_first_line(exc, 80)})") from None


def _check_header(model, where):
    """Opset imports: the default domain once, at a version the graph means the same in; nothing else."""
    default = [o for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    foreign = [o.domain for o in model.opset_import if o.domain not in DEFAULT_DOMAINS]
    if foreign:
        raise ModelFileError(f"{where}: imports the operator domain '{foreign[0]}'; this architecture uses only "
                             f"the default ONNX domain")
    if len(default) != 1:
        raise ModelFileError(f"{where}: {len(default)} imports of the default ONNX domain, expected one "
                             f"(opset {spec.OPSET_MIN} to {spec.OPSET_MAX})")
    if not spec.OPSET_MIN <= default[0].version <= spec.OPSET_MAX:
        raise ModelFileError(f"{where}: opset {default[0].version}, expected {spec.OPSET_MIN} to {spec.OPSET_MAX} "
                             f"(the kit writes {spec.OPSET})")
    if len(model.functions):
        raise ModelFileError(f"{where}: defines {len(model.functions)} local functions; this architecture has none")


def _check_no_external_data(g, where):
    """This architecture's weights are always inside the file; a tensor pointing elsewhere is refused unread."""
    for tensor in list(g.initializer) + [s.values for s in g.sparse_initializer]:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ModelFileError(f"{where}: initializer '{tensor.name}' is stored outside the file (external data "
                                 f"'{location[:60]}'); this kit reads only weights stored inside the .onnx file")
    if len(g.sparse_initializer):
        raise ModelFileError(f"{where}: has sparse initializers ('{g.sparse_initializer[0].values.name}'); this "
                             f"architecture stores every weight as a dense float32 initializer")


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
        if tensor.name in weights:   # ONNX Runtime keeps one of the two, refimpl another: refuse, do not guess
            raise ModelFileError(f"{where}: initializer '{tensor.name}' is given twice; each weight must appear once")
        weights[tensor.name] = _tensor_to_array(tensor, expected[tensor.name], where)
    missing = [name for name in expected if name not in weights]
    if missing:
        raise ModelFileError(f"{where}: missing initializer '{missing[0]}' of shape {list(expected[missing[0]])}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    _check_weights(weights, where)
    return {name: np.ascontiguousarray(weights[name]) for name in expected}


def _tensor_to_array(tensor, shape, where):
    """Check the declared type, dims and stored size against the spec before any conversion: a file that
    declares absurd dims or holds too few bytes is refused here, without allocating what it declares."""
    name = tensor.name
    if tensor.data_type != onnx.TensorProto.FLOAT:
        type_name = onnx.TensorProto.DataType.Name(tensor.data_type) if tensor.data_type in \
            onnx.TensorProto.DataType.values() else str(tensor.data_type)
        raise ModelFileError(f"{where}: '{name}' is {type_name}, expected FLOAT (float32)")
    if tuple(tensor.dims) != shape:
        raise ModelFileError(f"{where}: '{name}' has shape {list(tensor.dims)[:8]}, expected {list(shape)}")
    if tensor.HasField("segment"):
        raise ModelFileError(f"{where}: '{name}' is a segment of a tensor; expected a whole tensor")
    size = int(np.prod(shape, dtype=np.int64))
    stored = {"raw_data": len(tensor.raw_data) // 4 if tensor.raw_data else 0, "float_data": len(tensor.float_data)}
    if tensor.raw_data and len(tensor.raw_data) != 4 * size:
        raise ModelFileError(f"{where}: '{name}' holds {len(tensor.raw_data)} bytes, expected {4 * size} "
                             f"(float32 {list(shape)})")
    if sum(v > 0 for v in stored.values()) != 1 or max(stored.values()) != size:
        raise ModelFileError(f"{where}: '{name}' holds {' and '.join(f'{v} values in {k}' for k, v in stored.items())}"
                             f", expected {size} values in one of them (float32 {list(shape)})")
    return numpy_helper.to_array(tensor)


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
        if node.name in by_name:
            raise ModelFileError(f"{where}: two nodes are named '{node.name}'; node names must be unique")
        if node.domain not in DEFAULT_DOMAINS:
            raise ModelFileError(f"{where}: node '{node.name}' is {node.op_type} of the domain '{node.domain}', "
                                 f"expected the default ONNX domain")
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
        if len(found) != len(got.attribute):
            raise ModelFileError(f"{where}: node '{want.name}' gives an attribute twice")
        for key, value in found.items():   # an attribute the spec does not write must hold ONNX's default
            if key not in want.attrs and IGNORED_ATTRIBUTES.get((want.op, key), _NOT_ALLOWED) not in (value, _ANY):
                raise ModelFileError(f"{where}: node '{want.name}' has {key}={value}, which this architecture "
                                     f"does not use")
        for key, value in want.attrs.items():
            if key in ("epsilon", "alpha"):
                continue
            if found.get(key, _onnx_default(want.op, key)) != value:
                raise ModelFileError(f"{where}: node '{want.name}' has {key}={found.get(key)}, expected {value}")
        read = {k: found[k] for k in ATTRIBUTES_READ.get(want.op, ()) if k in found}
        if want.op in ("BatchNormalization", "LeakyRelu"):
            key = ATTRIBUTES_READ[want.op][0]
            read.setdefault(key, _onnx_default(want.op, key))
            if not isinstance(read[key], float) or not np.isfinite(read[key]) or (key == "epsilon" and read[key] <= 0):
                raise ModelFileError(f"{where}: node '{want.name}' has {key}={read[key]}")
        if read:
            attrs[want.name] = read
    if by_name:
        extra = next(iter(by_name.values()))
        raise ModelFileError(f"{where}: unexpected node '{extra.name}' ({extra.op_type}); the architecture has "
                             f"{len(expected_nodes)} nodes")
    return attrs


def _check_with_onnx_checker(model, where):
    """onnx's own validation, after the checks above (which name the layer): a second line of defence."""
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelFileError(f"{where}: refused by onnx.checker ({_first_line(exc)})") from None


def _onnx_default(op, key):
    return {("BatchNormalization", "epsilon"): 1e-5, ("LeakyRelu", "alpha"): 0.01, ("Conv", "group"): 1,
            ("Conv", "strides"): [1, 1], ("Conv", "dilations"): [1, 1], ("Conv", "pads"): [0, 0, 0, 0],
            ("MaxPool", "pads"): [0, 0, 0, 0], ("MaxPool", "strides"): [1, 1],
            ("Gemm", "transB"): 0, ("Flatten", "axis"): 1}.get((op, key))
