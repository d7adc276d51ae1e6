"""Photo archives to Parquet, in this process or on a Dask cluster: `agegender predict --parquet OUT`.

    agegender predict --parquet faces.parquet photos/                  # here, one chunk after another
    agegender predict --parquet faces.parquet --workers 8 photos/      # a distributed.LocalCluster of 8 processes
    agegender predict --parquet faces.parquet --scheduler tcp://host:8786 /shared/photos/

The input files are cut into chunks of --chunk-size files; each chunk is one task, which
writes one part file. OUT is a Parquet data set (pandas.read_parquet(OUT) reads it whole):

    OUT/part-000000512-<chunk id>.parquet   one chunk's rows (the number: its first file's place in the input list)
    OUT/_manifest/options.json              the options that change results; a rerun with others is refused
    OUT/_manifest/<chunk id>.json           a finished chunk: its part, its files, its row count, the backend

Readers skip names starting with "_" or ".", so the manifest and the temporary files
(.NAME.XXXXXXXX.part) are not read as data. Every file goes through outdir.OutputFolder:
written under a temporary name, flushed, then linked to its name, never replacing anything.
The chunk id is a hash of the options that change results and the chunk's files, so a task
run twice (a retry, a rerun after the client died) finds its part there and keeps it. A
rerun reads the manifest and runs only the files no finished chunk holds: no row twice.

Columns: file (escaped as output.escape_name, so Arrow's UTF-8 strings hold any name), face
(0-based, null for a photo without a face), left, top, right, bottom, age, gender,
male_probability, score (float32, unrounded), the six heads with --heads, and error (null,
or why that file failed: its one row). Every input file is in OUT exactly once: its faces,
one null-face row, or one error row.

Each worker process loads the model and the detector once (a per-process cache keyed by the
settings) with as many model threads as the worker has threads. dask, distributed and
pyarrow are imported only here, and only when used.
"""
import argparse
import hashlib
import json
import os
import re
import sys
import threading
import time
import dataclasses
from dataclasses import dataclass

from .cli import PredictRun
from .errors import DetectorUnavailableError, one_line
from .output import escape_name

CHUNK_SIZE = 256                 # files per task: minutes of detection on one core, a few MB of rows
RETRIES = 3                      # of a task that raised (a worker that died is retried by the scheduler)
FORMAT_VERSION = 1
MANIFEST = "_manifest"
OPTIONS = "options"
PART = "part-{index:09d}-{chunk}.parquet"
_PART_NAME = re.compile(r"part-(\d{9})-([0-9a-f]{20})\.parquet\Z")
BOX = ("left", "top", "right", "bottom")
FAILURES_LISTED = 20             # at the end of a CLI run; the rest are in the error column
# Test hooks (tests/test_scale_out.py), inert unless set: a task exits its process when it removes this file
# first; each chunk waits this many seconds before writing its part.
TEST_CRASH_ENV, TEST_DELAY_ENV = "AGEGENDER_TEST_CRASH_ONCE", "AGEGENDER_TEST_CHUNK_DELAY"


class ScaleError(OSError):
    """OUT or the cluster cannot be used (a foreign folder, other options, a task that failed): a setup error."""


