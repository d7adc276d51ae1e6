"""The network, one call per block in the order of the figure, in plain NumPy (ONNX's NCHW layout).

    image [N, 3, 64, 64]
      -> stem_fine, stem_wide, stem_dilated        three stems, 16 channels each at 32 x 32
      -> stem = concat                             [N, 48, 32, 32]
      -> gender_branch, age_branch                 both read the stem
      -> top = concat(gender, age) -> CBLs         [N, 44, 8, 8]
      -> low_branch                                reads the stem too
      -> three heads: global average pool + fully connected layers
           virtual (one FC per branch), top (FC, LeakyReLU, two FCs), low (one FC, two outputs)
      -> ensemble: age and gender are the means of the three heads' answers

Sizes come from spec.py (spec.BLOCKS lists each block's layers); weights and attributes from the file.
Every tensor passes the one trace hook `t(name, value)` under its ONNX tensor name.
"""
import numpy as np

from . import spec
from .batch_norm import batch_norm
from .checks import check_input
from .concat import concat
from .conv2d import conv2d
from .ensemble import ensemble
from .fully_connected import fully_connected
from .global_avg_pool import global_avg_pool
from .leaky_relu import leaky_relu
from .max_pool import max_pool2x2
from .sigmoid import sigmoid


def untraced(name, value):
    return value


class Model:
    """The reference forward pass. Build it with refimpl.load(path)."""

    def __init__(self, weights, attrs, metadata=None):
        self.weights, self.attrs, self.metadata = weights, attrs, metadata or {}

    def forward(self, x):
        """x: float32 [N, 3, 64, 64] -> {output name: float32 [N, 1]} for the eight outputs, in contract order."""
        return self._forward(check_input(x), untraced)

    def trace(self, x):
        """Every layer's output {layer name: array}, in execution order, the eight outputs included."""
        record = {}

        def t(name, value):
            record[name] = value
            return value

        self._forward(check_input(x), t)
        return record

    def _forward(self, x, t):
        w, attrs = self.weights, self.attrs
        fine = self.block("stem_fine", x, t)
        wide = self.block("stem_wide", x, t)
        dilated = self.block("stem_dilated", x, t)
        stem = t("stem", concat([fine, wide, dilated]))
        gender = self.block("gender_branch", stem, t)
        age = self.block("age_branch", stem, t)
        top = self.block("top", t("top.concat", concat([gender, age])), t)
        low = self.block("low_branch", stem, t)

        def gap(head, h):
            return t(head + ".gap", global_avg_pool(h))

        def fc(name, h):
            return t(name, fully_connected(h, w[name + ".weight"], w[name + ".bias"]))

        # virtual heads: one FC on each branch
        gender_virtual = t("gender_virtual", sigmoid(fc("gender_virtual.fc", gap("gender_virtual", gender))))
        age_virtual = t("age_virtual", fc("age_virtual.fc", gap("age_virtual", age)))
        # top head: FC, Leaky-ReLU, then an FC per task
        alpha = attrs["top_head.act1"]["alpha"]
        hidden = t("top_head.act1", leaky_relu(fc("top_head.fc1", gap("top_head", top)), alpha))
        gender_final = t("gender_final", sigmoid(fc("top_head.fc_gender", hidden)))
        age_final = t("age_final", fully_connected(hidden, w["top_head.fc_age.weight"], w["top_head.fc_age.bias"]))
        # low head: one FC with two outputs, [:, 0] the gender logit, [:, 1] the age
        low_fc = fc("low_head.fc", gap("low_head", low))
        gender_low = t("gender_low", sigmoid(t("low_head.gender_logit", low_fc[:, 0:1])))
        age_low = t("age_low", np.ascontiguousarray(low_fc[:, 1:2]))
        # ensemble
        out = {"age": t("age", ensemble([age_final, age_virtual, age_low])),
               "gender": t("gender", ensemble([gender_final, gender_virtual, gender_low])),
               "age_final": age_final, "gender_final": gender_final, "age_virtual": age_virtual,
               "gender_virtual": gender_virtual, "age_low": age_low, "gender_low": gender_low}
        return {name: out[name] for name in spec.OUTPUT_NAMES}

    def block(self, name, h, t=untraced):
        """One block of spec.BLOCKS on h [N, C, H, W]: its CBLs and 2x2 max pools in order."""
        for layer in spec.BLOCK_BY_NAME[name].layers:
            if isinstance(layer, spec.Pool):
                h = t(f"{name}.{layer.name}", max_pool2x2(h))
            else:
                h = cbl(self.weights, self.attrs, *(f"{name}.{n}" for n in layer.names), h, t)
        return h


def cbl(w, attrs, conv, bn, act, h, t=untraced):
    """conv -> batch norm -> leaky relu, each traced under its name (e.g. "top.conv1", "top.bn1", "top.act1")."""
    h = t(conv, conv2d(h, w[conv + ".weight"], pad=attrs[conv]["pads"][0], dilation=attrs[conv]["dilations"][0]))
    h = t(bn, batch_norm(h, w[bn + ".weight"], w[bn + ".bias"], w[bn + ".running_mean"], w[bn + ".running_var"],
                         eps=attrs[bn]["epsilon"]))
    return t(act, leaky_relu(h, attrs[act]["alpha"]))
