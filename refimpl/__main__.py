"""python -m refimpl {summary, trace, verify}: the reference as a teaching and checking tool."""
import argparse
import sys

import numpy as np

from . import DEFAULT_WEIGHTS, InputError, ModelFileError, load, preprocess
from .golden import DEFAULT_GOLDEN, check_outputs, file_sha256, load_golden
from .picture import MissingMatplotlib, draw_layers, pyplot


# An aligned face chip is square (UTKFace's and `agegender predict --save-chips`' are 200 x 200); a photo is
# rarely square (4:3, 3:2, 16:9 are 1.33 and more) and has megapixels. Either sign means trace is not given a chip.
CHIP_MAX_ASPECT = 1.2
CHIP_MAX_SIDE = 512                      # 2.5 x a 200 x 200 chip, 8 x the network's 64 x 64 input


def read_image(path):
    """Image file (any format pillow reads) or a .npy uint8 array -> uint8 array."""
    if path.endswith(".npy"):
        try:
            return np.load(path)         # allow_pickle stays False: a .npy holding objects is refused
        except (ValueError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({exc})") from None
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


def chip_warning(path, image):
    """A one-line warning when `image` does not look like an aligned face chip, else None."""
    shape = np.shape(image)
    if len(shape) < 2 or min(shape[:2]) == 0:
        return None                      # preprocess names what is wrong with it
    h, w = shape[:2]
    if max(h, w) / min(h, w) <= CHIP_MAX_ASPECT and max(h, w) <= CHIP_MAX_SIDE:
        return None
    return (f"warning: {path} is {w}x{h} pixels, not an aligned face chip (square, about 200x200); trace runs the "
            f"network on the whole image as if it were one face: for a photo use `agegender predict {path}`, "
            f"which finds and aligns each face")


def trace(args):
    if args.png:
        pyplot()                         # without matplotlib: one line before any work
    model = load(args.model)
    image = read_image(args.image)
    warning = chip_warning(args.image, image)
    if warning:
        print(warning, file=sys.stderr)
    x = preprocess(image)[None]
    record = model.trace(x)
    print(f"{'layer':<28}{'shape':>14}{'min':>10}{'max':>10}{'mean':>10}{'std':>10}{'<0':>7}")
    for name, value in record.items():
        shape = "x".join(map(str, value.shape[1:]))
        print(f"{name:<28}{shape:>14}{value.min():>10.4g}{value.max():>10.4g}{value.mean():>10.4g}"
              f"{value.std():>10.4g}{(value < 0).mean():>7.1%}")
    print(f"\nage {record['age'][0, 0]:.1f} years, P(male) {record['gender'][0, 0]:.3f}")
    if args.png:
        draw_layers(x[0].transpose(1, 2, 0), record, args.png, title=f"python -m refimpl trace {args.image}")
        print(f"wrote {args.png}")


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
    t.add_argument("--png", metavar="FILE.png", help="also draw the chip, each block's feature maps and the heads' "
                                                     "answers into FILE.png (needs matplotlib: the [plot] extra)")
    v = sub.add_parser("verify", help="check refimpl against the golden vectors (ONNX Runtime's outputs)")
    v.add_argument("model", nargs="?", default=DEFAULT_WEIGHTS)
    v.add_argument("--golden", default=DEFAULT_GOLDEN)
    args = parser.parse_args(argv)
    try:
        return {"summary": summary, "trace": trace, "verify": verify}[args.command](args) or 0
    except (InputError, ModelFileError, OSError, MissingMatplotlib) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
