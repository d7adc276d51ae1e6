"""An error model of reduced-precision inference for the TensorRT stand-ins: refimpl with every layer rounded.

TensorRT in FP16 stores weights, activations and the tensors between layers in half precision (11
significant bits). half_precision_forward imitates that: the weights and the input are rounded, and every
op's output (conv, BatchNorm, LeakyReLU, pool, concat, pooling, FC, sigmoid, mean) is rounded before the
next op reads it. Each op still computes in float32 in between, as TensorRT's FP16 kernels accumulate in
FP32 or FP16 depending on the tactic, and TensorRT fuses conv + BatchNorm + activation where this rounds
after each: a model of the error's size, not TensorRT's exact numbers.
"""
from contextlib import contextmanager

import numpy as np

OPS = ("conv2d", "batch_norm", "leaky_relu", "max_pool2x2", "concat", "global_avg_pool", "fully_connected",
       "sigmoid", "ensemble")


def round_half(x):
    """IEEE half precision (11 significant bits, range and subnormals included), back in float32."""
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def round_significant(bits):
    """A rounding to `bits` significant bits (8: bfloat16's precision) with float32's range."""
    def rounding(x):
        mantissa, exponent = np.frexp(np.asarray(x, np.float32))
        return np.ldexp(np.round(mantissa * 2.0 ** bits) / 2.0 ** bits, exponent).astype(np.float32)
    return rounding


@contextmanager
def _rounding_every_op(rounding):
    import refimpl.model as model_module

    saved = {op: getattr(model_module, op) for op in OPS}
    try:
        for op, fn in saved.items():
            setattr(model_module, op, lambda *args, _fn=fn, **kwargs: rounding(_fn(*args, **kwargs)))
        yield
    finally:
        for op, fn in saved.items():
            setattr(model_module, op, fn)


def half_precision_forward(model, x, rounding=round_half):
    """The eight outputs of refimpl `model` for x, with every weight and tensor rounded by `rounding`."""
    import refimpl

    rounded = refimpl.Model({k: rounding(v) for k, v in model.weights.items()}, model.attrs, model.metadata)
    with _rounding_every_op(rounding):
        return {k: np.ascontiguousarray(v) for k, v in rounded.forward(rounding(x)).items()}
