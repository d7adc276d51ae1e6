"""Crafted image inputs: a PIL image in every mode, a header that claims 900 megapixels, a photo the size of a
decompression bomb. Each must give the documented answer, the documented one-line error, or stay within
the documented memory (README: peak memory per input pixel).
"""
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from agegender import Estimator, ImageError, read_image
from agegender.images import FORMATS
from agegender_testdata import agegender_peak_rss, random_chips

PIL = pytest.importorskip("PIL", reason="reading image files needs pillow (the `image` extra)")
from PIL import Image  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def estimator(reference_model_path):
    return Estimator(reference_model_path, backend="refimpl")


# --- a PIL image of any mode is the picture a file of that mode holds ----------------------------------
def _picture(mode):
    """A 72 x 60 PIL image in `mode` with varied content (smooth colour fields, part transparent)."""
    rgb = random_chips(1, size=72, seed=11)[0][:, :60]
    gray = rgb[:, :, 1]
    alpha = np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)[None, :].repeat(rgb.shape[0], axis=0)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, alpha]))
    if mode == "LA":
        return Image.fromarray(np.dstack([gray, alpha]), "LA")
    if mode == "I;16":
        return Image.fromarray(gray.astype(np.uint16) * 250)                # 16-bit range: divided by 257
    if mode == "I":
        return Image.fromarray(gray.astype(np.int32) * 40).convert("I")     # above 255: divided by 257
    if mode == "F":
        return Image.fromarray(gray.astype(np.float32) / 255)               # [0, 1]: scaled by 255
    if mode == "P transparent":
        image = Image.fromarray(rgb).convert("P")
        image.info["transparency"] = int(np.asarray(image)[0, 0])
        return image
    return Image.fromarray(rgb).convert(mode)


# PNG keeps these modes exactly; TIFF keeps CMYK, I and F (PNG cannot hold them)
PNG_MODES = ["1", "L", "LA", "P", "P transparent", "RGB", "RGBA", "I;16"]
TIFF_MODES = ["CMYK", "I", "F"]


@pytest.mark.parametrize("mode", PNG_MODES + TIFF_MODES)
def test_a_pil_image_of_any_mode_gives_what_its_file_gives(estimator, tmp_path, mode):
    """Alone, in a list, or as the file it was saved to (read back by read_image): the same chip, the same age.

    The pixels are identical on every route, so the network sees the same input in the same batch size:
    the results must be equal, not close. CMYK alone used to be read as RGBA (K as alpha: a black chip),
    a palette image alone as its palette indices, LA / I;16 / I / F / 1 alone as a wrong shape or dtype.
    """
    image = _picture(mode)
    tiff = mode in TIFF_MODES
    path = str(tmp_path / ("x.tiff" if tiff else "x.png"))
    image.save(path, transparency=image.info["transparency"]) if "transparency" in image.info else image.save(path)
    with Image.open(path) as stored:
        assert stored.mode == image.mode, f"the file holds mode {stored.mode}, not {image.mode}"
    from_file = read_image(path, formats=FORMATS + ("TIFF",)) if tiff else read_image(path)
    want = estimator.predict_chips(from_file)[0]
    alone = estimator.predict_chips(image)[0]
    assert (alone.age, alone.male_probability) == (want.age, want.male_probability), mode
    assert [f.age for f in estimator.predict_chips([image, image])] == \
        [f.age for f in estimator.predict_chips([from_file, from_file])], mode
    if not tiff:                                                       # the path itself, as predict_chips reads it
        assert estimator.predict_chips(path)[0].age == want.age, mode


def test_a_cmyk_image_is_its_colours_not_black(estimator):
    """The CMYK chip is Pillow's CMYK -> RGB conversion of it (independent of our code), not a black chip."""
    cmyk = _picture("CMYK")
    rgb = np.asarray(cmyk.convert("RGB"))
    assert rgb.mean() > 60                                             # a picture, not black
    assert estimator.predict_chips(cmyk)[0].age == estimator.predict_chips(rgb)[0].age
    assert estimator.predict_chips(cmyk)[0].age != estimator.predict_chips(np.zeros_like(rgb))[0].age


def test_a_mode_without_an_rgb_conversion_is_one_line(estimator):
    try:
        image = Image.new("La", (8, 8))                                # premultiplied LA: Pillow has no La -> RGB
        image.convert("RGB")
    except ValueError:
        pass
    else:
        pytest.skip("this Pillow converts La to RGB")
    with pytest.raises(ImageError, match="mode La") as info:
        estimator.predict_chips(image)
    assert "\n" not in str(info.value)


