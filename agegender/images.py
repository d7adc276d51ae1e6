"""Image files and buffers -> uint8 RGB [H, W, 3], or one ImageError saying why not.

Decoding untrusted files is where things break, so this module is strict about what
it opens (JPEG, PNG, BMP, WebP: the formats the CLI promises), checks the pixel
count from the header before decoding anything, applies the EXIF orientation, and
turns every mode Pillow can produce into 8-bit RGB:

    gray, palette, 1-bit, CMYK, YCbCr -> Pillow's conversion to RGB
    16-bit and 32-bit gray (I;16, I)   -> scaled to 0..255 (value / 257, a 16-bit range)
    float gray (F)                     -> [0, 1] data scaled by 255, otherwise clipped
    RGBA, LA, PA, transparent palettes -> composited on black, as refimpl.preprocess does

Any failure inside the decoder (Pillow raises OSError, SyntaxError, ValueError,
struct.error, EOFError, IndexError ... on hostile input) becomes an ImageError
with a one-line message. Needs pillow (the `image` extra); arrays need nothing.
"""
import io
import os
import warnings

import numpy as np

from .errors import ImageError, one_line

FORMATS = ("JPEG", "PNG", "BMP", "WEBP")            # JPEG covers MPO, the flavour many cameras write
EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp")
MAX_PIXELS = 90_000_000                            # about Pillow's own decompression-bomb limit


def _pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImageError("reading image files needs pillow: pip install 'agegender-kit[image]'") from None
    return Image, ImageOps


def read_image(source, max_pixels=MAX_PIXELS):
    """A path, bytes or binary file object -> uint8 RGB [H, W, 3], EXIF orientation applied. Raises ImageError."""
    Image, ImageOps = _pillow()
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        try:
            size = os.path.getsize(source)
        except OSError as exc:
            raise ImageError(f"cannot read the file ({one_line(exc)})") from None
        if os.path.isdir(source):
            raise ImageError("is a folder, not an image file")
        if size == 0:
            raise ImageError("the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                  # DecompressionBombWarning, EXIF warnings
            with Image.open(source, formats=FORMATS) as image:
                width, height = image.size
                if width <= 0 or height <= 0:
                    raise ImageError(f"the image is {width} x {height} pixels: it has no pixels")
                if width * height > max_pixels:
                    raise ImageError(f"the image is {width} x {height} = {width * height / 1e6:.0f} megapixels, "
                                     f"larger than the limit of {max_pixels / 1e6:.0f} megapixels")
                image.load()
                image = _oriented(image, ImageOps)
                return to_rgb_array(image)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("not enough memory to decode the image") from None
    except Exception as exc:  # noqa: BLE001 - a hostile file can make any decoder step raise anything
        if type(exc).__name__ == "DecompressionBombError":          # Pillow's own limit, met in open()
            raise ImageError(f"the image is larger than the limit of {max_pixels / 1e6:.0f} megapixels "
                             f"({one_line(exc, 80)})") from None
        if type(exc).__name__ == "UnidentifiedImageError":
            raise ImageError("not a JPEG, PNG, BMP or WebP image") from None
        raise ImageError(f"corrupt or truncated image ({one_line(exc, 150)})") from None


def _oriented(image, ImageOps):
    """Apply the EXIF orientation tag; a broken EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - bad EXIF must not lose the picture
        return image


def to_rgb_array(image):
    """A decoded PIL image in any mode -> C-contiguous uint8 RGB [H, W, 3]."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        gray = np.asarray(image, dtype=np.float64)
        gray = gray / 257.0 if mode != "I" or gray.max(initial=0) > 255 else gray
        return _gray_to_rgb(gray)
    if mode == "F":
        gray = np.nan_to_num(np.asarray(image, dtype=np.float64))
        return _gray_to_rgb(gray * 255.0 if gray.max(initial=0) <= 1.0 else gray)
    if "A" in mode or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        return np.ascontiguousarray(np.round(rgba[:, :, :3] * (rgba[:, :, 3:] / 255.0)), dtype=np.uint8)
    if mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image), dtype=np.uint8)


def _gray_to_rgb(gray):
    gray8 = np.clip(np.round(gray), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(gray8[:, :, None], 3, axis=2))


def as_rgb(image):
    """An array the user passed (uint8 gray / RGB / RGBA, or a PIL image) -> uint8 RGB [H, W, 3]. Raises ImageError."""
    if hasattr(image, "mode") and hasattr(image, "size") and not isinstance(image, np.ndarray):
        return to_rgb_array(image)                     # a PIL image
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ImageError(f"image dtype is {array.dtype}, expected uint8 (0..255)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(f"image shape is {list(array.shape)}, expected [H, W], [H, W, 3] or [H, W, 4]")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"image shape is {list(array.shape)}: it has no pixels")
    if array.shape[2] == 4:
        alpha = array[:, :, 3:].astype(np.float32) / 255.0
        array = np.round(array[:, :, :3] * alpha).astype(np.uint8)
    return np.ascontiguousarray(array)


def is_image_name(path):
    """Whether a file name has one of the image extensions a folder scan picks up."""
    return path.lower().endswith(EXTENSIONS)
