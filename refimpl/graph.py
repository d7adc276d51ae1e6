"""The network as a list of ONNX-style nodes, made from the spec.

Both directions use it: the writer (onnx_format.write) turns it into a file, and
the loader checks a file's graph against it node by node, so a file that loads is
the architecture, not merely something with the right weights.
"""
from dataclasses import dataclass, field

from . import spec


@dataclass
class Node:
    op: str                 # ONNX op_type
    name: str               # node name, also its (first) output tensor's name
    inputs: list
    outputs: list = None
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.outputs is None:
            self.outputs = [self.name]


def _block_nodes(block, epsilon, alpha):
    nodes, x = [], block.input
    if len(block.sources) > 1:
        nodes.append(Node("Concat", x, [spec.BLOCK_BY_NAME[s].output for s in block.sources], attrs={"axis": 1}))
    for layer in block.layers:
        prefix = f"{block.name}."
        if isinstance(layer, spec.Pool):
            nodes.append(Node("MaxPool", prefix + layer.name, [x],
                              attrs={"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0]}))
            x = prefix + layer.name
            continue
        conv, bn, act = (prefix + n for n in layer.names)
        nodes.append(Node("Conv", conv, [x, conv + ".weight"], attrs={
            "kernel_shape": [layer.k, layer.k], "pads": [layer.pad] * 4,
            "dilations": [layer.dilation] * 2, "strides": [1, 1], "group": 1}))
        nodes.append(Node("BatchNormalization", bn,
                          [conv, *(f"{bn}.{p}" for p in ("weight", "bias", "running_mean", "running_var"))],
                          attrs={"epsilon": epsilon}))
        nodes.append(Node("LeakyRelu", act, [bn], attrs={"alpha": alpha}))
        x = act
    return nodes


def _gap(head, source):
    return [Node("GlobalAveragePool", f"{head}.gap4d", [source]),
            Node("Flatten", f"{head}.gap", [f"{head}.gap4d"], attrs={"axis": 1})]


def _fc(fc_key, x, out=None):
    return Node("Gemm", out or fc_key, [x, fc_key + ".weight", fc_key + ".bias"], attrs={"transB": 1})


def nodes(epsilon=spec.BN_EPSILON, alpha=spec.LEAKY_ALPHA):
    """Every node of the graph in execution order (a topological order)."""
    out = []
    for block in spec.BLOCKS:
        if block.sources == ("stem",) and not any(n.name == "stem" for n in out):
            out.append(Node("Concat", "stem", [spec.BLOCK_BY_NAME[b].output for b in spec.STEM_BLOCKS],
                            attrs={"axis": 1}))
        out += _block_nodes(block, epsilon, alpha)
    src = {b.name: b.output for b in spec.BLOCKS}
    out += _gap("gender_virtual", src["gender_branch"])
    out += [_fc("gender_virtual.fc", "gender_virtual.gap"),
            Node("Sigmoid", "gender_virtual", ["gender_virtual.fc"])]
    out += _gap("age_virtual", src["age_branch"])
    out += [_fc("age_virtual.fc", "age_virtual.gap", out="age_virtual")]
    out += _gap("top_head", src["top"])
    out += [_fc("top_head.fc1", "top_head.gap"),
            Node("LeakyRelu", "top_head.act1", ["top_head.fc1"], attrs={"alpha": alpha}),
            _fc("top_head.fc_gender", "top_head.act1"),
            Node("Sigmoid", "gender_final", ["top_head.fc_gender"]),
            _fc("top_head.fc_age", "top_head.act1", out="age_final")]
    out += _gap("low_head", src["low_branch"])
    out += [_fc("low_head.fc", "low_head.gap"),
            Node("Split", "low_head.split", ["low_head.fc"], outputs=["low_head.gender_logit", "age_low"],
                 attrs={"axis": 1}),
            Node("Sigmoid", "gender_low", ["low_head.gender_logit"])]
    out += [Node("Mean", "age", ["age_final", "age_virtual", "age_low"]),
            Node("Mean", "gender", ["gender_final", "gender_virtual", "gender_low"])]
    return out
