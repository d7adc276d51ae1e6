"""Stand-ins for the `tensorrt` and `pycuda` Python packages, for tests without a GPU.

Just the API surface bench.tensorrt_backend uses, in TensorRT 8.x form (bindings, execute_v2) or
10.x form (named tensors, execute_async_v3), on "device memory" that is a dict of numpy arrays. The
parser refuses a file onnx's checker refuses; an FP32 "engine" runs the file with ONNX Runtime, an FP16
one runs refimpl with every weight and layer output rounded to half precision (fake_half.py).
install(monkeypatch, version, rounding=...) puts them in sys.modules; `rounding` replaces the FP16 one.

What this does not prove: that TensorRT's real parser takes the file, what its FP16 kernels compute
(they fuse layers and may accumulate in FP16), that the real API calls happen in a legal order on a GPU.
"""
import importlib.util
import os
import types

import numpy as np

MEMORY = {}                        # fake device pointer -> float32 array
NAMES = ("image", "age", "gender", "age_final", "gender_final", "age_virtual", "gender_virtual", "age_low",
         "gender_low")


class _Allocation:
    def __init__(self, nbytes):
        self.ptr = 0x1000 + len(MEMORY) * 0x100000
        MEMORY[self.ptr] = np.zeros(nbytes // 4, np.float32)

    def __int__(self):
        return self.ptr


def _htod(buf, host):
    MEMORY[int(buf)][:host.size] = host.reshape(-1)


def _dtoh(host, buf):
    assert host.flags.c_contiguous
    host.reshape(-1)[:] = MEMORY[int(buf)][:host.size]


def make_pycuda():
    driver = types.ModuleType("pycuda.driver")
    driver.mem_alloc, driver.memcpy_htod, driver.memcpy_dtoh = _Allocation, _htod, _dtoh
    driver.Context = types.SimpleNamespace(synchronize=lambda: None)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver, pycuda.autoinit = driver, types.ModuleType("pycuda.autoinit")
    return pycuda


def _fake_half():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_half.py")
    spec = importlib.util.spec_from_file_location("fake_half", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ParserError:
    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def make_tensorrt(version, rounding=None):
    import onnxruntime as ort

    half = _fake_half()
    rounding = rounding or half.round_half

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    major = int(version.split(".")[0])
    trt.built = []                                           # (fp16, tf32) of each build, for the test to read

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", TF32="TF32")

    class Config:
        def __init__(self):
            self.flags = {"TF32"}

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def add_optimization_profile(self, profile):
            self.profile = profile

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, lo, opt, hi)

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return types.SimpleNamespace(model=None)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            assert config.profile.shapes == ("image", (1, 3, 64, 64), (8, 3, 64, 64), (64, 3, 64, 64))
            trt.built.append(("FP16" in config.flags, "TF32" in config.flags))
            return (network.model, "FP16" in config.flags)

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

        def parse(self, data):
            import onnx

            try:
                onnx.checker.check_model(onnx.load_model_from_string(data), full_check=True)
            except Exception as exc:                 # onnx raises several types for a bad file
                self.errors.append(ParserError(f"In node -1 (parseGraph): INVALID_GRAPH: {type(exc).__name__}"))
                return False
            self.network.model = data
            return True

    class Context:
        def __init__(self, engine):
            self.engine, self.addresses, self.shape = engine, {}, None

        def _execute(self, addresses):
            x = MEMORY[addresses["image"]][:int(np.prod(self.shape))].reshape(self.shape)
            if self.engine.fp16:
                out = half.half_precision_forward(self.engine.model, np.array(x), rounding)
                outs = [out[name] for name in NAMES[1:]]
            else:
                outs = self.engine.session.run(list(NAMES[1:]), {"image": x})
            for name, value in zip(NAMES[1:], outs):
                MEMORY[addresses[name]][:value.size] = value.ravel()
            return True

        # 8.x
        def set_binding_shape(self, index, shape):
            self.shape = shape

        def execute_v2(self, bindings):
            return self._execute({name: bindings[i] for i, name in enumerate(NAMES)})

        # 10.x
        def set_input_shape(self, name, shape):
            self.shape = shape

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def execute_async_v3(self, stream):
            return self._execute(self.addresses)

    class Engine:
        def __init__(self, serialized):
            model, self.fp16 = serialized
            if self.fp16:                             # refimpl reads a file: the serialized bytes, written out
                import tempfile

                import refimpl

                with tempfile.TemporaryDirectory() as tmp:
                    path = os.path.join(tmp, "engine.onnx")
                    with open(path, "wb") as f:
                        f.write(model)
                    self.model = refimpl.load(path)
            else:
                self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            if major < 10:
                self.num_bindings = len(NAMES)
                self.get_binding_index = NAMES.index

        def create_execution_context(self):
            context = Context(self)
            if major < 10:                      # the 8.x API has neither set_input_shape nor execute_async_v3
                context = types.SimpleNamespace(set_binding_shape=context.set_binding_shape,
                                                execute_v2=context.execute_v2)
            return context

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, serialized):
            return Engine(serialized)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def install(monkeypatch, version, rounding=None):
    pycuda = make_pycuda()
    trt = make_tensorrt(version, rounding)
    for name, module in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", pycuda.driver),
                         ("pycuda.autoinit", pycuda.autoinit)):
        monkeypatch.setitem(__import__("sys").modules, name, module)
    return trt
