"""agegender-kit's NumPy reference: the light-weight multi-task age/gender CNN, layer by layer.

    model = refimpl.load("weights/agegender.onnx")
    out = model.forward(refimpl.preprocess(face_chip_uint8)[None])
    out["age"], out["gender"]          # float32 [N, 1]: years, probability of male

Needs numpy and onnx only.
"""
from .errors import InputError, ModelFileError
from .model import Model, check_input
from .preprocess import preprocess

__all__ = ["load", "preprocess", "Model", "check_input", "InputError", "ModelFileError", "DEFAULT_WEIGHTS"]

import os as _os

DEFAULT_WEIGHTS = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))),
                                "weights", "agegender.onnx")


def load(path=DEFAULT_WEIGHTS):
    """Read and check an ONNX file of this architecture -> Model. Raises ModelFileError if it does not match."""
    from .onnx_format import read

    weights, attrs, metadata = read(path)
    return Model(weights, attrs, metadata)
