"""The TensorRT path of the benchmark kit without a GPU: trtexec's output parsed from recorded samples
(bench/samples), and the whole trtexec route (build, verify, time, report) through a stand-in trtexec.

What these tests prove: bench calls trtexec with options trtexec 8.2 has, reads its logs and its
--exportOutput JSON, holds FP32 to the contract and FP16 to its own bounds, and reports failures. The FP16
bounds (0.5 years, 1e-2) are checked against an error model, refimpl with every weight and layer output
rounded to half precision (tests/data/fake_half.py), and shown to catch a coarser one (bfloat16's 8 bits).

What they do not prove: the samples were written by the project in trtexec's layout, not captured on a
board, so a change of trtexec's log format passes here; the stand-ins run no TensorRT parser, builder or
kernel, so neither TensorRT's acceptance of the model nor its real FP16 numbers nor any timing is tested.
Only `python -m bench` on a Jetson checks those.
"""
import os
import stat
import subprocess
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
    """tests/data/fake_trtexec.py as `trtexec` on PATH (see its docstring for what it imitates)."""
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
    ort = next(r for r in result["results"] if r["backend"] == "onnxruntime")
    assert row["trtexec"]["version"] == "8.2.1" and row["ratio_to_ort_threads"] == 1
    assert row["ratio_to_ort"] == pytest.approx(row["ms_per_image_median"] / ort["ms_per_image_median"])
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


def _half():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fake_half", os.path.join(HERE, "data", "fake_half.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args, refused", [
    (["--onnx=m.onnx", "--bogus"], "Unknown option: --bogus"),
    (["--onnx=m.onnx", "--fp16", "--memPoolSize=workspace:16"], "Unknown option: --memPoolSize"),   # 8.4 and later
    (["--onnx"], "Unknown option: --onnx"),                                                          # no value
    (["--onnx=m.onnx", "-fp16"], "Unknown option: -fp16"),
    (["--loadEngine=e", "--percentile"], "Unknown option: --percentile"),
])
def test_fake_trtexec_refuses_what_trtexec_refuses(fake_trtexec, args, refused):
    run = subprocess.run([fake_trtexec, *args], capture_output=True, text=True)
    assert run.returncode == 1 and f"[E] {refused}" in run.stdout and "&&&& FAILED" in run.stdout, run.stdout


def test_fake_trtexec_takes_trtexec_options_and_checks_the_profile(fake_trtexec, tmp_path):
    engine = str(tmp_path / "e.engine")
    build = [fake_trtexec, f"--onnx={MODEL}", "--fp16", "--shapes=image:2x3x64x64", f"--saveEngine={engine}",
             "--iterations=10", "--warmUp=200", "--duration=1", "--avgRuns=10", f"--exportTimes={tmp_path / 't.json'}",
             "--useCudaGraph", "--noDataTransfers"]
    run = subprocess.run(build, capture_output=True, text=True)
    assert run.returncode == 0 and "&&&& PASSED" in run.stdout and "Throughput:" in run.stdout, run.stdout
    run = subprocess.run([fake_trtexec, f"--loadEngine={engine}", "--shapes=image:3x3x64x64"],
                         capture_output=True, text=True)                    # built for batch 2 only
    assert run.returncode == 1 and "out of range of optimization profile 0" in run.stdout, run.stdout


def _malformed_models(tmp_path):
    import onnx

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(open(MODEL, "rb").read()[:20000])
    model = onnx.load(MODEL)
    model.graph.node[0].input[0] = "no_such_tensor"               # the first conv reads a tensor nobody makes
    dangling = tmp_path / "dangling.onnx"
    onnx.save(model, str(dangling))
    return [str(truncated), str(dangling)]


def test_a_malformed_model_fails_both_routes(fake_trtexec, monkeypatch, tmp_path):
    x = golden.load_golden()[0][:1]
    for path in _malformed_models(tmp_path):
        with pytest.raises(RuntimeError, match="(?s)trtexec exited with 1.*Failed to parse onnx file"):
            bk.make_runner("tensorrt-fp32", path, workdir=str(tmp_path)).run(x)
    _fake_tensorrt().install(monkeypatch, "8.2.1")
    monkeypatch.setattr(trt, "find_trtexec", lambda: None)
    for path in _malformed_models(tmp_path):
        with pytest.raises(bk.Unavailable, match="TensorRT.s ONNX parser rejected .*INVALID_GRAPH"):
            bk.make_runner("tensorrt-fp16", path)


def test_fp16_error_model_perturbs_every_layer_within_the_bounds():
    """Rounding every layer to half precision moves the outputs by more than rounding the outputs alone (the
    old stand-in) -- every output, and typically several times more -- still within the FP16 bounds; bfloat16's
    8 bits break the bounds on this model. (An ensemble output, the mean of three heads whose half-precision
    errors partly cancel, can come out close to its own rounding: with the bundled weights of issue 14 the age
    ensemble is 1.08 times it, the heads 1.8 to 28 times.)"""
    import refimpl

    half = _half()
    x, expected, _ = golden.load_golden()
    model = refimpl.load(MODEL)
    exact = model.forward(x)
    per_layer = half.half_precision_forward(model, x)
    ratios = {}
    for name in exact:
        output_only = half.round_half(exact[name])
        layer_error = float(np.abs(per_layer[name] - exact[name]).max())
        output_error = float(np.abs(output_only - exact[name]).max())
        assert layer_error > output_error, f"{name}: {layer_error:.3g} vs outputs only {output_error:.3g}"
        assert np.any(per_layer[name] != output_only), f"{name}: the layer roundings never change the output"
        ratios[name] = layer_error / output_error
    assert np.median(list(ratios.values())) > 2, f"layer-wise against output-only rounding: {ratios}"
    assert golden.check_outputs(per_layer, expected, trt.fp16_tolerance) == []
    assert golden.check_outputs(per_layer, expected) != []
    coarse = half.half_precision_forward(model, x, half.round_significant(8))
    assert golden.check_outputs(coarse, expected, trt.fp16_tolerance) != []


def test_an_fp16_engine_coarser_than_half_is_caught(fake_trtexec, monkeypatch, tmp_path):
    """Both routes: an "FP16" engine that rounds to 8 significant bits fails the FP16 bounds."""
    x, expected, _ = golden.load_golden()
    monkeypatch.setenv("FAKE_TRTEXEC", "bf16")
    runner = bk.make_runner("tensorrt-fp16", MODEL, workdir=str(tmp_path))
    reports = golden.check_outputs(runner.run(x), expected, runner.tolerance)
    assert any(r.startswith("age_final ") for r in reports), reports
    runner.close()
    half = _half()
    _fake_tensorrt().install(monkeypatch, "10.3.0", rounding=half.round_significant(8))
    monkeypatch.setattr(trt, "find_trtexec", lambda: None)
    runner = bk.make_runner("tensorrt-fp16", MODEL)
    assert isinstance(runner, trt.TensorRTPythonRunner)
    reports = golden.check_outputs(runner.run(x), expected, runner.tolerance)
    assert any(r.startswith("age_final ") for r in reports), reports
