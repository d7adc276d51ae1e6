"""A stand-in for TensorRT's trtexec, for tests/test_bench_tensorrt.py on machines without a GPU.

It accepts the arguments bench.tensorrt_backend passes, "builds" an engine file that names the ONNX
model, runs the model with ONNX Runtime on --loadInputs (FP16: outputs rounded to float16), writes
--exportOutput in trtexec's JSON layout (6 significant digits) and prints the recorded TensorRT 8.2
summary of bench/samples. FAKE_TRTEXEC=fail prints the failed-build sample and exits 1;
FAKE_TRTEXEC=wrong adds one year to every age.
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, "..", "..", "bench", "samples")
NAMES = ("age", "gender", "age_final", "gender_final", "age_virtual", "gender_virtual", "age_low", "gender_low")


def main(argv):
    args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], True) for a in argv)
    mode = os.environ.get("FAKE_TRTEXEC", "")
    if mode == "fail":
        sys.stdout.write(open(os.path.join(SAMPLES, "trtexec-8.2-failed-build.txt")).read())
        return 1
    if "onnx" in args:
        model, fp16 = args["onnx"], "fp16" in args
        if "saveEngine" in args:
            with open(args["saveEngine"], "w") as f:
                json.dump({"onnx": model, "fp16": fp16}, f)
    else:
        with open(args["loadEngine"]) as f:
            engine = json.load(f)
        model, fp16 = engine["onnx"], engine["fp16"]
    batch = int(args["shapes"].split(":")[1].split("x")[0])
    if "loadInputs" in args:
        x = np.fromfile(args["loadInputs"].split(":", 1)[1], np.float32).reshape(batch, 3, 64, 64)
    else:
        x = np.random.default_rng(0).random((batch, 3, 64, 64), dtype=np.float32)
    if "exportOutput" in args:
        import onnxruntime as ort

        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        outputs = dict(zip(NAMES, session.run(list(NAMES), {"image": x})))
        with open(args["exportOutput"], "w") as f:
            f.write("[\n")
            for i, name in enumerate(NAMES):
                v = outputs[name]
                if fp16:
                    v = v.astype(np.float16).astype(np.float32)
                if mode == "wrong" and name.startswith("age"):
                    v = v + 1.0
                values = ", ".join(f"{float(e):.6g}" for e in v.ravel())
                f.write(f"{'  ' if i == 0 else ', '}{{ \"name\" : \"{name}\"\n  , \"dimensions\" : \"{batch}x1\"\n"
                        f"  , \"values\" : [ {values} ]\n  }}\n")
            f.write("]\n")
    sys.stdout.write(open(os.path.join(SAMPLES, "trtexec-8.2-jetson-nano-fp16.txt")).read())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
