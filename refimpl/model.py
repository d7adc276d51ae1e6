"""The network wired from the spec, one NumPy op per layer, in ONNX's NCHW layout."""
import numpy as np

from . import graph, spec
from .batch_norm import batch_norm
from .concat import concat
from .conv2d import conv2d
from .ensemble import ensemble
from .errors import InputError
from .fully_connected import fully_connected
from .global_avg_pool import global_avg_pool
from .leaky_relu import leaky_relu
from .max_pool import max_pool2x2
from .sigmoid import sigmoid


def check_input(x):
    """Validate a batch for any backend: float32 [N, 3, 64, 64], N >= 1, finite. Returns it C-contiguous."""
    if not isinstance(x, np.ndarray):
        raise InputError(f"input is a {type(x).__name__}, expected a numpy float32 array [N, 3, 64, 64]")
    if x.ndim != 4 or x.shape[1:] != spec.INPUT_SHAPE:
        hint = " (one image? add a batch axis: x[None])" if x.shape == spec.INPUT_SHAPE else ""
        hint = hint or (" (NHWC? use x.transpose(0, 3, 1, 2))" if x.shape[1:] == (64, 64, 3) else "")
        raise InputError(f"input shape is {list(x.shape)}, expected [N, 3, 64, 64]{hint}")
    if x.dtype != np.float32:
        raise InputError(f"input dtype is {x.dtype}, expected float32 with values in [0, 1] "
                         f"(refimpl.preprocess makes it from a uint8 image)")
    if x.shape[0] == 0:
        raise InputError("input batch is empty (N = 0), expected at least one image")
    finite = np.isfinite(x)
    if not finite.all():
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InputError(f"input holds {int((~finite).sum())} NaN or Inf values (first at index {first})")
    return np.ascontiguousarray(x)


class Model:
    """The reference forward pass. Build it with refimpl.load(path)."""

    def __init__(self, weights, attrs, metadata=None):
        self.weights, self.attrs, self.metadata = weights, attrs, metadata or {}

    def forward(self, x):
        """x: float32 [N, 3, 64, 64] -> {output name: float32 [N, 1]} for the eight outputs, in contract order."""
        return self._run(check_input(x), record=None)

    def trace(self, x):
        """Every layer's output {layer name: array}, in execution order, the eight outputs included."""
        record = {}
        self._run(check_input(x), record)
        return record

    def _run(self, x, record):
        w = self.weights

        def keep(name, value):
            if record is not None:
                record[name] = value
            return value

        tensors = {"image": x}
        for block in spec.BLOCKS:
            if block.sources == ("stem",) and "stem" not in tensors:
                tensors["stem"] = keep("stem", concat([tensors[graph.block_output(spec.BLOCK_BY_NAME[b])]
                                                      for b in spec.STEM_BLOCKS]))
            h = tensors[block.sources[0]] if len(block.sources) == 1 else keep(
                graph.block_input(block),
                concat([tensors[graph.block_output(spec.BLOCK_BY_NAME[s])] for s in block.sources]))
            for layer in block.layers:
                p = f"{block.name}."
                if isinstance(layer, spec.Pool):
                    h = keep(p + layer.name, max_pool2x2(h))
                    continue
                conv, bn, act = (p + n for n in layer.names)
                pads, dilations = self.attrs[conv]["pads"], self.attrs[conv]["dilations"]
                h = keep(conv, conv2d(h, w[conv + ".weight"], pad=pads[0], dilation=dilations[0]))
                h = keep(bn, batch_norm(h, *(w[f"{bn}.{q}"] for q in ("weight", "bias", "running_mean", "running_var")),
                                        eps=self.attrs[bn]["epsilon"]))
                h = keep(act, leaky_relu(h, self.attrs[act]["alpha"]))
            tensors[graph.block_output(block)] = h

        def fc(name, v):
            return keep(name, fully_connected(v, w[name + ".weight"], w[name + ".bias"]))

        def gap(head, block):
            return keep(head + ".gap", global_avg_pool(tensors[graph.block_output(spec.BLOCK_BY_NAME[block])]))

        out = {}

        def output(name, value):
            out[name] = keep(name, value)
            return value

        output("gender_virtual", sigmoid(fc("gender_virtual.fc", gap("gender_virtual", "gender_branch"))))
        output("age_virtual", fc("age_virtual.fc", gap("age_virtual", "age_branch")))
        hidden = keep("top_head.act1", leaky_relu(fc("top_head.fc1", gap("top_head", "top")),
                                                  self.attrs["top_head.act1"]["alpha"]))
        output("gender_final", sigmoid(fc("top_head.fc_gender", hidden)))
        output("age_final", fully_connected(hidden, w["top_head.fc_age.weight"], w["top_head.fc_age.bias"]))
        low = fc("low_head.fc", gap("low_head", "low_branch"))
        output("gender_low", sigmoid(keep("low_head.gender_logit", low[:, 0:1])))
        output("age_low", np.ascontiguousarray(low[:, 1:2]))
        output("age", ensemble([out["age_final"], out["age_virtual"], out["age_low"]]))
        output("gender", ensemble([out["gender_final"], out["gender_virtual"], out["gender_low"]]))
        return {name: out[name] for name in spec.OUTPUT_NAMES}
