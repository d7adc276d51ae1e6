"""Command-line options shared by `python -m training` and `python -m training.gender_ceiling`."""
import os
import sys

DEFAULT_DATA = os.environ.get("AGEGENDER_UTKFACE", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                                 "datasets", "UTKFace"))
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "agegender-kit")


def add_data_args(p):
    """Where the chips are and how they are split: every command that reads UTKFace takes these."""
    p.add_argument("--data", default=DEFAULT_DATA, help="UTKFace folder (env AGEGENDER_UTKFACE)")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="where preprocessed arrays are cached (not the repo)")
    p.add_argument("--val-fraction", type=float, default=0.1)
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


def require_data(args):
    """Exit with one line when the data folder is missing (a fresh machine has no dataset)."""
    if not os.path.isdir(args.data):
        sys.exit(f"error: data folder {args.data} not found (expected UTKFace chips; set --data)")
