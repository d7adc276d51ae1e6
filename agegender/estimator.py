"""The Python API: photos or face chips in, faces with box, age and gender out.

    from agegender import Estimator
    est = Estimator()                        # bundled weights, fastest backend here
    for face in est.predict("photo.jpg"):    # a path, bytes, or uint8 [H, W, 3] / [H, W] / [H, W, 4]
        print(face.box, face.age, face.gender, face.male_probability)
    est.predict_chips(chips)                 # already aligned 200 x 200 chips (any size works)

A photo goes through: detect.FaceDetector (faces + dlib's 5 landmarks) -> align
(UTKFace's dlib chip, 200 x 200) -> refimpl.preprocess (64 x 64) -> the network in
batches. One Estimator may be shared by threads.

Memory: a photo stays in its decoder's buffer (images.Picture); detection reads a
shrunk copy, landmarks and chips read the pixels around each face, and a large chip
is resized band by band, so nothing holds a full-size copy (uint8 or float) of it.
"""
import threading
from dataclasses import dataclass, field

import numpy as np

import refimpl
from refimpl.ensemble import flip_average

from . import align, backends, detect
from .errors import ImageError
from .images import BAND_PIXELS, Picture, as_picture, as_rgb, is_pil_image, read_picture

HEADS = ("age_final", "gender_final", "age_virtual", "gender_virtual", "age_low", "gender_low")
BATCH_SIZE = 64
BATCH_PIXELS = 4_000_000     # chip pixels preprocessed in one go: bounds the float copies (12 bytes per pixel each)


@dataclass(frozen=True)
class Face:
    """One face: box (left, top, right, bottom, pixels, inclusive), age in years, gender, P(male), detector score.

    score is dlib's detection confidence (None for chips); heads holds all eight network outputs.
    """
    box: tuple
    age: float
    gender: str
    male_probability: float
    score: float = None
    heads: dict = field(default_factory=dict, repr=False)
    landmarks: np.ndarray = field(default=None, repr=False, compare=False)
    chip: np.ndarray = field(default=None, repr=False, compare=False)

    def to_dict(self, heads=False):
        """JSON-ready dict: box, age, gender, male_probability, score (and the six head outputs if heads)."""
        out = {"box": list(self.box), "age": round(self.age, 2), "gender": self.gender,
               "male_probability": round(self.male_probability, 4),
               "score": None if self.score is None else round(self.score, 3)}
        if heads:
            out.update({name: round(self.heads[name], 4) for name in HEADS})
        return out


def gender_of(male_probability):
    """'male' when P(male) >= 0.5, else 'female'."""
    return "male" if male_probability >= 0.5 else "female"


