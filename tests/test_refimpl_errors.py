"""Bad inputs and bad ONNX files: a one-line error that names what is wrong and what was expected."""
import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import numpy_helper

import refimpl
from refimpl import InputError, ModelFileError, preprocess


@pytest.fixture(scope="module")
def model(reference_model_path):
    return refimpl.load(reference_model_path)


def one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("x, expected", [
    (np.zeros((3, 64, 64), np.float32), r"\[3, 64, 64\], expected \[N, 3, 64, 64\].*x\[None\]"),
    (np.zeros((1, 64, 64, 3), np.float32), r"expected \[N, 3, 64, 64\].*NHWC"),
    (np.zeros((1, 3, 32, 32), np.float32), r"\[1, 3, 32, 32\], expected"),
    (np.zeros((1, 3, 64, 64), np.float64), r"dtype is float64, expected float32"),
    (np.zeros((1, 3, 64, 64), np.uint8), r"dtype is uint8, expected float32.*preprocess"),
    (np.zeros((0, 3, 64, 64), np.float32), r"empty"),
    ([[0.0]], r"is a list, expected a numpy float32 array"),
])
def test_bad_input_arrays(model, x, expected):
    with pytest.raises(InputError, match=expected) as exc:
        model.forward(x)
    one_line(exc)


@given(st.sampled_from([np.nan, np.inf, -np.inf]), st.integers(0, 3 * 64 * 64 - 1))
def test_nan_and_inf_inputs_are_refused_with_their_position(model, value, flat_index):
    x = np.full((1, 3, 64, 64), 0.5, np.float32)
    x.reshape(-1)[flat_index] = value
    index = np.unravel_index(flat_index, x.shape)
    with pytest.raises(InputError, match=r"1 NaN or Inf values \(first at index \(0, %d, %d, %d\)\)" % index[1:]):
        model.forward(x)


@pytest.mark.parametrize("image, expected", [
    (np.zeros((10, 10, 3), np.float32), r"dtype is float32, expected uint8"),
    (np.zeros((10, 10, 2), np.uint8), r"shape is \(10, 10, 2\)"),
    (np.zeros((0, 10, 3), np.uint8), r"no pixels"),
    (np.zeros((4, 4, 4, 4), np.uint8), r"expected \[H, W\]"),
])
def test_bad_images(image, expected):
    with pytest.raises(InputError, match=expected) as exc:
        preprocess(image)
    one_line(exc)


