"""Metrics of a checkpoint or an ONNX file on the holdout validation split."""
import numpy as np
import torch

import refimpl

from . import checkpoints
from .loss import all_metrics, gender_acc_by_age_group, mae_by_age_group
from .model import AgeGenderNet
from .splits import describe
from .train import load_dataset, predict


def module_from_checkpoint(path):
    return checkpoints.load_weights(AgeGenderNet(), checkpoints.load(path)["model"], path).eval()


def run_refimpl(model, images, batch_size=256):
    outs = [model.forward(np.ascontiguousarray(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def evaluate(args):
    # the model first: a refused file fails at once, not after the data set is read; and ONNX Runtime opens
    # only a file refimpl accepts (no external data, no foreign ops, ...)
    model = refimpl.load(args.model) if args.model.endswith(".onnx") else module_from_checkpoint(args.model)
    samples, images, _, val_idx = load_dataset(args)
    ages, males = np.asarray(samples.ages)[val_idx], np.asarray(samples.males)[val_idx]
    if args.model.endswith(".onnx") and args.runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
        outputs = dict(zip(refimpl.spec.OUTPUT_NAMES,
                           session.run(None, {"image": np.ascontiguousarray(images[val_idx])})))
    elif args.model.endswith(".onnx"):
        outputs = run_refimpl(model, images[val_idx])
    else:
        torch.set_num_threads(args.threads)
        outputs = predict(model, images[val_idx])
    runtime = args.runtime if args.model.endswith(".onnx") else "torch"
    return {"model": args.model, "runtime": runtime,
            "split": describe(args, len(val_idx)),
            "metrics": all_metrics(outputs, ages, males),
            "mae_by_age_group": mae_by_age_group(outputs["age"][:, 0], ages),
            "gender_acc_by_age_group": gender_acc_by_age_group(outputs["gender"][:, 0], males, ages)}
