"""Speed of the kernels backends against ONNX Runtime and the NumPy reference, all measured in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.kernels_speed [--quick] [--model PATH]

For each (batch, threads): median ms per image, images/s, GFLOP/s (97.0 MFLOP per image), share of
the single-core float32 peak (times the thread count), and the ratio to ONNX Runtime's CPU provider
(default graph optimizations, intra_op_num_threads = threads) running the same ONNX file. The runtimes
are timed in rounds (a block of calls each per round, the first call of a block untimed), so a background load
slows them alike; warm-up calls are outside the timings. The peak is a 2048^3 float32 matrix product through numpy's BLAS, in a subprocess
with OPENBLAS_NUM_THREADS=1 (and 2). Numba's first-call cost is measured in subprocesses: with an empty
cache (compilation) and with the cache just written (load). Every backend is checked against the golden
vectors before it is timed.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

import kernels
import refimpl
from refimpl import golden

MFLOP_PER_IMAGE = 97.0
CONFIGS = [(1, 1), (1, 2), (64, 1), (64, 2)]          # (batch, threads)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PEAK_CODE = """
import time, numpy as np
n = 2048
a = np.random.default_rng(0).random((n, n), dtype=np.float32); b = a.copy()
a @ b
ts = []
for _ in range(7):
    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
