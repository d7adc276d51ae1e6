"""agegender.images: every mode and format decodes to uint8 RGB, every bad file is one ImageError line.

Fuzzing: random bytes, and valid small images in each format with bytes flipped, inserted
or cut, must decode or raise ImageError; mutated ONNX files must load or raise
ModelFileError. Nothing else may escape.
"""
import io
import os
import struct
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refimpl
from agegender import Estimator, ImageError, read_image
from agegender.images import to_rgb_array
from agegender_testdata import encode, random_chips

PIL = pytest.importorskip("PIL", reason="reading image files needs pillow (the `image` extra)")
from PIL import Image  # noqa: E402

FUZZ_EXAMPLES = settings.default.max_examples * 8      # decoding is cheap: 8x the profile's count


@pytest.fixture(scope="module")
def rgb():
    """uint8 [40, 32, 3] smooth ramps (JPEG keeps them), 40 x 32 so that swapped axes show."""
    y, x = np.mgrid[0:40, 0:32]
    return np.stack([x * 8, y * 6, 255 - (x + y) * 3], axis=2).clip(0, 255).astype(np.uint8)


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True}),
                                          ("JPEG", {"quality": 100})])
def test_each_format_reads_back(tmp_path, rgb, fmt, options):
    got = read_image(write(tmp_path, "x." + fmt.lower(), encode(rgb, fmt, **options)))
    assert got.dtype == np.uint8 and got.shape == rgb.shape and got.flags.c_contiguous
    tolerance = 3 if fmt == "JPEG" else 0                        # JPEG at quality 100 is near, not exact
    assert np.abs(got.astype(int) - rgb).mean() <= tolerance


def test_modes_become_rgb(rgb):
    gray = rgb[:, :, 1]
    cases = {
        "L": (Image.fromarray(gray), np.repeat(gray[:, :, None], 3, axis=2)),
        "I;16": (Image.fromarray(gray.astype(np.uint16) * 257), np.repeat(gray[:, :, None], 3, axis=2)),
        "RGBA opaque": (Image.fromarray(np.dstack([rgb, np.full(gray.shape, 255, np.uint8)])), rgb),
        "RGBA clear": (Image.fromarray(np.dstack([rgb, np.zeros_like(gray)])), np.zeros_like(rgb)),
        "LA": (Image.fromarray(np.dstack([gray, np.full(gray.shape, 255, np.uint8)]), "LA"),
               np.repeat(gray[:, :, None], 3, axis=2)),
        "F": (Image.fromarray(gray.astype(np.float32) / 255), np.repeat(gray[:, :, None], 3, axis=2)),
    }
    for name, (image, want) in cases.items():
        got = to_rgb_array(image)
        assert got.dtype == np.uint8 and got.shape == want.shape, name
        assert np.abs(got.astype(int) - want).max() <= 1, name


