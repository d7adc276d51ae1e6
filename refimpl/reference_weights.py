"""Seeded random weights that exercise every layer, for tests before (and beside) trained ones.

BatchNorm gets non-trivial statistics (running mean and variance far from 0 and 1,
scale and shift far from 1 and 0), so a reader that skips or mis-orders a BatchNorm
term gives visibly different outputs. Conv weights are He-scaled so activations
keep their size through the 20 layers.

The six head outputs are then calibrated (HEAD_RANGES) so that every head works in
its sensitive range: drawn at random, gender_virtual's logit sat near +10 and
gender_final's near -7, where the sigmoid's slope is 5e-5 and 1e-3, so the 1e-5
probability tolerance hid a fifth of a logit. With |logit| <= 2 the slope is at
least 0.1 and 1e-5 in probability is at most 1e-4 in logit. The ages are spread
over 16 years between the calibration images (noise, flat, gradient, checkerboard)
instead of sitting at one value, and stay in the range the tolerances are written for.
"""
import numpy as np

from . import spec

# (FC weight name, output row) -> (centre, half-width) of what the head gives on the calibration images:
# gender logits centred apart so that a swapped head shows, ages in years. Wider age ranges mean larger
# FC weights on the same features, which amplify the trunk's float32 rounding into the ages: 8 years
# keeps that below 1e-4 years, a tenth of the 1e-3 tolerance.
HEAD_RANGES = {
    ("gender_virtual.fc", 0): (0.5, 1.5),
    ("top_head.fc_gender", 0): (-0.5, 1.5),
    ("low_head.fc", 0): (0.0, 1.5),
    ("age_virtual.fc", 0): (35.0, 8.0),
    ("top_head.fc_age", 0): (30.0, 8.0),
    ("low_head.fc", 1): (40.0, 8.0),
}
# the tensor each head FC reads, as named in Model.trace
HEAD_INPUTS = {"gender_virtual.fc": "gender_virtual.gap", "age_virtual.fc": "age_virtual.gap",
               "top_head.fc_gender": "top_head.act1", "top_head.fc_age": "top_head.act1",
               "low_head.fc": "low_head.gap"}


def reference_weights(seed=0):
    """{initializer name: float32 array} for every weight of spec.parameter_shapes()."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in spec.parameter_shapes().items():
        if name.endswith(".running_mean"):
            value = rng.normal(0.0, 0.5, shape)
        elif name.endswith(".running_var"):
            value = rng.uniform(0.3, 3.0, shape)
        elif len(shape) == 1 and ".bn" in name and name.endswith(".weight"):
            value = rng.uniform(0.5, 2.0, shape)
        elif len(shape) == 1:                                  # BN shift, FC bias
            value = rng.normal(0.0, 0.3, shape)
        else:                                                  # conv [out, in, k, k] or FC [out, in]
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        weights[name] = value.astype(np.float32)
    return calibrate_heads(weights)


def calibrate_heads(weights):
    """Scale and shift each head's FC row so its output spans HEAD_RANGES on the calibration images."""
    from . import graph
    from .golden import golden_inputs
    from .model import Model

    attrs = {node.name: node.attrs for node in graph.nodes()}
    trace = Model(weights, attrs).trace(golden_inputs())
    for (fc, row), (centre, half_width) in HEAD_RANGES.items():
        w = weights[f"{fc}.weight"]
        z = trace[HEAD_INPUTS[fc]].astype(np.float64) @ w[row].astype(np.float64)
        mid, spread = (z.max() + z.min()) / 2, (z.max() - z.min()) / 2
        scale = half_width / spread
        w[row] = (w[row] * scale).astype(np.float32)
        weights[f"{fc}.bias"][row] = np.float32(centre - mid * scale)
    return weights
