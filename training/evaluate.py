"""Metrics of a checkpoint or an ONNX file on the validation split: per data set and pooled.

For each set of --dataset: per head, by decade of true age and by gender; for a set of
photos (aaf), on the chips of the project's detector and aligner, with the detection rate
(photos without a face are left out of the metrics and counted).
"""
import os

import numpy as np
import torch

import refimpl
from refimpl.ensemble import flip_average

from . import checkpoints
from .loss import all_metrics, by_gender, gender_acc_by_age_group, mae_by_age_group
from .model import AgeGenderNet
from .train import detection, load_sets, predict


def module_from_checkpoint(path):
    return checkpoints.load_weights(AgeGenderNet(), checkpoints.load(path)["model"], path).eval()


def run_refimpl(model, images, batch_size=256):
    outs = [model.forward(np.ascontiguousarray(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def evaluate(model_path, split, cache, threads=1, runtime="refimpl", flip=False):
    """Metrics of an ONNX file (run by `runtime`: refimpl or onnxruntime) or a checkpoint .pt (run by torch) on
    the validation images of a splits.SplitSpec, pooled and per set. flip: the mean over each face and its
    mirror image (refimpl.ensemble.flip_average, as Estimator(flip=True))."""
    # the model first: a refused file fails at once, not after the data set is read; and ONNX Runtime opens
    # only a file refimpl accepts (no external data, no foreign ops, ...)
    model = refimpl.load(model_path) if model_path.endswith(".onnx") else module_from_checkpoint(model_path)
    loaded = load_sets(split, cache, threads)
    samples, images, val_idx = loaded.samples, loaded.images, loaded.val
    ages, males = np.asarray(samples.ages)[val_idx], np.asarray(samples.males)[val_idx]
    if model_path.endswith(".onnx") and runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])

        def forward(x):
            return dict(zip(refimpl.spec.OUTPUT_NAMES, session.run(None, {"image": np.ascontiguousarray(x)})))
    elif model_path.endswith(".onnx"):
        def forward(x):
            return run_refimpl(model, x)
    else:
        torch.set_num_threads(threads)

        def forward(x):
            return predict(model, x)
    val_images = images[val_idx]
    outputs = flip_average(forward, val_images) if flip else forward(val_images)
    runtime = runtime if model_path.endswith(".onnx") else "torch"
    result = {"model": model_path, "runtime": runtime, "flip": flip, "split": split.describe(len(val_idx)),
              **report(outputs, ages, males)}
    result["sets"], offset = {}, 0
    for part in loaded.parts:
        rows = slice(offset, offset + len(part.val))
        offset += len(part.val)
        one = split.describe(len(part.val))
        one["dataset"] = part.name
        result["sets"][part.name] = {"split": one, "detection": detection(part),
                                     **report({k: v[rows] for k, v in outputs.items()}, ages[rows], males[rows])}
    return result


def report(outputs, ages, males):
    """Metrics per head, and for the ensemble by decade of true age and by gender."""
    age, male_prob = outputs["age"][:, 0], outputs["gender"][:, 0]
    return {"metrics": all_metrics(outputs, ages, males),
            "mae_by_age_group": mae_by_age_group(age, ages),
            "gender_acc_by_age_group": gender_acc_by_age_group(male_prob, males, ages),
            "by_gender": by_gender(age, male_prob, ages, males)}


def format_sets(result, baseline=None):
    """A text table: each set's ensemble metrics (and the baseline's, when given), with the detection rate."""
    from .chips import format_detection

    lines = [f"{'data set':<10}{'model':<24}{'n':>6}{'MAE':>7}{'CA(5)':>8}{'gender':>8}  detection"]
    for name, entry in result["sets"].items():
        rows = [(os.path.basename(str(result["model"]))[:23], entry)]
        if baseline and name in baseline.get("sets", {}):
            rows.append((baseline["model"][:23], baseline["sets"][name]))
        for model, values in rows:
            m = values["metrics"]["ensemble"]
            gender = "-" if m["gender_acc"] is None else f"{m['gender_acc']:.1%}"
            found = values.get("detection")
            lines.append(f"{name:<10}{model:<24}{m['n']:>6}{m['mae']:>7.2f}{m['ca5']:>8.1%}{gender:>8}  "
                         + (format_detection(found["val"]) if found else "chips as given"))
    return "\n".join(lines)
