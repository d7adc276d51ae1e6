"""OpenVINO (CPU plugin) reading the ONNX file as it is.

Three rows: f32 with the LATENCY hint (one request, the batch in one call), f32 with the THROUGHPUT hint
(the batch split over the plugin's optimal number of requests, run at once through an AsyncInferQueue: its
streams each take a part), and the plugin's default precision (bf16 on CPUs with bf16 or AMX, f16 on ARM:
not fp32-equivalent, labelled and kept apart; where the default resolves to f32 that row is left out as a
duplicate). Threads: INFERENCE_NUM_THREADS.
"""
import numpy as np

from refimpl import spec

from ..backends import Unavailable
from .base import PeerRunner, as_contract

_PRECISION = {"f32": "f32", "float32": "f32", "bf16": "bf16", "bfloat16": "bf16", "f16": "f16", "float16": "f16"}


def _import():
    try:
        import openvino
    except ImportError:
        raise Unavailable("openvino is not installed (pip install openvino, or the kit's [peers] extra)") from None
    return openvino


class OpenVinoRunner(PeerRunner):
    def __init__(self, name, model_path, threads):
        super().__init__(name, threads)
        ov = _import()
        hint = "THROUGHPUT" if name.endswith("throughput") else "LATENCY"
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads}
        if name != "openvino-default":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(model_path)), "CPU", config)
        hinted = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        resolved = hinted.get_type_name() if hasattr(hinted, "get_type_name") else str(hinted)
        self.precision = _PRECISION.get(resolved.lower(), resolved.lower())
        if name == "openvino-default" and self.precision == "f32":
            raise Unavailable("the CPU plugin's default precision is f32 on this CPU: the same as openvino f32 latency")
        self.outputs = [self.compiled.output(n) for n in spec.OUTPUT_NAMES]
        self.requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        streams = self.compiled.get_property("NUM_STREAMS")
        self.isa = (f"openvino {ov.get_version().split('-')[0]} CPU plugin, {hint} hint, precision {self.precision}"
                    f", {streams} stream(s), {self.requests} request(s)")
        self.request = self.compiled.create_infer_request()
        self.queue = ov.AsyncInferQueue(self.compiled, self.requests) if hint == "THROUGHPUT" else None

    def run(self, x):
        if self.queue is None or self.requests == 1 or len(x) == 1:
            result = self.request.infer({0: x})
            return as_contract({n: result[o] for n, o in zip(spec.OUTPUT_NAMES, self.outputs)})
        parts = np.array_split(np.arange(len(x)), min(self.requests, len(x)))
        got = [None] * len(parts)

        def done(request, index):
            got[index] = [request.get_tensor(o).data.copy() for o in self.outputs]

        self.queue.set_callback(done)
        for i, rows in enumerate(parts):
            self.queue.start_async({0: np.ascontiguousarray(x[rows[0]:rows[-1] + 1])}, i)
        self.queue.wait_all()
        return as_contract({n: np.concatenate([g[k] for g in got]) for k, n in enumerate(spec.OUTPUT_NAMES)})


def make_runner(name, model_path, threads):
    return OpenVinoRunner(name, model_path, threads)
