"""Channel concatenation."""
import numpy as np


def concat(tensors):
    """[N, C_1, H, W], ..., [N, C_k, H, W] -> [N, C_1 + ... + C_k, H, W]."""
    return np.concatenate(tensors, axis=1)
