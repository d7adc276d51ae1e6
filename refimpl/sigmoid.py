"""Logistic sigmoid."""
import numpy as np


def sigmoid(x):
    """out = 1 / (1 + exp(-x)), written so that neither branch overflows for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32, copy=False)
