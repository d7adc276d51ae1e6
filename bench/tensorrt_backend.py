"""TensorRT rows of the report: an engine built from the ONNX file in FP32 and FP16, checked, then timed.

Two ways in, tried in this order:
- the `tensorrt` Python package (JetPack's python3-libnvinfer, or the pip wheel on a CUDA machine) with
  pycuda or cuda-python for the device buffers: build, run and time from Python, like the CPU backends;
- `trtexec` (on PATH, or JetPack's /usr/src/tensorrt/bin/trtexec): build the engine once per precision,
  verify with --loadInputs/--exportOutput, and time with trtexec itself, parsing its performance summary
  (parse_trtexec reads both TensorRT 8.x, JetPack 4.6 on the Nano, and 10.x output).
Elsewhere make_runner raises Unavailable and the row says why.

Timings are end-to-end per batch: host-to-device copy, compute, device-to-host copy (trtexec's
"Latency" line; "GPU Compute Time" alone goes to the JSON). FP32 engines are built with TF32 off
(--noTF32), so FP32 is held to the golden tolerances; FP16 to the looser ones below.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from refimpl import golden, spec

from .runner_base import Runner, Unavailable

MAX_BATCH = 64                   # the engine's optimization profile: batch 1 .. MAX_BATCH, tuned for OPT_BATCH
OPT_BATCH = 8
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
# FP16 keeps 11 significant bits (unit roundoff 4.9e-4); 20 conv layers, each summing up to 432 products,
# compound that to roughly 1e-2 relative in the worst logits. Ages near 30 years then move by up to a few
# tenths of a year, probabilities by up to ~1e-2 (sigmoid slope <= 1/4). These bounds check that the FP16
# engine is the same model, not that it agrees bit for bit; the report prints the errors it measured.
FP16_AGE_TOLERANCE = 0.5         # years
FP16_GENDER_TOLERANCE = 1e-2     # probability


def fp16_tolerance(output_name):
    return FP16_AGE_TOLERANCE if output_name.startswith("age") else FP16_GENDER_TOLERANCE


# -- trtexec output -----------------------------------------------------------------------------------------
_VERSION = re.compile(r"\[TensorRT v(\d+)\]")
_VERSION_LINE = re.compile(r"TensorRT version:\s*([\d.]+)")
_THROUGHPUT = re.compile(r"Throughput:\s*([\d.eE+-]+)\s*qps")
_STAT_LINE = re.compile(r"(Latency|End-to-End Host Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency)"
                        r":\s*(min\b.*)$")
_STAT = re.compile(r"(min|max|mean|median|percentile\(([\d.]+)%\))\s*=?\s*([\d.eE+-]+)\s*ms")
_TOTAL = re.compile(r"(Total Host Walltime|Total GPU Compute Time):\s*([\d.eE+-]+)\s*s\b")


def version_from_tag(number):
    """trtexec's '[TensorRT v8201]' -> '8.2.1', 'v8601' -> '8.6.1', 'v100200' -> '10.2.0'."""
    n = int(number)
    if n >= 10000:                                   # 10.x: MMmmpp
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"  # 8.x: Mmpp


def parse_trtexec(text):
    """trtexec's stdout -> {"version", "passed", "throughput_qps", "sections": {name: {"min", "max", "mean",
    "median", "percentiles": {90.0: ms, ...}}}, "total_host_walltime_s", "total_gpu_compute_s"}; times in ms.

    Reads the '=== Performance summary ===' lines of TensorRT 8.x and 10.x (with or without the
    '[date] [I] ' prefix). Raises ValueError when the text has no performance summary."""
    result = {"version": None, "passed": None, "throughput_qps": None, "sections": {},
              "total_host_walltime_s": None, "total_gpu_compute_s": None}
    for line in text.splitlines():
        if result["version"] is None:
            m = _VERSION.search(line) or _VERSION_LINE.search(line)
            if m:
                result["version"] = version_from_tag(m.group(1)) if m.re is _VERSION else m.group(1)
        if "&&&& PASSED" in line:
            result["passed"] = True
        elif "&&&& FAILED" in line:
            result["passed"] = False
        m = _THROUGHPUT.search(line)
        if m:
            result["throughput_qps"] = float(m.group(1))
            continue
        m = _STAT_LINE.search(line)
        if m and m.group(1) not in result["sections"]:
            stats = {"percentiles": {}}
            for key, pct, value in _STAT.findall(m.group(2)):
                if pct:
                    stats["percentiles"][float(pct)] = float(value)
                else:
                    stats[key] = float(value)
            result["sections"][m.group(1)] = stats
            continue
        m = _TOTAL.search(line)
        if m:
            key = "total_host_walltime_s" if m.group(1).startswith("Total Host") else "total_gpu_compute_s"
            result[key] = float(m.group(2))
    if "Latency" not in result["sections"] or result["throughput_qps"] is None:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise ValueError(f"no trtexec performance summary (Throughput and Latency lines) in its output; last lines:"
                         f"\n{tail}")
    return result


