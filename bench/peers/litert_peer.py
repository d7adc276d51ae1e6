"""LiteRT (TensorFlow Lite) with XNNPACK, on a .tflite converted from the ONNX file elsewhere.

The converter (onnx2tf with TensorFlow) pins old numpy and onnx, so it is no dependency of the kit: make the
file in a separate environment (docs/peers.md), then pass it with --tflite FILE or put it at
~/.cache/agegender/litert/<sha256 of the ONNX file>/model.tflite ($XDG_CACHE_HOME honoured). Without a file
the row says where it looked. ai_edge_litert's interpreter applies XNNPACK by default; num_threads=threads.

Layout and batch: onnx2tf writes NHWC inputs ([N, 64, 64, 3]); an NCHW input is used as it is. A file with a
dynamic batch is resized to each batch size; a file fixed at batch 1 runs one image per call, like ncnn.
Outputs are matched by name: the signature's output names, or tensor names containing the ONNX names.
"""
import os

import numpy as np

from refimpl import golden, spec

from ..backends import Unavailable
from .base import PeerRunner, as_contract

DOC = "docs/peers.md"


def default_path(model_path):
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "agegender", "litert", golden.file_sha256(model_path), "model.tflite")


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise Unavailable("ai-edge-litert is not installed (pip install ai-edge-litert)") from None
    return Interpreter


def output_order(names):
    """[tensor names] -> [index into names, in spec.OUTPUT_NAMES order], matching exactly, then by the longest
    ONNX name contained ('age' also occurs in 'age_final': longer names claim their tensors first)."""
    order = {}
    taken = set()
    for wanted in sorted(spec.OUTPUT_NAMES, key=len, reverse=True):
        exact = [i for i, n in enumerate(names) if n == wanted and i not in taken]
        loose = [i for i, n in enumerate(names) if wanted in n and i not in taken]
        pick = (exact or loose or [None])[0]
        if pick is None:
            raise Unavailable(f"the .tflite has no output named like {wanted!r} (outputs: {', '.join(names)})")
        order[wanted] = pick
        taken.add(pick)
    return [order[n] for n in spec.OUTPUT_NAMES]


class LiteRtRunner(PeerRunner):
    def __init__(self, model_path, threads, tflite=None, interpreter_class=None):
        super().__init__("litert", threads)
        path = tflite or os.environ.get("AGEGENDER_TFLITE") or default_path(model_path)
        interpreter_class = interpreter_class or _interpreter_class()
        if not os.path.exists(path):
            raise Unavailable(f"no .tflite ({path}; see {DOC} for the separate converter environment)")
        self.interpreter = interpreter_class(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        (self.input,) = self.interpreter.get_input_details()
        shape = list(self.input["shape"])
        self.nhwc = shape[-1] == spec.INPUT_SHAPE[0] and shape[1] != spec.INPUT_SHAPE[0]
        signature = self.input.get("shape_signature")
        self.dynamic = signature is not None and len(signature) and int(signature[0]) == -1
        self.batch = int(shape[0])
        details = self.interpreter.get_output_details()
        self.outputs = [details[i]["index"] for i in output_order([d["name"] for d in details])]
        self.isa = (f"LiteRT + XNNPACK, {os.path.basename(path)}, {'NHWC' if self.nhwc else 'NCHW'} input, "
                    f"{'dynamic batch' if self.dynamic else 'one image per call'}")

    def _call(self, x):
        if self.nhwc:
            x = x.transpose(0, 2, 3, 1)
        x = np.ascontiguousarray(x, np.float32)
        if self.dynamic and len(x) != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], [len(x), *x.shape[1:]])
            self.interpreter.allocate_tensors()
            self.batch = len(x)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i).reshape(len(x), -1)[:, :1].copy() for i in self.outputs]

    def run(self, x):
        parts = [self._call(x)] if self.dynamic else [self._call(x[i:i + 1]) for i in range(len(x))]
        return as_contract({n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(spec.OUTPUT_NAMES)})


def make_runner(model_path, threads, tflite=None):
    return LiteRtRunner(model_path, threads, tflite)
