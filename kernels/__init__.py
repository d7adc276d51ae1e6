"""agegender-kit's fast forward pass: the network of refimpl on Numba or Cython kernels.

    import kernels
    kernels.available_backends()                   # e.g. ["numba", "cython"]
    model = kernels.load("weights/agegender.onnx", backend="cython", threads=2)
    out = model.forward(x)                         # x float32 [N, 3, 64, 64] -> the same dict as refimpl's

Model (kernels/model.py), stable API:
    forward(x) / model(x)    {output name: float32 [N, 1]}, the eight outputs in contract order; bad input
                             raises exactly what refimpl raises (refimpl.check_input: refimpl.InputError)
    threads, set_threads(n)  threads over the batch (one whole image per thread at a time), or, when the batch is
                             smaller than n, over each stage's output rows; results do not depend on n (every
                             output is computed by the same code in the same order); None = every CPU available,
                             at most the backend's limit; a count the backend cannot run (numba: more than its
                             pool, NUMBA_NUM_THREADS) is a ValueError here and in load(), in one line
    thread safety            one model may be called from many threads at once: every call runs in its own
                             workspace (a small pool, kernels/model.py Workspaces), bit-identical to serial calls
    row_split                a batch smaller than the thread count runs on one thread while the cores are busy
                             with other work (kernels/row_split.py); row_split.counts says how its calls ran
    backend_name, backend.ISA  which backend and which instruction set its kernel runs
    stage_names()            the fused stages in order; a name is the refimpl trace tensor(s) it produces,
                             '|'-joined when one stage makes several (the merged first convs of the three
                             branches that read the stem)
    stage_flops()            {stage: FLOP per image}
    run_stages(x)            {refimpl trace name: [N, C, H, W]} for every stage output, plus every tensor of the
                             compiled heads ([N, C]: pools, FCs, the eight outputs), comparable one to one with
                             refimpl.Model.trace(x)
    time_stages(x, repeat)   {'input', each stage, 'heads': median seconds for batch x}
    first_call_seconds       the backend's compile/load cost paid inside load() (Numba JIT or cache load),
                             so it never lands in a timing

Per-backend operations, refimpl's names and signatures plus the fused ones (kernels/ops.py):
    kernels.backend("numba").conv2d(x, w, b=None, pad=0, dilation=1), .conv_bn_leaky_pool(...), ...

Importing kernels imports neither numba nor the compiled extension; load() and backend() do.
"""
import importlib
import time

__all__ = ["load", "available_backends", "backend", "BACKENDS", "Model"]

BACKENDS = ("numba", "cython")
_MODULES = {"numba": "kernels.numba_backend", "cython": "kernels.cython_backend"}
_unavailable = {}


def backend(name):
    """The backend module (its ops and executor). Raises ValueError for an unknown name, ImportError when the
    backend cannot run here (numba not installed, Cython extension not built), saying why."""
    if name not in _MODULES:
        raise ValueError(f"unknown backend {name!r}; expected one of {list(BACKENDS)}")
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as exc:
        why = {"numba": "numba is not installed (pip install numba)",
               "cython": "the Cython extension kernels._cython_kernels was not built (pip install -e . with a C "
                         "compiler and Cython, or python setup.py build_ext --inplace)"}[name]
        _unavailable[name] = f"{why}: {exc}"
        raise ImportError(f"kernels: backend {name!r} is unavailable: {why} ({exc})") from exc


def available_backends():
    """The backends that import on this machine, in preference order."""
    found = []
    for name in BACKENDS:
        try:
            backend(name)
        except ImportError:
            continue
        found.append(name)
    return found


def unavailable_reasons():
    """{backend: why it is unavailable}, for the backends available_backends() left out."""
    available_backends()
    return dict(_unavailable)


def load(path=None, backend="numba", threads=None):
    """Read an ONNX file of this architecture (refimpl.onnx_format.read: ModelFileError if it is not) -> Model.
    ValueError (one line: the value, the backend, the range it runs) for a thread count the backend cannot run."""
    import refimpl
    from refimpl.onnx_format import read

    from .model import Model

    module = globals()["backend"](backend)
    weights, attrs, metadata = read(refimpl.DEFAULT_WEIGHTS if path is None else path)
    t0 = time.perf_counter()
    model = Model(weights, attrs, metadata, module, threads)
    model.warm_up()
    model.first_call_seconds = time.perf_counter() - t0
    return model


def __getattr__(name):
    if name == "Model":
        from .model import Model
        return Model
    raise AttributeError(name)
