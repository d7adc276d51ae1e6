"""Batch normalization at inference: running statistics, per channel."""
import numpy as np


def batch_norm(x, scale, bias, mean, var, eps):
    """out[n, c, y, x] = scale[c] * (x[n, c, y, x] - mean[c]) / sqrt(var[c] + eps) + bias[c]

    x: [N, C, H, W]; scale, bias, mean, var: [C]; eps: from the file's BatchNormalization node.
    """
    per_channel = (1, -1, 1, 1)
    inv_std = 1.0 / np.sqrt(var.astype(np.float32) + np.float32(eps))
    out = (x - mean.reshape(per_channel)) * (scale * inv_std).reshape(per_channel) + bias.reshape(per_channel)
    return out.astype(np.float32, copy=False)
