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

INSTALL_HINT = "pip install 'agegender-kit[detect]'"
DETECT_MAX_SIDE = 1024   # photos are searched at most this large (then upsampled once), landmarks at full size
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

    def __call__(self, rgb):
        """uint8 RGB [H, W, 3] -> list of Detection, largest face first."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        small, k = _shrink(rgb, self.max_side)
        with self._lock:
            rects, scores, _ = self._detector.run(small, self.upsample, self.threshold)
            found = []
            for rect, score in zip(rects, scores):
                box = self._dlib.rectangle(int(rect.left() * k), int(rect.top() * k),
                                           int((rect.right() + 1) * k - 1), int((rect.bottom() + 1) * k - 1))
                shape = self._predictor(rgb, box)
                points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
                found.append(Detection(_clip_box(box, rgb.shape), points, float(score)))
        found.sort(key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
        return found


def _shrink(rgb, max_side):
    """Block-average by the smallest integer k that brings the longer side to max_side or less."""
    k = int(np.ceil(max(rgb.shape[:2]) / max_side))
    if k <= 1:
        return rgb, 1
    h, w = rgb.shape[0] // k * k, rgb.shape[1] // k * k
    small = rgb[:h, :w].reshape(h // k, k, w // k, k, 3).mean(axis=(1, 3))
    return np.ascontiguousarray(np.round(small), dtype=np.uint8), k


def _clip_box(rect, shape):
    h, w = shape[:2]
    return (int(np.clip(rect.left(), 0, w - 1)), int(np.clip(rect.top(), 0, h - 1)),
            int(np.clip(rect.right(), 0, w - 1)), int(np.clip(rect.bottom(), 0, h - 1)))
