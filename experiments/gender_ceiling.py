"""Diagnostic: how much gender accuracy does this network reach on the split when age does not compete?

It trains exactly as `python -m training train` does (same data, split, augmentation, optimizer, schedule,
checkpoints and log) on the gender terms of formula (3) alone. Its age outputs stay untrained: the result
is a measurement, not a model to ship (its findings: docs/model-notes.md). Compare its log with a paper-loss
run of the same settings:

    python -m experiments.gender_ceiling --epochs 28 --threads 1 --out runs/gender-ceiling

`--gradients CHECKPOINT` shows why the paper's loss trades gender for age: per block of that checkpoint's
network, the size of the gradient of formula (3)'s age terms and of its gender terms on one training batch.

    python -m experiments.gender_ceiling --gradients runs/utkface/last.pt
"""
import argparse
import os
import sys

import numpy as np
import torch

from training import checkpoints
from training.loss import weighted_sum
from training.model import AgeGenderNet
from training.options import add_data_args, add_train_args, exit_status, require_data
from training.splits import SplitSpec
from training.train import load_dataset, train

PROGRAM = "python -m experiments.gender_ceiling"
LOSS = "gender terms of formula (3) only (diagnostic)"


def gender_terms_only(out, age, male):
    """Formula (3) without its age terms: never the loss of a model that ships."""
    return weighted_sum(out, age, male, lambda bce, mae: bce)


def gradient_norms(model, images, age, male):
    """{block or head: (|gradient of the age terms|, |gradient of the gender terms|)} over its weights, for one
    batch in training mode; both sets of terms weighted by formula (3)'s head weights."""
    model.train()
    out = model(images, logits=True)
    age_terms = weighted_sum(out, age, male, lambda bce, mae: mae)[0]
    gender_terms = gender_terms_only(out, age, male)[0]
    norms = {}
    for name, module in model.named_children():
        params = list(module.parameters())
        if not params:
            continue
        pair = []
        for terms in (age_terms, gender_terms):
            grads = torch.autograd.grad(terms, params, retain_graph=True, allow_unused=True)
            pair.append(float(sum((g.double() ** 2).sum() for g in grads if g is not None) ** 0.5))
        norms[name] = tuple(pair)
    return norms


def print_gradient_norms(checkpoint, split, cache, threads=1, batch=256):
    """Print (and return) gradient_norms of the checkpoint's network on `batch` training images of the split."""
    torch.set_num_threads(threads)
    state = checkpoints.load(checkpoint)        # a refused file fails before the data set is read
    samples, images, train_idx, _ = load_dataset(split, cache, threads)
    pick = np.sort(np.random.default_rng(split.seed).choice(train_idx, min(batch, len(train_idx)), replace=False))
    torch.manual_seed(split.seed)       # training mode: dropout draws from torch's generator
    model = AgeGenderNet()
    checkpoints.load_weights(model, state["model"], checkpoint)
    norms = gradient_norms(model, torch.from_numpy(np.asarray(images[pick])),
                           torch.tensor(np.asarray(samples.ages, np.float32)[pick]),
                           torch.tensor(np.asarray(samples.males, np.float32)[pick]))
    print(f"{checkpoint}: gradient norms of formula (3)'s terms on {len(pick)} training images (no augmentation)")
    print(f"{'block':<16}{'age terms':>12}{'gender terms':>14}{'ratio':>8}")
    for name, (age_norm, gender_norm) in norms.items():
        ratio = f"{age_norm / gender_norm:8.1f}" if gender_norm else f"{'-':>8}"
        print(f"{name:<16}{age_norm:12.4f}{gender_norm:14.4f}{ratio}")
    return norms


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n")[0])
    add_data_args(parser)
    add_train_args(parser, out="runs/gender-ceiling")
    parser.add_argument("--gradients", metavar="CHECKPOINT",
                        help="only print, per block, the gradient norms of the age and the gender terms")
    args = parser.parse_args(argv)
    require_data(args)
    if args.gradients:
        if not os.path.isfile(args.gradients):
            sys.exit(f"error: checkpoint {args.gradients} not found (expected a last.pt of python -m training train)")
        return print_gradient_norms(args.gradients, SplitSpec.from_args(args), args.cache, args.threads)
    args.loss, args.program = LOSS, PROGRAM      # stored with the checkpoint's args: a card names both
    return train(args, loss_fn=gender_terms_only)


if __name__ == "__main__":
    sys.exit(exit_status(main))
