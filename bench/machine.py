"""What machine a number was measured on: CPU, cores, SIMD, packages, BLAS settings, load, and its peak.

Everything here reads; nothing changes the environment. In particular OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are only detected and reported: where they are set, numpy's BLAS runs an older
kernel and the measured peak is lower, so the report says so and how to run without them.
"""
import os
import platform
import time

import numpy as np

PEAK_N = 2048                       # the peak is an N^3 float32 matrix product: 2 N^3 FLOP
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
PACKAGES = ("numpy", "onnx", "onnxruntime", "numba", "llvmlite", "Cython", "threadpoolctl", "tensorrt",
            "pytest-benchmark", "matplotlib")

# /proc/cpuinfo "CPU part" on Arm, for boards whose kernel prints no model name (the Nano's does not)
ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0c": "Neoverse-N1", "0xd40": "Neoverse-V1", "0xd49": "Neoverse-N2", "0x004": "Carmel"}
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "amx_tile", "asimd", "neon", "fphp", "asimdhp", "sve", "sve2")


def _cpuinfo(path="/proc/cpuinfo"):
    """{key: value} of the first processor block (and flags/Features), or {} where there is no /proc."""
    info = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    if info:
                        break
                    continue
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_name(info=None):
    info = _cpuinfo() if info is None else info
    name = info.get("model name") or info.get("Hardware") or ""
    part = info.get("CPU part", "").lower()
    if part in ARM_PARTS:
        name = f"{name} ({ARM_PARTS[part]})".strip() if name and ARM_PARTS[part] not in name else ARM_PARTS[part]
    return name or platform.processor() or platform.machine()


def simd(info=None):
    """The SIMD extensions the OS reports for this CPU (x86 flags or Arm Features), in a fixed order."""
    info = _cpuinfo() if info is None else info
    flags = set((info.get("flags") or info.get("Features") or "").split())
    found = [f for f in SIMD_FLAGS if f in flags]
    if not found and platform.machine() in ("aarch64", "arm64"):
        found = ["asimd (assumed: aarch64)"]
    return found


def cores():
    """(CPUs this process may use, CPUs in the machine)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return usable, os.cpu_count() or usable


def package_versions(names=PACKAGES):
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def blas_env(environ=None):
    """{variable: value} for the OpenBLAS settings that are set in the environment (empty when none is)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in BLAS_ENV if name in environ}


def blas_info():
    """numpy's BLAS as threadpoolctl sees it (library, version, kernel architecture, threads), or a reason."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"note": "threadpoolctl not installed: BLAS kernel and thread count unknown"}
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            return {k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
    return {"note": "no BLAS library loaded"}


def load_average():
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def cpu_snapshot():
    """(jiffies all CPUs were busy, jiffies in all, jiffies this process used), or None where there is no /proc.

    Two snapshots give the share of the machine that *other* processes used in between (others_busy)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            mine = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)            # idle + iowait
    total = sum(fields[:8])                                             # guest time is already in user
    return total - idle, total, int(mine[11]) + int(mine[12])          # utime + stime


def others_busy(before, after):
    """Share (0..1) of all cores' time that other processes kept busy between two cpu_snapshot()s."""
    if not before or not after or after[1] <= before[1]:
        return None
    busy, total, mine = (a - b for a, b in zip(after, before))
    return max(0.0, min(1.0, (busy - mine) / total))


def describe():
    """Everything the report's header and the JSON's 'machine' hold."""
    info = _cpuinfo()
    usable, total = cores()
    return {"cpu": cpu_name(info), "arch": platform.machine(), "cores": usable, "cores_total": total,
            "simd": simd(info), "os": f"{platform.system()} {platform.release()}", "packages": package_versions(),
            "blas": blas_info(), "blas_env": blas_env(), "load_average": load_average(), "hostname": platform.node()}


def can_limit_threads():
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


_CONTROLLER = []


def blas_threads(threads):
    """A context manager that limits numpy's BLAS to `threads`, or None when threadpoolctl is missing.

    One ThreadpoolController for the process: creating one scans the loaded libraries (about 2 ms),
    entering its limit costs about 10 us, so it can wrap every timed call of the reference."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=threads, user_api="blas")


def measure_peak(threads=1, n=PEAK_N, repeat=5):
    """Float32 GFLOP/s per core of an n^3 numpy matrix product, best of `repeat` runs after one warm-up.

    The best, not the median: a peak is what a core can do, and other processes only ever lower it.
    Two clocks: the CPU time this process got (process_time, summed over its threads, so a per-core
    figure even where threadpoolctl is missing and BLAS threads are uncontrolled) and the wall clock.
    On a quiet machine they agree; where other processes compete, the wall clock includes the time we
    were preempted, and the CPU-time figure is still the core's rate, so %peak uses it.
    -> {"gflops" (CPU time), "gflops_wall", "threads", "n", "repeat", "threads_controlled", "seconds"}"""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    limit = blas_threads(threads)
    wall, cpu = [], []
    with limit if limit is not None else _nothing():
        a @ b
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            a @ b
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
    flop = 2.0 * n ** 3
    return {"gflops": flop / max(min(cpu), 1e-9) / 1e9, "gflops_wall": flop / min(wall) / 1e9 / threads,
            "threads": threads, "n": n, "repeat": repeat, "threads_controlled": limit is not None,
            "seconds": wall, "cpu_seconds": cpu}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