def test_preprocess_converts_gray_and_rgba():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (50, 40), dtype=np.uint8)
    from_gray = preprocess(gray)
    np.testing.assert_array_equal(from_gray, preprocess(np.repeat(gray[:, :, None], 3, axis=2)))
    rgb = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)
    opaque = np.concatenate([rgb, np.full((50, 40, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(preprocess(opaque), preprocess(rgb))
    assert from_gray.shape == (3, 64, 64) and from_gray.dtype == np.float32


@given(st.integers(1, 300), st.integers(1, 300), st.integers(0, 255))
def test_preprocess_keeps_a_constant_image_constant(h, w, value):
    out = preprocess(np.full((h, w, 3), value, np.uint8))
    np.testing.assert_allclose(out, value / 255, atol=1e-6)


@given(st.integers(16, 260), st.integers(16, 260), st.integers(0, 2**31))
def test_preprocess_resize_matches_pillow_bilinear(h, w, seed):
    """PIL's BILINEAR resize (antialiased triangle filter) is an independent implementation of the same filter."""
    Image = pytest.importorskip("PIL.Image", reason="pillow gives an independent resize")
    channel = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(channel.astype(np.float32) / 255, mode="F").resize(
        (64, 64), Image.BILINEAR))
    got = preprocess(channel)[0]
    assert np.abs(got - expected).max() < 1e-4, np.abs(got - expected).max()


# ---- ONNX files -------------------------------------------------------------------------------

def edited(reference_model_path, tmp_path, edit):
    model = onnx.load(reference_model_path)
    edit(model)
    path = tmp_path / "edited.onnx"
    onnx.save(model, str(path))
    return path


def initializer(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def drop_initializer(model):
    model.graph.initializer.remove(initializer(model, "age_branch.conv2.weight"))


def add_initializer(model):
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "extra.weight"))


def reshape_initializer(model):
    t = initializer(model, "top_head.fc1.weight")
    t.CopyFrom(numpy_helper.from_array(np.zeros((28, 40), np.float32), t.name))


def nan_initializer(model):
    t = initializer(model, "low_branch.bn2.running_var")
    value = numpy_helper.to_array(t).copy()
    value[3] = np.nan
    t.CopyFrom(numpy_helper.from_array(value, t.name))


def unknown_op(model):
    next(n for n in model.graph.node if n.name == "stem_wide.act1").op_type = "Relu"


def other_input_size(model):
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 128


def other_dilation(model):
    node = next(n for n in model.graph.node if n.name == "stem_dilated.conv1")
    for attr in node.attribute:
        if attr.name == "dilations":
            attr.ints[:] = [1, 1]


def extra_node(model):
    model.graph.node.append(onnx.helper.make_node("Relu", ["age"], ["age_relu"], name="extra_relu"))


@pytest.mark.parametrize("edit, expected", [
    (drop_initializer, r"missing initializer 'age_branch.conv2.weight' of shape \[32, 24, 3, 3\]"),
    (add_initializer, r"unexpected initializer 'extra.weight'"),
    (reshape_initializer, r"'top_head.fc1.weight' has shape \[28, 40\], expected \[28, 44\]"),
    (nan_initializer, r"'low_branch.bn2.running_var' holds 1 NaN or Inf values \(first at index \(3,\)\)"),
    (unknown_op, r"node 'stem_wide.act1' is Relu, expected LeakyRelu"),
    (other_input_size, r"input 'image' is \[None, 3, 128, 64\], expected float32 \[N, 3, 64, 64\]"),
    (other_dilation, r"node 'stem_dilated.conv1' has dilations=\[1, 1\], expected \[2, 2\]"),
    (extra_node, r"unexpected node 'extra_relu'"),
])
def test_mismatching_onnx_files_are_refused(reference_model_path, tmp_path, edit, expected):
    with pytest.raises(ModelFileError, match=expected) as exc:
        refimpl.load(edited(reference_model_path, tmp_path, edit))
    one_line(exc)


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x08\x07 this is not protobuf \xff\xff\xff")
    with pytest.raises(ModelFileError, match="not an ONNX file") as exc:
        refimpl.load(path)
    one_line(exc)
    with pytest.raises(ModelFileError, match="no such file"):
        refimpl.load(tmp_path / "missing.onnx")


def test_truncated_onnx_file(reference_model_path, tmp_path):
    path = tmp_path / "truncated.onnx"
    path.write_bytes(open(reference_model_path, "rb").read()[:5000])
    with pytest.raises(ModelFileError) as exc:
        refimpl.load(path)
    one_line(exc)


@given(st.binary(max_size=2000))
def test_fuzzed_bytes_raise_only_model_file_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelFileError):
        refimpl.load(path)


def test_epsilon_and_alpha_are_read_from_the_file(reference_model_path, tmp_path):
    """A file written with other eps / alpha gives other outputs, and ONNX Runtime agrees with refimpl on it."""
    from conftest import assert_close, ort_session
    from refimpl import onnx_format
    from refimpl.golden import tolerance
    from refimpl.reference_weights import reference_weights

    path = tmp_path / "other_attrs.onnx"
    onnx_format.write(reference_weights(0), path, epsilon=1e-3, alpha=0.2)
    model = refimpl.load(path)
    assert model.attrs["top.bn1"]["epsilon"] == pytest.approx(1e-3)
    assert model.attrs["top_head.act1"]["alpha"] == pytest.approx(0.2)
    x = np.random.default_rng(1).random((2, 3, 64, 64), dtype=np.float32)
    got = model.forward(x)
    expected = dict(zip(got, ort_session(path).run(None, {"image": x})))
    for name in got:
        assert_close(name, expected[name], got[name], tolerance(name))
    assert np.abs(got["age"] - refimpl.load(reference_model_path).forward(x)["age"]).max() > 1e-2


# ---- python -m refimpl trace on something that is not a chip ----------------------------------

@pytest.mark.parametrize("shape, warned", [
    ((200, 200, 3), False), ((64, 64, 3), False), ((210, 190, 3), False), ((512, 512, 3), False),
    ((480, 640, 3), True), ((200, 100, 3), True), ((513, 513, 3), True), ((3000, 4000, 3), True),
])
def test_trace_warns_when_the_image_is_not_a_chip(shape, warned):
    from refimpl.__main__ import chip_warning

    warning = chip_warning("photo.png", np.zeros(shape, np.uint8))
    assert (warning is not None) == warned
    if warned:
        assert "\n" not in warning and "not an aligned face chip" in warning
        assert "agegender predict photo.png" in warning and f"{shape[1]}x{shape[0]}" in warning


def test_trace_on_a_photo_prints_the_warning_once_and_still_traces(reference_model_path, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    photo = tmp_path / "photo.npy"
    np.save(photo, np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    done = subprocess.run([sys.executable, "-m", "refimpl", "trace", str(photo), "--model", reference_model_path],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "agegender predict" in lines[0], done.stderr
    assert "years, P(male)" in done.stdout
