"""Evaluation protocols: a seeded holdout split, k-fold, and leave-one-person-out (FG-NET); several data sets.

With several data sets (--dataset utkface,aaf) each set is split on its own, by file, with
the same options (--protocol, --val-fraction, --seed, ...), so UTKFace's split is exactly
the one a UTKFace-only run has; the sets' samples are then concatenated in --dataset's
order, and the indices of later sets are offset by the sizes of the earlier ones.
"""
import argparse
from dataclasses import dataclass

import numpy as np

from . import data


def holdout(n, val_fraction=0.1, seed=0):
    """(train indices, validation indices): a seeded permutation, the last `val_fraction` for validation."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def kfold(n, k=5, seed=0):
    """[(train, val)] * k: a seeded permutation cut into k nearly equal folds."""
    folds = np.array_split(np.random.default_rng(seed).permutation(n), k)
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1:])), np.sort(folds[i])) for i in range(k)]


def leave_one_person_out(subjects):
    """[(train, val)] one per subject: that person's images are the validation set."""
    subjects = np.asarray(subjects)
    return [(np.flatnonzero(subjects != s), np.flatnonzero(subjects == s)) for s in np.unique(subjects)]


PROTOCOLS = ("holdout", "kfold", "lopo", "all")


def select(protocol, samples, val_fraction=0.1, seed=0, folds=5, fold=0):
    """(train indices, validation indices) of one run under `protocol`:
    holdout (seeded `val_fraction`), kfold (fold `fold` of `folds`, seeded), lopo (the `fold`-th subject, in
    sorted order, is the validation set; needs subject ids) or all (every image validates: evaluation only).
    Raises ValueError naming what is wrong."""
    n = len(samples)
    if n == 0:
        raise ValueError("the data set has no usable images")
    if protocol == "holdout":
        if not 0 < val_fraction < 1:
            raise ValueError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
        train, val = holdout(n, val_fraction, seed)
        if not len(train) or not len(val):
            raise ValueError(f"a holdout fraction of {val_fraction} of {n} images leaves "
                             f"{len(train)} to train on and {len(val)} to validate; both need at least one")
        return train, val
    if protocol == "all":
        return np.array([], dtype=np.int64), np.arange(n)
    if protocol == "kfold":
        if not 2 <= folds <= n:
            raise ValueError(f"--folds must be between 2 and the number of images ({n}), got {folds}")
        runs = kfold(n, folds, seed)
    elif protocol == "lopo":
        if any(s is None for s in samples.subjects):
            raise ValueError("leave-one-person-out needs subject ids, which this data set lacks "
                             "(fgnet and morph2 have them)")
        runs = leave_one_person_out(samples.subjects)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if not 0 <= fold < len(runs):
        raise ValueError(f"--fold must be between 0 and {len(runs) - 1} for {protocol} ({len(runs)} runs), got {fold}")
    return runs[fold]


# the split, sampling and loss options' values in checkpoints of runs that predate them
STORED_DEFAULTS = {"dataset": "utkface", "protocol": "holdout", "folds": 5, "fold": 0, "set_weights": None,
                   "loss": "paper", "gender_weight": 1.0, "distill": None, "distill_weight": 0.5}


def stored_args(args):
    """A checkpoint's stored args (a dict) as a namespace, with the split options older runs lack filled in."""
    return argparse.Namespace(**{**STORED_DEFAULTS, **args})


@dataclass(frozen=True)
class SplitSpec:
    """Which images a run reads and how it splits them: the values of --dataset, --data, --set-weights,
    --protocol, --val-fraction, --seed, --folds, --fold and --limit, built once at the command line's edge
    (from_args). `paths` is empty for a split read back from a checkpoint only to describe it."""
    dataset: str = "utkface"
    protocol: str = "holdout"
    val_fraction: float = 0.1
    seed: int = 0
    folds: int = 5
    fold: int = 0
    limit: int = 0
    paths: tuple = ()
    set_weights: tuple = None

    @classmethod
    def from_args(cls, args):
        """From a namespace of add_data_args or a checkpoint's stored args (a dict; older runs' defaults filled
        in). The paths: options.require_data's args.sets, else --data (one path per set, comma-separated)."""
        values = {**STORED_DEFAULTS, **(args if isinstance(args, dict) else vars(args))}
        if values.get("sets"):
            paths = tuple(path for _, path in values["sets"])
        elif values.get("data"):
            names = values["dataset"].split(",")
            paths = (values["data"],) if len(names) == 1 else tuple(values["data"].split(","))
        else:
            paths = ()
        weights = values.get("set_weights")
        return cls(values["dataset"], values["protocol"], values["val_fraction"], values["seed"], values["folds"],
                   values["fold"], values.get("limit", 0), paths, None if weights is None else tuple(weights))

    @property
    def sets(self):
        """[(name, path)] of each data set, in --dataset's order."""
        return list(zip(self.dataset.split(","), self.paths))

    def describe(self, n_val):
        """The split as the evaluation JSON and the model card record it."""
        split = {"dataset": self.dataset, "protocol": self.protocol, "seed": self.seed, "n_val": int(n_val)}
        if self.protocol == "holdout":
            split["val_fraction"] = self.val_fraction
        if self.protocol in ("kfold", "lopo"):
            split["fold"] = self.fold
        if self.protocol == "kfold":
            split["folds"] = self.folds
        return split


@dataclass
class Part:
    """One data set of a run: its rows start:stop of the concatenated samples, its train and validation indices
    (into the concatenation), and its sampling weight. For a set of photos (training.chips), train.load_sets
    fills in how each photo's face was found (how, landmarks: per row of the set) and val_photos (the validation
    photos before those without a face were left out of train and val)."""
    name: str
    path: str
    start: int
    stop: int
    train: np.ndarray
    val: np.ndarray
    weight: float = 1.0
    how: np.ndarray = None
    landmarks: np.ndarray = None
    val_photos: np.ndarray = None


def split_sets(split):
    """(samples of all sets concatenated, [Part]) as the SplitSpec says (--limit applies per set); SystemExit with
    one line (naming the set when there are several) for a bad split."""
    sets = split.sets
    weights = split.set_weights or [1.0] * len(sets)
    combined, parts = data.Samples(), []
    for (name, path), weight in zip(sets, weights):
        samples = data.load(name, path)
        if split.limit:
            samples = samples.subset(range(0, len(samples), max(1, len(samples) // split.limit))[: split.limit])
        try:
            train_idx, val_idx = select(split.protocol, samples, split.val_fraction, split.seed, split.folds,
                                        split.fold)
        except ValueError as error:
            raise SystemExit(f"error: {name + ': ' if len(sets) > 1 else ''}{error}") from None
        start = len(combined)
        for column in ("paths", "ages", "males", "subjects"):
            getattr(combined, column).extend(getattr(samples, column))
        parts.append(Part(name, path, start, len(combined), train_idx + start, val_idx + start, float(weight)))
    return combined, parts


def split_samples(split):
    """(samples, train indices, validation indices) of a SplitSpec (all sets pooled)."""
    samples, parts = split_sets(split)
    return (samples, np.concatenate([p.train for p in parts]).astype(np.int64),
            np.concatenate([p.val for p in parts]).astype(np.int64))
