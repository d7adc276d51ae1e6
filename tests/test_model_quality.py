"""The bundled model's quality on the model card's own held-out split: a regression guard, not a tuning target.

weights/agegender.card.json records age MAE and gender accuracy of the shipped weights, per head, on the
validation split of UTKFace (training.splits.holdout with the card's seed and val_fraction; its size, n_val,
is checked). Preprocessing all 1,901 validation chips takes ~20 s here, so the guard evaluates a fixed subset:
SUBSET_SIZE validation images drawn without replacement by numpy's default_rng(SUBSET_SEED) (seed 0, the
project's seed everywhere), about 10 s.

Margin. The subset's metric estimates the whole split's. For n images drawn without replacement from N its
standard error is SE = s / sqrt(n) * sqrt((N - n) / (N - 1)), s the standard deviation of the per-image
quantity: |age error| for MAE (s measured on the subset), correct/incorrect for gender accuracy
(s = sqrt(p (1 - p)) with p the card's accuracy). A metric fails when it is worse than the card's figure by
more than MARGIN_SE = 3 standard errors; one-sided, so a better model passes. A model exactly as good as the
card says would fail one metric with probability about 0.13 % over the choice of subset, and since the subset
is fixed the test is deterministic. At n = 1000 of N = 1901 the margin is about 0.35 years of MAE and 1.9
points of gender accuracy (at n = 400 it was 0.7 years and 3.8 points, and the final head's ages 2 years
off passed). It catches a broken export, a mangled head or a wrong preprocessing, not a slightly weaker
retraining; a constant age offset moves MAE less than the offset, so the damages below are a few years.
"""
import json
import math
import os
import warnings

import numpy as np
import pytest

from conftest import BUNDLED, ROOT, utkface_dir

CARD = os.path.join(ROOT, "weights", "agegender.card.json")
SUBSET_SIZE = 1000
SUBSET_SEED = 0
MARGIN_SE = 3
HEADS = {"ensemble": ("age", "gender"), "final": ("age_final", "gender_final"),
         "virtual": ("age_virtual", "gender_virtual"), "low": ("age_low", "gender_low")}


@pytest.fixture(scope="module")
def card():
    with open(CARD) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def validation_subset(card):
    """(images float32 [n, 3, 64, 64], true ages [n], male labels [n], size N of the whole validation split)."""
    import refimpl
    from training import data, splits

    folder = utkface_dir()
    if not os.path.isdir(folder):
        pytest.skip(f"UTKFace not found at {folder} (set AGEGENDER_UTKFACE): the model quality guard needs it")
    split = card["split"]
    assert (split["dataset"], split["protocol"]) == ("utkface", "holdout"), f"the card's split is {split}"
    with warnings.catch_warnings():            # the one unparseable name the card counts (19,009 files, 19,008)
        warnings.simplefilter("ignore", UserWarning)
        samples = data.utkface(folder)
    _, val = splits.holdout(len(samples), split["val_fraction"], split["seed"])
    assert len(val) == split["n_val"], (
        f"{folder} gives {len(samples)} labelled images and a validation split of {len(val)}, the card's has "
        f"{split['n_val']}: not the data set the card was measured on")
    chosen = np.sort(np.random.default_rng(SUBSET_SEED).choice(val, SUBSET_SIZE, replace=False))
    images = np.stack([refimpl.preprocess(data.read_image(samples.paths[i])) for i in chosen])
    return images, np.asarray(samples.ages)[chosen], np.asarray(samples.males)[chosen], len(val)


def head_metrics(model_path, subset):
    """{head: {"mae", "mae_se", "gender_acc"}} of an ONNX file on the subset (fastest backend here)."""
    from agegender import backends

    images, ages, males, population = subset
    model, _ = backends.load(model_path, "auto")
    outputs = model.forward(images)
    n = len(ages)
    shrink = math.sqrt((population - n) / (population - 1))           # drawn without replacement
    result = {}
    for head, (age_name, gender_name) in HEADS.items():
        error = np.abs(outputs[age_name][:, 0].astype(np.float64) - ages)
        correct = (outputs[gender_name][:, 0] >= 0.5) == (males >= 0.5)
        result[head] = {"mae": error.mean(), "mae_se": error.std(ddof=1) / math.sqrt(n) * shrink,
                        "gender_acc": correct.mean(), "shrink": shrink, "n": n}
    return result


def quality_failures(metrics, card):
    """One line per metric worse than the card's by more than MARGIN_SE standard errors."""
    failures = []
    for head, got in metrics.items():
        want = card["metrics"][head]
        mae_margin = MARGIN_SE * got["mae_se"]
        if got["mae"] > want["mae"] + mae_margin:
            failures.append(f"{head}: age MAE {got['mae']:.3f} on {got['n']} validation images, the card says "
                            f"{want['mae']:.3f} (allowed up to +{mae_margin:.3f})")
        p = want["gender_acc"]
        acc_margin = MARGIN_SE * math.sqrt(p * (1 - p) / got["n"]) * got["shrink"]
        if got["gender_acc"] < p - acc_margin:
            failures.append(f"{head}: gender accuracy {got['gender_acc']:.4f} on {got['n']} validation images, the "
                            f"card says {p:.4f} (allowed down to -{acc_margin:.4f})")
    return failures


