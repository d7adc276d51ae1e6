"""python -m bench: verify every backend on the bundled weights, then time it; the kit's main report.

    python -m bench                      # batches 1, 8, 64 x threads 1 and all cores, every backend here
    python -m bench --quick              # the same table in under a minute
    python -m bench --json run.json --plot run.png
    python -m bench --compare before.json after.json
    python -m bench --quick --peers      # + OpenVINO, ncnn, LiteRT, PyTorch (bench/peers, docs/peers.md)
"""
import argparse
import sys
import time

import refimpl

from . import backends as bk
from . import peers
from . import report
from . import run as runner


class Progress:
    """One line on stderr, rewritten in place on a terminal, a line per step elsewhere."""

    def __init__(self, stream=sys.stderr, enabled=True):
        self.stream, self.enabled = stream, enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.start = time.perf_counter()
        self.width = 0

    def __call__(self, text):
        if not self.enabled:
            return
        line = f"[{time.perf_counter() - self.start:5.1f} s] {text}"
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width)[:150])
            self.width = min(len(line), 150)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self):
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _ints(text):
    return tuple(int(v) for v in text.split(",") if v)


def _load_run(path):
    from refimpl import InputError

    try:
        return report.load_json(path)
    except ValueError as exc:            # not JSON, or JSON of something else
        raise InputError(str(exc) if str(exc).startswith(str(path)) else f"{path}: not JSON ({exc})") from None


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short budget, the NumPy reference not at batch 64 (< 1 min)")
    p.add_argument("--json", metavar="FILE", help="write every number with its conditions to FILE")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="print the change from run A to run B")
    p.add_argument("--plot", metavar="FILE.png", help="draw ms per image against batch per backend (matplotlib)")
    p.add_argument("--model", default=runner.Options.model, help="ONNX file (default: the bundled weights)")
    p.add_argument("--golden", default=runner.Options.golden, help="golden vectors (default: weights/golden.npz)")
    p.add_argument("--backends", default=",".join(bk.ALL_BACKENDS),
                   help=f"comma-separated subset of {','.join(bk.ALL_BACKENDS)}")
    p.add_argument("--peers", nargs="?", const="default", default=None, metavar="LIST",
                   help="also the peers: OpenVINO, ncnn, LiteRT, PyTorch eager (default), 'all' (adds "
                        "torch.compile, slow to compile), or a comma list of " + ",".join(list(peers.FAMILIES) +
                                                                                       list(peers.PEERS)))
    p.add_argument("--tflite", metavar="FILE", help="the LiteRT peer's .tflite (default: the cache, docs/peers.md)")
    p.add_argument("--batches", type=_ints, default=None, help="comma-separated batch sizes (default 1,8,64)")
    p.add_argument("--threads", type=_ints, default=None, help="comma-separated thread counts (default 1,all cores)")
    p.add_argument("--budget", type=float, default=None, help="seconds of timing per batch and thread count")
    p.add_argument("--peak-size", type=int, default=None, dest="peak_n",
                   help="N of the N^3 matmul that measures the peak (default 2048; smaller for tests)")
    p.add_argument("--no-compile-cost", action="store_false", dest="compile_cost", default=None,
                   help="skip measuring numba's cold first call (done by default without --quick)")
    p.add_argument("--under-load", action=argparse.BooleanOptionalAction, default=None,
                   help="batch 1 of the kernels at 1 and all threads while one busy-loop process per core runs "
                        "(default: on, off with --quick)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return p.parse_args(argv)


def main(argv=None):
    """The command; a missing or refused model, golden or JSON file is one line on stderr and exit status 2."""
    from refimpl import InputError, ModelFileError

    try:
        return _main(argv)
    except (ModelFileError, InputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(argv):
    args = parse_args(argv)
    if args.compare:
        a, b = (_load_run(path) for path in args.compare)
        print(report.format_compare(a, b, *args.compare))
        return 0
    names = tuple(n.strip() for n in args.backends.split(",") if n.strip())
    unknown = [n for n in names if n not in bk.ALL_BACKENDS]
    if unknown:
        print(f"error: unknown backend(s) {', '.join(unknown)}; expected some of {', '.join(bk.ALL_BACKENDS)}",
              file=sys.stderr)
        return 2
    if args.peers is not None:
        try:
            names += tuple(n for n in peers.select(args.peers) if n not in names)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    overrides = {"model": args.model, "golden": args.golden, "backends": names, "tflite": args.tflite,
                 "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])}
    for key in ("batches", "threads", "budget", "peak_n", "compile_cost", "under_load"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    opts = runner.quick_options(**overrides) if args.quick else runner.Options(**overrides)
    refimpl.load(opts.model)             # a refused file fails now, not after the peak measurement
    progress = Progress(enabled=not args.no_progress)
    try:
        result = runner.run(opts, progress)
    finally:
        progress.done()
    print(report.format_report(result))
    if args.json:
        report.save_json(result, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        try:
            report.plot(result, args.plot)
            print(f"wrote {args.plot}")
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    failed = [r for r in result["results"] if r["verified"] == "FAILED"]
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:              # python -m bench | head
        sys.stderr.close()
        sys.exit(1)
