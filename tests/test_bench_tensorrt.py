"""The TensorRT path of the benchmark kit without a GPU: trtexec's output parsed from recorded samples
(bench/samples), and the whole trtexec route (build, verify, time, report) through a stand-in trtexec."""
import os
import stat
import sys

import numpy as np
import pytest

from bench import backends as bk
from bench import run as bench_run
from bench import tensorrt_backend as trt
from bench.report import format_report
from refimpl import DEFAULT_WEIGHTS as MODEL
from refimpl import golden

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, "..", "bench", "samples")


def sample(name):
    with open(os.path.join(SAMPLES, name)) as f:
        return f.read()


def test_parses_the_tensorrt_8_2_nano_log():
    s = trt.parse_trtexec(sample("trtexec-8.2-jetson-nano-fp16.txt"))
    assert s["version"] == "8.2.1" and s["passed"] is True
    assert s["throughput_qps"] == pytest.approx(415.097)
    latency = s["sections"]["Latency"]
    assert (latency["min"], latency["max"], latency["mean"], latency["median"]) == (2.27783, 4.12036, 2.39504, 2.36743)
    assert latency["percentiles"] == {90.0: 2.45117}
    assert s["sections"]["GPU Compute Time"]["median"] == pytest.approx(2.31152)
    assert s["sections"]["End-to-End Host Latency"]["percentiles"][90.0] == pytest.approx(2.46289)
    assert set(s["sections"]) == {"Latency", "End-to-End Host Latency", "Enqueue Time", "H2D Latency",
                                  "GPU Compute Time", "D2H Latency"}
    assert s["total_host_walltime_s"] == pytest.approx(3.00411) and s["total_gpu_compute_s"] == pytest.approx(2.91679)


def test_parses_the_8_x_default_percentile_as_no_p90():
    s = trt.parse_trtexec(sample("trtexec-8.2-default-percentile.txt"))
    assert s["sections"]["Latency"]["percentiles"] == {99.0: 10.2249}
    assert s["sections"]["Latency"]["median"] == pytest.approx(8.34058)


def test_parses_tensorrt_10_logs():
    s = trt.parse_trtexec(sample("trtexec-10.3-fp32-batch64.txt"))
    assert s["version"] == "10.3.0" and s["throughput_qps"] == pytest.approx(2819.79)
    assert s["sections"]["Latency"]["percentiles"] == {90.0: 0.766113}
    assert "End-to-End Host Latency" not in s["sections"]
    s = trt.parse_trtexec(sample("trtexec-10.3-default-percentiles.txt"))
    assert s["sections"]["Latency"]["percentiles"] == {90.0: 0.158691, 95.0: 0.162109, 99.0: 0.181396}
    assert s["sections"]["GPU Compute Time"]["mean"] == pytest.approx(0.0722102)


def test_a_failed_run_raises_with_its_last_lines():
    with pytest.raises(ValueError, match="(?s)no trtexec performance summary.*FAILED TensorRT.trtexec"):
        trt.parse_trtexec(sample("trtexec-8.2-failed-build.txt"))


@pytest.mark.parametrize("tag, version", [("8201", "8.2.1"), ("8601", "8.6.1"), ("8400", "8.4.0"),
                                          ("100300", "10.3.0"), ("100200", "10.2.0")])
def test_version_tags(tag, version):
    assert trt.version_from_tag(tag) == version


def test_reads_export_output_json():
    out = trt.read_export_output(sample("trtexec-export-output-batch2.json"))
    assert list(out) == ["age", "gender", "age_final", "gender_final", "age_virtual", "gender_virtual", "age_low",
                         "gender_low"]
    assert all(v.shape == (2, 1) and v.dtype == np.float32 for v in out.values())
    assert out["age"][1, 0] == pytest.approx(28.9071)