@dataclass(frozen=True)
class Settings:
    """What a task needs: the estimator's settings and the per-file options. All but threads and
    batch_size change results (batch_size does not: tests/test_cli.py shows batches give the same values)."""
    weights: str = None
    backend: str = "auto"
    threads: int = None
    batch_size: int = 64
    min_score: float = 0.0
    max_pixels: int = None
    chips: bool = False
    heads: bool = False
    flip: bool = False

    def key(self):
        """The options that change results, as stored in OUT/_manifest/options.json."""
        import refimpl

        weights = self.weights or refimpl.DEFAULT_WEIGHTS
        with open(weights, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        return {"version": FORMAT_VERSION, "weights_sha256": digest, "backend": self.backend,
                "min_score": self.min_score, "max_pixels": self.max_pixels, "chips": self.chips, "heads": self.heads,
                "flip": self.flip}


@dataclass(frozen=True)
class Chunk:
    id: str
    index: int                   # its first file's place in the run's input list
    entries: tuple               # ((absolute path, its scanned folder or None, error found before reading or None,
    #                               the path as given: the file column), ...)

    @property
    def part(self):
        return PART.format(index=self.index, chunk=self.id)


def identity(file):
    """How the manifest names a file: its absolute path, escaped."""
    return escape_name(os.path.abspath(file))


def plan(entries, chunk_size, key, done=frozenset()):
    """[(path, root, error, given)] -> [Chunk] of the files not in `done` (identities), chunk_size each.

    Cutting what is left of a list cut into whole chunks gives the same chunks again, so a rerun
    after an interruption makes the very chunks (and chunk ids) the first run did not finish."""
    key_text = json.dumps(key, sort_keys=True)
    pending = [(i, entry) for i, entry in enumerate(entries) if identity(entry[0]) not in done]
    chunks = []
    for start in range(0, len(pending), chunk_size):
        part = pending[start:start + chunk_size]
        digest = hashlib.sha256(key_text.encode())
        for _, (file, _, _, _) in part:
            digest.update(b"\0" + identity(file).encode())
        chunks.append(Chunk(digest.hexdigest()[:20], part[0][0], tuple(entry for _, entry in part)))
    return chunks


# -- one chunk, in whatever process runs it ------------------------------------------------------------

_ESTIMATORS, _ESTIMATORS_LOCK = {}, threading.Lock()
LOADS = []                       # settings of each model load in this process (tests check: once per process)


def cached_estimator(settings):
    """This process's Estimator for `settings`, loaded on first use; model threads = the worker's threads."""
    from .estimator import Estimator

    threads = settings.threads or _worker_threads()
    key = (settings.weights, settings.backend, threads, settings.batch_size, settings.min_score, settings.chips,
           settings.flip)
    with _ESTIMATORS_LOCK:
        if key not in _ESTIMATORS:
            estimator = Estimator(settings.weights, backend=settings.backend, threads=threads,
                                  batch_size=settings.batch_size, min_score=settings.min_score, flip=settings.flip)
            if not settings.chips:
                estimator.detector                                # the detector's models, loaded once too
            _ESTIMATORS[key] = estimator
            LOADS.append(key)
        return _ESTIMATORS[key]


def _worker_threads():
    """The Dask worker's thread count when running in one (None elsewhere: the backend's default)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        return get_worker().state.nthreads
    except ValueError:                                     # not in a worker
        return None


def run_chunk(chunk, out, settings, outputs=None):
    """Read, detect and estimate one chunk, write its part and its manifest entry -> a summary dict.

    outputs: {"--annotate" / "--save-chips": outdir.OutputFolder} made by the client (copied here)."""
    _test_crash_hook()
    run = _ChunkRun(cached_estimator(settings), settings, outputs or {})
    for file, root, error, _ in chunk.entries:
        if error is None:
            run.add(file, root)
        else:
            run.failures.append((file, error))
    run.flush()
    table, failures = run.table(chunk)
    delay = float(os.environ.get(TEST_DELAY_ENV) or 0)
    if delay:
        time.sleep(delay)
    record = {"chunk": chunk.id, "part": chunk.part, "rows": table.num_rows, "backend": run.estimator.backend,
              "files": [identity(file) for file, _, _, _ in chunk.entries]}
    table = table.replace_schema_metadata({"agegender": json.dumps(record)})
    folder = _out_folder(out)
    state = folder.save(os.path.join(out, chunk.part), "", _Writes(lambda stream: _write_parquet(table, stream)))
    folder.save(os.path.join(out, MANIFEST, chunk.id), ".json", _json(record))
    return {"chunk": chunk.id, "files": len(chunk.entries), "rows": table.num_rows, "part": state,
            "failures": failures, "outputs": {option: (f.written, f.kept, f.first_kept)
                                               for option, f in run.outputs.items()}}


def _test_crash_hook():
    trigger = os.environ.get(TEST_CRASH_ENV)
    if trigger:
        try:
            os.unlink(trigger)                             # one task only: the one that removes it
        except FileNotFoundError:
            return
        os._exit(17)


class _Rows:
    """PredictRun's writer here: the rows of each photo, unrounded, kept until the chunk's table is made."""

    def __init__(self):
        self.by_file = {}

    def no_face(self, file):
        self.by_file[file] = [{}]

    def close(self):
        pass


class _ChunkRun(PredictRun):
    """The CLI's reading, detection, batching and --annotate / --save-chips, collecting rows for Parquet."""

    def __init__(self, estimator, settings, outputs):
        args = argparse.Namespace(annotate=None, save_chips=None, overwrite=False, format="table",
                                  heads=settings.heads, chips=settings.chips)
        from .images import MAX_PIXELS

        super().__init__(estimator, args, MAX_PIXELS if settings.max_pixels is None else settings.max_pixels)
        self.args = argparse.Namespace(**{**vars(args), "annotate": "--annotate" in outputs,
                                          "save_chips": "--save-chips" in outputs})
        self.outputs = {option: folder.fresh_copy() for option, folder in outputs.items()}
        self.writer = _Rows()

    def write_faces(self, file, faces):
        from .estimator import HEADS

        rows = []
        for i, face in enumerate(faces):
            row = {"face": i, **dict(zip(BOX, face.box)), "age": face.age,
                   "gender": face.gender, "male_probability": face.male_probability, "score": face.score}
            if self.args.heads:
                row.update({name: face.heads[name] for name in HEADS})
            rows.append(row)
        self.writer.by_file[file] = rows

    def table(self, chunk):
        """-> (pyarrow Table of the chunk in input order, [(file, message)] of the files that failed)."""
        import pyarrow as pa

        messages = {}
        for file, message in self.failures:
            messages.setdefault(file, []).append(message)
        rows, failures = [], []
        for file, _, _, given in chunk.entries:
            error = "; ".join(messages.get(file, [])) or None
            found = self.writer.by_file.get(file) or [{}]
            if error is None and file not in self.writer.by_file:
                error = "internal error: no result"              # never expected; never a silent gap either
            if error is not None:
                failures.append((given, error))
            rows += [{"file": escape_name(given), **row, "error": error} for row in found]
        return pa.Table.from_pylist(rows, schema=schema(self.args.heads)), failures


def schema(heads=False):
    """The Parquet schema of a run (--heads adds the six head columns)."""
    import pyarrow as pa

    from .estimator import HEADS

    floats = ["age", "gender", "male_probability", "score"] + (list(HEADS) if heads else [])
    fields = [pa.field("file", pa.string()), pa.field("face", pa.int32())]
    fields += [pa.field(name, pa.int32()) for name in BOX]
    fields += [pa.field(name, pa.string() if name == "gender" else pa.float32()) for name in floats]
    return pa.schema(fields + [pa.field("error", pa.string())])


def _write_parquet(table, stream):
    import pyarrow.parquet as pq

    pq.write_table(table, stream)


class _Writes:
    """What OutputFolder.save writes (it calls .save(stream, format=...) as on a PIL image): `write(stream)`."""

    def __init__(self, write):
        self.write = write

    def save(self, stream, format=None):
        self.write(stream)


def _json(value):
    return _Writes(lambda stream: stream.write(json.dumps(value, indent=1, sort_keys=True).encode()))


def _out_folder(out):
    from .outdir import OutputFolder

    return OutputFolder(out, out)           # root = OUT: the names given to save are OUT/part-... and OUT/_manifest/...


# -- the run, on the client ------------------------------------------------------------------------------

class Dataset:
    """OUT: checks it is ours and made with the same options; the chunks an earlier run finished."""

    def __init__(self, out, key):
        self.out, self.key = out, key
        options = os.path.join(out, MANIFEST, OPTIONS + ".json")
        if os.path.isdir(out) and os.listdir(out) and not os.path.exists(options):
            raise ScaleError(f"{escape_name(out)}: a folder that is not empty and holds no {MANIFEST}/{OPTIONS}.json; "
                             "--parquet writes to a new folder or to one an earlier --parquet run made")
        folder = _out_folder(out)
        folder.save(options[:-len(".json")], ".json", _json(key))          # kept when there already
        with open(options) as f:
            stored = json.load(f)
        if stored != key:
            changed = ", ".join(f"{k} {stored.get(k)!r} there, {key.get(k)!r} here"
                                for k in sorted(set(stored) | set(key)) if stored.get(k) != key.get(k))
            raise ScaleError(f"{escape_name(out)}: holds results made with other options ({changed}); "
                             "write to another folder")
        self.done = self._finished(folder)
        self.done_files = {file for record in self.done.values() for file in record["files"]}

    def _finished(self, folder):
        """{chunk id: manifest record} of chunks whose part is there; a part whose manifest entry is missing
        (the task stopped between the two) gets it back from the part's own metadata."""
        done = {}
        manifest = os.path.join(self.out, MANIFEST)
        for name in sorted(os.listdir(manifest)):
            if name.endswith(".json") and not name.startswith(".") and name != OPTIONS + ".json":
                try:
                    with open(os.path.join(manifest, name)) as f:
                        record = json.load(f)
                except ValueError:
                    continue
                if os.path.isfile(os.path.join(self.out, record.get("part", ""))):
                    done[record["chunk"]] = record
        for name in sorted(os.listdir(self.out)):
            match = _PART_NAME.match(name)
            if match and match.group(2) not in done:
                import pyarrow.parquet as pq

                metadata = pq.read_schema(os.path.join(self.out, name)).metadata or {}
                record = json.loads(metadata[b"agegender"])
                folder.save(os.path.join(manifest, record["chunk"]), ".json", _json(record))
                done[record["chunk"]] = record
        return done


@dataclass
class Result:
    """What a run did: OUT, the parts it wrote, the files and rows in them, the files that failed."""
    out: str
    parts_written: int = 0
    parts_before: int = 0
    files: int = 0
    rows: int = 0
    failures: list = None
    outputs: dict = None


def run(inputs, out, settings, *, failures=(), client=None, workers=None, scheduler=None, chunk_size=CHUNK_SIZE,
        annotate=None, save_chips=None, overwrite=False, progress=None, stream=None):
    """inputs [(file, scanned folder or None)] (cli.collect_inputs) and failures [(path, message)] -> Result.

    client: a distributed.Client; else workers (a LocalCluster of that many processes), scheduler (an address),
    or neither: this process runs the chunks one after another, without Dask."""
    from .outdir import OutputFolder, common_root

    _need("pyarrow", "--parquet")
    stream = stream or sys.stderr
    # workers get absolute paths (their working folder is not ours); the file column keeps the path as given
    entries, seen = [], set()
    for file, root in inputs:
        if identity(file) not in seen:                     # a file named twice is read once
            seen.add(identity(file))
            entries.append((os.path.abspath(file), root and os.path.abspath(root), None, file))
    entries += [(os.path.abspath(path), None, message, path) for path, message in failures
                if identity(path) not in seen]
    key = settings.key()
    dataset = Dataset(out, key)
    chunks = plan(entries, chunk_size, key, dataset.done_files)
    outputs = {}
    root = common_root(inputs) if annotate or save_chips else None
    for option, folder in (("--annotate", annotate), ("--save-chips", save_chips)):
        if folder:
            outputs[option] = OutputFolder(folder, root, overwrite, inputs)
    result = Result(out, parts_before=len(dataset.done), failures=[], outputs=outputs)
    total = sum(len(c.entries) for c in chunks)
    show = progress if progress is not None else total > 1 and stream.isatty()
    owned = []
    try:
        if chunks and client is None and (workers or scheduler):
            client = connect(workers, scheduler, owned)
        shared = {option: folder.fresh_copy() for option, folder in outputs.items()}
        for folder in shared.values():
            folder.folder = os.path.abspath(folder.folder)
        if client is not None and shared:                  # sent once to each worker, not once per task
            shared = client.scatter([shared], broadcast=True, hash=False)[0]
        summaries = run_tasks(client, run_chunk, chunks, os.path.abspath(out), settings, shared)
        _draw(stream, show, 0, total)
        for summary in summaries:
            result.parts_written += summary["part"] == "written"
            result.files += summary["files"]
            result.rows += summary["rows"]
            result.failures += summary["failures"]
            for option, (written, kept, first_kept) in summary["outputs"].items():
                outputs[option].written += written
                outputs[option].kept += kept
                outputs[option].first_kept = outputs[option].first_kept or first_kept
            _draw(stream, show, result.files, total)
        if show:
            stream.write("\n")
    finally:
        for closing in reversed(owned):
            closing.close()
    return result


def _need(module, what):
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise ScaleError(f"{what} needs {module}: pip install 'agegender-kit[scale]'") from None


def connect(workers, scheduler, owned):
    """A Client of a new LocalCluster of `workers` processes (one thread each), or of the scheduler at an address;
    what the caller must close is appended to `owned` (training/distributed.py runs its folds the same way)."""
    _need("distributed", "--workers and --scheduler")
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler, timeout="30s")
        owned.append(client)
        return client
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    owned.append(cluster)
    client = Client(cluster)
    owned.append(client)
    return client


