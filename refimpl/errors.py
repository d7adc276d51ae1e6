"""The two error types a user of refimpl (and kernels) sees; both are ValueErrors."""


class ModelFileError(ValueError):
    """The ONNX file is missing, unreadable or does not match the architecture."""


class InputError(ValueError):
    """An input array or image is not what the network takes."""
