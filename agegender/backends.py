"""Which implementation runs the network: the fast kernels when they are there, the NumPy reference otherwise.

    load(weights, backend="auto", threads=None) -> (model, backend name)

Every backend's model has refimpl's forward(x float32 [N, 3, 64, 64]) -> {name: float32 [N, 1]}.
"auto" tries kernels' backends and falls back to refimpl, so it works while kernels is
missing or incomplete. Ahead-of-time compiled backends go first (cython, then the rest
in kernels.available_backends() order): numba compiles on first use (tens of seconds
without its on-disk cache), which a one-photo CLI run should not pay; both run at the same speed here.
"""
import refimpl

REFERENCE = "refimpl"
AHEAD_OF_TIME = ("cython",)


def kernel_backends():
    """Names of the kernels backends that say they are usable here, fastest first (empty without kernels)."""
    try:
        import kernels
        listed = kernels.available_backends()
    except (ImportError, AttributeError):
        return []
    except Exception:  # noqa: BLE001 - a half-written kernels package must not break the estimator
        return []
    if isinstance(listed, dict):
        listed = [name for name, ok in listed.items() if ok]
    listed = [name for name in listed if name != REFERENCE]
    return sorted(listed, key=lambda name: name not in AHEAD_OF_TIME)           # stable: keeps kernels' order


def available():
    """Backends this machine can run, in the order "auto" tries them; refimpl always last."""
    return kernel_backends() + [REFERENCE]


def load(weights=None, backend="auto", threads=None):
    """Load the ONNX weights with the chosen backend -> (model, backend name).

    Raises refimpl.ModelFileError for a bad weights file (whatever the loader raised
    inside), ValueError for an unknown or unavailable backend name.
    """
    weights = str(weights) if weights is not None else refimpl.DEFAULT_WEIGHTS
    if backend == "auto":
        for name in kernel_backends():
            try:
                return kernels_load(weights, name, threads), name
            except Exception:  # noqa: BLE001 - a kernel that fails falls back; refimpl then judges the file
                continue
        return _guarded(refimpl.load, weights), REFERENCE
    if backend == REFERENCE:
        return _guarded(refimpl.load, weights), REFERENCE
    if backend not in kernel_backends():
        raise ValueError(f"backend {backend!r} is not available here; available: {', '.join(available())}")
    return _guarded(kernels_load, weights, name=backend, threads=threads), backend


def kernels_load(weights, name, threads=None):
    import kernels

    return kernels.load(weights, backend=name, threads=threads)


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
