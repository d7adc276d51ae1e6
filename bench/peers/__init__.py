"""Peers: the engines a user would pick instead of the kit's kernels, as rows of `python -m bench --peers`.

    runner = make_runner("ncnn-fp32", "weights/agegender.onnx", threads=1)   # or raises Unavailable(why)
    runner.run(x)                       # {output name: float32 [N, 1]}, refimpl's contract
    runner.fp32                         # False: not fp32-equivalent (fp16 storage, bf16), kept apart

Each peer is a Runner of bench/backends.py (same run/tolerance/close interface), checked against the
golden outputs before it is timed, like every backend. A peer that is not fp32-equivalent is held to
looser, named tolerances (bench/peers/tolerances.py), labelled in every table, and left out of the fp32
comparison (the summary's "fastest fp32 peer" and the kernels' ratio to it).

Peers (modules imported only when asked for: none of them is needed by the kit):
  openvino-f32-latency, openvino-f32-throughput   OpenVINO's CPU plugin on the ONNX file, f32 set explicitly
  openvino-default                                 its default precision (bf16 on CPUs with bf16): not fp32
  ncnn-fp32, ncnn-default                          ncnn on a pnnx conversion of the PyTorch module (cached)
  litert                                           LiteRT (TensorFlow Lite) + XNNPACK on a converted .tflite
  torch-eager, torch-compile                       PyTorch on training/model.py with the bundled weights
torch-compile compiles for every batch size on its first call (seconds to a minute): it runs only when
asked for: `--peers all`, `--peers torch` (the family) or by name.
"""
from ..backends import Unavailable

PEERS = ("openvino-f32-latency", "openvino-f32-throughput", "openvino-default", "ncnn-fp32", "ncnn-default",
         "litert", "torch-eager", "torch-compile")
DEFAULT_PEERS = tuple(p for p in PEERS if p != "torch-compile")     # --peers without a value
FAMILIES = {"openvino": PEERS[0:3], "ncnn": PEERS[3:5], "litert": ("litert",), "torch": PEERS[6:8]}
LABELS = {"openvino-f32-latency": "openvino f32 lat", "openvino-f32-throughput": "openvino f32 tput",
          "openvino-default": "openvino default", "ncnn-fp32": "ncnn fp32", "ncnn-default": "ncnn fp16 default",
          "litert": "litert xnnpack", "torch-eager": "torch eager", "torch-compile": "torch.compile"}
# fp32-equivalent unless the peer says otherwise once loaded (openvino-default is f32 on CPUs without bf16)
FP32 = {name: name not in ("openvino-default", "ncnn-default") for name in PEERS}


def select(text):
    """--peers value -> peer names: "" or "default" (all but torch-compile), "all", or a comma list of names and
    families (openvino, ncnn, litert, torch). Raises ValueError naming what is unknown."""
    if text in (None, "", "default"):
        return DEFAULT_PEERS
    if text == "all":
        return PEERS
    names = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item in FAMILIES:
            names += FAMILIES[item]
        elif item in PEERS:
            names.append(item)
        else:
            raise ValueError(f"unknown peer {item!r}; expected default, all, or some of "
                             f"{', '.join(list(FAMILIES) + list(PEERS))}")
    return tuple(dict.fromkeys(names))


def make_runner(name, model_path, threads=1, options=None):
    """-> a Runner for peer `name`, or raise Unavailable(why). options: {"tflite": path} for litert."""
    options = options or {}
    if name.startswith("openvino-"):
        from . import openvino_peer

        return openvino_peer.make_runner(name, model_path, threads)
    if name.startswith("ncnn-"):
        from . import ncnn_peer

        return ncnn_peer.make_runner(name, model_path, threads)
    if name == "litert":
        from . import litert_peer

        return litert_peer.make_runner(model_path, threads, options.get("tflite"))
    if name.startswith("torch-"):
        from . import torch_peer

        return torch_peer.make_runner(name, model_path, threads)
    raise ValueError(f"unknown peer {name!r}; expected one of {', '.join(PEERS)}")


def is_fp32(runner_or_row):
    """A runner's or result row's fp32-equivalence (backends that do not say are: all but TensorRT FP16)."""
    if isinstance(runner_or_row, dict):
        return runner_or_row.get("fp32", not str(runner_or_row.get("backend", "")).endswith("fp16"))
    return getattr(runner_or_row, "fp32", not runner_or_row.name.endswith("fp16"))


__all__ = ["PEERS", "DEFAULT_PEERS", "LABELS", "FP32", "Unavailable", "make_runner", "select", "is_fp32"]