@pytest.mark.parametrize("band_pixels", [None, 4 * 32])
@pytest.mark.parametrize("row", [0, -1])
def test_i_and_f_gray_are_scaled_by_their_largest_value_wherever_it_is(monkeypatch, rgb, row, band_pixels):
    """32-bit gray is divided by 257 when some value is above 255, float gray is multiplied by 255 when none is
    above 1.0: decided on the largest value of the whole image, here a single pixel in the first or the last
    row, the image read whole or in bands of 4 rows. Every other pixel alone would decide the other way."""
    from agegender import images

    if band_pixels is not None:
        monkeypatch.setattr(images, "BAND_PIXELS", band_pixels)
    gray = rgb[:, :, 1].astype(np.float64)                            # 0..234
    ints = gray.astype(np.int32)
    ints[row, 5] = 1000
    floats = (gray / 255).astype(np.float32)
    floats[row, 5] = 2.0
    for image, want in ((Image.fromarray(ints), np.round(ints / 257.0)),
                        (Image.fromarray(floats), np.round(floats.astype(np.float64)))):
        assert image.mode in ("I", "F")
        got = to_rgb_array(image)
        want = np.repeat(np.clip(want, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
        np.testing.assert_array_equal(got, want, err_msg=image.mode)

def test_sixteen_bit_cmyk_palette_and_bilevel_files(tmp_path, rgb):
    gray16 = (rgb[:, :, 0].astype(np.uint16) * 257)
    files = {
        "gray16.png": encode(gray16, "PNG"),
        "cmyk.jpg": _save(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "palette.png": _save(Image.fromarray(rgb).convert("P"), "PNG"),
        "transparent_palette.png": _save(Image.fromarray(rgb).convert("P"), "PNG", transparency=0),
        "bilevel.png": _save(Image.fromarray(rgb).convert("1"), "PNG"),
        "gray.jpg": encode(rgb[:, :, 0], "JPEG"),
        "rgba.webp": _save(Image.fromarray(np.dstack([rgb, rgb[:, :, 0]])), "WEBP"),
    }
    for name, data in files.items():
        got = read_image(write(tmp_path, name, data))
        assert got.shape == rgb.shape and got.dtype == np.uint8, name
    got16 = read_image(write(tmp_path, "g16.png", files["gray16.png"]))
    assert np.abs(got16[:, :, 0].astype(int) - rgb[:, :, 0]).max() <= 1     # 16-bit scaled, not clipped


def png_16bit(rgb16):
    """A 16-bit RGB (colour type 2) or RGBA (6) PNG from uint16 [H, W, 3 or 4]: Pillow cannot write these."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    h, w, c = rgb16.shape
    big_endian = rgb16.astype(">u2")
    rows = b"".join(b"\x00" + big_endian[y].tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("alpha", [False, True])
def test_sixteen_bit_colour_png(rgb, alpha):
    rgb16 = rgb.astype(np.uint16) * 256 + 100                         # high byte = the 8-bit value
    if alpha:
        rgb16 = np.concatenate([rgb16, np.full(rgb.shape[:2] + (1,), 65535, np.uint16)], axis=2)
    got = read_image(png_16bit(rgb16))
    assert got.shape == rgb.shape and np.abs(got.astype(int) - rgb).max() <= 1


def _save(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation, transform", [
    (1, lambda a: a), (3, lambda a: a[::-1, ::-1]), (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation_is_applied(tmp_path, rgb, orientation, transform):
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = Image.fromarray(rgb)
    got = read_image(write(tmp_path, "o.jpg", _save(stored, "JPEG", quality=100, exif=exif.tobytes())))
    want = transform(rgb)
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want).mean() < 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_equals_pillows_transpose_region_by_region(rgb, orientation):
    """PNG keeps pixels exactly: each of the 8 orientations equals ImageOps.exif_transpose of the stored
    image, as a whole and in any region (the Picture orients each region it reads, not a full copy)."""
    from PIL import ImageOps

    from agegender.images import read_picture

    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(Image.fromarray(rgb), "PNG", exif=exif.tobytes())
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    picture = read_picture(data)
    assert picture.shape == want.shape
    np.testing.assert_array_equal(np.asarray(picture), want)
    rng = np.random.default_rng(orientation)
    for _ in range(20):
        left, right = sorted(rng.choice(want.shape[1] + 1, 2, replace=False))
        top, bottom = sorted(rng.choice(want.shape[0] + 1, 2, replace=False))
        np.testing.assert_array_equal(picture.region(left, top, right, bottom), want[top:bottom, left:right])


def png_header_only(width, height):
    """A well-formed PNG whose header claims width x height and whose pixel data is one empty row."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00"))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("name, data, message", [
    ("empty.jpg", b"", "empty"),
    ("text.jpg", b"hello, I am not a picture\n", "not a JPEG, PNG, BMP or WebP"),
    ("huge.png", png_header_only(100_000, 100_000), "than the limit of 90 megapixels"),
    ("big.png", png_header_only(10_000, 10_000), "than the limit of 90"),
    ("no_pixels.png", png_header_only(0, 10), "no pixels|not a JPEG"),
    ("header_only.png", png_header_only(20, 10), "corrupt or truncated"),
    ("gif.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "not a JPEG, PNG, BMP or WebP"),
])
def test_bad_files_are_one_line_image_errors(tmp_path, name, data, message):
    with pytest.raises(ImageError, match=message) as info:
        read_image(write(tmp_path, name, data))
    assert "\n" not in str(info.value) and len(str(info.value)) <= 240


def test_truncated_jpeg_and_png(tmp_path, rgb):
    for fmt in ("JPEG", "PNG"):
        data = encode(rgb, fmt)
        with pytest.raises(ImageError, match="corrupt or truncated"):
            read_image(write(tmp_path, "t." + fmt.lower(), data[: len(data) // 2]))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="cannot read the file"):
        read_image(str(tmp_path / "nothing.jpg"))
    with pytest.raises(ImageError, match="folder"):
        read_image(str(tmp_path))


def test_pixel_limit_is_a_parameter(tmp_path, rgb):
    path = write(tmp_path, "x.png", encode(rgb, "PNG"))
    with pytest.raises(ImageError, match="than the limit"):
        read_image(path, max_pixels=100)


# --- fuzzing -----------------------------------------------------------------------------------
SEEDS = {fmt: encode(random_chips(1, size=16, seed=8)[0][:, :12], fmt, **opts)
         for fmt, opts in (("PNG", {}), ("JPEG", {"quality": 80}), ("BMP", {}), ("WEBP", {}))}


def check_decodes_or_image_error(data):
    try:
        image = read_image(data, max_pixels=4_000_000)
    except ImageError as exc:
        assert "\n" not in str(exc)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@settings(max_examples=FUZZ_EXAMPLES)
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(data):
    check_decodes_or_image_error(data)


@settings(max_examples=FUZZ_EXAMPLES)
@given(fmt=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_fuzz_mutated_images(fmt, data):
    blob = bytearray(SEEDS[fmt])
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255),
                                         st.sampled_from(["set", "insert", "delete"])), min_size=1, max_size=6))
    for position, value, kind in edits:
        position = min(position, len(blob) - 1)
        if kind == "set":
            blob[position] = value
        elif kind == "insert":
            blob.insert(position, value)
        elif len(blob) > 1:
            del blob[position]
    cut = data.draw(st.integers(1, len(blob)))
    check_decodes_or_image_error(bytes(blob[:cut]))


WEIGHTS_BYTES = open(refimpl.DEFAULT_WEIGHTS, "rb").read()


@settings(max_examples=settings.default.max_examples * 2)
@given(data=st.data(), backend=st.sampled_from(["refimpl", "auto"]))
def test_fuzz_onnx_bytes(data, backend):
    """Mutated weight files: Estimator loads them (and predicts) or raises ModelFileError, nothing else."""
    blob = bytearray(WEIGHTS_BYTES)
    kind = data.draw(st.sampled_from(["flip", "truncate", "random"]))
    if kind == "flip":
        for position in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=8)):
            blob[position] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    else:
        blob = bytearray(data.draw(st.binary(max_size=256)))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "fuzzed.onnx")
        with open(path, "wb") as f:
            f.write(bytes(blob))
        try:
            estimator = Estimator(path, backend=backend)
        except refimpl.ModelFileError as exc:
            assert "\n" not in str(exc)
            return
    faces = estimator.predict_chips(random_chips(1, size=16)[0])
    assert len(faces) == 1 and faces[0].gender in ("male", "female")


