"""Command-line options shared by `python -m training` and `python -m training.gender_ceiling`."""
import os
import sys

DEFAULT_DATA = os.environ.get("AGEGENDER_UTKFACE", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                                 "datasets", "UTKFace"))
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "agegender-kit")


def add_data_args(p):
    """Which images and how they are split: every command that reads a data set takes these."""
    from .data import LOADERS
    from .splits import PROTOCOLS

    p.add_argument("--dataset", choices=list(LOADERS), default="utkface",
                   help="; ".join(f"{name}: --data is {what}" for name, (_, what, _) in LOADERS.items()))
    p.add_argument("--data", help=f"the data set's folder or CSV (default for utkface: {DEFAULT_DATA}, "
                                  "or the env AGEGENDER_UTKFACE)")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="where preprocessed arrays are cached (not the repo)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="holdout",
                   help="holdout: a seeded --val-fraction; kfold: fold --fold of --folds; lopo: leave one person "
                        "out, --fold picks the person (fgnet, morph2); all: every image validates (evaluate only)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--folds", type=int, default=5, help="k of kfold")
    p.add_argument("--fold", type=int, default=0, help="which kfold fold or lopo person (0-based) validates")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only this many images (smoke runs)")
    p.add_argument("--threads", type=int, default=os.cpu_count())


def add_train_args(p, out="runs/utkface"):
    """The optimizer, schedule and checkpoint options of a training run."""
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--out", default=out)
    p.add_argument("--init", help="start from this checkpoint's weights (a second stage with its own schedule)")
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
    """Fill in --data's default and exit with one line when it is missing (a fresh machine has no data set)."""
    from .data import LOADERS

    _, what, is_file = LOADERS[args.dataset]
    if args.data is None:
        if args.dataset != "utkface":
            sys.exit(f"error: --dataset {args.dataset} needs --data: {what}")
        args.data = DEFAULT_DATA
    if not (os.path.isfile(args.data) if is_file else os.path.isdir(args.data)):
        sys.exit(f"error: {'file' if is_file else 'folder'} {args.data} not found "
                 f"(--dataset {args.dataset} expects {what}; set --data)")
