"""The benchmark kit itself: its arithmetic, verdicts, machine description, JSON, compare, plot, and a tiny
`python -m bench --quick` run end to end (a small budget, so the whole file takes seconds)."""
import json
import sys

import numpy as np
import pytest

from bench import __main__ as cli
from bench import backends as bk
from bench import machine, report
from bench import run as bench_run
from refimpl import DEFAULT_WEIGHTS as MODEL
from refimpl import golden

FLOPS = 97_002_224            # the spec's 97.0 MFLOP per image


# -- arithmetic and verdicts ------------------------------------------------------------------------------------
def test_stats_per_call_and_per_image():
    s = bench_run.stats([0.010, 0.012, 0.011, 0.030, 0.010], batch=8)
    assert s["n"] == 5
    assert s["ms_per_call_median"] == pytest.approx(11.0)
    assert s["ms_per_image_median"] == pytest.approx(11.0 / 8)
    assert s["ms_per_call_p90"] == pytest.approx(np.percentile([10, 12, 11, 30, 10], 90))
    assert s["images_per_second"] == pytest.approx(8 / 0.011)


@pytest.mark.parametrize("batch, median, p90, expected", [
    (1, 10.0, 20.0, "real-time"),
    (1, 1000 / 30, 1000 / 30, "real-time"),          # exactly 30 images per second counts
    (1, 20.0, 40.0, "median only"),                  # typical call in time, one in ten or more too slow
    (1, 34.0, 35.0, "no"),
    (1, 34.0, None, "no"),
    (8, 1.0, 2.0, None),                             # a throughput, not a latency: no verdict
])
def test_realtime_verdict(batch, median, p90, expected):
    assert bench_run.verdict(batch, median, p90) == expected


def test_nano_projection_matches_the_arithmetic_of_the_issue():
    # at 100% of peak: 97.0 MFLOP / (8 FLOP x 1.43 GHz) = 8.5 ms on one core, 2.1 ms on four
    eff, ms1 = bench_run.nano_projection(gflops=100.0, peak_gflops_per_core=100.0, threads=1, flops_per_image=FLOPS)
    _, ms4 = bench_run.nano_projection(100.0, 100.0, 1, FLOPS, cores=4)
    assert eff == 1.0 and round(ms1, 1) == 8.5 and round(ms4, 1) == 2.1
    eff, ms1 = bench_run.nano_projection(25.0, 100.0, 1, FLOPS)
    assert eff == 0.25 and ms1 == pytest.approx(4 * 8.4793, rel=1e-3)
    eff, ms1 = bench_run.nano_projection(120.0, 100.0, 1, FLOPS)        # beat the BLAS here: capped at the A57 peak
    assert eff == 1.2 and round(ms1, 1) == 8.5


def test_tiled_cycles_the_golden_rows():
    a = np.arange(6)[:, None]
    assert bench_run.tiled(a, 8).ravel().tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    assert bench_run.tiled(a, 1).ravel().tolist() == [0]


# -- the machine -------------------------------------------------------------------------------------------------
def test_blas_env_is_detected_not_changed():
    env = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "PATH": "/bin"}
    assert machine.blas_env(env) == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}
    assert machine.blas_env({}) == {}


NANO_CPUINFO = """processor\t: 0
model name\t: ARMv8 Processor rev 1 (v8l)
BogoMIPS\t: 38.40
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd07
CPU revision\t: 1

processor\t: 1
"""


