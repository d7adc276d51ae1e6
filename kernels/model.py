"""The fast Model: refimpl's forward contract on a compiled backend (see kernels/__init__.py)."""
import contextlib
import threading
import time

import numpy as np

import refimpl
from refimpl import spec

from . import plan as planning
from .row_split import RowSplitGuard, usable_cores


def default_threads():
    """Every CPU this process may use."""
    return usable_cores()


class Workspaces:
    """The zeroed buffers one call runs in, lent per call: a model shared by threads never lets two calls write
    the same buffers (the compiled code runs without the GIL). A small LIFO pool keeps released buffers, so a
    call in a single thread gets back the buffers its previous call left (what time_stages relies on) and
    allocates nothing; the lock is held only to pop or push (well under a microsecond against ~0.5 ms for a
    batch-1 forward). A buffer pair has one row per thread (ws [threads, workspace_size],
    scratch [threads, scratch_size]); the zero borders are never written, so reused buffers stay valid."""

    KEEP = 8        # pairs kept for reuse; more concurrent calls than this allocate (about 1.1 MB per row)

    def __init__(self, workspace_size, scratch_size):
        self.sizes = (workspace_size, scratch_size)
        self._free = []
        self._lock = threading.Lock()

    def take(self, rows):
        """(ws, scratch) with at least `rows` rows, this caller's until it gives them back (give)."""
        with self._lock:
            free = self._free
            for i in range(len(free) - 1, -1, -1):       # the most recently given back that is large enough
                if free[i][0].shape[0] >= rows:
                    return free.pop(i)
        return tuple(np.zeros((rows, size), np.float32) for size in self.sizes)

    def give(self, pair):
        with self._lock:
            if len(self._free) < self.KEEP:
                self._free.append(pair)

    @contextlib.contextmanager
    def lend(self, rows):
        """take(rows) for the duration of a with block."""
        pair = self.take(rows)
        try:
            yield pair
        finally:
            self.give(pair)


