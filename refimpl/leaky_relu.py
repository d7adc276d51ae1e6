"""Leaky ReLU."""
import numpy as np


def leaky_relu(x, alpha):
    """out = x if x >= 0 else alpha * x; any shape; alpha from the file's LeakyRelu node."""
    return np.where(x >= 0, x, x * np.float32(alpha)).astype(np.float32, copy=False)
