"""The fast Model: refimpl's forward contract on a compiled backend (see kernels/__init__.py)."""
import os
import time

import numpy as np

import refimpl
from refimpl import spec

from . import plan as planning


def default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


class Model:
    """Folded, packed weights + per-thread workspaces + one backend's executor. Build it with kernels.load()."""

    def __init__(self, weights, attrs, metadata, backend, threads=None):
        self.metadata = metadata or {}
        self.backend = backend
        self.backend_name = backend.NAME
        self.plan = planning.Plan(weights, attrs)
        self._check_heads()
        self._ws = None
        self.threads = None
        self.set_threads(threads)

    def _check_heads(self):
        dims = [(fc.nin, fc.nout) for fc in (spec.FC_BY_NAME[n] for n in planning.HEAD_NAMES)]
        if dims != [(32, 1), (32, 1), (44, 28), (28, 1), (28, 1), (24, 2)] or \
                self.plan.head_params.size != self.backend.HEAD_SIZE:
            raise NotImplementedError(f"kernels: the compiled heads are written for the FC sizes of "
                                      f"{spec.ARCH_VERSION}; got {dims}")

    def set_threads(self, threads=None):
        """Threads over the batch (one image per thread at a time), or over each stage's output rows when the batch
        is smaller than the thread count; None: every CPU this process may use."""
        threads = default_threads() if threads is None else int(threads)
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if threads != self.threads:
            self.threads = threads
            # one zeroed workspace per thread: the zero borders are never written, so they stay zero
            self._ws = np.zeros((threads, self.plan.workspace_size), np.float32)
            self._scratch = np.zeros((threads, self.plan.scratch_size), np.float32)
        return self

    def warm_up(self):
        """Run the three executors once on zeros: serial, threads over the batch, threads over the rows of one
        image (Numba compiles them, or loads its cache, here and not in a timed call)."""
        x = np.zeros((2, *spec.INPUT_SHAPE), np.float32)
        threads = self.threads
        self._run(x[:1], 0, len(self.plan.stages), True, threads=1)
        self.set_threads(max(2, threads))
        self._run(x, 0, len(self.plan.stages), True, threads=2)
        self._run(x[:1], 0, len(self.plan.stages), True, threads=2)
        self.set_threads(threads)

    # -- the contract ---------------------------------------------------------------------------------------
    def forward(self, x):
        """x: float32 [N, 3, 64, 64] -> {output name: float32 [N, 1]} for the eight outputs, in contract order."""
        x = refimpl.check_input(x)
        out = self._run(x, 0, len(self.plan.stages), True)
        return {name: out[i][:, None] for i, name in enumerate(spec.OUTPUT_NAMES)}

    __call__ = forward

    def _run(self, x, first, last, heads, threads=None):
        p = self.plan
        out = np.empty((len(spec.OUTPUT_NAMES), x.shape[0]), np.float32)
        self.backend.run_network(x, self._ws, self._scratch, p.image, p.layers, p.alphas, p.weights, p.biases,
                                 p.gap, p.head_params, p.head_alpha, out, first, last, heads,
                                 self.threads if threads is None else threads)
        return out

    # -- stages: for tests and the benchmark ----------------------------------------------------------------
    def stage_names(self):
        """The fused stages in execution order; each name lists the refimpl trace tensors it produces ('|')."""
        return [st.name for st in self.plan.stages]

    def stage_flops(self):
        """{stage name: FLOP per image} (a multiply-add counts 2; padding channels not counted)."""
        return {st.name: self.plan.stage_flops(i) for i, st in enumerate(self.plan.stages)}

    def run_stages(self, x):
        """Every fused stage's output, image by image: {refimpl trace name: float32 [N, C, H, W]}, plus the
        eight outputs. The keys are refimpl.Model.trace names (e.g. 'age_branch.pool1'), so each stage can be
        compared with the reference composition conv -> batch norm -> leaky relu (-> max pool)."""
        x = refimpl.check_input(x)
        p = self.plan
        result = {}
        outs = []
        for n in range(x.shape[0]):
            outs.append(self._run(x[n:n + 1], 0, len(p.stages), True, threads=1))
            for st in p.stages:
                for tensor, (t0, tc) in st.outputs.items():
                    result.setdefault(tensor, []).append(p.read_slice(self._ws[0], st.dst.buffer, st.dst.c0 + t0, tc))
        result = {name: np.stack(v) for name, v in result.items()}
        out = np.concatenate(outs, axis=1)
        result.update({name: out[i][:, None] for i, name in enumerate(spec.OUTPUT_NAMES)})
        return result

    def time_stages(self, x, repeat=20):
        """{stage name: median seconds for the whole batch x} with this model's threads, each stage run alone
        on warm workspaces (its input is whatever the previous full forward left there), plus 'input'
        (the NCHW -> NHWC copy alone) and 'heads'. Warm-up is outside the timings."""
        x = refimpl.check_input(x)
        n_stages = len(self.plan.stages)
        self._run(x, 0, n_stages, True)
        ranges = {"input": (0, 0, False)}
        ranges.update({st.name: (i, i + 1, False) for i, st in enumerate(self.plan.stages)})
        ranges["heads"] = (n_stages, n_stages, True)
        times = {}
        for name, (first, last, heads) in ranges.items():
            samples = []
            for _ in range(repeat + 1):
                t0 = time.perf_counter()
                self._run(x, first, last, heads)
                samples.append(time.perf_counter() - t0)
            times[name] = float(np.median(samples[1:]))
        return times

    def __repr__(self):
        return (f"kernels.Model(backend={self.backend_name!r}, isa={self.backend.ISA!r}, threads={self.threads}, "
                f"stages={len(self.plan.stages)})")
