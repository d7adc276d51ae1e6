"""ncnn on a pnnx conversion of the kit's PyTorch module, the conversion cached outside the repository.

pnnx cannot read the ONNX file (`Mean`, the ensemble's average of three heads, has no ncnn layer, and its
Split comes out malformed), so the conversion starts from the kit's own files instead: training/model.py's
module with the bundled weights copied in (training.model.load_onnx_weights), traced at [1, 3, 64, 64] in
eval mode and written by pnnx with fp32 weights (fp16=False). It runs in a subprocess (it needs torch and
pnnx; pnnx prints a page) and lands in ~/.cache/agegender/ncnn/<sha256 of the ONNX file>/ ($XDG_CACHE_HOME
honoured), as model.ncnn.param and model.ncnn.bin: later runs, and boards without torch, only need ncnn
(copy that folder). python -m bench.peers.ncnn_peer [model.onnx] converts ahead of time.

ncnn has no batch axis: a batch of N runs N extractors, one per image, one after the other; num_threads
threads work inside each layer. The fp32 row turns use_fp16_storage, use_fp16_arithmetic, use_fp16_packed
and use_bf16_storage off explicitly; ncnn's default options (fp16 storage and arithmetic where the CPU has
them) are the separate "ncnn fp16 default" row, not fp32-equivalent. Both set openmp_blocktime to 0 (below).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from refimpl import golden, spec

from ..backends import Unavailable
from .base import PeerRunner, as_contract

FP16_OPTIONS = ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_bf16_storage")
PARAM, BIN, MANIFEST = "model.ncnn.param", "model.ncnn.bin", "manifest.json"
INPUT = "in0"
OUTPUTS = tuple(f"out{i}" for i in range(len(spec.OUTPUT_NAMES)))   # pnnx names the traced tuple's outputs so
CONVERT_TIMEOUT_S = 600
BLOCKTIME_MS = 0


def cache_dir(model_path):
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "agegender", "ncnn", golden.file_sha256(model_path))


def converted(model_path):
    """(param, bin) for this model file, converting it first when the cache has none; Unavailable(why)."""
    folder = cache_dir(model_path)
    param, weights = os.path.join(folder, PARAM), os.path.join(folder, BIN)
    if os.path.exists(param) and os.path.exists(weights):
        return param, weights
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    work = tempfile.mkdtemp(prefix="convert-", dir=os.path.dirname(folder))
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.peers.ncnn_peer", os.path.abspath(model_path), work],
                              capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise Unavailable(f"no ncnn files in {folder} and the pnnx conversion failed: "
                              f"{lines[-1] if lines else f'exit status {proc.returncode}'}")
        os.makedirs(folder, exist_ok=True)
        for name in (BIN, MANIFEST, PARAM):          # the param last: its presence means the folder is complete
            os.replace(os.path.join(work, name), os.path.join(folder, name))
    except subprocess.TimeoutExpired:
        raise Unavailable(f"the pnnx conversion took over {CONVERT_TIMEOUT_S} s") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return param, weights


def convert(model_path, out_dir):
    """Trace training/model.py's module with the weights of model_path and write PARAM, BIN, MANIFEST into
    out_dir (needs torch and pnnx). Runs in the subprocess converted() starts; raises SystemExit(why)."""
    try:
        import pnnx
        import torch
    except ImportError as exc:
        raise SystemExit(f"{exc.name} is not installed (the conversion needs torch and pnnx: pip install pnnx, "
                         f"and torch's CPU wheel, see docs/peers.md)")
    from refimpl import onnx_format
    from training.model import AgeGenderNet, load_onnx_weights

    weights, _, _ = onnx_format.read(model_path)
    net = load_onnx_weights(AgeGenderNet(), weights).eval()

    class Outputs(torch.nn.Module):            # pnnx traces tuples, not dicts: the contract's order
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, image):
            out = self.net(image)
            return tuple(out[name] for name in spec.OUTPUT_NAMES)

    scratch = os.path.join(out_dir, "pnnx")
    os.makedirs(scratch)
    p = lambda name: os.path.join(scratch, name)   # noqa: E731
    with torch.no_grad():
        pnnx.export(Outputs().eval(), p("model.pt"), (torch.zeros(1, *spec.INPUT_SHAPE),), fp16=False,
                    ncnnparam=os.path.join(out_dir, PARAM), ncnnbin=os.path.join(out_dir, BIN),
                    pnnxparam=p("model.pnnx.param"), pnnxbin=p("model.pnnx.bin"), pnnxpy=p("model_pnnx.py"),
                    pnnxonnx=p("model.pnnx.onnx"), ncnnpy=p("model_ncnn.py"))
    with open(os.path.join(out_dir, PARAM)) as f:
        blobs = set(f.read().split())
    missing = [b for b in (INPUT,) + OUTPUTS if b not in blobs]
    if missing:
        raise SystemExit(f"pnnx wrote no blob(s) {', '.join(missing)}: its output naming changed")
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump({"model_sha256": golden.file_sha256(model_path), "pnnx": getattr(pnnx, "__version__", None),
                   "torch": torch.__version__, "input": INPUT, "outputs": dict(zip(OUTPUTS, spec.OUTPUT_NAMES))},
                  f, indent=1)


class NcnnRunner(PeerRunner):
    def __init__(self, name, model_path, threads):
        super().__init__(name, threads)
        try:
            import ncnn
        except ImportError:
            raise Unavailable("ncnn is not installed (pip install ncnn, or the kit's [peers] extra)") from None
        param, weights = converted(model_path)
        self.ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.num_threads = threads
        # ncnn's OpenMP threads spin 20 ms after each call by default: into the next engine's turn in the
        # interleaved rounds, and against every other process on a shared machine (measured here at 2 threads
        # under load: 7.3 ms per image with 20, 2.3 with 0). 0: they sleep at once. Both rows alike.
        self.net.opt.openmp_blocktime = BLOCKTIME_MS
        if name == "ncnn-fp32":
            for option in FP16_OPTIONS:
                setattr(self.net.opt, option, False)
        self.precision = "f16" if any(getattr(self.net.opt, o) for o in FP16_OPTIONS) else "f32"
        if self.net.load_param(param) != 0 or self.net.load_model(weights) != 0:
            raise Unavailable(f"ncnn could not load {param} (delete {os.path.dirname(param)} to convert again)")
        on = [o for o in FP16_OPTIONS if getattr(self.net.opt, o)]
        self.isa = (f"ncnn {getattr(ncnn, '__version__', '?')}, one extractor per image, "
                    f"{'fp16/bf16 off' if not on else 'default options: ' + ', '.join(on)}, "
                    f"OpenMP blocktime {BLOCKTIME_MS} ms")

    def run(self, x):
        got = {name: np.empty((len(x), 1), np.float32) for name in spec.OUTPUT_NAMES}
        for i in range(len(x)):
            image = np.ascontiguousarray(x[i])
            extractor = self.net.create_extractor()
            extractor.input(INPUT, self.ncnn.Mat(image))
            for blob, name in zip(OUTPUTS, spec.OUTPUT_NAMES):
                status, mat = extractor.extract(blob)
                if status != 0:
                    raise RuntimeError(f"ncnn extract {blob} ({name}) returned {status}")
                got[name][i] = np.array(mat).reshape(-1)[0]
        return as_contract(got)

    def close(self):
        self.net.clear()


def make_runner(name, model_path, threads):
    return NcnnRunner(name, model_path, threads)


if __name__ == "__main__":      # python -m bench.peers.ncnn_peer [model.onnx [out_dir]]
    import refimpl

    args = sys.argv[1:]
    model = args[0] if args else refimpl.DEFAULT_WEIGHTS
    if len(args) > 1:
        convert(model, args[1])
    else:
        print(" ".join(converted(model)))
