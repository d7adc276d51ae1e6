"""The ensemble of the three heads."""
import numpy as np


def ensemble(outputs):
    """Element-wise mean of k arrays of the same shape (ONNX Mean): the three heads' ages, or genders."""
    return (np.sum(outputs, axis=0, dtype=np.float32) / np.float32(len(outputs))).astype(np.float32)


def flip_average(forward, x):
    """Test-time mirroring: per output, the mean of forward(x) and forward(x mirrored left-right).

    forward: float32 [N, 3, H, W] -> {name: [N, 1]}. Two network passes; a face and its mirror image
    have the same age and gender, so the mean halves some of the network's left-right noise."""
    plain = forward(x)
    mirrored = forward(np.ascontiguousarray(x[..., ::-1]))
    return {name: ensemble([plain[name], mirrored[name]]) for name in plain}