def test_cpu_name_and_simd_on_a_nano(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(NANO_CPUINFO)
    info = machine._cpuinfo(str(path))
    assert machine.cpu_name(info) == "ARMv8 Processor rev 1 (v8l) (Cortex-A57)"
    assert machine.simd(info) == ["asimd"]


def test_others_busy_subtracts_our_own_time():
    # 200 jiffies elapsed on all cores; 150 busy, 50 of them ours: others used 100 / 200
    assert machine.others_busy((1000, 5000, 10), (1150, 5200, 60)) == 0.5
    assert machine.others_busy(None, (1, 2, 3)) is None
    snap = machine.cpu_snapshot()
    assert snap is None or (len(snap) == 3 and snap[0] <= snap[1])


def test_header_says_when_timings_are_disturbed():
    quiet = synthetic()
    quiet["machine"]["others_busy"] = 0.02
    assert "other processes kept 2% of this machine's 2 cores busy: undisturbed" in "\n".join(report.header(quiet))
    busy = synthetic()
    busy["machine"]["others_busy"] = 0.55
    assert "kept 55% of this machine's 2 cores busy: TIMINGS ARE DISTURBED" in "\n".join(report.header(busy))
    for row in busy["results"]:                 # busy with niced work that left us a whole core: undisturbed
        row["cpu_per_wall"] = 0.98
    assert "got 0.98 CPU seconds per second while timing one-thread rows (1.00 = a core to itself): undisturbed" \
        in "\n".join(report.header(busy))
    for row in busy["results"]:
        row["cpu_per_wall"] = 0.5
    assert "(1.00 = a core to itself): TIMINGS ARE DISTURBED" in "\n".join(report.header(busy))


def test_peak_is_measured_per_core():
    peak = machine.measure_peak(threads=1, n=128, repeat=2)
    assert peak["n"] == 128 and len(peak["seconds"]) == len(peak["cpu_seconds"]) == 2
    flop = 2.0 * 128 ** 3                       # an n^3 matrix product: n^3 multiply-adds
    assert peak["gflops"] == pytest.approx(flop / max(min(peak["cpu_seconds"]), 1e-9) / 1e9)    # the best CPU time
    assert peak["gflops_wall"] == pytest.approx(flop / min(peak["seconds"]) / 1e9)


# -- a synthetic result for the formatting, JSON and compare tests ----------------------------------------------
def synthetic(cpu="Test CPU", blas_env=None, scale=1.0):
    rows = []
    for backend, ms in (("numpy", 40.0), ("numba", 2.0), ("onnxruntime", 1.0)):
        for batch in (1, 8):
            row = {"backend": backend, "label": bk.LABELS[backend], "batch": batch, "threads": 1, "device": "cpu",
                   "cpu": cpu, "verified": "ok", "max_abs_error": {n: 1e-6 for n in golden.spec.OUTPUT_NAMES},
                   "mismatches": [], "first_call_ms": 1.0}
            row.update(bench_run.stats([scale * ms * 1e-3 * batch] * 5, batch))
            bench_run._derive(row, FLOPS, 100.0)
            rows.append(row)
    bench_run._ratios(rows)
    result = {"schema": bench_run.SCHEMA, "created": "2026-11-28T08:00:00+00:00", "command": "python -m bench",
              "quick": False,
              "machine": {"cpu": cpu, "arch": "x86_64", "cores": 2, "cores_total": 2, "simd": ["avx2", "fma"],
                          "os": "Linux", "packages": {"python": "3.11", "numpy": "2.4"}, "hostname": "h",
                          "blas": {"internal_api": "openblas", "version": "0.3", "architecture": "Haswell"},
                          "blas_env": blas_env or {}, "load_average": [0.1, 0.1, 0.1]},
              "peak": {"gflops": 100.0, "gflops_wall": 100.0, "threads": 1, "n": 2048, "repeat": 5,
                       "threads_controlled": True},
              "model": {"path": MODEL, "sha256": "ab" * 32, "flops_per_image": FLOPS},
              "verification": {"source": "golden", "note": "weights/golden.npz", "tolerances": {"age": 1e-3,
                                                                                                 "gender": 1e-5}},
              "options": {"batches": [1, 8], "threads": [1], "skip": {}},
              "backends": {b: {"label": bk.LABELS[b], "available": True} for b in ("numpy", "numba", "onnxruntime")},
              "results": rows, "notes": [], "elapsed_s": 1.0}
    result["backends"]["tensorrt-fp32"] = {"label": bk.LABELS["tensorrt-fp32"], "available": False,
                                           "why": "no tensorrt package and no trtexec on PATH"}
    result["projection"] = bench_run.projection(result, FLOPS, 100.0)
    return result


def test_report_formatting():
    text = report.format_report(synthetic())
    assert "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset" in text
    assert "tensorrt fp32     not available: no tensorrt package and no trtexec on PATH" in text
    line = next(l for l in text.splitlines() if l.startswith("numba (kernels)") and l.split()[3] == "1")
    # numba, 1 thread, batch 1: 2.00 ms, 500 img/s, 48.5 GFLOP/s, 49% of a 100 GFLOP/s peak, 2x ORT, real time
    assert line.split()[4:] == ["2.00", "2.00", "500", "48.5", "49", "2.00x", "5", "real-time"]
    assert "numpy (refimpl)   NOT real time: 40.0 ms per image" in text
    assert "PROJECTION" in text and "not a measurement" in text and "at best 8.5 ms per image on one core and " \
                                                                    "2.1 ms on four" in text


def test_header_names_the_openblas_setting_and_how_to_avoid_it():
    text = "\n".join(report.header(synthetic(blas_env={"OPENBLAS_CORETYPE": "Haswell"})))
    assert "MEASURED UNDER OPENBLAS_CORETYPE=Haswell" in text
    assert "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench" in text


def test_json_round_trip(tmp_path):
    result = synthetic()
    path = tmp_path / "run.json"
    report.save_json(result, path)
    back = report.load_json(path)
    assert back["results"] == json.loads(json.dumps(result["results"]))
    for row in back["results"]:               # conditions next to every number
        assert {"backend", "batch", "threads", "cpu", "ms_per_image_median", "ms_per_image_p90"} <= set(row)
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "other"}')
    with pytest.raises(ValueError, match="not a python -m bench --json file"):
        report.load_json(bad)


