"""Face data sets -> (paths, ages, male labels), and their preprocessed image arrays.

Every loader returns a `Samples` (paths, age in years, male in {0, 1} or -1 where the data set
has no gender, subject id or None). Malformed entries are skipped and counted in one warning,
never a crash. `load(name, path)` picks a loader by the name the commands' --dataset takes.
Images go through refimpl.preprocess, the function inference uses.
"""
import csv
import hashlib
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

import refimpl


@dataclass
class Samples:
    paths: list = field(default_factory=list)
    ages: list = field(default_factory=list)
    males: list = field(default_factory=list)
    subjects: list = field(default_factory=list)

    def add(self, path, age, male, subject=None):
        self.paths.append(path)
        self.ages.append(float(age))
        self.males.append(float(male))
        self.subjects.append(subject)

    def __len__(self):
        return len(self.paths)

    def subset(self, index):
        return Samples(*([column[i] for i in index] for column in
                         (self.paths, self.ages, self.males, self.subjects)))


def _warn_skipped(source, skipped, examples):
    if skipped:
        warnings.warn(f"{source}: skipped {skipped} malformed entries (e.g. {examples[:3]})", stacklevel=3)


def _valid(age, male):
    return 0 <= age <= 120 and male in (0, 1)


def utkface(folder):
    """UTKFace chips: `[age]_[gender]_[race]_[date&time].jpg(.chip.jpg)`, gender 0 = male, 1 = female."""
    out, skipped, bad = Samples(), 0, []
    pattern = re.compile(r"^(\d+)_(\d+)_(?:\d+_)?\d+\.jpg(\.chip\.jpg)?$")
    for name in sorted(os.listdir(folder)):
        m = pattern.match(name)
        if m and _valid(int(m.group(1)), 1 - int(m.group(2))):
            out.add(os.path.join(folder, name), int(m.group(1)), 1 - int(m.group(2)))
        else:
            skipped, bad = skipped + 1, bad + [name]
    _warn_skipped(folder, skipped, bad)
    return out


def fgnet(folder):
    """FG-NET: `[subject]A[age][a|b].JPG`; no gender in the names, so male is -1 (unknown, ignored by metrics)."""
    out, skipped, bad = Samples(), 0, []
    pattern = re.compile(r"^(\d+)A(\d+)[a-z]?\.(jpg|jpeg|png)$", re.IGNORECASE)
    for name in sorted(os.listdir(folder)):
        m = pattern.match(name)
        if m:
            out.paths.append(os.path.join(folder, name))
            out.ages.append(float(m.group(2)))
            out.males.append(-1.0)
            out.subjects.append(m.group(1))
        else:
            skipped, bad = skipped + 1, bad + [name]
    _warn_skipped(folder, skipped, bad)
    return out


def megaage_asian(root, split="train"):
    """MegaAge-Asian: `list/{split}_name.txt` and `list/{split}_age.txt`, images in `{split}/`; no gender (-1)."""
    out, skipped, bad = Samples(), 0, []
    with open(os.path.join(root, "list", f"{split}_name.txt")) as f:
        names = [line.strip() for line in f]
    with open(os.path.join(root, "list", f"{split}_age.txt")) as f:
        ages = [line.strip() for line in f]
    if len(names) != len(ages):
        warnings.warn(f"{root}: {len(names)} names but {len(ages)} ages; pairing the first {min(len(names), len(ages))}")
    for name, age in zip(names, ages):
        try:
            if name and 0 <= float(age) <= 120:
                out.paths.append(os.path.join(root, split, name))
                out.ages.append(float(age))
                out.males.append(-1.0)
                out.subjects.append(None)
                continue
        except ValueError:
            pass
        skipped, bad = skipped + 1, bad + [f"{name} {age}"]
    _warn_skipped(root, skipped, bad)
    return out


def _csv_rows(path, columns):
    """Rows of a CSV with a header, as dicts with the requested columns; rows that do not parse, or whose
    age or gender is out of range, are skipped and counted."""
    rows, skipped, bad = [], 0, []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            try:
                parsed = {key: conv(row[col]) for key, (col, conv) in columns.items()}
                if not _valid(parsed["age"], parsed["male"]):
                    raise ValueError("age or gender out of range")
                rows.append(parsed)
            except (KeyError, TypeError, ValueError):
                skipped, bad = skipped + 1, bad + [f"line {i + 2}"]
    _warn_skipped(path, skipped, bad)
    return rows


def _gender(text):
    text = text.strip().lower()
    value = {"m": 1, "male": 1, "man": 1, "1": 1, "f": 0, "female": 0, "woman": 0, "0": 0}.get(text)
    if value is None:
        raise ValueError(text)
    return value


def morph2(csv_path, image_root=None):
    """MORPH-II CSV with columns `id_num`, `photo` (relative path), `age`, `gender` (M/F)."""
    root = image_root or os.path.dirname(csv_path)
    out = Samples()
    for row in _csv_rows(csv_path, {"subject": ("id_num", str), "path": ("photo", str),
                                    "age": ("age", float), "male": ("gender", _gender)}):
        out.add(os.path.join(root, row["path"]), row["age"], row["male"], row["subject"])
    return out


