"""Evaluation protocols: a seeded holdout split, k-fold, and leave-one-person-out (FG-NET)."""
import numpy as np


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
