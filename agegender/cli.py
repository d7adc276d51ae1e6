"""`agegender predict PATH...`: ages and genders of the faces in photos, folders or a list of paths on stdin.

    agegender predict photo.jpg                  # every face, a table
    agegender predict --json photos/             # a folder, recursively; JSON list of faces
    find . -name '*.jpg' | agegender predict --csv
    agegender predict --chips chip.jpg           # already aligned face chips: no detection
    agegender backends                           # what --backend can be here

Exit status: 0 when every file was read (photos without a face included), 1 when
some files failed (listed on stderr at the end), 2 for usage, weights or setup errors
(ModelFileError, InputError and OSError outside one file's reading: one line, never a traceback).
File names are printed by output.escape_name; --annotate and --save-chips write as outdir.py says.
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
    predict.add_argument("--annotate", metavar="DIR",
                         help="write a copy of each photo with boxes and labels to DIR as PATH.annotated.png, "
                              "PATH being the photo's path below the folder that holds all inputs")
    predict.add_argument("--save-chips", metavar="DIR",
                         help="write each face's aligned 200 x 200 chip to DIR as PATH.face0.png, PATH.face1.png, "
                              "... (input for --chips)")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace files already in the --annotate and --save-chips folders (default: keep them "
                              "and say so; an input file is never replaced)")
    predict.add_argument("--backend", default="auto", help="auto (default: fastest available), refimpl, numba, cython")
    predict.add_argument("--threads", type=int, metavar="N",
                         help="threads of a kernels backend (refimpl follows numpy's BLAS: OPENBLAS_NUM_THREADS)")
    predict.add_argument("--weights", metavar="FILE.onnx", help="model weights (default: the bundled ones)")
    predict.add_argument("--batch-size", type=int, default=64, metavar="N", help="faces per network call (64)")
    predict.add_argument("--min-score", type=float, default=0.0, metavar="S",
                         help="detector score threshold (0.0, dlib's default; 0.5 drops most false faces)")
    predict.add_argument("--flip", action="store_true",
                         help="average each face with its mirror image: two network passes per face (off by default)")
    predict.add_argument("--max-pixels", type=int, default=None, metavar="N",
                         help="refuse images larger than N pixels (default 90 million)")
    scale = predict.add_argument_group("archives and clusters (the `scale` extra: docs/scale-out.md)")
    scale.add_argument("--parquet", metavar="OUT",
                       help="write every file's faces to the Parquet data set OUT (a folder of parts, one per chunk; "
                            "a rerun into OUT does only what is missing)")
    scale.add_argument("--workers", type=int, metavar="N",
                       help="with --parquet: run on a Dask LocalCluster of N processes on this machine")
    scale.add_argument("--scheduler", metavar="ADDRESS",
                       help="with --parquet: run on the Dask cluster at ADDRESS (default: DASK_SCHEDULER_ADDRESS "
                            "when set and --workers is not given)")
    scale.add_argument("--chunk-size", type=int, default=256, metavar="N",
                       help="with --parquet: files per task and per part file (256)")
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
    if getattr(args, "max_pixels", None) is not None and args.max_pixels < 1:
        parser.error("--max-pixels must be at least 1 (leave it out for the default, 90 million)")
    if getattr(args, "chips", False) and args.save_chips:
        parser.error("--save-chips saves the chips found in photos; with --chips the inputs are chips already")
    if getattr(args, "command", None) == "predict":
        if args.workers is not None and args.workers < 1 or args.chunk_size < 1:
            parser.error("--workers and --chunk-size must be at least 1")
        if (args.workers or args.scheduler) and not args.parquet:
            parser.error("--workers and --scheduler run --parquet OUT runs (each task writes its own part)")
        if args.workers and args.scheduler:
            parser.error("--workers starts a cluster here, --scheduler uses one that runs: give one of them")
        if args.parquet and args.format != "table":
            parser.error("--parquet writes the results to OUT; leave out --json and --csv")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("agegender: interrupted\n")
        return 130
    except BrokenPipeError:                                   # `agegender predict ... | head`
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - sorted below: setup errors are one line, the rest a bug
        if not is_setup_error(exc):
            raise
        return error(describe(exc))


def is_setup_error(exc):
    """OSError (a folder, a full disk, a closed pipe), refimpl's ModelFileError and InputError."""
    if isinstance(exc, OSError):
        return True
    refimpl = sys.modules.get("refimpl")
    return refimpl is not None and isinstance(exc, (refimpl.ModelFileError, refimpl.InputError))


