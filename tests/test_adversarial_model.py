"""Crafted model files and checkpoints, as an attacker or a broken tool would make them.

Every one is refused with one line (ModelFileError in Python; `error: ...` and exit status 2 from the
command-line entry points), without running foreign code, reading a file the model names, or
allocating what a header declares.
"""
import copy
import glob
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

import refimpl
from conftest import ROOT, assert_close, ort_session
from refimpl import ModelFileError, onnx_format, spec
from refimpl.golden import tolerance

BIAS = "top_head.fc_age.bias"            # a [1] tensor: small enough to craft by hand


@pytest.fixture(scope="module")
def base(reference_model_path):
    return onnx.load(reference_model_path)


def save(model, path):
    onnx.save(model, str(path))
    return path


def refused(path, pattern):
    with pytest.raises(ModelFileError, match=pattern) as exc:
        refimpl.load(path)
    message = str(exc.value)
    assert message and "\n" not in message, message
    return message


def tensor(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def node(model, name):
    return next(n for n in model.graph.node if n.name == name)


# ---- external data ----------------------------------------------------------------------------------

def external(model, name, location):
    """The initializer `name` marked as stored in the file `location` (its bytes at offset 0)."""
    t = tensor(model, name)
    value = numpy_helper.to_array(t)
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for key, v in (("location", location), ("offset", "0"), ("length", str(value.nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = key, v
    return value


@pytest.mark.parametrize("where", ["beside", "parent", "symlink", "absolute"])
def test_external_data_is_refused_unread(base, tmp_path, where):
    """The external file holds exactly the right bytes: a loader that followed it would load the model. The
    model that names it must be refused all the same, wherever the file is (in the model's folder too)."""
    folder = tmp_path / "models"
    folder.mkdir()
    secret = tmp_path / "secret.bin"
    model = copy.deepcopy(base)
    location = {"beside": "weights.bin", "parent": "../secret.bin", "symlink": "link.bin",
                "absolute": str(secret)}[where]
    value = external(model, BIAS, location)
    secret.write_bytes(value.tobytes())
    (folder / "weights.bin").write_bytes(value.tobytes())
    (folder / "link.bin").symlink_to(secret)
    path = save(model, folder / "model.onnx")
    message = refused(path, r"initializer 'top_head.fc_age.bias' is stored outside the file \(external data")
    assert location[:20] in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_external_data_file_is_never_opened(base, tmp_path):
    """The external 'file' is a named pipe: opening it for reading blocks until someone writes. A loader that
    opens it never returns; ours refuses at once (a subprocess, so a hang is a failure, not a stuck suite)."""
    model = copy.deepcopy(base)
    external(model, BIAS, "pipe.bin")
    os.mkfifo(tmp_path / "pipe.bin")
    path = save(model, tmp_path / "model.onnx")
    code = ("import sys, refimpl\ntry:\n    refimpl.load(sys.argv[1])\nexcept refimpl.ModelFileError as e:\n"
            "    print(e); sys.exit(3)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("refimpl.load opened the external-data pipe (it blocked)")
    assert done.returncode == 3 and "external data" in done.stdout, done.stdout + done.stderr


# ---- files ONNX Runtime refuses or reads differently -----------------------------------------------

def duplicate_initializer(model):
    model.graph.initializer.append(numpy_helper.from_array(np.array([100.0], np.float32), BIAS))


def opset(version):
    def edit(model):
        model.opset_import[0].version = version
    edit.__name__ = f"opset_{version}"
    return edit


def foreign_domain_node(model):
    node(model, "stem_wide.act1").domain = "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def foreign_domain_node_only(model):
    node(model, "stem_wide.act1").domain = "com.example"


def foreign_opset_import(model):
    model.opset_import.append(helper.make_opsetid("com.example", 1))


def no_default_opset(model):
    del model.opset_import[:]


def gemm_alpha(model):
    node(model, "age_final").attribute.append(helper.make_attribute("alpha", 0.5))


def duplicate_node_name(model):
    model.graph.node.insert(0, helper.make_node("Relu", ["image"], ["unused"], name="stem_wide.act1"))


def local_function(model):
    model.functions.append(helper.make_function("com.example", "f", ["x"], ["y"],
                                                [helper.make_node("Relu", ["x"], ["y"])],
                                                [helper.make_opsetid("", 13)]))


def sparse_initializer(model):
    values = numpy_helper.from_array(np.array([1.0], np.float32), "sparse.values")
    indices = numpy_helper.from_array(np.array([0], np.int64), "sparse.indices")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [1]))


@pytest.mark.parametrize("edit, pattern", [
    (duplicate_initializer, r"initializer 'top_head.fc_age.bias' is given twice"),
    (opset(1), r"opset 1, expected 7 to 17"),
    (opset(6), r"opset 6, expected 7 to 17"),
    (opset(18), r"opset 18, expected 7 to 17"),
    (foreign_domain_node, r"imports the operator domain 'com.microsoft'"),
    (foreign_domain_node_only, r"node 'stem_wide.act1' is LeakyRelu of the domain 'com.example'"),
    (foreign_opset_import, r"imports the operator domain 'com.example'"),
    (no_default_opset, r"0 imports of the default ONNX domain"),
    (gemm_alpha, r"node 'age_final' has alpha=0.5, which this architecture does not use"),
    (duplicate_node_name, r"two nodes are named 'stem_wide.act1'"),
    (local_function, r"defines 1 local functions"),
    (sparse_initializer, r"sparse initializers"),
], ids=lambda v: getattr(v, "__name__", None))
def test_files_onnx_runtime_refuses_or_reads_differently_are_refused(base, tmp_path, edit, pattern):
    model = copy.deepcopy(base)
    edit(model)
    refused(save(model, tmp_path / "crafted.onnx"), pattern)


def test_onnx_runtime_disagrees_on_each_refused_edit(base, tmp_path):
    """The independent reason for the refusals above: ONNX Runtime either refuses these files or computes
    something other than the unedited model (so refimpl, which would run the unedited graph, would differ)."""
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)
    plain = ort_session(save(base, tmp_path / "plain.onnx")).run(None, {"image": x})[0]
    for edit in (duplicate_initializer, opset(1), opset(18), foreign_domain_node, gemm_alpha, duplicate_node_name):
        model = copy.deepcopy(base)
        edit(model)
        path = save(model, tmp_path / f"{edit.__name__}.onnx")
        try:
            got = ort_session(path).run(None, {"image": x})[0]
        except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidGraph,
                RuntimeError):
            continue
        assert np.abs(got - plain).max() > 1e-3, f"{edit.__name__}: ONNX Runtime reads it as the plain model"


@pytest.mark.parametrize("version", [spec.OPSET_MIN, spec.OPSET, spec.OPSET_MAX])
def test_every_accepted_opset_means_the_same_to_onnx_runtime(base, tmp_path, version):
    model = copy.deepcopy(base)
    model.opset_import[0].version = version
    path = save(model, tmp_path / f"opset{version}.onnx")
    x = np.random.default_rng(4).random((2, 3, 64, 64), dtype=np.float32)
    got = refimpl.load(path).forward(x)
    expected = dict(zip(spec.OUTPUT_NAMES, ort_session(path).run(None, {"image": x})))
    for name in spec.OUTPUT_NAMES:
        assert_close(name, expected[name], got[name], tolerance(name))


# ---- malformed tensors: refused before any conversion -----------------------------------------------

def with_tensor(model, name, **fields):
    t = tensor(model, name)
    for key, value in fields.items():
        if key == "dims":
            t.dims[:] = value
        elif key == "float_data":
            t.float_data[:] = value
        else:
            setattr(t, key, value)
    return model


@pytest.mark.parametrize("fields, pattern", [
    ({"dims": [2**40, 2**40]}, r"'top_head.fc_age.bias' has shape \[1099511627776, 1099511627776\], expected \[1\]"),
    ({"dims": [2**62]}, r"has shape \[4611686018427387904\], expected \[1\]"),
    ({"dims": [-1]}, r"has shape \[-1\], expected \[1\]"),                  # numpy would infer -1 from the bytes
    ({"dims": []}, r"has shape \[\], expected \[1\]"),
    ({"raw_data": b"\x00" * 3}, r"holds 3 bytes, expected 4"),
    ({"raw_data": b"\x00" * 4096}, r"holds 4096 bytes, expected 4"),
    ({"float_data": [1.0]}, r"holds 1 values in raw_data and 1 values in float_data"),
    ({"data_type": onnx.TensorProto.DOUBLE}, r"'top_head.fc_age.bias' is DOUBLE, expected FLOAT"),
    ({"data_type": 999}, r"is 999, expected FLOAT"),
])
def test_malformed_tensors_are_refused_with_one_line(base, tmp_path, fields, pattern):
    model = with_tensor(copy.deepcopy(base), BIAS, **fields)
    refused(save(model, tmp_path / "tensor.onnx"), pattern)


def test_absurd_dims_on_a_big_tensor_allocate_nothing(base, tmp_path):
    """dims whose product is 2^80 float32 values, on the largest weight: refused from the header."""
    model = with_tensor(copy.deepcopy(base), "age_branch.conv3.weight", dims=[2**20, 2**20, 2**20, 1])
    refused(save(model, tmp_path / "absurd.onnx"), r"'age_branch.conv3.weight' has shape \[1048576")


def test_huge_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:
        f.truncate(onnx_format.MAX_FILE_BYTES + 1)              # sparse: costs no disk
    refused(path, r"larger than 16 MiB")


def test_a_folder_and_a_device_are_not_model_files(tmp_path):
    refused(tmp_path, r"is a folder")
    if os.path.exists("/dev/zero"):
        refused("/dev/zero", r"no such file")                    # not a regular file: never read


@settings(max_examples=25, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_mutated_model_bytes_load_or_raise_model_file_error(reference_model_path, tmp_path, data):
    """Bytes of a valid file with some flipped, cut or inserted (varints, lengths, dims, field tags): the
    loader loads the file or raises ModelFileError, never anything else."""
    raw = bytearray(open(reference_model_path, "rb").read())
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw) - 1))
        kind = data.draw(st.sampled_from(["set", "cut", "insert"]))
        if kind == "set":
            raw[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[at:at + data.draw(st.integers(1, 64))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    path = tmp_path / "mutated.onnx"
    path.write_bytes(bytes(raw))
    try:
        refimpl.load(path)
    except ModelFileError as exc:
        assert "\n" not in str(exc)


# ---- checkpoints ------------------------------------------------------------------------------------

class CreatesAFile:
    """Pickles as a call to open(marker, "w"): unpickling it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def run(*args, timeout=180):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def one_line_exit_2(done):
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "marker-created-by-the-checkpoint"
    evil = tmp_path / "evil.pt"
    torch.save({"model": CreatesAFile(str(marker)), "args": {}}, evil)
    assert not marker.exists()
    line = one_line_exit_2(run("-m", "training", "export", str(evil), str(tmp_path / "out.onnx")))
    assert "evil.pt: refused" in line and "it would call io.open" in line, line
    assert not marker.exists(), "unpickling the checkpoint ran its code"
    assert not (tmp_path / "out.onnx").exists()


def test_malicious_checkpoint_is_refused_by_every_reader(tmp_path):
    torch = pytest.importorskip("torch")
    from training import checkpoints

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "args": CreatesAFile(str(marker))}, evil)
    with pytest.raises(ModelFileError, match=r"evil.pt: refused, it holds objects other than tensors"):
        checkpoints.load(evil)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.replace(evil, run_dir / "last.pt")
    (run_dir / "log.jsonl").write_text('{"epoch": 1, "val": {}}\n')
    from training.card import training_stages
    from training.crossval import last_record

    for read in (last_record, training_stages):
        with pytest.raises(ModelFileError, match="refused"):
            read(str(run_dir))
    assert not marker.exists()


def test_no_torch_load_outside_the_checkpoint_module():
    """Every checkpoint read goes through training/checkpoints.py (weights_only=True); nothing in the kit
    loads a pickle with weights_only=False or numpy's allow_pickle=True."""
    sources = [p for d in ("training", "refimpl", "kernels", "bench", "agegender")
               for p in glob.glob(os.path.join(ROOT, d, "**", "*.py"), recursive=True)]
    assert len(sources) > 20
    for path in sources + [os.path.join(ROOT, "tests", "test_training.py")]:
        text = open(path, encoding="utf-8").read()
        rel = os.path.relpath(path, ROOT)
        assert not re.search(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|pickle\.loads?\(", text), rel
        if rel.startswith("training") and rel != os.path.join("training", "checkpoints.py"):
            assert "torch.load(" not in text, rel


# ---- command-line entry points on crafted files -----------------------------------------------------

@pytest.fixture(scope="module")
def crafted(reference_model_path, tmp_path_factory):
    """{kind: path} of files no entry point may answer with a traceback."""
    folder = tmp_path_factory.mktemp("crafted")
    raw = open(reference_model_path, "rb").read()
    (folder / "truncated.onnx").write_bytes(raw[:len(raw) // 2])
    model = with_tensor(onnx.load(reference_model_path), BIAS, dims=[2**40, 2**40])
    save(model, folder / "absurd.onnx")
    model = onnx.load(reference_model_path)
    external(model, BIAS, "w.bin")
    save(model, folder / "external.onnx")
    (folder / "a-folder.onnx").mkdir()
    return {"truncated": folder / "truncated.onnx", "absurd dims": folder / "absurd.onnx",
            "external data": folder / "external.onnx", "missing": folder / "missing.onnx",
            "folder": folder / "a-folder.onnx"}


@pytest.mark.parametrize("kind", ["truncated", "absurd dims", "external data", "missing", "folder"])
def test_refimpl_summary_refuses_with_one_line(crafted, kind):
    line = one_line_exit_2(run("-m", "refimpl", "summary", str(crafted[kind])))
    assert os.path.basename(crafted[kind]) in line


def test_refimpl_trace_and_verify_refuse_with_one_line(crafted, tmp_path):
    chip = tmp_path / "chip.npy"
    np.save(chip, np.zeros((64, 64, 3), np.uint8))
    one_line_exit_2(run("-m", "refimpl", "trace", str(chip), "--model", str(crafted["absurd dims"])))
    one_line_exit_2(run("-m", "refimpl", "verify", str(crafted["truncated"])))
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    one_line_exit_2(run("-m", "refimpl", "trace", str(pickled)))


@pytest.mark.parametrize("kind", ["truncated", "absurd dims", "missing", "folder"])
def test_bench_refuses_with_one_line(crafted, kind):
    line = one_line_exit_2(run("-m", "bench", "--quick", "--no-progress", "--model", str(crafted[kind])))
    assert os.path.basename(crafted[kind]) in line


@pytest.mark.parametrize("kind", ["truncated", "garbage", "missing", "folder", "not a dict"])
def test_training_export_refuses_bad_checkpoints_with_one_line(tmp_path, kind):
    torch = pytest.importorskip("torch")
    path = tmp_path / "bad.pt"
    if kind == "truncated":
        from training.model import AgeGenderNet

        torch.save({"model": AgeGenderNet().state_dict()}, path)
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == "garbage":
        path.write_bytes(b"\x80\x02 not a checkpoint" * 10)
    elif kind == "folder":
        path.mkdir()
    elif kind == "not a dict":
        torch.save([torch.zeros(2)], path)
    line = one_line_exit_2(run("-m", "training", "export", str(path), str(tmp_path / "out.onnx")))
    assert "bad.pt" in line and not (tmp_path / "out.onnx").exists()


def test_training_export_refuses_weights_of_another_shape(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "other.pt"
    torch.save({"model": {"stem_fine.conv1.weight": torch.zeros(3)}}, path)
    line = one_line_exit_2(run("-m", "training", "export", str(path), str(tmp_path / "out.onnx")))
    assert "weights do not fit this architecture" in line


@pytest.mark.parametrize("command", ["train --init", "evaluate", "gender_ceiling --gradients", "crossval"])
def test_every_training_command_refuses_the_malicious_checkpoint_before_reading_data(tmp_path, command):
    """The data folder is empty: a command that read the data before the checkpoint would fail on the data."""
    torch = pytest.importorskip("torch")
    marker = tmp_path / "marker"
    evil = tmp_path / "run" / "last.pt"
    evil.parent.mkdir()
    torch.save({"model": CreatesAFile(str(marker)), "args": {}}, evil)
    (tmp_path / "run" / "log.jsonl").write_text('{"epoch": 1, "val": {}}\n')
    empty = tmp_path / "faces"
    empty.mkdir()
    data = ["--data", str(empty), "--cache", str(tmp_path / "cache"), "--threads", "1"]
    argv = {"train --init": ["-m", "training", "train", *data, "--init", str(evil), "--out", str(tmp_path / "o")],
            "evaluate": ["-m", "training", "evaluate", *data, str(evil)],
            "gender_ceiling --gradients": ["-m", "experiments.gender_ceiling", *data, "--gradients", str(evil)],
            "crossval": ["-m", "training", "crossval", str(tmp_path / "run")]}[command]
    line = one_line_exit_2(run(*argv))
    assert "last.pt: refused" in line and not marker.exists()


def test_training_evaluate_refuses_a_crafted_onnx_file_before_reading_data(crafted, tmp_path):
    pytest.importorskip("torch")
    empty = tmp_path / "faces"
    empty.mkdir()
    for kind in ("absurd dims", "external data"):
        line = one_line_exit_2(run("-m", "training", "evaluate", "--data", str(empty), "--threads", "1",
                                   str(crafted[kind]), "--runtime", "onnxruntime"))
        assert os.path.basename(crafted[kind]) in line
