"""Evaluation protocols: a seeded holdout split, k-fold, and leave-one-person-out (FG-NET)."""
import argparse

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


# the split options' values in checkpoints of runs that predate them
STORED_DEFAULTS = {"dataset": "utkface", "protocol": "holdout", "folds": 5, "fold": 0}


def stored_args(args):
    """A checkpoint's stored args (a dict) as a namespace, with the split options older runs lack filled in."""
    return argparse.Namespace(**{**STORED_DEFAULTS, **args})


def describe(args, n_val):
    """The split as the evaluation JSON and the model card record it."""
    split = {"dataset": args.dataset, "protocol": args.protocol, "seed": args.seed, "n_val": int(n_val)}
    if args.protocol == "holdout":
        split["val_fraction"] = args.val_fraction
    if args.protocol in ("kfold", "lopo"):
        split["fold"] = args.fold
    if args.protocol == "kfold":
        split["folds"] = args.folds
    return split


def split_samples(args):
    """(samples, train indices, validation indices) as --dataset, --data, --limit and --protocol say."""
    samples = data.load(args.dataset, args.data)
    if args.limit:
        samples = samples.subset(range(0, len(samples), max(1, len(samples) // args.limit))[: args.limit])
    try:
        train_idx, val_idx = select(args.protocol, samples, args.val_fraction, args.seed, args.folds,
                                    args.fold)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    return samples, train_idx, val_idx
