"""The peers of `python -m bench --peers` (bench/peers): selection, verification before timing, the labelling of
peers that are not fp32-equivalent, the per-configuration summary, the rows of a machine without the extra, and
the LiteRT runner's layout handling, all with stand-ins; then the real ncnn (pnnx conversion from the PyTorch
module) and PyTorch peers, which the test and train extras install (CI runs them).

What the stand-ins do not prove: that OpenVINO or LiteRT give the golden outputs (no .tflite here, and openvino
is not in the test extra): `python -m bench --peers` and `pytest bench/test_peers.py` check those where installed."""
import importlib.util
import json
import os
import sys
import time

import numpy as np
import pytest

from bench import __main__ as cli
from bench import backends as bk
from bench import peers, report
from bench.peers import litert_peer
from bench.peers import summary as peer_summary
from bench.peers.base import PeerRunner
from refimpl import DEFAULT_WEIGHTS as MODEL
from refimpl import golden, spec

TINY = ["--quick", "--budget", "0.03", "--batches", "1,2", "--threads", "1", "--peak-size", "256", "--no-progress"]
# 1/16 year is exact in float32 at these ages: 62x the fp32 contract (1e-3), inside the fp16 bound (0.5)
AGE_OFFSET = 0.0625


def _has(*modules):
    return all(importlib.util.find_spec(m) is not None for m in modules)


@pytest.fixture
def no_trt(monkeypatch):
    from bench import tensorrt_backend

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(tensorrt_backend, "find_trtexec", lambda: None)


# -- selection ---------------------------------------------------------------------------------------------------
def test_select_names_families_and_the_default():
    assert peers.select(None) == peers.select("default") == peers.DEFAULT_PEERS
    assert "torch-compile" not in peers.DEFAULT_PEERS and "torch-compile" in peers.select("all")
    assert peers.select("ncnn,torch-eager,ncnn-fp32") == ("ncnn-fp32", "ncnn-default", "torch-eager")
    assert peers.select("openvino") == ("openvino-f32-latency", "openvino-f32-throughput", "openvino-default")
    with pytest.raises(ValueError, match="unknown peer 'tensorflow'"):
        peers.select("ncnn,tensorflow")