class Model:
    """Folded, packed weights + a pool of per-call workspaces + one backend's executor. Build it with
    kernels.load(). Safe to call from several threads at once: each call runs in its own workspace."""

    def __init__(self, weights, attrs, metadata, backend, threads=None):
        self.metadata = metadata or {}
        self.backend = backend
        self.backend_name = backend.NAME
        self.plan = planning.Plan(weights, attrs)
        self._tables = backend.tables(self.plan)
        self._outputs = [self.plan.head_slots[name][0] for name in spec.OUTPUT_NAMES]   # rows of the head vectors
        self._workspaces = Workspaces(self.plan.workspace_size, self.plan.scratch_size)
        self._warm = set()               # executors run once already: "serial", "parallel" (see warm_up)
        self.row_split = RowSplitGuard()  # small batches: split rows over the threads unless cores are contended
        self.threads = None
        self.set_threads(threads)

    def set_threads(self, threads=None):
        """Threads over the batch (one image per thread at a time), or over each stage's output rows when the batch
        is smaller than the thread count; None: every CPU this process may use, at most what the backend can run.
        ValueError, in one line, for a count the backend cannot run (backend.thread_limit(): numba's pool size;
        OpenMP may run more threads than CPUs)."""
        limit, why = self.backend.thread_limit()
        if threads is None:
            threads = min(default_threads(), limit)
        elif isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
            raise ValueError(f"threads must be a whole number from 1 to {limit} for the {self.backend_name} backend, "
                             f"got {threads!r}")
        threads = int(threads)
        if not 1 <= threads <= limit:
            raise ValueError(f"threads={threads} is out of range for the {self.backend_name} backend: it runs 1 to "
                             f"{limit} threads ({why})")
        self.threads = threads           # read once per call: workspaces are sized per call (Workspaces.lend)
        if threads > 1 and self._warm == {"serial"}:
            self._warm_up_parallel(threads)
        return self

    def warm_up(self):
        """Run the executors once on zeros: serial and, when this model runs more than one thread, threads over the
        batch and threads over the rows of one image (Numba compiles them, or loads its cache, here and not in a
        timed call). Never more threads than the model's: the backend may not run more (NUMBA_NUM_THREADS=1)."""
        x = np.zeros((1, *spec.INPUT_SHAPE), np.float32)
        self._run(x, 0, len(self.plan.stages), True, threads=1)
        self._warm.add("serial")
        for _ in range(3):               # the single-thread time the row-split guard compares with
            t0 = time.perf_counter()
            self._run(x, 0, len(self.plan.stages), True, threads=1)
            self.row_split.record(False, time.perf_counter() - t0)
        if self.threads > 1:
            self._warm_up_parallel(self.threads)

    def _warm_up_parallel(self, threads):
        """The two parallel executors, once each, with 2 threads (what compiles them) or `threads` if fewer."""
        threads = min(threads, 2)
        x = np.zeros((threads, *spec.INPUT_SHAPE), np.float32)
        self._run(x, 0, len(self.plan.stages), True, threads=threads)
        self._run(x[:1], 0, len(self.plan.stages), True, threads=threads)
        self._warm.add("parallel")

    # -- the contract ---------------------------------------------------------------------------------------
    def forward(self, x):
        """x: float32 [N, 3, 64, 64] -> {output name: float32 [N, 1]} for the eight outputs, in contract order."""
        x = refimpl.check_input(x)
        threads, n = self.threads, x.shape[0]
        if threads <= n:                 # whole images per thread: no per-stage barrier to wait at
            hv = self._run(x, 0, len(self.plan.stages), True, threads)
        else:                            # rows split over the threads, unless the cores are busy (row_split.py)
            split = self.row_split.split_now(threads)
            t0 = time.perf_counter()
            hv = self._run(x, 0, len(self.plan.stages), True, threads if split else 1)
            self.row_split.record(split, (time.perf_counter() - t0) / n)
        return {name: hv[row][:, None] for name, row in zip(spec.OUTPUT_NAMES, self._outputs)}

    __call__ = forward

    def _run(self, x, first, last, heads, threads=None, workspace=None):
        """Stages [first, last) (+ the heads) of batch x -> head vectors [plan.head_size, N] (plan.head_slots says
        where each head tensor is); in `workspace` (ws, scratch) when given (the caller reads it afterwards), else
        in one lent for this call."""
        threads = self.threads if threads is None else threads
        p = self.plan
        hv = np.empty((p.head_size, x.shape[0]), np.float32)
        image, stages, pools, steps = self._tables
        pair = self._workspaces.take(threads) if workspace is None else workspace
        try:
            self.backend.run_network(x, pair[0], pair[1], image, stages, p.weights, p.biases, pools, steps,
                                     p.head_params, hv, first, last, heads, threads)
        finally:
            if workspace is None:
                self._workspaces.give(pair)
        return hv

    # -- stages: for tests and the benchmark ----------------------------------------------------------------
    def stage_names(self):
        """The fused stages in execution order; each name lists the refimpl trace tensors it produces ('|')."""
        return [st.name for st in self.plan.stages]

    def stage_flops(self):
        """{stage name: FLOP per image} (a multiply-add counts 2; padding channels not counted)."""
        return {st.name: self.plan.stage_flops(i) for i, st in enumerate(self.plan.stages)}

    def run_stages(self, x):
        """Every fused stage's output, image by image: {refimpl trace name: float32 [N, C, H, W]}, plus every
        tensor of the heads ([N, C]: the pools, e.g. 'top_head.gap', the FCs, the eight outputs). The keys are
        refimpl.Model.trace names (e.g. 'age_branch.pool1'), so each stage can be compared with the reference
        composition conv -> batch norm -> leaky relu (-> max pool), and each head step with refimpl's."""
        x = refimpl.check_input(x)
        p = self.plan
        result = {}
        hvs = []
        with self._workspaces.lend(1) as workspace:
            for n in range(x.shape[0]):
                hvs.append(self._run(x[n:n + 1], 0, len(p.stages), True, threads=1, workspace=workspace))
                for st in p.stages:
                    for tensor, (t0, tc) in st.outputs.items():
                        result.setdefault(tensor, []).append(
                            p.read_slice(workspace[0][0], st.dst.buffer, st.dst.c0 + t0, tc))
        result = {name: np.stack(v) for name, v in result.items()}
        hv = np.concatenate(hvs, axis=1)
        result.update({name: np.ascontiguousarray(hv[offset:offset + width].T)
                       for name, (offset, width) in p.head_slots.items()})
        return result

    def time_stages(self, x, repeat=20):
        """{stage name: median seconds for the whole batch x} with this model's threads, each stage run alone
        on warm workspaces (its input is whatever the previous full forward left there), plus 'input'
        (the NCHW -> NHWC copy alone) and 'heads'. Warm-up is outside the timings."""
        x = refimpl.check_input(x)
        n_stages = len(self.plan.stages)
        threads = self.threads
        ranges = {"input": (0, 0, False)}
        ranges.update({st.name: (i, i + 1, False) for i, st in enumerate(self.plan.stages)})
        ranges["heads"] = (n_stages, n_stages, True)
        times = {}
        with self._workspaces.lend(threads) as workspace:       # one workspace: each stage reads the previous's
            self._run(x, 0, n_stages, True, threads, workspace)
            for name, (first, last, heads) in ranges.items():
                samples = []
                for _ in range(repeat + 1):
                    t0 = time.perf_counter()
                    self._run(x, first, last, heads, threads, workspace)
                    samples.append(time.perf_counter() - t0)
                times[name] = float(np.median(samples[1:]))
        return times

    def __repr__(self):
        return (f"kernels.Model(backend={self.backend_name!r}, isa={self.backend.ISA!r}, threads={self.threads}, "
                f"stages={len(self.plan.stages)})")