def test_compare_prints_the_change_and_what_differs():
    a = synthetic()
    b = synthetic(cpu="Other CPU", blas_env={"OPENBLAS_CORETYPE": "Haswell"}, scale=0.5)
    b["results"] = [r for r in b["results"] if not (r["backend"] == "numpy" and r["batch"] == 8)]
    text = report.format_compare(a, b, "a.json", "b.json")
    assert "CPU: Test CPU -> Other CPU" in text and "OpenBLAS settings: unset -> {'OPENBLAS_CORETYPE': 'Haswell'}" \
        in text
    numba = next(l for l in text.splitlines() if l.startswith("numba (kernels)") and l.split()[3] == "8")
    assert "-50.0%" in numba
    assert any("only in A" in l for l in text.splitlines() if l.startswith("numpy"))


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "latency.png"
    report.plot(synthetic(), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- end to end ---------------------------------------------------------------------------------------------------
@pytest.fixture
def no_trt(monkeypatch, tmp_path):
    from bench import tensorrt_backend

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(tensorrt_backend, "find_trtexec", lambda: None)


TINY = ["--quick", "--budget", "0.03", "--batches", "1,2", "--threads", "1", "--peak-size", "256", "--no-progress"]


def test_quick_run_smoke(tmp_path, capsys, no_trt):
    pytest.importorskip("onnxruntime")
    out_json, out_png = tmp_path / "q.json", tmp_path / "q.png"
    # the kit, not the kernels (their own tests check them): the reference, ONNX Runtime and an absent TensorRT
    argv = TINY + ["--json", str(out_json), "--backends", "numpy,onnxruntime,tensorrt-fp32"]
    if "matplotlib" in sys.modules or _has("matplotlib"):
        argv += ["--plot", str(out_png)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith("agegender-kit benchmark")
    assert "tensorrt fp32     not available: no tensorrt package and no trtexec on PATH" in text
    result = report.load_json(out_json)
    verified = {r["backend"] for r in result["results"] if r["verified"] == "ok"}
    available = {n for n, e in result["backends"].items() if e.get("available")}
    assert verified == available == {"numpy", "onnxruntime"}
    assert result["model"]["flops_per_image"] == FLOPS          # counted from the graph: the spec's 97.0 MFLOP
    for row in result["results"]:
        assert row["n"] >= 3 and row["ms_per_call_min"] <= row["ms_per_call_median"] <= row["ms_per_call_p90"]
        assert row["ms_per_image_median"] == pytest.approx(row["ms_per_call_median"] / row["batch"])
        assert row["gflops"] == pytest.approx(FLOPS / (row["ms_per_image_median"] * 1e-3) / 1e9)
    onnx = [r for r in result["results"] if r["backend"] == "onnxruntime"]
    assert all(r["ratio_to_ort"] == pytest.approx(1.0) for r in onnx)
    if "--plot" in argv:
        assert out_png.exists()


def _has(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


class WrongRunner(bk.Runner):
    """ONNX Runtime's outputs with every age 1/16 year off, posing as the numba backend (1/16 is exact in
    float32 at these ages, so the reported error is 0.0625 on every CPU; 0.01 rounds to 0.00999 or 0.0100)."""
    name = "numba"

    def __init__(self):
        super().__init__(threads=1)
        self.ort = bk.OnnxRuntimeRunner(MODEL, 1)

    def run(self, x):
        out = {n: v.copy() for n, v in self.ort.run(x).items()}
        out["age"] += 0.0625                       # 62 times the tolerance
        return out


def test_a_backend_that_disagrees_is_reported_and_not_timed(monkeypatch, capsys, no_trt):
    pytest.importorskip("onnxruntime")
    real = bk.make_runner
    monkeypatch.setattr(bk, "make_runner", lambda name, *a, **k: WrongRunner() if name == "numba" else real(name, *a, **k))
    assert cli.main(TINY + ["--backends", "numba,onnxruntime"]) == 1
    text = capsys.readouterr().out
    assert "numba (kernels)   FAILED" in text and "age [1, 1]: max abs error 0.0625" in text
    assert "FAILED verification: not timed" in text


def test_missing_kernels_give_a_reason(monkeypatch, capsys, no_trt):
    monkeypatch.setitem(sys.modules, "kernels", None)
    assert cli.main(TINY + ["--backends", "numba,cython"]) == 0
    text = capsys.readouterr().out
    assert "numba (kernels)   not available: the kernels package does not import" in text
    assert "cython (kernels)  not available: the kernels package does not import" in text


def test_stale_golden_falls_back_to_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    x, outputs, _ = golden.load_golden()
    stale = tmp_path / "golden.npz"
    np.savez(stale, inputs=x, model_sha256=np.array("0" * 64), **outputs)
    ref = bench_run.Reference(MODEL, str(stale))
    assert ref.source == "onnxruntime" and "made from another model file" in ref.note
    xb, expected = ref.batch(3)
    assert xb.shape == (3, 3, 64, 64) and golden.check_outputs(expected, {k: v[:3] for k, v in outputs.items()}) == []


def test_compare_cli(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    report.save_json(synthetic(), a)
    report.save_json(synthetic(scale=2.0), b)
    assert cli.main(["--compare", str(a), str(b)]) == 0
    assert "+100.0%" in capsys.readouterr().out


class FlakyRunner(WrongRunner):
    """Right on the checking call, then raises: the row must say it failed while timed, the rest carry on."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def run(self, x):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("device lost")
        return self.ort.run(x)


def test_a_backend_that_breaks_while_timed(monkeypatch, capsys, no_trt):
    pytest.importorskip("onnxruntime")
    real = bk.make_runner
    monkeypatch.setattr(bk, "make_runner", lambda name, *a, **k: FlakyRunner() if name == "numba" else real(name, *a, **k))
    assert cli.main(TINY + ["--backends", "numba,onnxruntime", "--batches", "1"]) == 1
    text = capsys.readouterr().out
    assert "FAILED while timing" in text and "while timing: RuntimeError: device lost" in text
    ort = next(l for l in text.splitlines() if l.startswith("onnxruntime") and l.split()[1] == "1")
    assert "FAILED" not in ort and float(ort.split()[3]) > 0            # the other backend still timed


# -- the "under load" row: a known background load, always stopped (issue 13, item 15) ----------------------------
def _gone(pid):
    """True when process pid has exited (reaped, or a zombie waiting for a parent that is not ours)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_busy_load_starts_one_process_each_and_always_stops_them():
    from bench.load import BusyLoad

    with BusyLoad(processes=2) as load:
        assert len(load.pids) == 2 and load.running() == 2
    assert load.running() == 0 and all(p.returncode is not None for p in load.procs)
    with pytest.raises(KeyboardInterrupt):
        with BusyLoad(processes=2) as load:
            assert load.running() == 2
            raise KeyboardInterrupt
    assert load.running() == 0


def test_busy_load_processes_end_with_their_parent(tmp_path):
    """A benchmark killed without cleanup (os._exit, SIGKILL) must not leave its load spinning."""
    import subprocess
    import time

    code = "import os, sys\nfrom bench.load import BusyLoad\nload = BusyLoad(2).__enter__()\n" \
           "print(' '.join(map(str, load.pids)), flush=True)\nos._exit(0)\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 2, done.stderr
    deadline = time.monotonic() + 20
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in pids)


class RecordingLoad:
    """bench.load.BusyLoad that remembers its instances, to check they were stopped."""
    made = []

    def __new__(cls, processes):
        from bench.load import BusyLoad

        load = BusyLoad(processes)
        cls.made.append(load)
        return load


def _under_load_backends():
    import kernels

    return [n for n in kernels.available_backends() if kernels.backend(n).thread_limit()[0] >= 2]


def test_under_load_measures_each_kernel_at_1_and_n_threads_and_stops_the_load(monkeypatch):
    backends = _under_load_backends()
    if not backends:
        pytest.skip("no kernels backend that runs 2 threads here")
    RecordingLoad.made = []
    opts = bench_run.Options(budget=0.05, min_samples=3)
    section = bench_run.under_load(backends, 2, bench_run.Reference(MODEL, golden.DEFAULT_GOLDEN), opts,
                                   busy_load=RecordingLoad)
    (load,) = RecordingLoad.made
    assert load.processes == machine.cores()[0] == section["load_processes"]
    assert section["load_running"] == load.processes and load.running() == 0
    rows = {(r["backend"], r["threads"]): r for r in section["rows"]}
    assert set(rows) == {(b, t) for b in backends for t in (1, 2)}
    for (backend, threads), row in rows.items():
        assert row["verified"] == "ok" and row["n"] >= 3
        assert row["ratio_to_1_thread"] == pytest.approx(row["ms_per_call_median"] /
                                                         rows[backend, 1]["ms_per_call_median"])
        assert row["p90_over_median"] == pytest.approx(row["ms_per_call_p90"] / row["ms_per_call_median"])
        if threads == 2:                        # every timed batch-1 call counted, split or on one thread
            assert row["row_split"]["split"] + row["row_split"]["single"] == row["n"]
    text = "\n".join(report.under_load_lines({"under_load": section}))
    assert text.startswith(f"Under load: batch 1 while {load.processes} busy-loop processes")
    for backend in backends:
        assert sum(line.startswith(f"  {bk.LABELS[backend]:<18}") for line in text.splitlines()) == 2


def test_under_load_stops_the_load_on_ctrl_c(monkeypatch):
    backends = _under_load_backends()[:1]
    if not backends:
        pytest.skip("no kernels backend that runs 2 threads here")
    RecordingLoad.made = []

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_run, "_time_interleaved", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench_run.under_load(backends, 2, bench_run.Reference(MODEL, golden.DEFAULT_GOLDEN),
                             bench_run.Options(budget=0.05, min_samples=3), busy_load=RecordingLoad)
    assert len(RecordingLoad.made) == 1 and RecordingLoad.made[0].running() == 0


def test_python_m_bench_prints_the_under_load_rows(capsys, no_trt, monkeypatch):
    backends = _under_load_backends()
    if not backends:
        pytest.skip("no kernels backend that runs 2 threads here")
    argv = TINY[:-3] + ["--threads", "1,2", "--batches", "1", "--under-load", "--no-progress", "--backends",
                        ",".join(backends)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "\nUnder load: batch 1 while" in text and "target: 2 threads within 1.5x of 1 thread" in text
    quick = cli.parse_args(["--quick"])
    assert quick.under_load is None and bench_run.quick_options().under_load is False
    assert bench_run.Options().under_load is True
