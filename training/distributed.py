"""`python -m training folds`: every fold (and seed) of a protocol, each its own resumable run, on Dask or here.

    python -m training folds --protocol kfold --folds 5 --seeds 0 1 2 --out runs/cv --workers 3
    python -m training folds --dataset fgnet --data FGNET/images --protocol lopo --out runs/fgnet \\
        --scheduler tcp://head:8786 --cache /shared/cache
    python -m training crossval runs/cv        # pools the finished folds of each seed, names the missing ones

Each (seed, fold) is a normal `train` run in OUT/seed{S}/fold{F:03d}, started with --resume: running
the command again continues unfinished folds from their last checkpoint and leaves finished ones
alone. OUT/plan.json lists every run of the protocol, so `crossval OUT` can say what is missing.
Without --workers or --scheduler (or DASK_SCHEDULER_ADDRESS) the folds run here, one after another.
On a Dask worker torch gets the worker's threads (one per worker process by default). The client
reads and preprocesses the data set once first, into --cache, where the folds find it: on a
cluster, --data and --cache must be on a file system every worker sees.
"""
import argparse
import dataclasses
import json
import os
import sys

PLAN = "plan.json"
_NOT_TRAIN_OPTIONS = ("command", "seeds", "only_folds", "workers", "scheduler", "json")


def add_args(p):
    """The options of `folds` besides the data and training ones."""
    p.add_argument("--seeds", type=int, nargs="+", metavar="S", help="run the protocol once per seed (default: --seed)")
    p.add_argument("--only-folds", type=int, nargs="+", metavar="F", help="run these folds only (default: every one)")
    p.add_argument("--workers", type=int, metavar="N", help="run on a Dask LocalCluster of N processes here")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on the Dask cluster at ADDRESS (default: DASK_SCHEDULER_ADDRESS when set and --workers "
                        "is not given)")
    p.add_argument("--json", help="write the pooled metrics here")


def plan_runs(args):
    """-> (plan dict, [train args of each run to do now]). Reads and preprocesses the data set once, here."""
    from .splits import SplitSpec
    from .train import load_dataset

    if args.protocol == "all":
        raise SystemExit("error: --protocol all validates on every image and leaves none to train on")
    # absolute paths: a worker's working folder is not ours (and the cache is keyed by the images' paths)
    absolute = {name: os.path.abspath(getattr(args, name)) for name in ("cache", "init", "distill")
                if getattr(args, name, None)}
    if getattr(args, "sets", None):                 # require_data's [(name, path)]; --data is their paths joined
        absolute["sets"] = [(name, os.path.abspath(path)) for name, path in args.sets]
        absolute["data"] = ",".join(path for _, path in absolute["sets"])
    elif args.data:
        absolute["data"] = ",".join(os.path.abspath(path) for path in args.data.split(","))
    args = argparse.Namespace(**{**vars(args), **absolute})
    split = dataclasses.replace(SplitSpec.from_args(args), fold=0)
    samples, _, _, _ = load_dataset(split, args.cache, args.threads)     # cached for every fold
    count = {"kfold": args.folds, "lopo": len({s for s in samples.subjects}), "holdout": 1}[args.protocol]
    seeds = args.seeds or [args.seed]
    folds = args.only_folds if args.only_folds is not None else list(range(count))
    wrong = [f for f in folds if not 0 <= f < count]
    if wrong:
        raise SystemExit(f"error: --only-folds {wrong}: {args.protocol} has folds 0 to {count - 1}")
    runs = [{"seed": seed, "fold": fold, "out": os.path.join(f"seed{seed}", f"fold{fold:03d}")}
            for seed in seeds for fold in range(count)]
    plan = {"dataset": args.dataset, "protocol": args.protocol, "folds": count, "epochs": args.epochs, "runs": runs}
    base = {k: v for k, v in vars(args).items() if k not in _NOT_TRAIN_OPTIONS}
    todo = [dict(base, seed=r["seed"], fold=r["fold"], out=os.path.abspath(os.path.join(args.out, r["out"])),
                 resume=True, progress=False) for r in runs if r["fold"] in folds]
    return plan, todo