def describe(exc):
    """An exception as the one line after 'agegender: error: '."""
    from .output import escape_name

    if isinstance(exc, OSError) and exc.strerror:
        where = f"{escape_name(exc.filename)}: " if isinstance(exc.filename, (str, bytes)) else ""
        return f"{where}{exc.strerror}"
    if isinstance(exc, OSError) and len(exc.args) == 1:      # our own OSErrors carry a whole message
        return " ".join(str(exc).split())
    return one_line(exc)


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
    from .images import EXTENSIONS, MAX_PIXELS
    from .output import escape_name

    _tolerant(sys.stdout)
    if args.weights is not None and os.path.isdir(args.weights):
        return error(f"--weights {escape_name(args.weights)}: is a folder; expected an ONNX file (FILE.onnx)")
    own_outputs = [(kind, folder) for kind, folder in (("annotate", args.annotate), ("chips", args.save_chips))
                   if folder]
    inputs, failures, empty = collect_inputs(args.paths, own_outputs)
    if not inputs and not failures:
        if empty:
            return error(f"no image files in {', '.join(escape_name(f) for f in empty)} "
                         f"(searched recursively for {' '.join(EXTENSIONS)})")
        return error("no image files given (PATH arguments, or paths on stdin)")
    if inputs:
        try:
            import PIL.Image  # noqa: F401 - checked once here, not once per file
        except ImportError:
            return error("reading image files needs pillow: pip install 'agegender-kit[image]'")
    if args.parquet:
        from . import scale

        return scale.run_cli(args, inputs, failures)
    try:
        estimator = Estimator(args.weights, backend=args.backend, threads=args.threads, batch_size=args.batch_size,
                              min_score=args.min_score, flip=args.flip)
        if not args.chips and inputs:
            estimator.detector                                 # fails here, once, without the detect extra
    except (refimpl.ModelFileError, ValueError) as exc:
        return error(str(exc))
    except DetectorUnavailableError as exc:
        return error(f"{exc} (or pass --chips for aligned face chips)")
    run = PredictRun(estimator, args, MAX_PIXELS if args.max_pixels is None else args.max_pixels, inputs)
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
            sys.stderr.write(f"{escape_name(file)}: no face found\n")
    for what, folder in run.outputs.items():
        sys.stderr.write(folder.summary(what) + "\n")
    if failures:
        sys.stderr.write(f"agegender: {len(failures)} of {total} files failed:\n")
        for file, message in failures:
            sys.stderr.write(f"  {escape_name(file)}: {message}\n")
        return EXIT_SOME_FAILED
    return EXIT_OK


def _tolerant(stream):
    """On a stream that is not UTF-8 (a latin-1 terminal), what it cannot encode is written as \\uXXXX,
    not an error that stops the run. UTF-8 streams stay strict: escape_name leaves nothing unencodable."""
    import codecs

    encoding = getattr(stream, "encoding", None)
    if encoding and getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure") \
            and codecs.lookup(encoding).name != "utf-8":
        stream.reconfigure(errors="backslashreplace")