def run_tasks(client, function, items, *args):
    """Yield function(item, *args) for each item: without a client here, in order; with one as tasks on its
    cluster, as they finish (a task that raised is retried RETRIES times; one whose worker died, by the
    scheduler). A task that fails for good stops the run: its setup error as it is, anything else a ScaleError."""
    if client is None:
        for item in items:
            yield function(item, *args)
        return
    from distributed import as_completed

    futures = [client.submit(function, item, *args, pure=False, retries=RETRIES) for item in items]
    try:
        for future in as_completed(futures):
            try:
                yield future.result()
            except OSError:
                raise                                      # a setup error on the worker: the CLI's one line
            except Exception as exc:  # noqa: BLE001 - bad weights or backend there, KilledWorker, a bug: one line
                raise ScaleError(f"a task failed on the cluster: {one_line(exc)}") from exc
            finally:
                future.release()
    finally:
        for future in futures:
            future.cancel()


def _draw(stream, show, done, total):
    if show:
        filled = 30 * done // max(total, 1)
        stream.write(f"\rfiles [{'=' * filled}{' ' * (30 - filled)}] {done}/{total}")
        stream.flush()


# -- the Python API and the CLI ---------------------------------------------------------------------------

def predict_to_parquet(paths, out, client=None, *, workers=None, scheduler=None, chunk_size=CHUNK_SIZE,
                       weights=None, backend="auto", threads=None, batch_size=64, min_score=0.0, max_pixels=None,
                       chips=False, heads=False, flip=False, annotate=None, save_chips=None, overwrite=False,
                       progress=False):
    """Estimate every face in `paths` (files and folders, searched as the CLI does) into the Parquet data set
    `out` -> out. client: a distributed.Client to run on (or workers=N / scheduler=ADDRESS; none: here).
    Files that fail are rows with an error; a rerun into the same `out` does only what is missing."""
    from .cli import collect_inputs

    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    paths = [os.fsdecode(p) for p in paths]
    if not paths:
        raise ValueError("predict_to_parquet: no paths given")
    own = [(kind, folder) for kind, folder in (("annotate", annotate), ("chips", save_chips)) if folder]
    inputs, failures, empty = collect_inputs(paths, own)
    if not inputs and not failures:
        raise ValueError(f"no image files in {', '.join(escape_name(p) for p in empty or paths)}")
    settings = Settings(weights and os.path.abspath(weights), backend, threads, batch_size, min_score, max_pixels,
                        chips, heads, flip)
    out = os.fspath(out)
    run(inputs, out, settings, failures=failures, client=client, workers=workers, scheduler=scheduler,
        chunk_size=chunk_size, annotate=annotate, save_chips=save_chips, overwrite=overwrite, progress=progress)
    return out


