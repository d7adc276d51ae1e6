"""Face chip -> network input: RGB uint8 [H, W, 3] -> float32 [3, 64, 64] in [0, 1].

Resizing is separable linear resampling with antialiasing (the triangle filter
widened by the scale factor when shrinking, as PIL's BILINEAR does), written as
two small matrix products so it needs nothing beyond numpy. Training uses this
same function, so the network sees the same pixels at training and at inference.
"""
import numpy as np

from . import spec
from .errors import InputError


def resize_matrix(n_in, n_out):
    """[n_out, n_in] weights: row o averages the input pixels under output pixel o."""
    scale = n_in / n_out
    support = max(scale, 1.0)                     # filter radius in input pixels
    centers = (np.arange(n_out) + 0.5) * scale    # output pixel centres in input coordinates
    positions = np.arange(n_in) + 0.5
    distance = np.abs(positions[None, :] - centers[:, None]) / support
    w = np.clip(1.0 - distance, 0.0, None)
    w[w.sum(axis=1) == 0, :] = 0                  # cannot happen for n_out >= 1; keeps division safe
    return w / w.sum(axis=1, keepdims=True)


def to_rgb(image):
    """uint8 [H, W] gray, [H, W, 1], [H, W, 3] RGB or [H, W, 4] RGBA -> uint8 [H, W, 3]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"image dtype is {image.dtype}, expected uint8 (0..255)")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"image shape is {image.shape}, expected [H, W], [H, W, 3] or [H, W, 4]")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image shape is {image.shape}: it has no pixels")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:                      # composite on black: a transparent pixel has no face in it
        alpha = image[:, :, 3:4].astype(np.float32) / 255
        return np.round(image[:, :, :3] * alpha).astype(np.uint8)
    return image


def preprocess(image):
    """uint8 face chip [H, W] / [H, W, 3] / [H, W, 4] -> float32 [3, 64, 64], values in [0, 1]."""
    rgb = to_rgb(image).astype(np.float32) / np.float32(255)
    _, out_h, out_w = spec.INPUT_SHAPE
    rows = resize_matrix(rgb.shape[0], out_h).astype(np.float32)
    cols = resize_matrix(rgb.shape[1], out_w).astype(np.float32)
    # out[c, y, x] = sum_{i, j} rows[y, i] * rgb[i, j, c] * cols[x, j]
    resized = np.einsum("yi,ijc,xj->cyx", rows, rgb, cols, optimize=True)
    return np.ascontiguousarray(np.clip(resized, 0.0, 1.0), dtype=np.float32)