print(2 * n ** 3 / float(np.median(ts)) / 1e9)
"""

FIRST_CALL_CODE = """
import time, sys
t0 = time.perf_counter()
import kernels
m = kernels.load(sys.argv[1], backend="numba", threads=int(sys.argv[2]))
print(time.perf_counter() - t0, m.first_call_seconds)
"""


def blas_peak(threads):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", PEAK_CODE], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def numba_first_call(model_path, threads):
    """(seconds with an empty numba cache, seconds with a warm cache): import + load + warm-up forward."""
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", FIRST_CALL_CODE, model_path, str(threads)], env=env,
                                 capture_output=True, text=True, cwd=ROOT, check=True)
            runs.append(float(out.stdout.split()[0]))
    return runs


def machine_line():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
        simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "asimd") if f in flags]
    except (OSError, StopIteration):
        simd = []
    return f"{cpu}, {os.cpu_count()} CPUs, SIMD {'/'.join(simd) or '?'}, {platform.system()} {platform.machine()}"


def background_load():
    """A note on concurrent load: the 1-minute load average, and a training run if one is visible."""
    note = f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    try:
        ps = subprocess.run(["ps", "-eo", "pcpu,args"], capture_output=True, text=True).stdout
        busy = [line.strip() for line in ps.splitlines()[1:]
                if "training" in line and "python" in line and "ps -eo" not in line]
        if busy:
            note += f"; CONCURRENT: {len(busy)} training process(es) running, e.g. '{busy[0][:80]}'"
    except OSError:
        pass
    return note


def blas_threads(n):
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(limits=n, user_api="blas")
    except ImportError:  # the reference's BLAS then uses its default thread count
        import contextlib
        return contextlib.nullcontext()


def ort_runner(model_path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x})


def timed_round_robin(runners, x, rounds, block, warmup=3):
    """{name: [seconds per call]}: in each round every runner makes `block` calls in a row and all but the first
    are timed. Rounds spread a background load over the runners alike; the untimed first call keeps one runner's
    leftovers (ONNX Runtime's worker threads spin for a while after a run) out of the next runner's times."""
    for run in runners.values():
        for _ in range(warmup):
            run(x)
    samples = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            run(x)
            for _ in range(block - 1):
                t0 = time.perf_counter()
                run(x)
                samples[name].append(time.perf_counter() - t0)
    return samples


def check_golden(name, forward):
    x, expected, _ = golden.load_golden()
    reports = golden.check_outputs(forward(x), expected)
    if reports:
        raise SystemExit(f"{name} does not match the golden vectors:\n" + "\n".join(reports))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=refimpl.DEFAULT_WEIGHTS)
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run, noisier numbers)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)

    print(f"machine: {machine_line()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}")
    print(f"background: {background_load()}")
    peak1, peak2 = blas_peak(1), blas_peak(2)
    print(f"float32 peak (numpy 2048^3 matmul): {peak1:.1f} GFLOP/s on 1 thread, {peak2:.1f} on 2 threads; "
          f"shares below are of {peak1:.1f} x threads")

    backends = kernels.available_backends()
    missing = kernels.unavailable_reasons()
    for name, why in missing.items():
        print(f"backend {name}: UNAVAILABLE ({why})")
    models = {}
    for name in backends:
        models[name] = kernels.load(args.model, backend=name, threads=1)
        print(f"backend {name}: {models[name].backend.ISA}, threads via {models[name].backend.THREADING}; "
              f"load + warm-up {models[name].first_call_seconds:.2f} s")
    if models:
        plan = next(iter(models.values())).plan
        executed = sum(plan.executed_flops(i) for i in range(len(plan.stages))) / 1e6
        print(f"GFLOP/s below count the network's {MFLOP_PER_IMAGE} MFLOP per image (direct convolution). The kernels "
              f"backends run {sum(plan.algos)} of {len(plan.stages)} stages as Winograd F(2x2, 3x3) and execute "
              f"{executed:.1f} MFLOP of multiply-adds per image, so their effective rate can pass the matmul peak.")
    if "numba" in backends:
        cold, warm = numba_first_call(args.model, 2)
        print(f"numba first call (import + load + warm-up forward, threads=2, subprocess): {cold:.1f} s with an "
              f"empty cache (compilation), {warm:.2f} s with the cache written")
    reference = refimpl.load(args.model)
    if args.model == refimpl.DEFAULT_WEIGHTS:
        check_golden("refimpl", reference.forward)
        for name, model in models.items():
            check_golden(name, model.forward)
        print("correctness: every backend matches weights/golden.npz within the contract tolerances")

    rng = np.random.default_rng(0)
    rows = []
    header = (f"{'batch':>5} {'thr':>3} {'runtime':<12} {'ms/img':>8} {'img/s':>8} {'GFLOP/s':>8} {'%peak':>6} "
              f"{'vs ORT':>7}")
    print("\n" + header + "\n" + "-" * len(header))
    for batch, threads in CONFIGS:
        x = rng.random((batch, 3, 64, 64), dtype=np.float32)
        runners = {"onnxruntime": ort_runner(args.model, threads)}
        for name, model in models.items():
            model.set_threads(threads)
            runners[name] = model.forward
        rounds, block = (30, 11) if batch == 1 else (10, 4)
        rounds = rounds // (5 if args.quick else 1)
        with blas_threads(threads):
            samples = timed_round_robin(runners, x, rounds, block)
            if batch == 64:                                  # the NumPy reference: fewer calls, batch 64 only
                ref = timed_round_robin({"refimpl": reference.forward, "onnxruntime": runners["onnxruntime"]}, x,
                                        max(2, rounds // 3), 3, warmup=1)
                samples["refimpl (NumPy)"] = ref["refimpl"]
        ort_median = float(np.median(samples["onnxruntime"]))
        for name, times in samples.items():
            t = float(np.median(times)) / batch
            gflops = MFLOP_PER_IMAGE * 1e6 / t / 1e9
            row = {"batch": batch, "threads": threads, "runtime": name, "ms_per_image": t * 1e3,
                   "images_per_s": 1 / t, "gflops": gflops, "share_of_peak": gflops / (peak1 * threads),
                   "vs_onnxruntime": t * batch / ort_median, "calls": len(times)}
            rows.append(row)
            print(f"{batch:>5} {threads:>3} {name:<12} {row['ms_per_image']:>8.3f} {row['images_per_s']:>8.0f} "
                  f"{gflops:>8.1f} {100 * row['share_of_peak']:>5.0f}% {row['vs_onnxruntime']:>6.2f}x")
    print("\n(vs ORT: time relative to ONNX Runtime in the same rounds; < 1 is faster. The kernels backends run threads"
          " over the batch, or at batch 1 over each stage's output rows.)")

    best = min((r for r in rows if r["batch"] == 1 and r["threads"] == 1 and r["runtime"] in backends),
               key=lambda r: r["ms_per_image"], default=None)
    if best:
        print(f"batch 1, 1 thread: fastest backend {best['runtime']} at {best['vs_onnxruntime']:.2f}x ONNX Runtime's "
              f"latency ({'PASS' if best['vs_onnxruntime'] <= 1.0 else 'FAIL'} <= 1.0x)")
    fast64 = [r for r in rows if r["batch"] == 64 and r["threads"] == 2 and r["runtime"] in backends]
    for r in fast64:
        print(f"batch 64, 2 threads: {r['runtime']} throughput {1 / r['vs_onnxruntime']:.2f}x ONNX Runtime's "
              f"({'PASS' if r['vs_onnxruntime'] <= 1.0 else 'FAIL'} >= 1.0x)")
    ref_rows = [r for r in rows if r["runtime"].startswith("refimpl")]
    for r in ref_rows:
        print(f"batch 64, {r['threads']} thread(s): NumPy reference at {r['vs_onnxruntime']:.1f}x ONNX Runtime's time "
              f"({'PASS' if r['vs_onnxruntime'] <= 20 else 'FAIL'} within 20x)")
    print(f"background at the end: {background_load()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_line(), "peak_gflops_1": peak1, "peak_gflops_2": peak2, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
