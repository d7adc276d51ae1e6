"""Pool the validation metrics of the runs of one k-fold or leave-one-person-out protocol.

Each fold is its own run (`python -m training train --protocol lopo --fold I --out runs/fgnet-I`, one per
person, in parallel or one after another); its log's last epoch holds its validation metrics. The pooled
numbers are over all validation images of all folds: each fold counts by its number of images, which is how
FG-NET's leave-one-person-out MAE is usually reported.
"""
import json
import os

from .splits import SplitSpec, stored_args

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
    shared = {json.dumps({k: v for k, v in SplitSpec.from_args(args).describe(0).items() if k != "fold"},
                         sort_keys=True) for args, _ in folds}
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


def compare(run_dirs):
    """[(run, epoch, {set or "pooled": ensemble metrics of the last epoch}, {set: validation detection})]: runs
    side by side, to choose between losses or stages by validation on every set."""
    rows = []
    for run_dir in run_dirs:
        log_path = os.path.join(run_dir, "log.jsonl")
        if not os.path.isfile(log_path):
            raise SystemExit(f"error: {run_dir} has no log.jsonl (expected the --out folder of a training run)")
        with open(log_path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        if not records:
            raise SystemExit(f"error: {log_path} is empty: the run has not finished an epoch")
        last = records[-1]
        sets = {name: val["ensemble"] for name, val in last.get("val_sets", {}).items()}
        rows.append((run_dir, last["epoch"], {**sets, "pooled": last["val"]["ensemble"]}, last.get("detection", {})))
    return rows


def format_comparison(rows):
    names = list(dict.fromkeys(name for _, _, sets, _ in rows for name in sets))
    lines = [f"{'run':<28}{'epoch':>6}" + "".join(f"{name + ' MAE':>14}{name + ' gender':>16}" for name in names)]
    for run, epoch, sets, _ in rows:
        cells = ""
        for name in names:
            m = sets.get(name)
            gender = "-" if not m or m["gender_acc"] is None else f"{m['gender_acc']:.1%}"
            cells += f"{m['mae'] if m else float('nan'):>14.2f}{gender:>16}"
        lines.append(f"{run[-28:]:<28}{epoch:>6}{cells}")
    for run, _, _, found in rows:
        for name, summary in found.items():
            lines.append(f"{run}: {name} validation: {summary['faces']} of {summary['photos']} photos have a face "
                         f"({summary['rate']:.1%})")
    return "\n".join(lines)
