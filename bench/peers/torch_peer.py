"""PyTorch on the kit's own module (training/model.py) with the bundled weights: eager, and torch.compile.

Threads: torch.set_num_threads(threads) before each call where it differs (torch's intra-op pool is one per
process). torch.compile (inductor, dynamic=False) compiles on the first call of each batch size, seconds to
a minute on a small CPU: that call is the verification and warm-up, outside the timing, and its time is the
row's first_call_ms in --json. It runs only when asked for (--peers all, --peers torch, or --peers torch-compile).
"""
import time

import numpy as np

from refimpl import spec

from ..backends import Unavailable
from .base import PeerRunner, as_contract


def load_module(model_path):
    """-> training.model.AgeGenderNet in eval mode holding the weights of model_path (needs torch)."""
    from refimpl import onnx_format
    from training.model import AgeGenderNet, load_onnx_weights

    weights, _, _ = onnx_format.read(model_path)
    return load_onnx_weights(AgeGenderNet(), weights).eval()


class TorchRunner(PeerRunner):
    def __init__(self, name, model_path, threads):
        super().__init__(name, threads)
        try:
            import torch
        except ImportError:
            raise Unavailable("torch is not installed (the CPU wheel: pip install torch --index-url "
                              "https://download.pytorch.org/whl/cpu; see docs/peers.md)") from None
        self.torch = torch
        self.module = load_module(model_path)
        how = "eager"
        if name == "torch-compile":
            if not hasattr(torch, "compile"):
                raise Unavailable(f"torch {torch.__version__} has no torch.compile (2.0 or later)")
            t0 = time.perf_counter()
            self.module = torch.compile(self.module, dynamic=False)
            self.compile_setup_s = time.perf_counter() - t0
            how = "torch.compile (inductor), compiled per batch size on its first call"
        capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "")()
        self.isa = f"torch {torch.__version__.split('+')[0]} {how}" + (f", {capability}" if capability else "")

    def run(self, x):
        torch = self.torch
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
            return as_contract({name: out[name].numpy() for name in spec.OUTPUT_NAMES})


def make_runner(name, model_path, threads):
    return TorchRunner(name, model_path, threads)