# --- a header claiming 900 megapixels: our limit decides, with the header's numbers ---------------------
def header_only_png(width, height):
    """The 8-byte signature, an IHDR chunk claiming width x height 8-bit gray, and IEND: 57 bytes, no pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def test_a_header_above_our_limit_is_refused_with_its_size_and_our_limit():
    bomb = header_only_png(30000, 30000)
    with pytest.raises(ImageError, match=r"30000 x 30000 = 900 megapixels, larger than the limit of 800 megapixels"):
        read_image(bomb, max_pixels=800_000_000)
    with pytest.raises(ImageError, match=r"= 900 megapixels, larger than the limit of 90 megapixels"):
        read_image(bomb)


def test_pillows_own_limit_does_not_decide_when_ours_is_higher():
    """A limit of 1000 MP lets a 900 MP header through to decoding (which finds no pixel data): the error is
    about the file, never "larger than the limit" (Pillow's bomb check used to fire at 179 MP)."""
    image_module_limit = Image.MAX_IMAGE_PIXELS
    for width, height in ((30000, 30000), (14000, 14000)):          # 900 MP, and 196 MP (just above Pillow's 179)
        with pytest.raises(ImageError) as info:
            read_image(header_only_png(width, height), max_pixels=1_000_000_000)
        assert "limit" not in str(info.value) and "corrupt or truncated" in str(info.value), str(info.value)
    assert Image.MAX_IMAGE_PIXELS == image_module_limit               # Pillow's global setting is left alone


def test_the_cli_applies_max_pixels_alone(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(header_only_png(30000, 30000))
    command = [sys.executable, "-m", "agegender", "predict", "--chips", "--backend", "refimpl"]
    allowed = subprocess.run(command + ["--max-pixels", "1000000000", str(bomb)], capture_output=True, text=True,
                             cwd=ROOT)
    assert allowed.returncode == 1 and "corrupt or truncated" in allowed.stderr, allowed.stderr
    assert "larger than the limit" not in allowed.stderr, allowed.stderr
    refused = subprocess.run(command + ["--max-pixels", "500000000", str(bomb)], capture_output=True, text=True,
                             cwd=ROOT)
    assert "30000 x 30000 = 900 megapixels, larger than the limit of 500 megapixels" in refused.stderr, refused.stderr


# --- a decompression-sized photo: peak memory per input pixel --------------------------------------------
BIG_SIDE = 7000                     # 49 megapixels: large enough that fixed costs are < 1 byte a pixel
MAX_BYTES_PER_PIXEL = 6.0           # README's guarantee; measured about 5.0 here (4 of them: Pillow's RGBA buffer)


def peak_rss(arguments):
    """Peak resident memory (bytes) of `agegender predict ARGUMENTS` in a child process."""
    return agegender_peak_rss(["predict"] + arguments)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc (Linux)")
def test_a_decompression_sized_png_costs_under_6_bytes_a_pixel(tmp_path):
    """A 7000 x 7000 RGBA PNG (cheap to compress: a flat colour with stripes), as a photo and with --chips.

    Measured on the child process (tracemalloc does not see Pillow's buffers), above the same command on a
    32 x 32 PNG. It used to take about 48 bytes a pixel (RGBA photo) and 28 (--chips): float copies of the
    whole image; now Pillow's buffer (4 bytes a pixel for RGBA) and band-sized pieces.
    """
    from agegender import detect

    big = Image.new("RGBA", (BIG_SIDE, BIG_SIDE), (90, 120, 200, 255))
    big.paste((200, 60, 40, 128), (0, 0, BIG_SIDE, BIG_SIDE // 3))
    big.save(tmp_path / "big.png", compress_level=1)
    del big
    Image.new("RGBA", (32, 32), (90, 120, 200, 255)).save(tmp_path / "tiny.png")
    pixels = BIG_SIDE * BIG_SIDE
    modes = [["--chips"]] + ([[]] if detect.available() else [])   # the photo route needs the detector
    for options in modes:
        baseline = peak_rss(options + [str(tmp_path / "tiny.png")])
        peak = peak_rss(options + [str(tmp_path / "big.png")])
        per_pixel = (peak - baseline) / pixels
        assert per_pixel < MAX_BYTES_PER_PIXEL, \
            f"{' '.join(options) or 'photo'}: {per_pixel:.1f} bytes a pixel above the baseline " \
            f"({peak / 1e6:.0f} MB against {baseline / 1e6:.0f} MB)"
