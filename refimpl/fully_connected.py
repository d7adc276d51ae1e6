"""Fully connected layer (ONNX Gemm with transB=1)."""
import numpy as np


def fully_connected(x, w, b):
    """out[n, o] = b[o] + sum_i x[n, i] * w[o, i]; x: [N, in], w: [out, in], b: [out] -> [N, out]."""
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"fully_connected: input {x.shape} does not fit weight {w.shape}")
    return (x @ w.T + b).astype(np.float32, copy=False)