def run_cli(args, inputs, failures):
    """`agegender predict --parquet OUT [--workers N | --scheduler ADDRESS]` -> exit status."""
    from .cli import EXIT_OK, EXIT_SOME_FAILED, error

    settings = Settings(args.weights and os.path.abspath(args.weights), args.backend, args.threads, args.batch_size,
                        args.min_score, args.max_pixels, args.chips, args.heads, args.flip)
    scheduler = args.scheduler or (None if args.workers else os.environ.get("DASK_SCHEDULER_ADDRESS"))
    try:
        if inputs:            # fails here, once: weights, backend, threads (and the detector, if it runs here)
            estimator = cached_estimator(dataclasses.replace(settings, chips=True)) if args.workers or scheduler \
                else cached_estimator(settings)
            del estimator
    except DetectorUnavailableError as exc:
        return error(f"{exc} (or pass --chips for aligned face chips)")
    except ValueError as exc:                              # ModelFileError, a bad --backend or --threads
        return error(str(exc))
    result = run(inputs, args.parquet, settings, failures=failures, workers=args.workers, scheduler=scheduler,
                 chunk_size=args.chunk_size, annotate=args.annotate, save_chips=args.save_chips,
                 overwrite=args.overwrite, progress=args.progress)
    line = (f"agegender: --parquet: wrote {result.parts_written} part{'s' * (result.parts_written != 1)} "
            f"({result.rows} rows for {result.files} files) to {escape_name(result.out)}")
    if result.parts_before:
        line += f"; {result.parts_before} finished earlier, kept"
    sys.stderr.write(line + "\n")
    for what, folder in result.outputs.items():
        sys.stderr.write(folder.summary(what) + "\n")
    if result.failures:
        sys.stderr.write(f"agegender: {len(result.failures)} of {result.files} files failed "
                         f"(each is a row with its error in {escape_name(result.out)}):\n")
        for file, message in result.failures[:FAILURES_LISTED]:
            sys.stderr.write(f"  {escape_name(file)}: {message}\n")
        if len(result.failures) > FAILURES_LISTED:
            sys.stderr.write(f"  ... and {len(result.failures) - FAILURES_LISTED} more\n")
        return EXIT_SOME_FAILED
    return EXIT_OK


__all__ = ["predict_to_parquet", "run", "Settings", "ScaleError", "schema", "CHUNK_SIZE"]