class PredictRun:
    """Reads and detects file by file, runs the network on batches of faces from many files, writes rows in order.

    With --annotate a photo is drawn as soon as its faces are known: a faceless one at once,
    one with faces at the network call that follows it, so at most one decoded photo is kept.
    """

    def __init__(self, estimator, args, max_pixels, inputs=()):
        from .outdir import OutputFolder, common_root
        from .output import WRITERS

        self.estimator, self.args, self.max_pixels = estimator, args, max_pixels
        self.outputs = {}                            # "--annotate" / "--save-chips" -> OutputFolder
        root = common_root(inputs) if args.annotate or args.save_chips else None
        for option, folder in (("--annotate", args.annotate), ("--save-chips", args.save_chips)):
            if folder:
                self.outputs[option] = OutputFolder(folder, root, args.overwrite, inputs)
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
        keep = None
        if self.args.annotate:
            if chips:
                keep = rgb                            # drawn at the flush just below
            else:
                self.annotate(file, rgb, [])         # no face to wait for: its copy now
        del rgb
        self.pending.append((file, root, keep, detections, chips))
        self.pending_faces += len(chips)
        if self.pending_faces >= self.estimator.batch_size or keep is not None:
            self.flush()

    def flush(self):
        from .estimator import make_faces

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
            self.write_faces(file, faces)
            if self.args.annotate:
                self.annotate(file, rgb, faces)
            if self.args.save_chips:
                self.save_chips(file, file_chips)
        self.pending, self.pending_faces = [], 0

    def write_faces(self, file, faces):
        """One photo's faces to the output (scale.py keeps them unrounded for Parquet)."""
        from .output import face_row

        self.writer.faces(file, [face_row(file, i, face, self.args.heads) for i, face in enumerate(faces)])

    def save_chips(self, file, chips):
        from PIL import Image

        from .outdir import CHIP_SUFFIX

        try:
            for i, chip in enumerate(chips):
                self.outputs["--save-chips"].save(file, CHIP_SUFFIX.format(i), Image.fromarray(chip))
        except Exception as exc:  # noqa: BLE001 - that file fails, the run goes on
            self.failures.append((file, f"saving chips failed: {describe(exc)}"))

    def annotate(self, file, rgb, faces):
        from . import annotate
        from .outdir import ANNOTATED_SUFFIX

        try:
            self.outputs["--annotate"].save(file, ANNOTATED_SUFFIX, annotate.annotate(rgb, faces))
        except Exception as exc:  # noqa: BLE001 - e.g. an unwritable folder: that file fails, the run goes on
            self.failures.append((file, f"annotating failed: {describe(exc)}"))


def collect_inputs(paths, own_outputs=()):
    """PATH arguments (files, folders, '-' for stdin) -> ([(file, scanned folder or None)], [(path, error)],
    [folders without an image]). Folder scans leave out what an earlier run wrote to own_outputs
    ([(kind, folder)], see outdir.is_own_output), so a rerun into an input folder reads no outputs."""
    from .images import is_image_name
    from .outdir import is_own_output

    def wanted(path):
        return is_image_name(path) and not any(is_own_output(kind, path, folder) for kind, folder in own_outputs)

    if not paths or paths == ["-"]:
        paths = ["-"] if not sys.stdin.isatty() else []
    files, failures, empty = [], [], []
    for path in paths:
        for line in (_stdin_lines() if path == "-" else [path]):
            if line.strip():
                found = _expand(line, wanted, failures)
                if not found and os.path.isdir(line):
                    empty.append(line)
                files.extend(found)
    return files, failures, empty


def _stdin_lines():
    """Lines of stdin without their line ends; read as bytes, so a name that is not UTF-8 keeps its bytes."""
    binary = getattr(sys.stdin, "buffer", None)
    if binary is None:                                        # a text stream put there by a caller
        return (line.rstrip("\r\n") for line in sys.stdin)
    return (os.fsdecode(line.rstrip(b"\r\n")) for line in binary)


def _expand(path, wanted, failures):
    if os.path.isdir(path):
        found = []
        for folder, subfolders, names in os.walk(path, onerror=lambda exc: failures.append(
                (exc.filename or path, f"cannot read the folder ({exc.strerror})"))):
            subfolders.sort()
            found += [(os.path.join(folder, n), path) for n in sorted(names) if wanted(os.path.join(folder, n))]
        return found
    if not os.path.exists(path):
        stripped = path.strip()
        hint = ""
        if stripped != path and os.path.exists(stripped):
            from .output import escape_name

            hint = f" ('{escape_name(stripped)}', without the spaces around it, exists)"
        failures.append((path, "no such file or folder" + hint))
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
