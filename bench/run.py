"""The measurement behind `python -m bench`: verify every backend, then time them interleaved.

For each thread count and batch (a "condition"), every available backend first runs the batch once
and is checked against the golden outputs (that call is also its warm-up); a backend that fails the
check is not timed. The verified ones are then timed in rounds, each round giving every backend a
short chunk of calls, so that a change in the machine's background load hits all of them alike and
the ratios to ONNX Runtime compare like with like. Each call is timed alone (time.perf_counter);
ms per image is a call's time divided by the batch.
"""
import datetime
import os
import time
from dataclasses import dataclass, field

import numpy as np

import refimpl
from refimpl import golden, spec

from . import backends as bk
from . import machine
from . import peers

SCHEMA = "agegender-bench/1"
REALTIME_FPS = 30.0                      # the paper's claim: real time = at least 30 faces per second, batch 1
NANO = {"name": "Jetson Nano (Cortex-A57)", "flop_per_cycle": 8, "ghz": 1.43, "cores": 4}


@dataclass
class Options:
    model: str = refimpl.DEFAULT_WEIGHTS
    golden: str = golden.DEFAULT_GOLDEN
    backends: tuple = bk.ALL_BACKENDS
    batches: tuple = (1, 8, 64)
    threads: tuple = None                # None: (1, every usable core)
    budget: float = 5.0                  # seconds of timing per condition, shared by its backends
    min_samples: int = 5                 # per backend and condition, whatever the budget
    max_samples: int = 5000
    peak_repeat: int = 5
    peak_n: int = machine.PEAK_N         # smaller only for tests and very slow boards
    skip: dict = field(default_factory=dict)   # {(backend, batch): why} conditions left out on purpose
    compile_cost: bool = True            # numba's cold first call, in subprocesses (tens of seconds)
    under_load: bool = True              # batch 1 of the kernels at 1 and N threads with every core kept busy
    quick: bool = False
    command: str = "python -m bench"
    tflite: str = None                   # the LiteRT peer's .tflite (bench/peers/litert_peer.py)


def quick_options(**overrides):
    """--quick: under a minute on a 2-core PC: a short budget, and the NumPy reference not at batch 64."""
    opts = dict(budget=1.5, min_samples=5, peak_repeat=3, quick=True, compile_cost=False, under_load=False,
                skip={("numpy", 64): "left out by --quick (the reference takes seconds per batch of 64)"})
    opts.update(overrides)
    return Options(**opts)


def default_threads():
    usable, _ = machine.cores()
    return (1,) if usable == 1 else (1, usable)