class Estimator:
    """Age and gender for every face in a photo, or for aligned face chips."""

    def __init__(self, weights=None, backend="auto", threads=None, batch_size=BATCH_SIZE, min_score=0.0, flip=False):
        """weights: ONNX file (None: the bundled one); backend: "auto", "refimpl", "numba" or "cython";
        threads: for the kernels backends; min_score: detector threshold (dlib's default 0.0);
        flip: average each face with its mirror image (two network passes per face; off by default)."""
        model, name = backends.load(weights, backend, threads)
        self._setup(model, name, batch_size, min_score, flip)

    @classmethod
    def from_model(cls, model, backend="custom", batch_size=BATCH_SIZE, min_score=0.0, flip=False):
        """Wrap any object with refimpl's forward(x) -> {name: [N, 1]} (another runtime, a test double)."""
        self = cls.__new__(cls)
        self._setup(model, backend, batch_size, min_score, flip)
        return self

    def _setup(self, model, name, batch_size, min_score, flip):
        if not isinstance(flip, bool):
            raise ValueError(f"flip={flip!r}: expected True or False")
        self.model, self.backend, self.batch_size, self.min_score = model, name, int(batch_size), min_score
        self.flip = flip
        thread_safe = name == backends.REFERENCE or getattr(model, "thread_safe", False)
        self._model_lock = None if thread_safe else threading.Lock()
        self._detector, self._detector_lock = None, threading.Lock()

    def __repr__(self):
        return f"Estimator(backend={self.backend!r}{', flip=True' if self.flip else ''})"

    # -- faces in photos ---------------------------------------------------------------------
    @property
    def detector(self):
        """The face detector, built on first use. Raises DetectorUnavailableError without the extra."""
        with self._detector_lock:
            if self._detector is None:
                self._detector = detect.FaceDetector(threshold=self.min_score)
            return self._detector

    def find_faces(self, image):
        """Photo (path, bytes, PIL image or array) -> [(Detection, uint8 chip [200, 200, 3])], largest face first."""
        picture = load_picture(image)
        found = []
        for detection in self.detector(picture):
            chip = align.extract_chip(picture, align.chip_transform(detection.landmarks))
            found.append((detection, chip))
        return found

    def predict(self, image):
        """Photo -> list of Face, largest first; empty when it shows no face. Raises ImageError for bad input."""
        found = self.find_faces(image)
        if not found:
            return []
        outputs = self.estimate([chip for _, chip in found])
        return make_faces(outputs, [d.box for d, _ in found], [d.score for d, _ in found],
                          [d.landmarks for d, _ in found], [chip for _, chip in found])

    # -- aligned chips -------------------------------------------------------------------------
    def predict_chips(self, chips):
        """Aligned face chips -> list of Face with the whole chip as box.

        chips: one chip or a list of chips, each a uint8 array [H, W], [H, W, 3] or [H, W, 4], a PIL image
        of any mode, or a path or bytes of an image file; or a batch uint8 [N, H, W, 3].
        """
        chips = split_chips(chips)
        outputs = self.estimate(chips)
        boxes = [(0, 0, c.shape[1] - 1, c.shape[0] - 1) for c in chips]
        none = [None] * len(chips)
        return make_faces(outputs, boxes, none, none, none)

    def estimate(self, chips):
        """List of chips (uint8 arrays, PIL images, Pictures) -> {output name: float32 [N]}, batch_size at a time."""
        chips = [as_chip(c) for c in chips]               # no copy for the uint8 RGB chips of the aligner
        if len(chips) == 0:
            return {name: np.zeros(0, np.float32) for name in refimpl.spec.OUTPUT_NAMES}
        parts = []
        for start in range(0, len(chips), self.batch_size):
            batch = preprocess_batch(chips[start:start + self.batch_size])
            parts.append(flip_average(self.forward, batch) if self.flip else self.forward(batch))
        return {name: np.concatenate([p[name].reshape(-1) for p in parts]) for name in refimpl.spec.OUTPUT_NAMES}

    def forward(self, x):
        """float32 [N, 3, 64, 64] -> {name: [N, 1]}; one call at a time unless the backend is known thread-safe."""
        if self._model_lock is None:
            return self.model.forward(x)
        with self._model_lock:
            return self.model.forward(x)


def is_file_source(image):
    """Whether `image` names or holds an image file (a path or bytes), rather than pixels."""
    return isinstance(image, (str, bytes, bytearray, memoryview)) or hasattr(image, "__fspath__")


def load_picture(image):
    """Path, bytes, PIL image, Picture or array -> images.Picture (no full-size copy of a file's pixels)."""
    return read_picture(image) if is_file_source(image) else as_picture(image)


def as_chip(chip):
    """A chip for preprocess_batch: a uint8 RGB array, or a Picture for a large PIL image or file. Raises ImageError."""
    if is_file_source(chip):
        chip = read_picture(chip)
    elif is_pil_image(chip):
        chip = as_picture(chip)
    if isinstance(chip, Picture):
        return chip if chip.height * chip.width > BATCH_PIXELS else np.asarray(chip)
    return as_rgb(chip)