def test_bundled_model_keeps_the_quality_its_card_states(card, validation_subset):
    failures = quality_failures(head_metrics(BUNDLED, validation_subset), card)
    assert not failures, "\n".join(failures)


def damaged_copy(tmp_path, parameter, shift):
    """The bundled weights with `shift` added to one parameter (a head's bias), as a new ONNX file."""
    from refimpl import onnx_format

    weights, _, metadata = onnx_format.read(BUNDLED)
    weights = dict(weights)
    weights[parameter] = weights[parameter] + np.float32(shift)
    path = tmp_path / "damaged.onnx"
    onnx_format.write(weights, path, metadata)
    return str(path)


# Each damage is small beside what the heads output (ages 1-116 years, logits of a few units), and each is
# caught by the metric of the head it hits. low_head.fc's two outputs are [male logit, age].
@pytest.mark.parametrize("parameter, shift, caught", [
    ("top_head.fc_age.bias", 2.0, "final: age MAE"),                   # the final head's ages 2 years too old
    ("top_head.fc_gender.bias", -1.5, "final: gender accuracy"),       # its male logit 1.5 lower
    ("low_head.fc.bias", np.array([0.0, 2.5], np.float32), "low: age MAE"),
])
def test_the_guard_fails_a_damaged_head(tmp_path, card, validation_subset, parameter, shift, caught):
    failures = quality_failures(head_metrics(damaged_copy(tmp_path, parameter, shift), validation_subset), card)
    assert any(line.startswith(caught) for line in failures), failures


# ---- All-Age-Faces, end to end --------------------------------------------------------------------------------
# The card's AAF figures were measured on the chips of training.chips (the detector and aligner of `agegender
# predict`, plus a padded second try for tight crops). This guard runs the product itself, Estimator.predict on
# the photo files, on a fixed subset of the card's AAF validation photos (about 80 ms of detection each), and
# holds the ensemble to the card's AAF figures with the margin above (3 standard errors, one-sided). The
# detection rate is held to the card's too, less 3 standard errors: the padded pass is not the product's, and it
# found 0.2 % of the validation faces.
AAF_SUBSET_SIZE = 200


@pytest.fixture(scope="module")
def aaf_card(card):
    if "aaf" not in card.get("sets", {}):
        pytest.fail("the card has no AAF figures: the shipped weights must be measured on both sets (issue 14)")
    return card["sets"]["aaf"]


def test_bundled_model_keeps_its_aaf_quality_end_to_end(aaf_card):
    from agegender import Estimator
    from conftest import aaf_dir
    from training import data, splits

    folder = aaf_dir()
    samples = data.aaf(folder)
    split = aaf_card["split"]
    _, val = splits.holdout(len(samples), split["val_fraction"], split["seed"])
    photos = aaf_card["detection"]["val"]["photos"]
    assert len(val) == photos, f"{folder}: a validation split of {len(val)} photos, the card's has {photos}"
    chosen = np.sort(np.random.default_rng(SUBSET_SEED).choice(val, AAF_SUBSET_SIZE, replace=False))
    estimator = Estimator(BUNDLED)
    found, ages, males, outputs = 0, [], [], {"age": [], "gender": []}
    for i in chosen:
        faces = estimator.predict(samples.paths[i])
        if not faces:
            continue
        found += 1
        ages.append(samples.ages[i])
        males.append(samples.males[i])
        for name in outputs:
            outputs[name].append(faces[0].heads[name])
    rate, want_rate = found / len(chosen), aaf_card["detection"]["val"]["faces"] / photos
    rate_margin = MARGIN_SE * math.sqrt(want_rate * (1 - want_rate) / len(chosen))
    assert rate >= want_rate - rate_margin, (
        f"faces found in {found} of {len(chosen)} AAF validation photos ({rate:.1%}); the card says {want_rate:.1%} "
        f"(allowed down to -{rate_margin:.1%})")
    ages, males, n = np.asarray(ages, np.float64), np.asarray(males), len(ages)
    population = aaf_card["metrics"]["ensemble"]["n"]
    shrink = math.sqrt((population - n) / (population - 1))
    error = np.abs(np.asarray(outputs["age"]) - ages)
    correct = (np.asarray(outputs["gender"]) >= 0.5) == (males >= 0.5)
    got = {"mae": error.mean(), "mae_se": error.std(ddof=1) / math.sqrt(n) * shrink, "gender_acc": correct.mean(),
           "shrink": shrink, "n": n}
    failures = quality_failures({"ensemble": got}, {"metrics": aaf_card["metrics"]})
    assert not failures, "AAF, end to end:\n" + "\n".join(failures)