def tiled(array, n):
    """Rows of `array` repeated to n rows (the golden inputs and outputs, cycled to a batch size)."""
    reps = -(-n // len(array))
    return np.ascontiguousarray(np.concatenate([array] * reps)[:n])


def stats(samples, batch):
    """Per-call seconds -> the numbers of one row (ms per image: median and p90, images per second)."""
    s = np.asarray(samples, np.float64)
    median, p90 = float(np.median(s)), float(np.percentile(s, 90))
    return {"n": int(s.size), "ms_per_call_median": 1e3 * median, "ms_per_call_p90": 1e3 * p90,
            "ms_per_call_min": 1e3 * float(s.min()), "ms_per_image_median": 1e3 * median / batch,
            "ms_per_image_p90": 1e3 * p90 / batch, "images_per_second": batch / median}


def verdict(batch, ms_per_image_median, ms_per_image_p90):
    """Real time means >= REALTIME_FPS images per second one image at a time (batch 1).

    'real-time' when even the p90 latency meets it, 'median only' when the typical call does but one call in
    ten or more is too slow, 'no' otherwise; None for batches above 1 (a throughput, not a latency)."""
    if batch != 1 or ms_per_image_median is None:
        return None
    budget_ms = 1e3 / REALTIME_FPS
    if ms_per_image_p90 is not None and ms_per_image_p90 <= budget_ms:
        return "real-time"
    if ms_per_image_median <= budget_ms:
        return "median only"
    return "no"


def nano_projection(gflops, peak_gflops_per_core, threads, flops_per_image, cores=1):
    """This CPU's FLOP efficiency applied to the Nano: -> (efficiency, projected ms per image on `cores`).

    The efficiency is relative to the peak measured here (numpy's BLAS); above 1 (a backend beat the BLAS)
    the projection uses 1: nothing runs faster than the A57's 8 FLOP per cycle."""
    efficiency = gflops / (peak_gflops_per_core * threads)
    nano_gflops = NANO["flop_per_cycle"] * NANO["ghz"] * cores * min(efficiency, 1.0)
    return efficiency, flops_per_image / (nano_gflops * 1e9) * 1e3


def make_runner(name, model_path, threads, opts=None):
    """A backend's runner, or a peer's (bench/peers: --peers); raises bk.Unavailable(why)."""
    if name in peers.PEERS:
        return peers.make_runner(name, model_path, threads, {"tflite": getattr(opts, "tflite", None)})
    return bk.make_runner(name, model_path, threads)


def label(name):
    return bk.LABELS.get(name) or peers.LABELS.get(name, name)


def max_errors(outputs, expected):
    return {name: float(np.max(np.abs(np.asarray(outputs[name], np.float64) - expected[name])))
            for name in spec.OUTPUT_NAMES}


class Reference:
    """What each batch is checked against: the golden vectors tiled, or ONNX Runtime when they are stale."""

    def __init__(self, model_path, golden_path):
        self.inputs, self.outputs, sha = golden.load_golden(golden_path)
        self.model_sha = golden.file_sha256(model_path)
        self.source = "golden"
        self.note = f"{os.path.relpath(golden_path)}: {len(self.inputs)} inputs, made from this model file; batches " \
            f"are those inputs cycled, checked against their golden outputs"
        self._ort = None
        if sha != self.model_sha:
            try:
                self._ort = bk.OnnxRuntimeRunner(model_path, threads=1)
                self.source = "onnxruntime"
                self.note = (f"{golden_path} was made from another model file (sha256 {sha[:12]}): checking against "
                             f"ONNX Runtime on the same inputs instead; rewrite it with python -m bench.golden")
            except bk.Unavailable:
                self.source = None
                self.note = (f"{golden_path} was made from another model file (sha256 {sha[:12]}) and onnxruntime "
                             f"is missing: nothing to check against, rows are UNVERIFIED")

    def batch(self, n):
        """-> (x [n, 3, 64, 64], expected {name: [n, 1]} or None)."""
        x = tiled(self.inputs, n)
        if self.source == "golden":
            return x, {name: tiled(v, n) for name, v in self.outputs.items()}
        if self.source == "onnxruntime":
            return x, self._ort.run(x)
        return x, None


def _verify(runner, x, expected):
    """One call (the warm-up) and the check -> (status, first call seconds, max errors, reports)."""
    t0 = time.perf_counter()
    outputs = runner.run(x)
    first = time.perf_counter() - t0
    if expected is None:
        return "unverified", first, None, []
    reports = golden.check_outputs(outputs, expected, runner.tolerance)
    return ("ok" if not reports else "FAILED"), first, max_errors(outputs, expected), reports


def _time_interleaved(runners, x, first_call, opts):
    """{name: [seconds per call]}, timed in rounds: each round gives every runner about the same time slice
    (at least one call), so load changes hit all alike. A runner leaves the rounds once it has min_samples
    calls and its share of the budget (budget / runners); a slow one (the reference at batch 64) ends alone."""
    samples = {r.name: [] for r in runners}
    errors = {}                       # a runner that raises while timed leaves the rounds, and its row says why
    share = opts.budget / max(1, len(runners))
    chunk_s = max(share / 8, 1e-3)
    spent = {r.name: 0.0 for r in runners}
    cpu = {r.name: [0.0, 0.0] for r in runners}       # [CPU seconds of this process, wall seconds] while timed
    while True:
        active = [r for r in runners if r.name not in errors and len(samples[r.name]) < opts.max_samples and
                  (len(samples[r.name]) < opts.min_samples or spent[r.name] < share)]
        if not active:
            return samples, errors, {name: c / w if w else None for name, (c, w) in cpu.items()}
        for r in active:
            got = samples[r.name]
            per_call = float(np.median(got)) if got else first_call[r.name]   # the first call ran cold
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                for _ in range(max(1, min(int(chunk_s / max(per_call, 1e-6)), opts.max_samples - len(got)))):
                    t0 = time.perf_counter()
                    r.run(x)
                    got.append(time.perf_counter() - t0)
            except Exception as exc:
                errors[r.name] = f"while timing: {type(exc).__name__}: {exc}"
            cpu[r.name][0] += time.process_time() - c0
            cpu[r.name][1] += time.perf_counter() - w0
            spent[r.name] = float(np.sum(got))


def run(opts=None, progress=None):
    """Measure everything -> the result dict (what --json writes; report.format_report prints it)."""
    opts = opts or Options()
    progress = progress or (lambda *a: None)
    started = time.time()
    threads_set = tuple(opts.threads or default_threads())
    info = machine.describe()
    snapshot = machine.cpu_snapshot()
    progress(f"measuring this machine's single-core peak ({opts.peak_n}^3 float32 matmul)")
    peak = machine.measure_peak(threads=1, n=opts.peak_n, repeat=opts.peak_repeat)
    model_ref = refimpl.load(opts.model)
    from refimpl.summary import layer_table

    flops = float(sum(row[5] for row in layer_table(model_ref)))
    reference = Reference(opts.model, opts.golden)
    result = {"schema": SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": opts.command, "quick": opts.quick, "machine": info, "peak": peak,
              "model": {"path": os.path.relpath(opts.model), "sha256": reference.model_sha,
                        "flops_per_image": flops, "arch": model_ref.metadata.get("architecture")},
              "verification": {"source": reference.source, "note": reference.note,
                               "tolerances": {"age": golden.AGE_TOLERANCE, "gender": golden.GENDER_TOLERANCE}},
              "options": {"batches": list(opts.batches), "threads": list(threads_set), "budget_s": opts.budget,
                          "min_samples": opts.min_samples, "skip": {f"{b} batch {n}": why
                                                                    for (b, n), why in opts.skip.items()}},
              "backends": {}, "results": [], "notes": []}
    gpu_done = False
    cpu = info["cpu"]
    steps = len(threads_set) * len(opts.batches)
    step = 0
    for threads in threads_set:
        runners = []
        for name in opts.backends:
            if name in bk.GPU_BACKENDS and gpu_done:
                continue
            entry = result["backends"].setdefault(name, {"label": label(name), "peer": name in peers.PEERS})
            if entry.get("available") is False:
                continue
            hint = " (Numba compiles on its first use after an install: a minute or more, cached after)" \
                if name == "numba" else ""
            progress(f"loading {name} ({threads} thread{'s' if threads > 1 else ''}){hint}")
            try:
                runner = make_runner(name, opts.model, threads, opts)
            except bk.Unavailable as exc:
                entry.update(available=False, why=str(exc))
                continue
            except Exception as exc:                       # a backend that breaks must not take the report down
                entry.update(available=False, why=f"failed to load: {type(exc).__name__}: {exc}")
                continue
            entry.update(available=True, isa=runner.isa, device=runner.device, fp32=peers.is_fp32(runner))
            if runner.compile_seconds is not None:
                entry.setdefault("compile_seconds", {})[str(threads)] = runner.compile_seconds
            for note in runner.notes:
                if note not in result["notes"]:
                    result["notes"].append(note)
            runners.append(runner)
        gpu_done = gpu_done or any(r.name in bk.GPU_BACKENDS for r in runners)
        for batch in opts.batches:
            step += 1
            x, expected = reference.batch(batch)
            timed, first_call, rows = [], {}, {}
            for r in runners:
                if (r.name, batch) in opts.skip:
                    continue
                progress(f"[{step}/{steps}] batch {batch}, {threads} thread(s): checking {r.name}")
                row = {"backend": r.name, "label": label(r.name), "batch": batch, "threads": r.threads,
                       "device": r.device, "cpu": cpu if r.device == "cpu" else None, "fp32": peers.is_fp32(r),
                       "peer": r.name in peers.PEERS}
                try:
                    status, first, errors, reports = _verify(r, x, expected)
                except Exception as exc:
                    status, first, errors, reports = "FAILED", None, None, [f"{type(exc).__name__}: {exc}"]
                row.update(verified=status, first_call_ms=None if first is None else 1e3 * first,
                           max_abs_error=errors, mismatches=reports)
                rows[r.name] = row
                if status != "FAILED":
                    first_call[r.name] = first
                    timed.append(r)
            python_timed = [r for r in timed if not r.external]
            progress(f"[{step}/{steps}] batch {batch}, {threads} thread(s): timing "
                     f"{', '.join(r.name for r in python_timed)}")
            samples, errors, cpu_per_wall = _time_interleaved(python_timed, x, first_call, opts) if python_timed \
                else ({}, {}, {})
            for r in python_timed:
                if r.name in errors:
                    rows[r.name].update(verified="FAILED", mismatches=[errors[r.name]])
                else:
                    # cpu_per_wall: CPU seconds this process got per wall second while this backend ran; about
                    # its threads in use when undisturbed, lower when other processes took the cores
                    rows[r.name].update(stats(samples[r.name], batch), cpu_per_wall=cpu_per_wall[r.name],
                                        samples_ms_per_call=[round(1e3 * t, 4) for t in samples[r.name]])
            for r in timed:
                if r.external:
                    progress(f"[{step}/{steps}] batch {batch}: timing {r.name} with trtexec")
                    try:
                        median, p90, summary = r.measure(x, max(1.0, opts.budget))
                    except Exception as exc:
                        rows[r.name].update(verified="FAILED", mismatches=[f"while timing: {exc}"])
                        continue
                    rows[r.name].update(n=None, ms_per_call_median=median, ms_per_call_p90=p90,
                                        ms_per_image_median=median / batch,
                                        ms_per_image_p90=None if p90 is None else p90 / batch,
                                        images_per_second=1e3 * batch / median, trtexec=summary)
            for row in rows.values():
                _derive(row, flops, peak["gflops"])
            result["results"].extend(rows.values())
        for r in runners:
            r.close()
    kernel_backends = [n for n in UNDER_LOAD_BACKENDS if n in opts.backends and result["backends"].get(n, {}).get("available")]
    if opts.under_load and kernel_backends:
        progress(f"batch 1 under load: {', '.join(kernel_backends)} at 1 and {max(threads_set)} threads while one "
                 f"busy-loop process per core runs")
        result["under_load"] = under_load(kernel_backends, max(threads_set), reference, opts)
    if opts.compile_cost and "numba" in opts.backends and result["backends"].get("numba", {}).get("available"):
        progress("measuring numba's first-call cost in fresh processes (empty cache, then warm cache)")
        result["numba_first_call"] = numba_first_call(opts.model)
    _ratios(result["results"])
    result["projection"] = projection(result, flops, peak["gflops"])
    result["machine"]["load_average_end"] = machine.load_average()
    result["machine"]["others_busy"] = machine.others_busy(snapshot, machine.cpu_snapshot())
    result["elapsed_s"] = time.time() - started
    return result


UNDER_LOAD_BACKENDS = ("numba", "cython")
UNDER_LOAD_TARGET = {"ratio": 1.5, "p90_over_median": 3.0}   # issue 13: N threads vs 1, under contention
LOAD_SETTLE_S = 0.3                      # the load processes start (an interpreter each) before timing starts


class _Keyed:
    """A runner under another name: the under-load rounds time one backend at two thread counts side by side."""

    def __init__(self, runner, key):
        self.runner, self.name, self.threads, self.external = runner, key, runner.threads, False

    def run(self, x):
        return self.runner.run(x)

    def tolerance(self, output_name):
        return self.runner.tolerance(output_name)


def under_load(backends, threads, reference, opts, busy_load=None):
    """Batch 1 of each kernel backend at 1 and `threads` threads, timed interleaved while one busy-loop process
    per usable core runs (bench/load.py; always stopped, also on an error or Ctrl-C). Each row is checked like
    the main table's before it is timed. -> {"load_processes", "threads", "target", "rows": [...], "why"?}:
    rows carry the usual stats, p90_over_median, ratio_to_1_thread (median at N threads / the same backend's at 1)
    and, where the model has one, how often its row-split guard fell back to one thread (kernels/row_split.py)."""
    from .load import BusyLoad

    busy_load = busy_load or BusyLoad
    usable, _ = machine.cores()
    section = {"load_processes": usable, "threads": threads, "batch": 1, "target": dict(UNDER_LOAD_TARGET),
               "rows": []}
    if threads <= 1:
        section["why"] = "one thread only (one usable core, or --threads 1): nothing to compare with"
        return section
    x, expected = reference.batch(1)
    runners, rows = [], {}
    try:
        for name in backends:
            for t in (1, threads):
                try:
                    runner = bk.make_runner(name, opts.model, t)
                except Exception as exc:
                    rows[f"{name}@{t}"] = {"backend": name, "label": bk.LABELS.get(name, name), "threads": t,
                                           "batch": 1, "verified": "FAILED",
                                           "mismatches": [f"failed to load: {type(exc).__name__}: {exc}"]}
                    continue
                runners.append(_Keyed(runner, f"{name}@{t}"))
        with busy_load(usable) as load:
            time.sleep(LOAD_SETTLE_S)
            section["load_running"] = load.running()
            timed, first_call = [], {}
            for r in runners:
                row = {"backend": r.runner.name, "label": bk.LABELS.get(r.runner.name, r.runner.name),
                       "threads": r.threads, "batch": 1}
                try:
                    status, first, errors, reports = _verify(r, x, expected)
                except Exception as exc:
                    status, first, errors, reports = "FAILED", None, None, [f"{type(exc).__name__}: {exc}"]
                row.update(verified=status, max_abs_error=errors, mismatches=reports)
                rows[r.name] = row
                if status != "FAILED":
                    first_call[r.name] = first
                    timed.append(r)
            guards = {r.name: getattr(getattr(r.runner, "model", None), "row_split", None) for r in timed}
            before = {k: dict(g.counts) for k, g in guards.items() if g is not None}
            samples, errors, cpu_per_wall = _time_interleaved(timed, x, first_call, opts) if timed else ({}, {}, {})
            section["load_running_end"] = load.running()
        for r in timed:
            if r.name in errors:
                rows[r.name].update(verified="FAILED", mismatches=[errors[r.name]])
                continue
            row = rows[r.name]
            row.update(stats(samples[r.name], 1), cpu_per_wall=cpu_per_wall[r.name])
            row["p90_over_median"] = row["ms_per_call_p90"] / row["ms_per_call_median"]
            if r.name in before:
                after = guards[r.name].counts
                row["row_split"] = {k: after[k] - before[r.name][k] for k in after}
    finally:
        for r in runners:
            r.runner.close()
    for row in rows.values():
        one = rows.get(f"{row['backend']}@1")
        if row.get("ms_per_call_median") is not None and one and one.get("ms_per_call_median"):
            row["ratio_to_1_thread"] = row["ms_per_call_median"] / one["ms_per_call_median"]
    section["rows"] = list(rows.values())
    return section


# import + load + warm-up forward of the numba backend, in a fresh process (its time is the first number printed)
FIRST_CALL_CODE = """
import time, sys
t0 = time.perf_counter()
import kernels
m = kernels.load(sys.argv[1], backend="numba", threads=int(sys.argv[2]))
print(time.perf_counter() - t0, m.first_call_seconds)
"""


def numba_first_call(model_path, threads=1):
    """{"empty_cache_s", "warm_cache_s"}: import + load + warm-up of the numba backend in a subprocess with an empty
    Numba cache (compilation), then in a second one with the cache the first wrote (load); or {"why"}."""
    import subprocess
    import sys
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            runs = []
            for _ in range(2):
                out = subprocess.run([sys.executable, "-c", FIRST_CALL_CODE, model_path, str(threads)], env=env,
                                     capture_output=True, text=True, cwd=root, check=True)
                runs.append(float(out.stdout.split()[0]))
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:     # a subprocess failed: say so
        detail = getattr(exc, "stderr", None) or str(exc)
        return {"why": f"{type(exc).__name__}: {detail.strip().splitlines()[-1] if detail.strip() else ''}"}
    return {"empty_cache_s": runs[0], "warm_cache_s": runs[1]}


def _derive(row, flops, peak_gflops):
    if row.get("ms_per_image_median") is None:
        return
    row["gflops"] = flops / (row["ms_per_image_median"] * 1e-3) / 1e9
    row["peak_share"] = row["gflops"] / (peak_gflops * row["threads"]) if row["device"] == "cpu" else None
    row["verdict"] = verdict(row["batch"], row["ms_per_image_median"], row.get("ms_per_image_p90"))


def _ratios(rows):
    """time / ONNX Runtime's time for the same batch and threads (GPU rows: ORT on the most threads)."""
    ort = {(r["batch"], r["threads"]): r for r in rows if r["backend"] == bk.BASELINE and "ms_per_image_median" in r}
    for row in rows:
        if "ms_per_image_median" not in row:
            continue
        threads = row["threads"]
        if threads is None:
            candidates = [t for (b, t) in ort if b == row["batch"]]
            threads = max(candidates) if candidates else None
        base = ort.get((row["batch"], threads))
        row["ratio_to_ort"] = None if base is None else row["ms_per_image_median"] / base["ms_per_image_median"]
        row["ratio_to_ort_threads"] = threads if base else None


def projection(result, flops, peak_gflops):
    """Nano rows from each CPU backend's batch-1 and batch-64 rows at one thread (see nano_projection)."""
    out = []
    for row in result["results"]:
        if row["device"] != "cpu" or row["threads"] != 1 or "gflops" not in row or row["verified"] == "FAILED":
            continue
        if not row.get("fp32", True):            # bf16/fp16 peers: their speed here says nothing of the A57's
            continue
        efficiency, ms1 = nano_projection(row["gflops"], peak_gflops, 1, flops, cores=1)
        _, ms4 = nano_projection(row["gflops"], peak_gflops, 1, flops, cores=NANO["cores"])
        out.append({"backend": row["backend"], "label": row["label"], "batch": row["batch"], "efficiency": efficiency,
                    "ms_per_image_1core": ms1, "ms_per_image_4cores": ms4,
                    "verdict_1core": verdict(1, ms1, ms1) if row["batch"] == 1 else None,
                    "verdict_4cores": verdict(1, ms4, ms4) if row["batch"] == 1 else None})
    return out
