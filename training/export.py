"""Write a trained module as the golden ONNX file, the model card in metadata_props."""
import json

from refimpl import onnx_format

from .model import onnx_weights


def export(model, path, card):
    """card: {key: value}; values that are not strings are stored as JSON."""
    metadata = {key: value if isinstance(value, str) else json.dumps(value) for key, value in card.items()}
    onnx_format.write(onnx_weights(model), path, metadata)