@pytest.fixture
def no_tensorrt(monkeypatch, tmp_path):
    """No tensorrt package and no trtexec anywhere, whatever this machine has."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(trt, "JETPACK_TRTEXEC", str(tmp_path / "no-trtexec"))


def test_without_tensorrt_the_row_says_why(no_tensorrt):
    assert trt.probe() == (None, trt.NOT_AVAILABLE)
    with pytest.raises(bk.Unavailable, match="no tensorrt package and no trtexec on PATH"):
        bk.make_runner("tensorrt-fp16", MODEL)


@pytest.fixture
def fake_trtexec(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "trtexec"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {os.path.join(HERE, 'data', 'fake_trtexec.py')} \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return str(exe)


def test_trtexec_route_builds_verifies_and_times(fake_trtexec, tmp_path):
    x, expected, _ = golden.load_golden()
    x, expected = x[:2], {k: v[:2] for k, v in expected.items()}
    fp32 = bk.make_runner("tensorrt-fp32", MODEL, workdir=str(tmp_path))
    assert isinstance(fp32, trt.TrtexecRunner) and fp32.external
    assert golden.check_outputs(fp32.run(x), expected, fp32.tolerance) == []
    assert fp32.built and os.path.exists(fp32.engine) and fp32.version == "8.2.1"
    median, p90, summary = fp32.measure(x, 1)
    assert (median, p90) == (2.36743, 2.45117) and summary["throughput_qps"] == pytest.approx(415.097)
    fp16 = bk.make_runner("tensorrt-fp16", MODEL)
    out = fp16.run(x)
    assert golden.check_outputs(out, expected, fp16.tolerance) == []          # within the FP16 bounds
    assert golden.check_outputs(out, expected) != []                          # but not the FP32 contract
    fp16.close()


def test_trtexec_errors_and_wrong_outputs_are_reported(fake_trtexec, monkeypatch):
    x, expected, _ = golden.load_golden()
    runner = bk.make_runner("tensorrt-fp32", MODEL)
    monkeypatch.setenv("FAKE_TRTEXEC", "wrong")
    reports = golden.check_outputs(runner.run(x), expected, runner.tolerance)
    assert any(r.startswith("age ") for r in reports)
    monkeypatch.setenv("FAKE_TRTEXEC", "fail")
    with pytest.raises(RuntimeError, match="trtexec exited with 1"):
        runner.run(x)
    runner.close()


def test_tensorrt_rows_in_the_report(fake_trtexec):
    # one precision, one batch: each trtexec call is a process start (the FP32 route is tested above)
    opts = bench_run.Options(backends=("onnxruntime", "tensorrt-fp16"), batches=(2,), threads=(1,), budget=0.02,
                             min_samples=2, peak_repeat=1, peak_n=256, compile_cost=False)
    result = bench_run.run(opts)
    row = next(r for r in result["results"] if r["backend"] == "tensorrt-fp16")
    assert row["verified"] == "ok" and row["threads"] is None and row["cpu"] is None and row["batch"] == 2
    assert row["ms_per_image_median"] == pytest.approx(2.36743 / 2)
    assert row["ms_per_image_p90"] == pytest.approx(2.45117 / 2)
    assert row["trtexec"]["version"] == "8.2.1" and row["ratio_to_ort"] is not None
    text = format_report(result)
    line = next(l for l in text.splitlines() if l.startswith("tensorrt fp16"))
    assert line.split()[2:6] == ["gpu", "2", "1.18", "1.23"]


def _fake_tensorrt():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fake_tensorrt", os.path.join(HERE, "data", "fake_tensorrt.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("version", ["8.2.1", "10.3.0"])
def test_tensorrt_python_route(monkeypatch, version):
    """The Python API path on a stand-in tensorrt + pycuda: 8.x bindings or 10.x named tensors, FP32 without
    TF32, FP16 with the FP16 flag, dynamic batch 1..64 tuned for 8, outputs copied back and checked."""
    pytest.importorskip("onnxruntime")
    fake = _fake_tensorrt().install(monkeypatch, version)
    monkeypatch.setattr(trt, "find_trtexec", lambda: None)
    assert trt.probe() == ("python", f"tensorrt {version}")
    x, expected, _ = golden.load_golden()
    fp32 = bk.make_runner("tensorrt-fp32", MODEL)
    assert isinstance(fp32, trt.TensorRTPythonRunner) and fp32._v3 == version.startswith("10")
    assert golden.check_outputs(fp32.run(x), expected, fp32.tolerance) == []
    assert golden.check_outputs(fp32.run(x[:2]), {k: v[:2] for k, v in expected.items()}, fp32.tolerance) == []
    fp16 = bk.make_runner("tensorrt-fp16", MODEL)
    out = fp16.run(x)
    assert golden.check_outputs(out, expected, fp16.tolerance) == [] and golden.check_outputs(out, expected) != []
    assert fake.built == [(False, False), (True, True)]          # (FP16 flag, TF32 flag) of the two builds
    with pytest.raises(ValueError, match="stops at batch 64"):
        fp32.run(np.zeros((65, 3, 64, 64), np.float32))