def read_export_output(text):
    """trtexec --exportOutput JSON ([{"name", "dimensions": "8x1", "values": [...]}, ...]) -> {name: array}."""
    out = {}
    for entry in json.loads(text):
        dims = tuple(int(d) for d in str(entry["dimensions"]).split("x") if d)
        out[entry["name"]] = np.asarray(entry["values"], np.float32).reshape(dims)
    return out


def shape_arg(batch):
    return f"{spec.INPUT_NAME}:{batch}x" + "x".join(map(str, spec.INPUT_SHAPE))


def find_trtexec():
    return shutil.which("trtexec") or (JETPACK_TRTEXEC if os.access(JETPACK_TRTEXEC, os.X_OK) else None)


class TrtexecRunner(Runner):
    """TensorRT through the trtexec tool: one engine file per precision, built on the first call."""
    external = True

    def __init__(self, model_path, fp16, trtexec, workdir=None):
        super().__init__(threads=None)
        self.name = "tensorrt-fp16" if fp16 else "tensorrt-fp32"
        self.fp16, self.trtexec, self.model_path = fp16, trtexec, os.path.abspath(model_path)
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="agegender-trt-")
        self.workdir = workdir or self._tmp.name
        self.engine = os.path.join(self.workdir, f"agegender-{'fp16' if fp16 else 'fp32'}.engine")
        self.built = False
        self.version = None
        self.device = "gpu (trtexec)"
        self.isa = f"trtexec {trtexec}"
        if fp16:
            self.tolerance = fp16_tolerance

    def _engine_args(self, batch):
        if self.built:
            return [f"--loadEngine={self.engine}", f"--shapes={shape_arg(batch)}"]
        args = [f"--onnx={self.model_path}", f"--minShapes={shape_arg(1)}", f"--optShapes={shape_arg(OPT_BATCH)}",
                f"--maxShapes={shape_arg(MAX_BATCH)}", f"--shapes={shape_arg(batch)}", f"--saveEngine={self.engine}"]
        return args + (["--fp16"] if self.fp16 else ["--noTF32"])

    def _call(self, args, timeout):
        proc = subprocess.run([self.trtexec, *args], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            raise RuntimeError(f"trtexec exited with {proc.returncode}: {' '.join(args)}\n{tail}")
        return proc.stdout

    def run(self, x):
        """One inference of batch x through the engine (building it first if needed) -> the eight outputs."""
        if len(x) > MAX_BATCH:
            raise ValueError(f"the engine's profile stops at batch {MAX_BATCH}, got {len(x)}")
        inputs, outputs = os.path.join(self.workdir, "input.bin"), os.path.join(self.workdir, "outputs.json")
        np.ascontiguousarray(x, np.float32).tofile(inputs)
        text = self._call([*self._engine_args(len(x)), f"--loadInputs={spec.INPUT_NAME}:{inputs}",
                           f"--exportOutput={outputs}", "--iterations=1", "--warmUp=0", "--duration=0"],
                          timeout=1800 if not self.built else 300)
        self.built = True
        m = _VERSION.search(text)
        self.version = version_from_tag(m.group(1)) if m else self.version
        with open(outputs) as f:
            return read_export_output(f.read())

    def measure(self, x, seconds):
        """trtexec's own timing of batch x for `seconds` -> (median ms, p90 ms or None, parsed summary)."""
        text = self._call([*self._engine_args(len(x)), f"--duration={max(1, int(round(seconds)))}", "--warmUp=500",
                           "--percentile=90", "--useSpinWait"], timeout=600)
        summary = parse_trtexec(text)
        latency = summary["sections"]["Latency"]
        return latency["median"], latency["percentiles"].get(90.0), summary

    def close(self):
        if self._tmp is not None:
            self._tmp.cleanup()


class _CudaBuffers:
    """Device memory through pycuda or cuda-python, whichever imports."""

    def __init__(self):
        try:
            import pycuda.autoinit  # noqa: F401
            import pycuda.driver as driver
            self.kind, self._d = "pycuda", driver
        except ImportError:
            try:
                from cuda import cudart
            except ImportError:
                try:
                    from cuda.bindings import runtime as cudart
                except ImportError:
                    raise Unavailable("the tensorrt package needs pycuda or cuda-python for device buffers "
                                      "(pip install pycuda), and no trtexec was found") from None
            self.kind, self._rt = "cuda-python", cudart

    def _check(self, result):
        err, *rest = result
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if rest else None

    def malloc(self, nbytes):
        return self._d.mem_alloc(nbytes) if self.kind == "pycuda" else self._check(self._rt.cudaMalloc(nbytes))

    def ptr(self, buf):
        return int(buf)

    def htod(self, buf, host):
        if self.kind == "pycuda":
            self._d.memcpy_htod(buf, host)
        else:
            self._check(self._rt.cudaMemcpy(buf, host.ctypes.data, host.nbytes,
                                            self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice))

    def dtoh(self, host, buf):
        if self.kind == "pycuda":
            self._d.memcpy_dtoh(host, buf)
        else:
            self._check(self._rt.cudaMemcpy(host.ctypes.data, buf, host.nbytes,
                                            self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost))

    def sync(self):
        if self.kind == "pycuda":
            self._d.Context.synchronize()
        else:
            self._check(self._rt.cudaDeviceSynchronize())


class TensorRTPythonRunner(Runner):
    """TensorRT through its Python API (8.x bindings or 10.x named tensors), synchronous copies in and out."""

    def __init__(self, model_path, fp16):
        import tensorrt as trt

        super().__init__(threads=None)
        self.name = "tensorrt-fp16" if fp16 else "tensorrt-fp32"
        self.version = trt.__version__
        self.cuda = _CudaBuffers()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and int(self.version.split(".")[0]) < 10:
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        with open(model_path, "rb") as f:
            if not parser.parse(f.read()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise RuntimeError(f"TensorRT's ONNX parser rejected {model_path}: {errors}")
        config = builder.create_builder_config()
        if fp16:
            if not getattr(builder, "platform_has_fast_fp16", True):
                self.notes.append("tensorrt fp16: this GPU has no fast FP16; TensorRT may keep FP32 kernels")
            config.set_flag(trt.BuilderFlag.FP16)
            self.tolerance = fp16_tolerance
        elif hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        profile = builder.create_optimization_profile()
        shape = spec.INPUT_SHAPE
        profile.set_shape(spec.INPUT_NAME, (1, *shape), (OPT_BATCH, *shape), (MAX_BATCH, *shape))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT could not build an engine from the ONNX file")
        self.runtime = trt.Runtime(logger)             # kept: the engine must not outlive its runtime
        self.engine = self.runtime.deserialize_cuda_engine(serialized)
        self.context = self.engine.create_execution_context()
        self.device = "gpu (tensorrt python)"
        self.isa = f"TensorRT {self.version}, {self.cuda.kind}"
        self._v3 = hasattr(self.context, "set_input_shape") and hasattr(self.context, "execute_async_v3")
        names = [spec.INPUT_NAME, *spec.OUTPUT_NAMES]
        self.buffers = {name: self.cuda.malloc(MAX_BATCH * (int(np.prod(shape)) if name == spec.INPUT_NAME else 1) * 4)
                        for name in names}
        if self._v3:
            for name in names:
                self.context.set_tensor_address(name, self.cuda.ptr(self.buffers[name]))
        else:
            self.bindings = [0] * self.engine.num_bindings
            for name in names:
                self.bindings[self.engine.get_binding_index(name)] = self.cuda.ptr(self.buffers[name])

    def run(self, x):
        n = len(x)
        if n > MAX_BATCH:
            raise ValueError(f"the engine's profile stops at batch {MAX_BATCH}, got {n}")
        self.cuda.htod(self.buffers[spec.INPUT_NAME], np.ascontiguousarray(x, np.float32))
        if self._v3:
            self.context.set_input_shape(spec.INPUT_NAME, tuple(x.shape))
            if not self.context.execute_async_v3(0):
                raise RuntimeError("TensorRT execute_async_v3 failed")
        else:
            self.context.set_binding_shape(self.engine.get_binding_index(spec.INPUT_NAME), tuple(x.shape))
            if not self.context.execute_v2(self.bindings):
                raise RuntimeError("TensorRT execute_v2 failed")
        self.cuda.sync()
        out = {}
        for name in spec.OUTPUT_NAMES:
            host = np.empty((n, 1), np.float32)
            self.cuda.dtoh(host, self.buffers[name])
            out[name] = host
        return out


NOT_AVAILABLE = "no tensorrt package and no trtexec on PATH (nor " + JETPACK_TRTEXEC + ")"


def probe():
    """-> ("python" | "trtexec" | None, detail): which way to TensorRT this machine offers."""
    python_version, broken = None, None
    try:
        import tensorrt
        python_version = tensorrt.__version__
    except ImportError:
        pass
    except Exception as exc:        # a broken install (missing libnvinfer) raises OSError and friends
        broken = exc
    trtexec = find_trtexec()
    if python_version:
        return "python", f"tensorrt {python_version}" + (f", trtexec {trtexec}" if trtexec else "")
    if trtexec:
        return "trtexec", trtexec
    return None, NOT_AVAILABLE + (f" (import tensorrt failed: {broken})" if broken else "")


def make_runner(model_path, fp16, workdir=None):
    how, detail = probe()
    if how is None:
        raise Unavailable(detail)
    errors = []
    if how == "python":
        try:
            return TensorRTPythonRunner(model_path, fp16)
        except Unavailable as exc:
            errors.append(str(exc))
        except Exception as exc:        # no GPU, driver mismatch, parser error: say so, try trtexec
            errors.append(f"tensorrt python API: {type(exc).__name__}: {exc}")
    trtexec = find_trtexec()
    if trtexec:
        return TrtexecRunner(model_path, fp16, trtexec, workdir)
    raise Unavailable("; ".join(errors) or detail)


def check(outputs, expected, fp16):
    """The golden check with this precision's tolerances -> mismatch reports (empty when all agree)."""
    return golden.check_outputs(outputs, expected, fp16_tolerance if fp16 else golden.tolerance)
