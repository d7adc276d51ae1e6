"""Five face landmarks -> the aligned face chip the network was trained on (dlib's face-chip geometry).

UTKFace's "aligned and cropped" chips are dlib face chips: `get_face_chip_details`
with its C++ defaults (size 200, padding 0.2) followed by `extract_image_chip`.
For a 5-point `full_object_detection` dlib maps the landmarks onto the template
below with a least-squares similarity transform (rotation, uniform scale,
translation). Measured, not assumed: dlib's own 5 landmarks found on 39 UTKFace
chips lie on average within 1.5 px of this template at size 200 and padding 0.2
(padding 0.25 is off by 3-4 px; see docs/predict.md).

Pixel convention (dlib's): integer coordinates are pixel centres. Outside the
photo the chip is black, as dlib fills it.
"""
import numpy as np

# dlib get_face_chip_details, 5-point branch: landmark i of shape_predictor_5_face_landmarks in
# the unit square, in dlib's order (image-right eye outer & inner corner, image-left eye outer &
# inner corner, bottom of the nose).
DLIB_5_TEMPLATE = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
])
CHIP_SIZE = 200        # UTKFace chips are 200 x 200
CHIP_PADDING = 0.2     # dlib's C++ default; the chips' landmarks sit where this padding puts them
BLOCK_MEAN_PIXELS = 1 << 20   # photo pixels averaged at a time (each band costs 12 bytes a pixel as float32)


def template_points(size=CHIP_SIZE, padding=CHIP_PADDING):
    """float64 [5, 2]: where the five landmarks land in a size x size chip (x, y in pixels)."""
    return (padding + DLIB_5_TEMPLATE) / (2 * padding + 1) * size


def similarity_transform(src, dst):
    """Least-squares similarity (Umeyama, no reflection): float64 [2, 3] A with dst ~ A @ [x, y, 1].

    src, dst: float [K, 2] corresponding points, K >= 2.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"point arrays have shapes {src.shape} and {dst.shape}, expected equal [K >= 2, 2]")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    variance = (s ** 2).sum() / len(src)
    if variance == 0:
        raise ValueError("the source points all coincide")
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1
    rotation = u @ np.diag(sign) @ vt
    scale = (sigma * sign).sum() / variance
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def chip_transform(landmarks, size=CHIP_SIZE, padding=CHIP_PADDING):
    """[2, 3] map from chip pixel (x, y) to photo pixel, for dlib's 5 landmarks float [5, 2] in the photo."""
    return similarity_transform(template_points(size, padding), landmarks)


def extract_chip(image, chip_to_image, size=CHIP_SIZE):
    """uint8 [H, W, C] photo or images.Picture, [2, 3] chip->photo map -> uint8 [size, size, C] chip, bilinear,
    black outside.

    When one chip pixel covers more than two photo pixels, the photo is first averaged
    over k x k blocks (k = the integer scale), so a large face is not aliased; dlib
    uses an image pyramid for the same reason. Only the photo region under the chip is
    read (a band at a time when averaging), never the whole photo.
    """
    a = np.asarray(chip_to_image, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    k = int(scale + 1e-6) if scale >= 2 - 1e-6 else 1    # 1e-6: det() of an exact 4x map can be 15.99999
    if k > 1:
        image, a = _block_mean_around(image, a, size, k)
        x0 = y0 = 0
    else:
        (x0, y0, x1, y1), channels = _region_under(image, a, size, 1), _channels(image)
        if x1 <= x0 or y1 <= y0:                                   # the chip lies wholly outside the photo
            return np.zeros((size, size) + channels, np.uint8)
        image = _read(image, x0, y0, x1, y1)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    px = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
    py = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    return bilinear(image, px - x0, py - y0)                       # exact: x0, y0 are whole and px >= x0 where read


def _region_under(image, a, size, margin):
    """(x0, y0, x1, y1): the photo pixels the chip's corners span, plus margin, clipped to the photo."""
    corners = a[:, :2] @ np.array([[0, size - 1, 0, size - 1], [0, 0, size - 1, size - 1]]) + a[:, 2:]
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(corners[0].min()) - margin, 0, w))
    y0 = int(np.clip(np.floor(corners[1].min()) - margin, 0, h))
    x1 = int(np.clip(np.ceil(corners[0].max()) + margin + 1, 0, w))
    y1 = int(np.clip(np.ceil(corners[1].max()) + margin + 1, 0, h))
    return x0, y0, x1, y1


def _channels(image):
    return tuple(image.shape[2:3]) if len(image.shape) > 2 else ()


def _read(image, x0, y0, x1, y1):
    """Pixels [y0:y1, x0:x1] of an array or of an images.Picture (which converts just that region)."""
    if hasattr(image, "region"):
        return image.region(x0, y0, x1, y1)
    return np.asarray(image)[y0:y1, x0:x1]


def _block_mean_around(image, a, size, k):
    """Average the photo region under the chip over k x k blocks; returns it and the map into it."""
    x0, y0, x1, y1 = _region_under(image, a, size, k)
    x1, y1 = x0 + (x1 - x0) // k * k, y0 + (y1 - y0) // k * k
    hh, ww = max(y1 - y0, 0) // k, max(x1 - x0, 0) // k
    if hh == 0 or ww == 0:                                       # the chip lies wholly outside the photo
        return np.zeros((1, 1) + _channels(image), np.uint8), np.array([[0, 0, -2.0], [0, 0, -2.0]])
    reduced = np.empty((hh, ww, (_channels(image) or (1,))[0]), np.float32)
    group = max(1, BLOCK_MEAN_PIXELS // (k * k * ww))             # k x k block rows averaged at a time
    for start in range(0, hh, group):
        stop = min(start + group, hh)
        band = _read(image, x0, y0 + start * k, x1, y0 + stop * k).astype(np.float32)
        reduced[start:stop] = band.reshape(stop - start, k, ww, k, -1).mean(axis=(1, 3))
    # photo pixel centre p maps to reduced coordinate (p - origin + 0.5) / k - 0.5
    to_reduced = np.array([[1 / k, 0, (0.5 - x0) / k - 0.5], [0, 1 / k, (0.5 - y0) / k - 0.5], [0, 0, 1]])
    return reduced, (to_reduced @ np.vstack([a, [0, 0, 1]]))[:2]


def bilinear(image, px, py):
    """Sample image [H, W, C] at float coordinates px, py [...] (pixel centres at integers); 0 outside."""
    h, w = image.shape[:2]
    x0, y0 = np.floor(px), np.floor(py)
    fx, fy = (px - x0)[..., None], (py - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    out = np.zeros(px.shape + image.shape[2:], np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            values = image[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)].astype(np.float64)
            out += np.where(inside[..., None], values, 0.0) * (wx * wy)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
