"""A stand-in for TensorRT 8.2's trtexec, for tests/test_bench_tensorrt.py on machines without a GPU.

What it does: checks its command line as trtexec does (an option it does not know, or a missing value,
prints "Unknown option" and exits 1; a shape outside the engine's profile fails the run), parses the ONNX
file with onnx's checker (a malformed file fails as "Failed to parse onnx file"), "builds" an engine file
that records the model, precision and profile, runs --loadInputs and writes --exportOutput in trtexec's
JSON layout (6 significant digits). FP32 runs the model with ONNX Runtime; FP16 runs refimpl with the
weights, the input and every layer's output rounded to half precision (fake_half.py), an error model of
TensorRT's FP16 engine.

What it does not prove: that real trtexec accepts these files and shapes, what TensorRT's FP16 kernels
really compute (fusion and accumulation differ), or any timing: a timing run prints the recorded 8.2 Nano
summary of bench/samples with this call's command line.

FAKE_TRTEXEC=fail: the failed-build sample, exit 1. FAKE_TRTEXEC=wrong: one year added to every age.
FAKE_TRTEXEC=bf16: the "FP16" engine rounds to 8 significant bits (bfloat16) instead of 11.
"""
import json
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, "..", "..", "bench", "samples")
NAMES = ("age", "gender", "age_final", "gender_final", "age_virtual", "gender_virtual", "age_low", "gender_low")
TAG = "[TensorRT v8201]"

# Options of trtexec 8.2 (its --help, from TensorRT's samples/common/sampleOptions.cpp): those taking a
# value, and the switches; the later versions' additions (--memPoolSize, --skipInference, ...) are left
# out. Anything else is refused, as trtexec's main() does after AllOptions::parse. A subset: an option
# real 8.2 knows but this list lacks would be refused here; only a run on the board proves a command line.
VALUE_OPTIONS = {
    "onnx", "uff", "model", "deploy", "output", "uffInput",
    "maxBatch", "minShapes", "optShapes", "maxShapes", "minShapesCalib", "optShapesCalib", "maxShapesCalib",
    "inputIOFormats", "outputIOFormats", "workspace", "profilingVerbosity", "minTiming", "avgTiming",
    "calib", "saveEngine", "loadEngine", "tacticSources", "timingCacheFile", "sparsity",
    "batch", "shapes", "loadInputs", "iterations", "warmUp", "duration", "sleepTime", "idleTime", "streams",
    "avgRuns", "percentile", "exportTimes", "exportOutput", "exportProfile", "exportLayerInfo",
    "device", "useDLACore", "plugins",
}
SWITCHES = {
    "explicitBatch", "noTF32", "fp16", "int8", "best", "directIO", "refit", "safe", "restricted", "buildOnly",
    "noBuilderCache", "allowGPUFallback", "exposeDMA", "noDataTransfers", "useManagedMemory", "uffNHWC",
    "useSpinWait", "threads", "useCudaGraph", "timeDeserialize", "timeRefit", "separateProfileRun",
    "dumpOutput", "dumpProfile", "dumpLayerInfo", "dumpRefit", "verbose", "help",
}


class Refused(Exception):
    """trtexec prints these lines (and the help, left out here) and fails."""


def parse_options(argv):
    """['--onnx=a', '--fp16'] -> {'onnx': 'a', 'fp16': True}, or Refused with trtexec's error lines."""
    options, unknown = {}, []
    for arg in argv:
        name, has_value, value = arg[2:].partition("=") if arg.startswith("--") else (arg, False, "")
        if not arg.startswith("--") or name not in VALUE_OPTIONS | SWITCHES or (name in VALUE_OPTIONS and not value):
            unknown.append(f"Unknown option: {arg.partition('=')[0]} {value}")
        elif name in SWITCHES and has_value and value not in ("", "1", "true"):
            unknown.append(f"Unknown option: --{name} {value}")
        else:
            options[name] = value if name in VALUE_OPTIONS else True
    if unknown:
        raise Refused(unknown)
    return options


def batch_of(shape_option, what):
    m = re.fullmatch(r"image:(\d+)x3x64x64", shape_option or "")
    if not m:
        raise Refused([f"{what} {shape_option!r}: expected image:Nx3x64x64"])
    return int(m.group(1))


