"""Seeded random weights that exercise every layer, for tests before (and beside) trained ones.

BatchNorm gets non-trivial statistics (running mean and variance far from 0 and 1,
scale and shift far from 1 and 0), so a reader that skips or mis-orders a BatchNorm
term gives visibly different outputs. Conv weights are He-scaled so activations
keep their size through the 20 layers, and the age heads get a bias near 30 years
so that age outputs are in the range the tolerances are written for.
"""
import numpy as np

from . import spec


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
    for name in ("age_virtual.fc.bias", "top_head.fc_age.bias"):
        weights[name] += np.float32(30.0)
    weights["low_head.fc.bias"][1] += np.float32(30.0)         # channel 1 is age_low
    return weights
