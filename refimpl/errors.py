"""The two error types a user of refimpl (and kernels) sees; both are ValueErrors."""
import os


class ModelFileError(ValueError):
    """The ONNX file (or its golden vectors) is missing, unreadable, malformed or not this architecture."""


class InputError(ValueError):
    """An input array or image is not what the network takes."""


def require_file(path, expected):
    """path as a str, or ModelFileError naming `expected` (e.g. "an ONNX model such as ...") for a folder or a
    path that does not exist."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: is a folder, expected {expected}")
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such file (expected {expected})")
    return path