@pytest.fixture(scope="module")
def estimator(reference_model_path):
    return Estimator(reference_model_path)


@settings(max_examples=FUZZ_EXAMPLES)
@given(data=st.data())
def test_fuzz_arrays_through_predict(estimator, data):
    """Any uint8 array of 1..64 px per side, gray/RGB/RGBA: predict_chips gives one face, predict a list."""
    from hypothesis.extra.numpy import arrays

    from agegender import detect

    channels = data.draw(st.sampled_from([(), (1,), (3,), (4,)]))
    shape = (data.draw(st.integers(1, 64)), data.draw(st.integers(1, 64))) + channels
    image = data.draw(arrays(np.uint8, shape))
    faces = estimator.predict_chips(image)
    assert len(faces) == 1 and np.isfinite(faces[0].age)
    if detect.available():                         # no crash, and any face found lies inside the image, estimated
        h, w = shape[:2]
        for face in estimator.predict(image):
            left, top, right, bottom = face.box
            assert 0 <= left <= right < w and 0 <= top <= bottom < h, (face.box, shape)
            assert np.isfinite(face.age) and face.gender in ("male", "female")


def test_a_stream_that_cannot_seek_is_read_whole(rgb):
    """A pipe (no seek) is read into memory first, as Image.open does."""
    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            return self._data.readinto(buffer)

    got = read_image(io.BufferedReader(Pipe(encode(rgb, "PNG"))))
    np.testing.assert_array_equal(got, rgb)