def preprocess_batch(chips):
    """uint8 RGB chips (or Pictures) -> float32 [N, 3, 64, 64]: refimpl.preprocess's resize as matrix products.

    The same antialiased linear resize (refimpl.preprocess.resize_matrix), applied to all
    chips of one size at once; equal to refimpl.preprocess up to float32 summation order
    (tests/test_estimator.py checks 1e-6), and several times faster for 200 x 200 chips.
    Chips of one size go in groups of at most BATCH_PIXELS pixels, and a chip larger than
    that is resized band by band, so the float copies stay bounded whatever the chips' size.
    """
    from refimpl.preprocess import resize_matrix

    _, out_h, out_w = refimpl.spec.INPUT_SHAPE
    x = np.empty((len(chips),) + refimpl.spec.INPUT_SHAPE, np.float32)
    by_size = {}
    for i, chip in enumerate(chips):
        by_size.setdefault(chip.shape[:2], []).append(i)
    for (h, w), index in by_size.items():
        rows = resize_matrix(h, out_h).astype(np.float32)                            # [64, H]
        cols = resize_matrix(w, out_w).astype(np.float32)                            # [64, W]
        if h * w > BATCH_PIXELS:
            for i in index:
                x[i] = _resize_in_bands(as_picture(chips[i]), rows, cols)
            continue
        group = max(1, BATCH_PIXELS // (h * w))
        for start in range(0, len(index), group):
            part = index[start:start + group]
            n = len(part)
            planes = np.stack([chips[i] for i in part]).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
            across = (planes.reshape(n * 3 * h, w) @ cols.T).reshape(n * 3, h, out_w)   # [3n, H, 64]
            x[part] = np.clip(np.matmul(rows, across), 0.0, 1.0).reshape(n, 3, out_h, out_w)
    return x


def _resize_in_bands(picture, rows, cols):
    """One large chip (a Picture) -> float32 [3, 64, 64]: preprocess_batch's products, a band of rows at a time.

    The first product is row-wise, so bands give the same sums; only uint8 bands and the
    [3, H, 64] intermediate are held (bands of at least 128 rows: enough that BLAS takes its
    usual path, which measured bit-identical to the one-piece product)."""
    h, w = picture.height, picture.width
    across = np.empty((3, h, cols.shape[0]), np.float32)                             # [3, H, 64]
    for top, band in picture.bands(max(128, BAND_PIXELS // w)):
        n = band.shape[0]
        planes = np.empty((3, n, w), np.float32)                                     # [3, n, W]
        np.divide(band.transpose(2, 0, 1), np.float32(255), out=planes)              # = astype(float32) / 255
        across[:, top:top + n] = (planes.reshape(3 * n, w) @ cols.T).reshape(3, n, -1)
    return np.clip(np.matmul(rows, across), 0.0, 1.0)


def split_chips(chips):
    """One chip, a [N, H, W, C] batch or a list -> list of chips for estimate(). Raises ImageError."""
    if isinstance(chips, (list, tuple)):
        return [as_chip(c) for c in chips]
    if isinstance(chips, Picture) or is_pil_image(chips) or is_file_source(chips):
        return [as_chip(chips)]                        # one PIL image: never read as an array (CMYK is not RGBA)
    array = np.asarray(chips)
    if array.ndim == 4:
        return [as_rgb(c) for c in array]
    if array.ndim in (2, 3):
        return [as_rgb(array)]
    raise ImageError(f"chips shape is {list(array.shape)}, expected [H, W(, C)], [N, H, W, C] or a list of chips")


def make_faces(outputs, boxes, scores, landmarks, chips):
    """Network outputs {name: [N]} and per-face boxes, detector scores, landmarks, chips -> list of Face."""
    faces = []
    for i, box in enumerate(boxes):
        heads = {name: float(outputs[name][i]) for name in refimpl.spec.OUTPUT_NAMES}
        p = heads["gender"]
        faces.append(Face(tuple(int(v) for v in box), heads["age"], gender_of(p), p, scores[i], heads,
                          landmarks[i], chips[i]))
    return faces
