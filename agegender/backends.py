"""Which implementation runs the network: the fast kernels when they are there, the NumPy reference otherwise.

    load(weights, backend="auto", threads=None) -> (model, backend name)

Every backend's model has refimpl's forward(x float32 [N, 3, 64, 64]) -> {name: float32 [N, 1]}.
"auto" tries kernels' backends and falls back to refimpl, so it works while kernels is
missing or incomplete; each backend it passes over is logged (logger "agegender", one warning line
naming the backend and why). It falls back only for a backend that cannot be imported or built here:
a bad weights file or a thread count the backend cannot run is the caller's error and is raised.
Ahead-of-time compiled backends go first (cython, then the rest in kernels' preference order):
numba compiles on first use (tens of seconds without its on-disk cache), which a one-photo CLI run
should not pay; both run at the same speed here.
"""
import logging

import refimpl

REFERENCE = "refimpl"
AHEAD_OF_TIME = ("cython",)

log = logging.getLogger("agegender")


def _kernels_state():
    """[(kernels backend, None if usable here else why not)] in the order "auto" tries them; never raises."""
    try:
        import kernels
        listed = kernels.available_backends()
    except Exception as exc:  # noqa: BLE001 - a missing or half-written kernels package must not break the estimator
        return [("kernels", _short(exc))]
    try:
        reasons = dict(kernels.unavailable_reasons())
    except Exception:  # noqa: BLE001 - a kernels without it: the names are enough
        reasons = {}
    names = list(dict.fromkeys([*listed, *getattr(kernels, "BACKENDS", ())]))
    names = sorted((n for n in names if n != REFERENCE), key=lambda n: n not in AHEAD_OF_TIME)  # stable
    return [(n, None if n in listed else reasons.get(n, "not available")) for n in names]


def kernel_backends():
    """Names of the kernels backends that say they are usable here, fastest first (empty without kernels)."""
    return [name for name, why in _kernels_state() if why is None]


def available():
    """Backends this machine can run, in the order "auto" tries them; refimpl always last."""
    return kernel_backends() + [REFERENCE]


def load(weights=None, backend="auto", threads=None):
    """Load the ONNX weights with the chosen backend -> (model, backend name).

    Raises refimpl.ModelFileError for a bad weights file (whatever the loader raised
    inside), ValueError for an unknown or unavailable backend name, and the kernels'
    ValueError for a thread count the backend cannot run (with "auto" too).
    """
    weights = str(weights) if weights is not None else refimpl.DEFAULT_WEIGHTS
    if backend == REFERENCE:
        return _guarded(refimpl.load, weights), REFERENCE
    if backend == "auto":
        return _load_auto(weights, threads)
    usable = kernel_backends()
    if backend not in usable:
        raise ValueError(f"backend {backend!r} is not available here; available: {', '.join(usable + [REFERENCE])}")
    _guarded(_read, weights)                   # a bad file is reported as such before the backend sees it
    try:
        return kernels_load(weights, backend, threads), backend
    except ValueError:
        raise                                  # e.g. a thread count this backend cannot run: one line, the caller's
    except Exception as exc:  # noqa: BLE001 - a backend that fails to build: one line, not a traceback
        raise ValueError(f"backend {backend!r} failed to load the model ({_short(exc)})") from None


def _load_auto(weights, threads):
    """The first kernels backend that loads, else refimpl; logs each backend passed over, with the reason."""
    checked = False
    for name, why in _kernels_state():
        if why is None:
            if not checked:                    # the file's errors are the file's, never a reason to fall back
                _guarded(_read, weights)
                checked = True
            try:
                return kernels_load(weights, name, threads), name
            except ValueError:
                raise                          # the caller's (threads, or a file kernels refuse): never hidden
            except Exception as exc:  # noqa: BLE001 - cannot be built or compiled here: try the next
                why = _short(exc)
        log.warning("backend auto: not using %s: %s", name, why)
    return _guarded(refimpl.load, weights), REFERENCE


def kernels_load(weights, name, threads=None):
    import kernels

    return kernels.load(weights, backend=name, threads=threads)


def _read(weights):
    from refimpl.onnx_format import read

    return read(weights)


def _guarded(loader, weights, **kwargs):
    """Run a loader; whatever a malformed file provokes besides ModelFileError becomes ModelFileError."""
    try:
        return loader(weights, **kwargs)
    except refimpl.ModelFileError:
        raise
    except MemoryError:
        raise refimpl.ModelFileError(f"{weights}: not enough memory to read the model") from None
    except Exception as exc:  # noqa: BLE001 - protobuf and numpy errors from hostile bytes
        raise refimpl.ModelFileError(f"{weights}: cannot read the model ({_short(exc)})") from None


def _short(exc):
    from .errors import one_line

    return one_line(exc, 150)
