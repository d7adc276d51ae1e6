"""Face detection and 5-point landmarks: dlib's HOG frontal face detector and shape_predictor_5_face_landmarks.

The optional `detect` extra: `dlib-bin` (a prebuilt dlib wheel, Boost license; the
HOG detector is compiled into it) and `face-recognition-models` (ships
shape_predictor_5_face_landmarks.dat, CC0). Nothing is downloaded at run time.
These are the very landmarks dlib's face-chip template is defined on, so align.py
reproduces UTKFace's crop without any remapping between landmark conventions.

A compiled `dlib` works in place of `dlib-bin`; AGEGENDER_SHAPE_PREDICTOR may name
the .dat file when face-recognition-models is not installed.
"""
import importlib.util
import os
import threading
from dataclasses import dataclass

import numpy as np

from .errors import DetectorUnavailableError
from .images import as_picture

INSTALL_HINT = "pip install 'agegender-kit[detect]'"
DETECT_MAX_SIDE = 1024   # photos are searched at most this large (then upsampled once), landmarks at full size
LANDMARK_MARGIN = 1.0    # landmarks read the face box and this many box sizes around it (dlib's features lie within)
LANDMARK_MAX_SIDE = 1024  # larger face boxes get their landmarks on a block-averaged crop
UPSAMPLE = 1             # one 2x upsampling: the 80 px HOG window then finds faces from about 40 px


@dataclass(frozen=True)
class Detection:
    """One face: box (left, top, right, bottom) in photo pixels, landmarks float [5, 2], detector score."""
    box: tuple
    landmarks: np.ndarray
    score: float


def shape_predictor_path():
    """Where shape_predictor_5_face_landmarks.dat is, or DetectorUnavailableError."""
    path = os.environ.get("AGEGENDER_SHAPE_PREDICTOR")
    if path:
        if not os.path.isfile(path):
            raise DetectorUnavailableError(f"AGEGENDER_SHAPE_PREDICTOR={path} is not a file")
        return path
    spec = importlib.util.find_spec("face_recognition_models")   # not imported: its __init__ needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailableError(f"face detection needs face-recognition-models: {INSTALL_HINT}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", "shape_predictor_5_face_landmarks.dat")
    if not os.path.isfile(path):
        raise DetectorUnavailableError(f"{path} is missing: reinstall face-recognition-models")
    return path


def available():
    """Whether the detector extra is installed (dlib importable and the landmark model found)."""
    try:
        _import_dlib()
        shape_predictor_path()
    except DetectorUnavailableError:
        return False
    return True


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise DetectorUnavailableError(f"face detection needs dlib: {INSTALL_HINT}") from None
    return dlib


class FaceDetector:
    """Finds frontal faces (about 40 px and up) and their 5 landmarks in an RGB photo. Safe to share between threads."""

    def __init__(self, upsample=UPSAMPLE, max_side=DETECT_MAX_SIDE, threshold=0.0):
        dlib = _import_dlib()
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(shape_predictor_path())
        self.upsample, self.max_side, self.threshold = upsample, max_side, threshold
        self._lock = threading.Lock()   # dlib does not promise thread safety for these objects: one call at a time

    def __call__(self, image):
        """uint8 RGB [H, W, 3] or an images.Picture -> list of Detection, largest face first.

        Faces are searched on a copy shrunk to max_side (read band by band); each face's
        landmarks are found at full resolution on the pixels around its box only.
        """
        picture = as_picture(image)
        small, k = _shrink(picture, self.max_side)
        with self._lock:
            rects, scores, _ = self._detector.run(small, self.upsample, self.threshold)
            found = []
            for rect, score in zip(rects, scores):
                box = (int(rect.left() * k), int(rect.top() * k),
                       int((rect.right() + 1) * k - 1), int((rect.bottom() + 1) * k - 1))
                points = self._landmarks(picture, box)
                found.append(Detection(_clip_box(box, picture.shape), points, float(score)))
        found.sort(key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        return found

    def _landmarks(self, picture, box):
        """float [5, 2] landmarks in photo pixels, found on the full-resolution crop around box (l, t, r, b).

        A face box wider than LANDMARK_MAX_SIDE is measured on that crop averaged over k x k
        blocks (k brings the box to LANDMARK_MAX_SIDE or less): memory stays bounded however
        large the face, and a pixel there is still a fraction of a pixel of the 200 px chip.
        """
        left, top, right, bottom = box
        side = max(right - left + 1, bottom - top + 1)
        margin = int(LANDMARK_MARGIN * side) + 2
        x0, x1 = _span(left - margin, right + 1 + margin, picture.width)
        y0, y1 = _span(top - margin, bottom + 1 + margin, picture.height)
        k = max(1, int(np.ceil(side / LANDMARK_MAX_SIDE)))
        if min(x1 - x0, y1 - y0) < k:                         # a sliver of a box at the photo's edge
            k = 1
        if k == 1:
            crop = np.ascontiguousarray(picture.region(x0, y0, x1, y1), dtype=np.uint8)
        else:
            crop = _block_mean(picture, x0, y0, x1, y1, k)
        rect = self._dlib.rectangle(int((left - x0) // k), int((top - y0) // k),
                                    int((right - x0) // k), int((bottom - y0) // k))
        shape = self._predictor(crop, rect)
        centre = (k - 1) / 2                                  # block i covers photo pixels x0 + i*k .. x0 + i*k + k-1
        return np.array([[p.x * k + centre + x0, p.y * k + centre + y0] for p in shape.parts()], dtype=np.float64)


def _span(start, stop, size):
    """[start, stop) clipped to [0, size), at least one pixel wide."""
    start = int(np.clip(start, 0, size - 1))
    return start, int(np.clip(stop, start + 1, size))


def _shrink(picture, max_side):
    """Block-average by the smallest integer k that brings the longer side to max_side or less -> (uint8 RGB, k)."""
    k = int(np.ceil(max(picture.height, picture.width) / max_side))
    if k <= 1:
        return np.ascontiguousarray(np.asarray(picture), dtype=np.uint8), 1
    return _block_mean(picture, 0, 0, picture.width // k * k, picture.height // k * k, k), k


def _block_mean(picture, x0, y0, x1, y1, k):
    """uint8 RGB mean of the region [y0:y1, x0:x1] over k x k blocks (sides cut to multiples of k), rounded.

    Read a band of rows at a time: the sums are exact integers, so this equals the mean of the whole region."""
    h, w = (y1 - y0) // k * k, (x1 - x0) // k * k
    small = np.empty((h // k, w // k, 3), np.uint8)
    rows = picture.band_rows(k)
    for top in range(0, h, rows):
        band = picture.region(x0, y0 + top, x0 + w, y0 + min(top + rows, h))
        n = band.shape[0] // k
        sums = band.reshape(n, k, w // k, k, 3).sum(axis=(1, 3), dtype=np.int64)
        small[top // k:top // k + n] = np.round(sums / (k * k))
    return small


def _clip_box(box, shape):
    h, w = shape[:2]
    left, top, right, bottom = box
    return (int(np.clip(left, 0, w - 1)), int(np.clip(top, 0, h - 1)),
            int(np.clip(right, 0, w - 1)), int(np.clip(bottom, 0, h - 1)))
