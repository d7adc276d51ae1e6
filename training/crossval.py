"""Pool the validation metrics of the runs of one k-fold or leave-one-person-out protocol.

Each fold is its own run (`python -m training train --protocol lopo --fold I --out runs/fgnet-I`, one per
person, in parallel or one after another); its log's last epoch holds its validation metrics. The pooled
numbers are over all validation images of all folds: each fold counts by its number of images, which is how
FG-NET's leave-one-person-out MAE is usually reported.
"""
import json
import os

from .splits import describe, stored_args

KEYS = ("mae", "ca3", "ca5", "gender_acc")


def last_record(run_dir):
    """(the run's stored args, its last epoch's validation metrics); SystemExit naming what is missing."""
    log_path, checkpoint = os.path.join(run_dir, "log.jsonl"), os.path.join(run_dir, "last.pt")
    if not os.path.isfile(log_path) or not os.path.isfile(checkpoint):
        raise SystemExit(f"error: {run_dir} is not a finished training run (expected log.jsonl and last.pt)")
    from . import checkpoints

    args = checkpoints.load(checkpoint)["args"]
    with open(log_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records or records[-1]["epoch"] != args["epochs"]:
        raise SystemExit(f"error: {run_dir} stopped at epoch {records[-1]['epoch'] if records else 0} of "
                         f"{args['epochs']}; resume it before pooling")
    return args, records[-1]["val"]


def pool(folds):
    """{head: pooled metrics} from [(args, {head: metrics})]: means weighted by each fold's image count (gender
    by its labelled images)."""
    pooled = {}
    for head in folds[0][1]:
        n = sum(val[head]["n"] for _, val in folds)
        entry = {"n": n}
        for key in KEYS:
            weight = "n_gender" if key == "gender_acc" else "n"
            parts = [(val[head][key], val[head].get(weight, val[head]["n"])) for _, val in folds
                     if val[head][key] is not None]
            total = sum(w for _, w in parts)
            entry[key] = sum(v * w for v, w in parts) / total if total else None
        pooled[head] = entry
    return pooled


def summarize(run_dirs):
    folds = [last_record(d) for d in run_dirs]
    runs = [stored_args(args) for args, _ in folds]
    # every run must share the split but for its fold
    shared = {json.dumps({k: v for k, v in describe(run, 0).items() if k != "fold"}, sort_keys=True) for run in runs}
    if len(shared) > 1:
        raise SystemExit(f"error: the runs use different data sets or protocols: {sorted(shared)}")
    fold_ids = sorted(run.fold for run in runs)
    if len(set(fold_ids)) < len(fold_ids):
        raise SystemExit(f"error: a fold appears twice among the runs (folds {fold_ids})")
    first = runs[0]
    return {"dataset": first.dataset, "protocol": first.protocol, "folds": fold_ids, "seed": first.seed,
            "k": first.folds if first.protocol == "kfold" else None, "metrics": pool(folds)}


def format_table(summary):
    lines = [f"{summary['dataset']}, {summary['protocol']}: {len(summary['folds'])} folds pooled "
             f"({summary['metrics']['ensemble']['n']} validation images)",
             f"{'head':<10}{'MAE':>7}{'CA(3)':>8}{'CA(5)':>8}{'gender':>8}"]
    for head, m in summary["metrics"].items():
        gender = "-" if m["gender_acc"] is None else f"{m['gender_acc']:.1%}"
        lines.append(f"{head:<10}{m['mae']:7.2f}{m['ca3']:8.1%}{m['ca5']:8.1%}{gender:>8}")
    return "\n".join(lines)