def build(options):
    """The engine: {'onnx', 'fp16', 'min', 'max'}; the model is checked as the ONNX parser would."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load(options["onnx"]), full_check=True)
    except Exception as exc:                                  # onnx raises several types for a bad file
        raise Refused([f"[TRT] ModelImporter: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                       "Failed to parse onnx file", "Parsing model failed", "Failed to create engine from model.",
                       "Engine set up failed"])
    shapes = options.get("shapes")
    engine = {"onnx": options["onnx"], "fp16": "fp16" in options,
              "min": batch_of(options.get("minShapes", shapes), "--minShapes"),
              "max": batch_of(options.get("maxShapes", shapes), "--maxShapes")}
    if "saveEngine" in options:
        with open(options["saveEngine"], "w") as f:
            json.dump(engine, f)
    return engine


def load_engine(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        raise Refused([f"Error opening engine file: {path}", "Failed to create engine from model.",
                       "Engine set up failed"]) from None


def infer(engine, x, mode):
    """The engine's eight outputs for x: ONNX Runtime in FP32, refimpl rounded at every layer in FP16."""
    if engine["fp16"]:
        import refimpl
        from fake_half import half_precision_forward, round_half, round_significant

        rounding = round_significant(8) if mode == "bf16" else round_half
        outputs = half_precision_forward(refimpl.load(engine["onnx"]), x, rounding)
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(engine["onnx"], providers=["CPUExecutionProvider"])
        outputs = dict(zip(NAMES, session.run(list(NAMES), {"image": x})))
    if mode == "wrong":
        outputs = {k: v + 1.0 if k.startswith("age") else v for k, v in outputs.items()}
    return outputs


def write_export_output(path, outputs, batch):
    with open(path, "w") as f:
        f.write("[\n")
        for i, name in enumerate(NAMES):
            values = ", ".join(f"{float(e):.6g}" for e in outputs[name].ravel())
            f.write(f"{'  ' if i == 0 else ', '}{{ \"name\" : \"{name}\"\n  , \"dimensions\" : \"{batch}x1\"\n"
                    f"  , \"values\" : [ {values} ]\n  }}\n")
        f.write("]\n")


def run(options, mode):
    engine = build(options) if "onnx" in options else load_engine(options["loadEngine"])
    batch = batch_of(options.get("shapes"), "--shapes")
    if not engine["min"] <= batch <= engine["max"]:
        raise Refused([f"Inference shape for image is out of range of optimization profile 0: {batch}x3x64x64 "
                       f"not in [{engine['min']}x3x64x64, {engine['max']}x3x64x64]", "Inference set up failed"])
    if "loadInputs" in options:
        data = np.fromfile(options["loadInputs"].split(":", 1)[1], np.float32)
        if data.size != batch * 3 * 64 * 64:
            raise Refused([f"Cannot read input file: {data.size * 4} bytes, expected {batch * 3 * 64 * 64 * 4}"])
        x = data.reshape(batch, 3, 64, 64)
    else:
        x = np.random.default_rng(0).random((batch, 3, 64, 64), dtype=np.float32)
    if "exportOutput" in options:
        write_export_output(options["exportOutput"], infer(engine, x, mode), batch)
        return "[I] TensorRT version: 8.2.1\n[I] Starting inference\n"
    with open(os.path.join(SAMPLES, "trtexec-8.2-jetson-nano-fp16.txt")) as f:   # the recorded timing summary
        return "".join(f.readlines()[1:-1])


def main(argv):
    mode = os.environ.get("FAKE_TRTEXEC", "")
    command = " ".join(["trtexec", *argv])
    if mode == "fail":
        with open(os.path.join(SAMPLES, "trtexec-8.2-failed-build.txt")) as f:
            sys.stdout.write(f.read())
        return 1
    print(f"&&&& RUNNING TensorRT.trtexec {TAG} # {command}")
    try:
        options = parse_options(argv)
        if "onnx" not in options and "loadEngine" not in options:
            raise Refused(["Model missing or format not supported"])
        sys.stdout.write(run(options, mode))
    except Refused as refused:
        for line in refused.args[0]:
            print(f"[E] {line}")
        print(f"&&&& FAILED TensorRT.trtexec {TAG} # {command}")
        return 1
    print(f"&&&& PASSED TensorRT.trtexec {TAG} # {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