def write_plan(out, plan):
    """OUT/plan.json: the runs of this protocol, merged with those of earlier seeds; another protocol is refused."""
    path = os.path.join(out, PLAN)
    os.makedirs(out, exist_ok=True)
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        same = {k: stored.get(k) for k in ("dataset", "protocol", "folds", "epochs")}
        if same != {k: plan[k] for k in same}:
            raise SystemExit(f"error: {path} plans other runs ({same}); use another --out")
        known = {r["out"] for r in stored["runs"]}
        plan = dict(plan, runs=stored["runs"] + [r for r in plan["runs"] if r["out"] not in known])
    with open(path + ".tmp", "w") as f:
        json.dump(plan, f, indent=1)
    os.replace(path + ".tmp", path)
    return plan


def train_fold(settings):
    """One fold's run (a task): -> {seed, fold, out, state: trained / finished earlier / failed, error}."""
    args = argparse.Namespace(**settings)
    threads = _worker_threads()
    if threads:
        args.threads = threads
    summary = {"seed": args.seed, "fold": args.fold, "out": args.out}
    if finished(args.out):
        return dict(summary, state="finished earlier")
    from .train import train

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "train.log"), "a") as log:
        def write(line):
            log.write(line + "\n")
            log.flush()
        try:
            train(args, log=write)
        except SystemExit as exc:                           # train's one-line errors: this fold fails, not the worker
            write(str(exc.code))
            return dict(summary, state="failed", error=str(exc.code))
    return dict(summary, state="trained")


def _worker_threads():
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        return get_worker().state.nthreads
    except ValueError:
        return None


def finished(run_dir):
    """Whether the run in run_dir has trained all its epochs (crossval's own test)."""
    from .crossval import last_record

    try:
        last_record(run_dir)
    except SystemExit:
        return False
    return True


def run_folds(args):
    """`python -m training folds`: plan, run every fold not finished yet, print the pooled metrics."""
    from agegender.scale import connect, run_tasks

    plan, todo = plan_runs(args)
    write_plan(args.out, plan)
    scheduler = args.scheduler or (None if args.workers else os.environ.get("DASK_SCHEDULER_ADDRESS"))
    owned, client = [], None
    try:
        if todo and (args.workers or scheduler):
            if args.workers:
                import dask

                # the folds' data loader may start processes of its own, which a daemonic worker cannot
                dask.config.set({"distributed.worker.daemon": False})
            client = connect(args.workers, scheduler, owned)
        for result in run_tasks(client, train_fold, todo):
            line = f"seed {result['seed']} fold {result['fold']}: {result['state']} ({result['out']})"
            print(line + (f": {result['error']}" if result.get("error") else ""), flush=True)
    finally:
        for closing in reversed(owned):
            closing.close()
    report(args.out, args.json)


def pooled(out):
    """-> {"seeds": {seed: crossval summary of its finished folds, or None}, "missing": {seed: [folds]}}."""
    from .crossval import summarize

    with open(os.path.join(out, PLAN)) as f:
        plan = json.load(f)
    by_seed = {}
    for run in plan["runs"]:
        by_seed.setdefault(run["seed"], []).append(run)
    result = {"dataset": plan["dataset"], "protocol": plan["protocol"], "folds": plan["folds"], "seeds": {},
              "missing": {}}
    for seed, runs in sorted(by_seed.items()):
        state = {r["fold"]: finished(os.path.join(out, r["out"])) for r in runs}
        done = [os.path.join(out, r["out"]) for r in runs if state[r["fold"]]]
        result["missing"][str(seed)] = sorted(fold for fold, ok in state.items() if not ok)
        result["seeds"][str(seed)] = summarize(done) if done else None
    return result


def report(out, json_path=None):
    """Print each seed's pooled metrics over its finished folds, and which folds are missing."""
    from .crossval import format_table

    result = pooled(out)
    for seed, summary in result["seeds"].items():
        missing = result["missing"][seed]
        if summary is not None:
            print(f"seed {seed}: " + format_table(summary))
        if missing:
            print(f"seed {seed}: {len(missing)} of {result['folds']} folds missing (not finished): "
                  f"{', '.join(map(str, missing))}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    return result


def is_plan(path):
    return os.path.isfile(os.path.join(path, PLAN))