def aaf(folder):
    """All-Age-Faces: `labels.csv` (file, age, gender F/M) beside `images/` of loose face crops (not chips:
    training.chips detects and aligns them). Rows naming a missing file are skipped and counted."""
    out, missing = Samples(), []
    for row in _csv_rows(os.path.join(folder, "labels.csv"), {"file": ("file", str), "age": ("age", float),
                                                              "male": ("gender", _gender)}):
        path = os.path.join(folder, "images", row["file"].strip())
        if os.path.isfile(path):
            out.add(path, row["age"], row["male"])
        else:
            missing.append(row["file"])
    _warn_skipped(folder, len(missing), [f"{name} (no such image)" for name in missing])
    return out


def generic_csv(csv_path):
    """A CSV with columns `path`, `age`, `gender` (male/female, M/F or 1/0 for male/female)."""
    root = os.path.dirname(csv_path)
    out = Samples()
    for row in _csv_rows(csv_path, {"path": ("path", str), "age": ("age", float), "male": ("gender", _gender)}):
        out.add(os.path.join(root, row["path"]), row["age"], row["male"])
    return out


# --dataset name -> (loader, what its --data path is, whether that path is a file rather than a folder)
LOADERS = {
    "utkface": (utkface, "a folder of UTKFace chips", False),
    "fgnet": (fgnet, "the FG-NET images folder", False),
    "megaage": (megaage_asian, "the MegaAge-Asian root (list/, train/); its train list", False),
    "megaage-test": (lambda root: megaage_asian(root, "test"), "the MegaAge-Asian root (list/, test/); its test list",
                     False),
    "morph2": (morph2, "the MORPH-II CSV (id_num, photo, age, gender)", True),
    "csv": (generic_csv, "a CSV with columns path, age, gender", True),
    "aaf": (aaf, "the All-Age-Faces folder (images/, labels.csv)", False),
}

# data sets whose images are photos, not aligned chips: training.chips runs the detector and aligner over them
NEEDS_ALIGNMENT = {"aaf"}
# --dataset name -> the environment variable that may give its --data path
ENV_VARS = {"utkface": "AGEGENDER_UTKFACE", "aaf": "AGEGENDER_AAF"}
# where a user gets each data set (the error for a missing folder says so)
WHERE_TO_GET = {
    "utkface": "UTKFace 'aligned and cropped' chips from https://susanqq.github.io/UTKFace/ "
               "(non-commercial research use)",
    "aaf": "All-Age-Faces from https://github.com/JingchunCheng/All-Age-Faces-Dataset "
           "(unzip; images/ and a labels.csv with file, age, gender F/M)",
}


def load(name, path):
    """The Samples of data set `name` (a key of LOADERS) at `path`."""
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(LOADERS)}")
    return LOADERS[name][0](path)


def read_image(path):
    """An image file -> uint8 RGB [H, W, 3], EXIF orientation applied (needs pillow)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def _preprocess_file(path):
    return refimpl.preprocess(read_image(path))


def cache_key(paths, salt=""):
    """A hash of every file's path, size and modification time (ns): an image that is replaced or edited, even
    under the same name, gives another key, so a stale cache is never reused. `salt` names what was computed
    from the files (training.chips: the detector and aligner version), so that is part of the key too. Paths
    count by their real location: `data/../UTKFace/x` and `UTKFace/x` (or a symlink to it) are the same file, with the same key."""
    digest = hashlib.sha256(salt.encode())
    for path in paths:
        path = os.path.realpath(path)
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def preprocess_all(paths, cache_dir=None, workers=2):
    """float32 [N, 3, 64, 64] for the image files, cached (outside the repository) by cache_key(paths)."""
    key = cache_key(paths)
    cache = os.path.join(cache_dir, f"chips-{key}.npy") if cache_dir else None
    if cache and os.path.exists(cache):
        return np.load(cache, mmap_mode="r")
    with ProcessPoolExecutor(workers) as pool:
        arrays = np.stack(list(pool.map(_preprocess_file, paths, chunksize=64)))
    if cache:
        os.makedirs(cache_dir, exist_ok=True)
        np.save(cache + ".tmp.npy", arrays)
        os.replace(cache + ".tmp.npy", cache)
    return arrays


class ConcatImages:
    """Several data sets' image arrays (each [N_i, 3, 64, 64], memory-mapped caches) seen as one [sum N_i, ...]
    array for integer-array indexing, without copying them into one: images[index] gathers from each part."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.starts[-1]),) + tuple(self.parts[0].shape[1:])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        index = np.asarray(index, np.int64)
        if index.ndim != 1:
            raise TypeError("ConcatImages takes a 1-D array of indices")
        out = np.empty((len(index),) + self.shape[1:], np.float32)
        part = np.searchsorted(self.starts, index, side="right") - 1
        for i, array in enumerate(self.parts):
            sel = np.flatnonzero(part == i)
            if len(sel):
                out[sel] = array[index[sel] - self.starts[i]]
        return out
