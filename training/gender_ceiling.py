"""Diagnostic: how much gender accuracy does this network reach on the split when age does not compete?

It trains exactly as `python -m training train` does (same data, split, augmentation, optimizer, schedule,
checkpoints and log) on the gender terms of formula (3) alone. Its age outputs stay untrained: the result
is a measurement, not a model to ship. Compare its log with a paper-loss run of the same settings:

    python -m training.gender_ceiling --epochs 28 --threads 1 --out runs/gender-ceiling
"""
import argparse
import os
import sys

from .__main__ import _data_args, _train_args
from .loss import gender_terms_only
from .train import train

LOSS = "gender terms of formula (3) only (diagnostic)"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.gender_ceiling", description=__doc__.split("\n")[0])
    _data_args(parser)
    _train_args(parser, out="runs/gender-ceiling")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data):
        sys.exit(f"error: data folder {args.data} not found (expected UTKFace chips; set --data)")
    args.loss = LOSS                     # stored with the checkpoint's args, so a card can't mistake it
    return train(args, loss_fn=gender_terms_only)


if __name__ == "__main__":
    main()