def test_cli_refuses_an_unknown_peer_in_one_line(capsys):
    assert cli.main(TINY + ["--peers", "mxnet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown peer 'mxnet'") and len(err.strip().splitlines()) == 1


def test_every_peer_has_a_label_that_fits_the_table():
    width = dict((c[0], c[1]) for c in report.COLUMNS)["backend"]
    assert set(peers.LABELS) == set(peers.PEERS)
    assert all(len(label) <= width for label in peers.LABELS.values())
    assert not set(peers.LABELS.values()) & set(bk.LABELS.values())


# -- verification and labelling, with stand-in peers --------------------------------------------------------------
class FakePeer(PeerRunner):
    """ONNX Runtime's outputs, `age_offset` years off, `delay` seconds slow, in `precision`; or (golden=True)
    the golden outputs looked up with no computing at all, faster than any real engine."""

    def __init__(self, name, threads, precision="f32", age_offset=0.0, delay=0.0, golden_outputs=False):
        super().__init__(name, threads)
        self.precision, self.age_offset, self.delay = precision, age_offset, delay
        if golden_outputs:
            inputs, outputs, _ = golden.load_golden()
            self.lookup = {inputs[i].tobytes(): {n: v[i] for n, v in outputs.items()} for i in range(len(inputs))}
        else:
            self.lookup, self.ort = None, bk.OnnxRuntimeRunner(MODEL, 1)

    def run(self, x):
        if self.lookup is not None:
            rows = [self.lookup[image.tobytes()] for image in x]
            out = {n: np.stack([r[n] for r in rows]).astype(np.float32) for n in spec.OUTPUT_NAMES}
        else:
            out = {n: v.copy() for n, v in self.ort.run(x).items()}
            time.sleep(self.delay)
        out["age"] += self.age_offset
        return out


def test_a_failing_peer_is_not_timed_and_a_non_fp32_peer_is_labelled_and_kept_apart(monkeypatch, capsys, tmp_path,
                                                                                      no_trt):
    pytest.importorskip("onnxruntime")
    fakes = {"openvino-f32-latency": dict(delay=0.004),                   # right, fp32, slower than ORT
             "ncnn-fp32": dict(age_offset=AGE_OFFSET),                    # claims fp32 but is 1/16 year off
             "ncnn-default": dict(precision="f16", age_offset=AGE_OFFSET, golden_outputs=True)}   # fastest, fp16
    monkeypatch.setattr(peers, "make_runner", lambda name, model, threads, options=None:
                        FakePeer(name, threads, **fakes[name]))
    out_json = tmp_path / "run.json"
    rc = cli.main(TINY + ["--backends", "onnxruntime", "--peers", ",".join(fakes), "--json", str(out_json)])
    text = capsys.readouterr().out
    assert rc == 1                                                  # a FAILED row fails the command
    result = report.load_json(out_json)
    rows = {(r["backend"], r["batch"]): r for r in result["results"]}
    for batch in (1, 2):
        failed = rows["ncnn-fp32", batch]
        assert failed["verified"] == "FAILED" and "ms_per_image_median" not in failed
        assert failed["max_abs_error"]["age"] == pytest.approx(AGE_OFFSET, abs=golden.AGE_TOLERANCE)
        half = rows["ncnn-default", batch]
        assert half["verified"] == "ok" and half["fp32"] is False and half["max_abs_error"]["age"] == AGE_OFFSET
        assert rows["openvino-f32-latency", batch]["fp32"] is True and rows["onnxruntime", batch]["fp32"] is True
    assert f"  {'ncnn fp32':<18}FAILED" in text and "FAILED verification: not timed" in text
    half_lines = [line for line in text.splitlines() if line.startswith("ncnn fp16 default")]
    assert len(half_lines) == 2 and all(line.endswith("NOT fp32") for line in half_lines)
    summary = text[text.index("Fastest per configuration"):].split("\n\n")[0]
    for line in [s for s in summary.splitlines() if s.startswith("  batch")]:
        assert "fastest fp32 peer onnxruntime" in line           # not the failed ncnn fp32, not the fp16 one
        assert "fastest ncnn" not in line
    assert summary.count("faster, NOT fp32-equivalent (kept out of the comparison): ncnn fp16 default") == 2


def _row(backend, threads, batch, ms, fp32=True, verified="ok", label=None):
    return {"backend": backend, "label": label or peers.LABELS.get(backend) or bk.LABELS.get(backend, backend),
            "threads": threads, "batch": batch, "ms_per_image_median": ms, "verified": verified, "fp32": fp32}


def test_summary_picks_the_fastest_engine_the_fastest_fp32_peer_and_the_kernels_ratio():
    rows = [
        # 1 thread, batch 1: the kernels lead; a faster fp16 row and a faster FAILED row must not count
        _row("numpy", 1, 1, 30.0), _row("cython", 1, 1, 0.4), _row("numba", 1, 1, 0.6),
        _row("onnxruntime", 1, 1, 1.0), _row("openvino-f32-latency", 1, 1, 0.8),
        _row("ncnn-default", 1, 1, 0.2, fp32=False), _row("ncnn-fp32", 1, 1, 0.1, verified="FAILED"),
        # 2 threads, batch 8: a peer leads
        _row("cython", 2, 8, 0.5), _row("onnxruntime", 2, 8, 0.25), _row("torch-eager", 2, 8, 2.0),
        # the GPU: only an FP16 engine verified, nothing fp32 to compare
        _row("tensorrt-fp16", None, 1, 0.05, fp32=False),
    ]
    found = peer_summary.fastest(rows)
    assert [(f["threads"], f["batch"]) for f in found] == [(1, 1), (2, 8)]
    first, second = found
    assert first["fastest"]["backend"] == "cython" and first["peer"]["backend"] == "openvino-f32-latency"
    assert first["kernels"] == pytest.approx({"cython": 0.4 / 0.8, "numba": 0.6 / 0.8})
    assert [r["backend"] for r in first["faster_not_fp32"]] == ["ncnn-default"]
    assert first["peers"] == pytest.approx({"openvino f32 lat": 0.5, "onnxruntime": 0.4})
    assert second["fastest"]["backend"] == second["peer"]["backend"] == "onnxruntime"
    assert second["kernels"] == pytest.approx({"cython": 2.0}) and not second["faster_not_fp32"]
    text = "\n".join(peer_summary.lines({"results": rows}))
    assert ("batch  1, 1 thread: fastest cython (kernels) 0.4 ms/img; fastest fp32 peer openvino f32 lat 0.8 ms/img;"
            " cython 0.50x, numba 0.75x") in text
    assert "batch  8, 2 threads: fastest onnxruntime 0.25 ms/img; fastest fp32 peer onnxruntime 0.25 ms/img; " \
           "cython 2.00x" in text
    assert "tensorrt" not in text


def test_rows_without_a_precision_flag_keep_their_meaning():
    # runs written before the peers existed have no "fp32" key: TensorRT FP16 is the only non-fp32 backend there
    assert peers.is_fp32({"backend": "onnxruntime"}) and not peers.is_fp32({"backend": "tensorrt-fp16"})


def test_compare_shows_the_kernels_ratio_to_the_fastest_fp32_peer_in_both_runs():
    a = {"results": [_row("cython", 1, 1, 0.4), _row("onnxruntime", 1, 1, 0.8)]}
    b = {"results": [_row("cython", 1, 1, 0.3), _row("onnxruntime", 1, 1, 1.0), _row("ncnn-fp32", 1, 1, 0.6)]}
    lines = peer_summary.compare_lines(a, b)
    assert lines[1] == "  batch  1, 1 thr: onnxruntime: cython 0.50x  ->  ncnn fp32: cython 0.50x"


# -- without the extra ----------------------------------------------------------------------------------------------
def test_without_the_extra_every_peer_says_why_and_the_command_exits_0(monkeypatch, capsys, no_trt):
    pytest.importorskip("onnxruntime")
    for module in ("openvino", "ncnn", "pnnx", "torch", "ai_edge_litert", "tflite_runtime"):
        monkeypatch.setitem(sys.modules, module, None)
    assert cli.main(TINY + ["--backends", "onnxruntime", "--peers", "all"]) == 0
    text = capsys.readouterr().out
    for label, why in (("openvino f32 lat", "openvino is not installed"),
                       ("openvino f32 tput", "openvino is not installed"),
                       ("openvino default", "openvino is not installed"), ("ncnn fp32", "ncnn is not installed"),
                       ("ncnn fp16 default", "ncnn is not installed"),
                       ("litert xnnpack", "ai-edge-litert is not installed"), ("torch eager", "torch is not installed"),
                       ("torch.compile", "torch is not installed")):
        assert f"  {label:<18}not available: {why}" in text
    summary = text[text.index("Fastest per configuration"):].split("\n\n")[0]
    assert summary.count("fastest fp32 peer onnxruntime") == 2      # the one peer left, at batch 1 and 2


# -- LiteRT's layout and batch handling, with a stand-in interpreter ------------------------------------------------
class FakeInterpreter:
    """tflite's Interpreter API over ONNX Runtime: an NHWC input like onnx2tf writes, outputs in a shuffled order
    under onnx2tf-like names, a fixed batch of 1 or a dynamic one."""
    names = ["PartitionedCall:gender_low", "PartitionedCall:age", "PartitionedCall:age_final",
             "PartitionedCall:gender", "PartitionedCall:age_low", "PartitionedCall:gender_virtual",
             "PartitionedCall:age_virtual", "PartitionedCall:gender_final"]
    dynamic = False
    calls = []

    def __init__(self, model_path, num_threads):
        self.ort = bk.OnnxRuntimeRunner(MODEL, 1)
        self.shape = [1, 64, 64, 3]
        FakeInterpreter.calls.append(num_threads)

    def allocate_tensors(self):
        pass

    def get_input_details(self):
        return [{"index": 0, "shape": np.array(self.shape),
                 "shape_signature": np.array([-1 if self.dynamic else 1, 64, 64, 3])}]

    def get_output_details(self):
        return [{"index": 10 + i, "name": n} for i, n in enumerate(self.names)]

    def resize_tensor_input(self, index, shape):
        assert self.dynamic, "resize on a fixed-batch model"
        self.shape = list(shape)

    def set_tensor(self, index, value):
        assert list(value.shape) == self.shape and value.shape[-1] == 3, (value.shape, self.shape)
        self.x = value

    def invoke(self):
        self.out = self.ort.run(np.ascontiguousarray(self.x.transpose(0, 3, 1, 2)))

    def get_tensor(self, index):
        return self.out[self.names[index - 10].split(":")[1]]


@pytest.mark.parametrize("dynamic", [False, True], ids=["batch-1 file", "dynamic batch"])
def test_litert_feeds_nhwc_and_maps_outputs_by_name(tmp_path, monkeypatch, dynamic):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(FakeInterpreter, "dynamic", dynamic)
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"stand-in")
    runner = litert_peer.LiteRtRunner(MODEL, 2, str(tflite), interpreter_class=FakeInterpreter)
    inputs, expected, _ = golden.load_golden()
    assert not golden.check_outputs(runner.run(inputs[:5]), {n: v[:5] for n, v in expected.items()})
    assert FakeInterpreter.calls[-1] == 2 and runner.fp32
    assert ("dynamic batch" if dynamic else "one image per call") in runner.isa


