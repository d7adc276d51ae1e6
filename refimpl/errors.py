"""The two error types a user of refimpl (and kernels) sees; both are ValueErrors."""


class ModelFileError(ValueError):
    """The ONNX file (or its golden vectors) is missing, unreadable, malformed or not this architecture."""


class InputError(ValueError):
    """An input array or image is not what the network takes."""
