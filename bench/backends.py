"""The runtimes the kit compares, behind one small interface, each saying why when it cannot run here.

    runner = make_runner("onnxruntime", "weights/agegender.onnx", threads=1)   # or raises Unavailable
    outputs = runner.run(x)             # {output name: float32 [N, 1]}, refimpl's contract
    runner.tolerance(name)              # the golden tolerance this backend is held to

Backends: "numpy" (refimpl, the reference), "numba" and "cython" (kernels), "onnxruntime",
"tensorrt-fp32" and "tensorrt-fp16" (bench/tensorrt_backend.py). Threads: kernels through their `threads=`,
ONNX Runtime through SessionOptions.intra_op_num_threads, the reference's BLAS through threadpoolctl
where it is installed (otherwise its rows say the threads are uncontrolled).
"""
from refimpl import spec

from . import machine
from .runner_base import Runner, Unavailable  # noqa: F401  (Unavailable: what make_runner raises)

CPU_BACKENDS = ("numpy", "numba", "cython", "onnxruntime")
GPU_BACKENDS = ("tensorrt-fp32", "tensorrt-fp16")
ALL_BACKENDS = CPU_BACKENDS + GPU_BACKENDS
BASELINE = "onnxruntime"
LABELS = {"numpy": "numpy (refimpl)", "numba": "numba (kernels)", "cython": "cython (kernels)",
          "onnxruntime": "onnxruntime", "tensorrt-fp32": "tensorrt fp32", "tensorrt-fp16": "tensorrt fp16"}


class ReferenceRunner(Runner):
    name = "numpy"

    def __init__(self, model_path, threads):
        import refimpl

        super().__init__(threads)
        self.model = refimpl.load(model_path)
        if not machine.can_limit_threads():
            self.notes.append("numpy (refimpl): BLAS threads uncontrolled (pip install threadpoolctl); its rows "
                              "marked 1 thread may use more")
        blas = machine.blas_info()
        self.isa = f"{blas.get('internal_api', 'BLAS')} {blas.get('architecture') or ''}".strip()

    def run(self, x):
        limits = machine.blas_threads(self.threads)
        if limits is None:
            return self.model.forward(x)
        with limits:
            return self.model.forward(x)


class KernelsRunner(Runner):
    def __init__(self, backend, model_path, threads):
        super().__init__(threads)
        self.name = backend
        try:
            import kernels
        except ImportError as exc:
            raise Unavailable(f"the kernels package does not import ({exc})") from None
        try:
            self.model = kernels.load(model_path, backend=backend, threads=threads)
        except (ImportError, ValueError, NotImplementedError) as exc:
            raise Unavailable(str(exc)) from None
        self.compile_seconds = getattr(self.model, "first_call_seconds", None)
        be = getattr(self.model, "backend", None)
        self.isa = getattr(be, "ISA", None)
        threading = getattr(be, "THREADING", None)
        if threading and threading.startswith("none") and threads > 1:
            self.notes.append(f"{backend}: {threading}")

    def run(self, x):
        return self.model.forward(x)


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model_path, threads):
        super().__init__(threads)
        try:
            import onnxruntime as ort
        except ImportError:
            raise Unavailable("onnxruntime is not installed (pip install onnxruntime)") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.isa = "MLAS, default graph optimizations"

    def run(self, x):
        values = self.session.run(list(spec.OUTPUT_NAMES), {spec.INPUT_NAME: x})
        return dict(zip(spec.OUTPUT_NAMES, values))


def make_runner(name, model_path, threads=1, workdir=None):
    """-> Runner, or raise Unavailable(why)."""
    if name == "numpy":
        return ReferenceRunner(model_path, threads)
    if name in ("numba", "cython"):
        return KernelsRunner(name, model_path, threads)
    if name == "onnxruntime":
        return OnnxRuntimeRunner(model_path, threads)
    if name in GPU_BACKENDS:
        from . import tensorrt_backend as tensorrt

        return tensorrt.make_runner(model_path, fp16=name.endswith("fp16"), workdir=workdir)
    raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(ALL_BACKENDS)}")
