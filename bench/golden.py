"""Write weights/golden.npz: golden_inputs() run through ONNX Runtime on the bundled model.

    python -m bench.golden [model.onnx] [golden.npz]
"""
import sys

import numpy as np

import refimpl
from refimpl import golden, spec


def ort_outputs(model_path, x, threads=1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    return dict(zip(spec.OUTPUT_NAMES, session.run(list(spec.OUTPUT_NAMES), {spec.INPUT_NAME: x})))


def make_golden(model_path):
    x = golden.golden_inputs()
    return {"inputs": x, **ort_outputs(model_path, x), "model_sha256": np.array(golden.file_sha256(model_path))}


def main(argv):
    model_path = argv[0] if argv else refimpl.DEFAULT_WEIGHTS
    out = argv[1] if len(argv) > 1 else golden.DEFAULT_GOLDEN
    np.savez_compressed(out, **make_golden(model_path))
    print(f"wrote {out} from {model_path}")


if __name__ == "__main__":
    main(sys.argv[1:])
