"""agegender-kit's NumPy reference: the light-weight multi-task age/gender CNN, layer by layer.

    model = refimpl.load("weights/agegender.onnx")
    out = model.forward(refimpl.preprocess(face_chip_uint8)[None])
    out["age"], out["gender"]          # float32 [N, 1]: years, probability of male

    python -m refimpl trace chip.png --png layers.png     # every layer's statistics, and a picture of them

docs/trace-layers.png is that picture for a drawn face (tests/test_refimpl_picture.py's synthetic_face, no
data set image): the input, each block's output channels and the three heads' answers. refimpl/model.py is
the network in the order of that figure, one call per block.

Needs numpy and onnx only (matplotlib for --png).
"""
from .errors import InputError, ModelFileError
from .checks import check_input
from .model import Model
from .preprocess import preprocess

__all__ = ["load", "preprocess", "Model", "check_input", "InputError", "ModelFileError", "DEFAULT_WEIGHTS"]

import os as _os


def _bundled(name):
    """weights/NAME next to the source tree, or in the installed package agegender_weights."""
    beside = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "weights", name)
    if _os.path.exists(beside):
        return beside
    import importlib.util

    spec = importlib.util.find_spec("agegender_weights")
    if spec and spec.submodule_search_locations:
        return _os.path.join(list(spec.submodule_search_locations)[0], name)
    return beside


DEFAULT_WEIGHTS = _bundled("agegender.onnx")


def load(path=DEFAULT_WEIGHTS):
    """Read and check an ONNX file of this architecture -> Model. Raises ModelFileError if it does not match."""
    from .onnx_format import read

    weights, attrs, metadata = read(path)
    return Model(weights, attrs, metadata)
