"""Metrics of a checkpoint or an ONNX file on the holdout validation split."""
import numpy as np
import torch

import refimpl

from .loss import all_metrics
from .model import AgeGenderNet
from .train import load_dataset, predict


def module_from_checkpoint(path):
    model = AgeGenderNet()
    model.load_state_dict(torch.load(path, weights_only=False)["model"])
    return model.eval()


def run_refimpl(model, images, batch_size=256):
    outs = [model.forward(np.ascontiguousarray(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def evaluate(args):
    samples, images, _, val_idx = load_dataset(args)
    ages, males = np.asarray(samples.ages)[val_idx], np.asarray(samples.males)[val_idx]
    if args.model.endswith(".onnx"):
        outputs = run_refimpl(refimpl.load(args.model), images[val_idx])
    else:
        torch.set_num_threads(args.threads)
        outputs = predict(module_from_checkpoint(args.model), images[val_idx])
    return {"model": args.model, "split": {"protocol": "holdout", "val_fraction": args.val_fraction,
                                           "seed": args.seed, "n_val": int(len(val_idx))},
            "metrics": all_metrics(outputs, ages, males)}
