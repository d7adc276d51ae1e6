"""`agegender predict PATH...`: ages and genders of the faces in photos, folders or a list of paths on stdin.

    agegender predict photo.jpg                  # every face, a table
    agegender predict --json photos/             # a folder, recursively; JSON list of faces
    find . -name '*.jpg' | agegender predict --csv
    agegender predict --chips chip.jpg           # already aligned face chips: no detection
    agegender backends                           # what --backend can be here

Exit status: 0 when every file was read (photos without a face included), 1 when
some files failed (listed on stderr at the end), 2 for usage, weights or setup errors.
"""
import argparse
import os
import sys

from .errors import DetectorUnavailableError, one_line

# numpy, the network and pillow are imported where used, so that `agegender --help` is instant.

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser():
    parser = argparse.ArgumentParser(prog="agegender", description="Age and gender of the faces in photos.")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict", help="estimate age and gender for image files, folders or paths on stdin",
        description="Estimate age and gender of every face in JPEG, PNG, BMP and WebP files. Folders are "
                    "searched recursively; with no PATH (or '-') paths are read from stdin, one per line.")
    predict.add_argument("paths", nargs="*", metavar="PATH", help="image file or folder ('-': read paths from stdin)")
    form = predict.add_mutually_exclusive_group()
    form.add_argument("--json", dest="format", action="store_const", const="json",
                      help="a JSON list of faces: file, face, box, age, gender, male_probability, score")
    form.add_argument("--csv", dest="format", action="store_const", const="csv", help="CSV, one face per row")
    predict.set_defaults(format="table")
    predict.add_argument("--chips", action="store_true",
                         help="each input is an aligned face chip (UTKFace/dlib style): no face detection")
    predict.add_argument("--heads", action="store_true", help="add the three heads' age and gender outputs")
    predict.add_argument("--annotate", metavar="DIR", help="write a copy of each photo with boxes and labels to DIR")
    predict.add_argument("--save-chips", metavar="DIR",
                         help="write each face's aligned 200 x 200 chip to DIR as NAME_FACE.png (input for --chips)")
    predict.add_argument("--backend", default="auto", help="auto (default: fastest available), refimpl, numba, cython")
    predict.add_argument("--threads", type=int, metavar="N",
                         help="threads of a kernels backend (refimpl follows numpy's BLAS: OPENBLAS_NUM_THREADS)")
    predict.add_argument("--weights", metavar="FILE.onnx", help="model weights (default: the bundled ones)")
    predict.add_argument("--batch-size", type=int, default=64, metavar="N", help="faces per network call (64)")
    predict.add_argument("--min-score", type=float, default=0.0, metavar="S",
                         help="detector score threshold (0.0, dlib's default; 0.5 drops most false faces)")
    predict.add_argument("--max-pixels", type=int, default=None, metavar="N",
                         help="refuse images larger than N pixels (default 90 million)")
    bar = predict.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar on stderr (default: with several files, when stderr is a terminal "
                          "and the results are not already streaming to it)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    predict.set_defaults(func=run_predict)
    backends = commands.add_parser("backends", help="list the network backends available here")
    backends.set_defaults(func=run_backends)
    return parser


def main(argv=None):
    """Console entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "threads", None) is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be at least 1")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("agegender: interrupted\n")
        return 130
    except BrokenPipeError:                                   # `agegender predict ... | head`
        sys.stderr.close()
        return EXIT_OK


def run_backends(args):
    from . import backends

    for name in backends.available():
        print(name)
    return EXIT_OK


def error(message):
    sys.stderr.write(f"agegender: error: {message}\n")
    return EXIT_USAGE


def run_predict(args):
    import refimpl

    from .estimator import Estimator
    from .images import MAX_PIXELS

    inputs, failures = collect_inputs(args.paths)
    if not inputs and not failures:
        return error("no image files given (PATH arguments, or paths on stdin)")
    try:
        estimator = Estimator(args.weights, backend=args.backend, threads=args.threads, batch_size=args.batch_size,
                              min_score=args.min_score)
        if not args.chips and inputs:
            estimator.detector                                 # fails here, once, without the detect extra
    except (refimpl.ModelFileError, ValueError) as exc:
        return error(str(exc))
    except DetectorUnavailableError as exc:
        return error(f"{exc} (or pass --chips for aligned face chips)")
    run = PredictRun(estimator, args, args.max_pixels or MAX_PIXELS)
    show = args.progress
    if show is None:         # a bar on the terminal, unless table or CSV rows stream to that same terminal
        show = len(inputs) > 1 and sys.stderr.isatty() and (args.format == "json" or not sys.stdout.isatty())
    for file, root in progress(inputs, show):
        run.add(file, root)
    run.flush()
    run.writer.close()
    total = len(inputs) + len(failures)
    failures += run.failures
    if args.format == "json" and run.no_face:
        for file in run.no_face:
            sys.stderr.write(f"{file}: no face found\n")
    if failures:
        sys.stderr.write(f"agegender: {len(failures)} of {total} files failed:\n")
        for file, message in failures:
            sys.stderr.write(f"  {file}: {message}\n")
        return EXIT_SOME_FAILED
    return EXIT_OK


class PredictRun:
    """Reads and detects file by file, runs the network on batches of faces from many files, writes rows in order."""

    def __init__(self, estimator, args, max_pixels):
        from .output import WRITERS

        self.estimator, self.args, self.max_pixels = estimator, args, max_pixels
        self.writer = WRITERS[args.format](sys.stdout, heads=args.heads)
        self.pending, self.pending_faces = [], 0     # [(file, root, rgb or None, detections, chips)]
        self.failures, self.no_face = [], []

    def add(self, file, root):
        from . import align
        from .images import read_picture

        try:
            rgb = read_picture(file, self.max_pixels)      # pixels stay in the decoder's buffer
            if self.args.chips:
                detections, chips = [None], [rgb]
            else:
                detections = self.estimator.detector(rgb)
                chips = [align.extract_chip(rgb, align.chip_transform(d.landmarks)) for d in detections]
        except ValueError as exc:                              # ImageError, InputError: the file's fault
            self.failures.append((file, one_line(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - one bad file never stops a folder run
            self.failures.append((file, f"internal error: {one_line(exc)}"))
            return
        keep = rgb if self.args.annotate else None
        self.pending.append((file, root, keep, detections, chips))
        self.pending_faces += len(chips)
        if self.pending_faces >= self.estimator.batch_size:
            self.flush()

    def flush(self):
        from .estimator import make_faces
        from .output import face_row

        if not self.pending:
            return
        chips = [chip for entry in self.pending for chip in entry[4]]
        try:
            outputs = self.estimator.estimate(chips)
        except Exception as exc:  # noqa: BLE001 - report the batch's files, go on with the next batch
            self.failures += [(entry[0], f"network failed: {one_line(exc)}") for entry in self.pending]
            self.pending, self.pending_faces = [], 0
            return
        start = 0
        for file, root, rgb, detections, file_chips in self.pending:
            n = len(file_chips)
            part = {name: values[start:start + n] for name, values in outputs.items()}
            start += n
            if n == 0:
                self.no_face.append(file)
                self.writer.no_face(file)
                continue
            boxes = [d.box if d else (0, 0, c.shape[1] - 1, c.shape[0] - 1) for d, c in zip(detections, file_chips)]
            faces = make_faces(part, boxes, [d.score if d else None for d in detections],
                               [d.landmarks if d else None for d in detections], [None] * n)
            self.writer.faces(file, [face_row(file, i, face, self.args.heads) for i, face in enumerate(faces)])
            if self.args.annotate:
                self.annotate(file, root, rgb, faces)
            if self.args.save_chips and not self.args.chips:
                self.save_chips(file, root, file_chips)
        self.pending, self.pending_faces = [], 0

    def save_chips(self, file, root, chips):
        from PIL import Image

        from . import annotate

        try:
            stem = os.path.splitext(annotate.output_path(self.args.save_chips, file, root))[0]
            os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
            for i, chip in enumerate(chips):
                Image.fromarray(chip).save(f"{stem}_{i}.png")
        except Exception as exc:  # noqa: BLE001 - that file fails, the run goes on
            self.failures.append((file, f"saving chips failed: {one_line(exc)}"))

    def annotate(self, file, root, rgb, faces):
        from . import annotate

        try:
            annotate.save(rgb, faces, self.args.annotate, file, root)
        except Exception as exc:  # noqa: BLE001 - e.g. an unwritable folder: that file fails, the run goes on
            self.failures.append((file, f"annotating failed: {one_line(exc)}"))


def collect_inputs(paths):
    """PATH arguments (files, folders, '-' for stdin) -> ([(file, scanned folder or None)], [(path, error)])."""
    from .images import is_image_name

    if not paths or paths == ["-"]:
        paths = ["-"] if not sys.stdin.isatty() else []
    files, failures = [], []
    for path in paths:
        if path == "-":
            for line in sys.stdin:
                line = line.rstrip("\r\n")
                if line.strip():
                    files.extend(_expand(line, is_image_name, failures))
            continue
        files.extend(_expand(path, is_image_name, failures))
    return files, failures


def _expand(path, is_image_name, failures):
    if os.path.isdir(path):
        found = []
        for folder, subfolders, names in os.walk(path, onerror=lambda exc: failures.append(
                (exc.filename or path, f"cannot read the folder ({exc.strerror})"))):
            subfolders.sort()
            found += [(os.path.join(folder, n), path) for n in sorted(names) if is_image_name(n)]
        return found
    if not os.path.exists(path):
        failures.append((path, "no such file or folder"))
        return []
    return [(path, None)]


def progress(items, show=None, stream=None):
    """Yield items, drawing 'files [=====     ] 12/40' on stderr when show (None: a terminal and > 1 item)."""
    stream = stream or sys.stderr
    total = len(items)
    if show is None:
        show = total > 1 and stream.isatty()
    if not show:
        yield from items
        return
    for done, item in enumerate(items):
        filled = 30 * done // max(total, 1)
        stream.write(f"\rfiles [{'=' * filled}{' ' * (30 - filled)}] {done}/{total}")
        stream.flush()
        yield item
    stream.write(f"\rfiles [{'=' * 30}] {total}/{total}\n")
    stream.flush()