def test_litert_without_a_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("AGEGENDER_TFLITE", raising=False)
    with pytest.raises(bk.Unavailable, match=r"no \.tflite \(.*agegender/litert/[0-9a-f]{64}/model\.tflite; see "
                                             r"docs/peers\.md"):
        litert_peer.LiteRtRunner(MODEL, 1, interpreter_class=FakeInterpreter)


# -- real peers: in the test and train extras, so CI runs them ----------------------------------------------------
@pytest.fixture(scope="module")
def ncnn_cache(tmp_path_factory):
    """An empty cache folder for the module's conversion (the user's ~/.cache stays untouched)."""
    if not _has("ncnn", "pnnx", "torch"):
        pytest.skip("ncnn, pnnx or torch not installed (the test and train extras have them)")
    folder = tmp_path_factory.mktemp("cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


def test_ncnn_converts_once_and_its_fp32_row_matches_the_golden_outputs(ncnn_cache, monkeypatch):
    from bench.peers import ncnn_peer

    runner = peers.make_runner("ncnn-fp32", MODEL, 1)
    folder = ncnn_cache / "agegender" / "ncnn" / golden.file_sha256(MODEL)
    assert sorted(os.listdir(folder)) == ["manifest.json", "model.ncnn.bin", "model.ncnn.param"]
    assert json.loads((folder / "manifest.json").read_text())["model_sha256"] == golden.file_sha256(MODEL)
    assert not [o for o in ncnn_peer.FP16_OPTIONS if getattr(runner.net.opt, o)] and runner.fp32
    inputs, expected, _ = golden.load_golden()
    for batch in (1, len(inputs)):                   # one extractor per image, whatever the batch
        reports = golden.check_outputs(runner.run(inputs[:batch]), {n: v[:batch] for n, v in expected.items()})
        assert not reports, "; ".join(reports)
    # a second runner reads the cache: no conversion subprocess
    monkeypatch.setattr(ncnn_peer.subprocess, "run", lambda *a, **k: pytest.fail("converted again"))
    default = peers.make_runner("ncnn-default", MODEL, 1)
    assert default.fp32 == (not any(getattr(default.net.opt, o) for o in ncnn_peer.FP16_OPTIONS))
    assert not golden.check_outputs(default.run(inputs), expected, default.tolerance)


def test_torch_eager_matches_the_golden_outputs_at_one_thread():
    if not _has("torch"):
        pytest.skip("torch not installed (the train extra has it)")
    import torch

    before = torch.get_num_threads()
    runner = peers.make_runner("torch-eager", MODEL, 1)
    inputs, expected, _ = golden.load_golden()
    try:
        reports = golden.check_outputs(runner.run(inputs), expected)
        assert not reports, "; ".join(reports)
        assert torch.get_num_threads() == 1 and runner.fp32
    finally:
        torch.set_num_threads(before)


# -- projection and plot with peers ----------------------------------------------------------------------------------
def test_the_nano_projection_leaves_out_rows_that_are_not_fp32():
    from bench import run as bench_run

    rows = [dict(_row(name, 1, 1, 1.0, fp32=fp32), device="cpu", gflops=97.0) for name, fp32 in
            (("cython", True), ("ncnn-fp32", True), ("openvino-default", False))]
    assert [p["backend"] for p in bench_run.projection({"results": rows}, 97e6, 100.0)] == ["cython", "ncnn-fp32"]


def test_plot_draws_the_peers(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [dict(_row(name, threads, batch, ms * batch ** -0.3, fp32=fp32), ms_per_image_p90=ms)
            for name, fp32, ms in (("cython", True, 1.0), ("ncnn-fp32", True, 1.5), ("ncnn-default", False, 1.2))
            for threads in (1, 2) for batch in (1, 8)]
    result = {"results": rows, "machine": {"cpu": "Test CPU"}, "created": "2026-11-29T00:00:00+00:00"}
    path = tmp_path / "peers.png"
    report.plot(result, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
