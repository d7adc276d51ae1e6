"""The ensemble of the three heads."""
import numpy as np


def ensemble(outputs):
    """Element-wise mean of k arrays of the same shape (ONNX Mean): the three heads' ages, or genders."""
    return (np.sum(outputs, axis=0, dtype=np.float32) / np.float32(len(outputs))).astype(np.float32)
