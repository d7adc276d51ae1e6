"""python -m refimpl {summary, trace, verify}: the reference as a teaching and checking tool."""
import argparse
import os
import sys

import numpy as np

from . import DEFAULT_WEIGHTS, InputError, ModelFileError, load, preprocess
from .golden import DEFAULT_GOLDEN, check_outputs, file_sha256, load_golden


def read_image(path):
    """Image file (any format pillow reads) or a .npy uint8 array -> uint8 array."""
    if path.endswith(".npy"):
        return np.load(path)
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise InputError(f"{path}: reading images needs pillow (pip install pillow), or pass a uint8 .npy array")
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None


def summary(args):
    from .summary import format_table, layer_table

    print(format_table(layer_table(load(args.model))))


def trace(args):
    model = load(args.model)
    x = preprocess(read_image(args.image))[None]
    print(f"{'layer':<28}{'shape':>14}{'min':>10}{'max':>10}{'mean':>10}{'std':>10}{'<0':>7}")
    for name, value in model.trace(x).items():
        shape = "x".join(map(str, value.shape[1:]))
        print(f"{name:<28}{shape:>14}{value.min():>10.4g}{value.max():>10.4g}{value.mean():>10.4g}"
              f"{value.std():>10.4g}{(value < 0).mean():>7.1%}")
    out = model.forward(x)
    print(f"\nage {out['age'][0, 0]:.1f} years, P(male) {out['gender'][0, 0]:.3f}")


def verify(args):
    model = load(args.model)
    x, expected, sha = load_golden(args.golden)
    if sha != file_sha256(args.model):
        print(f"warning: {args.golden} was made from another model file (sha256 {sha[:12]}...)")
    outputs = model.forward(x)
    for name in expected:
        print(f"{name:<16} max |refimpl - onnxruntime| = {np.abs(outputs[name] - expected[name]).max():.3g}")
    reports = check_outputs(outputs, expected)
    for report in reports:
        print("MISMATCH", report)
    print(f"{'FAILED' if reports else 'OK'}: refimpl vs golden outputs of {len(x)} inputs, {args.model}")
    return 1 if reports else 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m refimpl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="the layer table with parameter and FLOP totals")
    s.add_argument("model", nargs="?", default=DEFAULT_WEIGHTS)
    t = sub.add_parser("trace", help="per-layer activation statistics for one face chip")
    t.add_argument("image", help="an image file (needs pillow) or a uint8 .npy array")
    t.add_argument("--model", default=DEFAULT_WEIGHTS)
    v = sub.add_parser("verify", help="check refimpl against the golden vectors (ONNX Runtime's outputs)")
    v.add_argument("model", nargs="?", default=DEFAULT_WEIGHTS)
    v.add_argument("--golden", default=DEFAULT_GOLDEN)
    args = parser.parse_args(argv)
    try:
        return {"summary": summary, "trace": trace, "verify": verify}[args.command](args) or 0
    except (InputError, ModelFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
