"""Image files and buffers -> uint8 RGB [H, W, 3], or one ImageError saying why not.

Decoding untrusted files is where things break, so this module is strict about what
it opens (JPEG, PNG, BMP, WebP: the formats the CLI promises), checks the pixel
count from the header before decoding anything (our limit alone decides: Pillow's
own decompression-bomb check is not run), applies the EXIF orientation, and turns
every mode Pillow can produce into 8-bit RGB, in one place (`rgb_converter`):

    gray, palette, 1-bit, CMYK, YCbCr -> Pillow's conversion to RGB
    16-bit and 32-bit gray (I;16, I)   -> scaled to 0..255 (value / 257, a 16-bit range)
    float gray (F)                     -> [0, 1] data scaled by 255, otherwise clipped
    RGBA, LA, PA, transparent palettes -> composited on black, as refimpl.preprocess does

Memory: a decoded photo stays in Pillow's own buffer (4 bytes per pixel for RGB and
RGBA, 1 for gray and palette) inside a `Picture`, which hands out uint8 RGB regions
a band or a face at a time; the EXIF orientation is applied to each region, not to
a second copy of the whole photo. The estimator never holds a full-size float copy.

Any failure inside the decoder (Pillow raises OSError, SyntaxError, ValueError,
struct.error, EOFError, IndexError ... on hostile input) becomes an ImageError
with a one-line message. Needs pillow (the `image` extra); arrays need nothing.
"""
import io
import os
import struct
import warnings

import numpy as np

from .errors import ImageError, one_line

FORMATS = ("JPEG", "PNG", "BMP", "WEBP")            # JPEG covers MPO, the flavour many cameras write
EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp")
MAX_PIXELS = 90_000_000                            # about Pillow's own decompression-bomb limit
BAND_PIXELS = 1 << 18                              # pixels converted at a time when a whole picture is read
ORIENTATION_TAG = 0x0112
# EXIF orientation -> Pillow's Image.transpose method (FLIP_LEFT_RIGHT=0 ... TRANSVERSE=6), as ImageOps.exif_transpose
TRANSPOSE_FOR_ORIENTATION = {2: 0, 3: 3, 4: 1, 5: 5, 6: 4, 7: 6, 8: 2}
SIXTEEN_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N")


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImageError("reading image files needs pillow: pip install 'agegender-kit[image]'") from None
    return Image


def read_image(source, max_pixels=MAX_PIXELS, formats=FORMATS):
    """A path, bytes or binary file object -> uint8 RGB [H, W, 3], EXIF orientation applied. Raises ImageError."""
    return np.asarray(read_picture(source, max_pixels, formats))


def read_picture(source, max_pixels=MAX_PIXELS, formats=FORMATS):
    """A path, bytes or binary file object -> Picture, decoded but kept in Pillow's storage. Raises ImageError."""
    Image = _pillow()
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
    opened = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                  # EXIF and chunk warnings
            image, opened = _open(Image, source, formats)
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageError(f"the image is {width} x {height} pixels: it has no pixels")
            if width * height > max_pixels:
                raise ImageError(f"the image is {width} x {height} = {width * height / 1e6:.0f} megapixels, "
                                 f"larger than the limit of {max_pixels / 1e6:.0f} megapixels")
            image.load()
            picture = Picture(image, _orientation(image))
            picture.region(0, 0, 1, 1)                       # an unconvertible mode fails here, as this file's error
            return picture
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("not enough memory to decode the image") from None
    except Exception as exc:  # noqa: BLE001 - a hostile file can make any decoder step raise anything
        if type(exc).__name__ == "UnidentifiedImageError":
            raise ImageError(f"not a {_format_names(formats)} image") from None
        raise ImageError(f"corrupt or truncated image ({one_line(exc, 150)})") from None
    finally:
        if opened is not None:
            opened.close()


def _open(Image, source, formats):
    """Image.open(source, formats) without Pillow's decompression-bomb check -> (image, file we opened or None).

    Pillow refuses images above twice Image.MAX_IMAGE_PIXELS in open(), whatever limit the
    caller chose; here the caller's max_pixels alone decides, checked on the header size.
    """
    if any(name not in Image.OPEN for name in formats):
        Image.preinit()
        if any(name not in Image.OPEN for name in formats):
            Image.init()
    opened = open(source, "rb") if isinstance(source, (str, os.PathLike)) else None
    fp = opened or source
    try:
        fp.seek(0)
    except (AttributeError, io.UnsupportedOperation):                 # a pipe: read it whole, as Image.open does
        fp = io.BytesIO(fp.read())
    filename = os.fspath(source) if opened else ""
    try:
        prefix = fp.read(16)
        for name in formats:
            if name not in Image.OPEN:                       # e.g. Pillow built without WebP
                continue
            factory, accept = Image.OPEN[name]
            accepted = accept(prefix) if accept else True
            if accepted and not isinstance(accepted, str):   # a str is Pillow's "looks like it, but unsupported"
                fp.seek(0)
                try:
                    return factory(fp, filename), opened
                except (SyntaxError, IndexError, TypeError, struct.error):   # as Image.open: try the next format
                    continue
    except BaseException:
        if opened:
            opened.close()
        raise
    if opened:
        opened.close()
    raise ImageError(f"not a {_format_names(formats)} image")


def _format_names(formats):
    names = ["WebP" if name == "WEBP" else name for name in formats]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _orientation(image):
    """The Image.transpose method that applies the EXIF orientation tag, or None; broken EXIF counts as none."""
    try:
        return TRANSPOSE_FOR_ORIENTATION.get(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - bad EXIF must not lose the picture
        return None


class Picture:
    """A decoded image, handed out as uint8 RGB [H, W, 3] a region at a time; np.asarray(picture) is all of it.

    Holds either a PIL image in its own mode and storage (converted and oriented region by
    region, so a photo costs its decoder's buffer and no full-size copy), or a uint8 RGB array.
    shape is (height, width, 3) of the oriented RGB image.
    """

    def __init__(self, image, transpose=None):
        """image: a PIL image (any mode) or a uint8 RGB array [H, W, 3]; transpose: an Image.transpose
        method applied to every region (the EXIF orientation), None for none."""
        if isinstance(image, np.ndarray):
            self._array, self._image, self._transpose = image, None, None
            height, width = image.shape[:2]
        else:
            self._array, self._image, self._transpose = None, image, transpose
            self._convert = rgb_converter(image)
            width, height = image.size
            if transpose in (2, 4, 5, 6):                    # quarter turns and transposes swap the sides
                width, height = height, width
        self.height, self.width, self.shape = height, width, (height, width, 3)

    def __repr__(self):
        stored = "array" if self._image is None else f"PIL {self._image.mode}"
        return f"Picture({self.width} x {self.height}, {stored})"

    def region(self, left, top, right, bottom):
        """uint8 RGB [bottom - top, right - left, 3] of the box (inside the picture; right, bottom excluded)."""
        if self._image is None:
            return self._array[top:bottom, left:right]
        part = self._image.crop(self._stored_box(left, top, right, bottom))
        if self._transpose is not None:
            part = part.transpose(self._transpose)
        return self._convert(part)

    def _stored_box(self, left, top, right, bottom):
        """The box in the stored (not yet oriented) image that holds the oriented box."""
        if self._transpose is None:
            return left, top, right, bottom
        stored_w, stored_h = self._image.size
        x_last, y_last = stored_w - 1, stored_h - 1
        to_stored = {                                        # oriented pixel (x, y) -> stored pixel, per method
            0: lambda x, y: (x_last - x, y), 1: lambda x, y: (x, y_last - y), 3: lambda x, y: (x_last - x, y_last - y),
            2: lambda x, y: (x_last - y, x), 4: lambda x, y: (y, y_last - x), 5: lambda x, y: (y, x),
            6: lambda x, y: (x_last - y, y_last - x),
        }[self._transpose]
        (x0, y0), (x1, y1) = to_stored(left, top), to_stored(right - 1, bottom - 1)
        return min(x0, x1), min(y0, y1), max(x0, x1) + 1, max(y0, y1) + 1

    def bands(self, rows):
        """(top, uint8 RGB band) for bands of `rows` rows (the last one may be shorter), top to bottom."""
        for top in range(0, self.height, rows):
            yield top, self.region(0, top, self.width, min(top + rows, self.height))

    def band_rows(self, multiple=1):
        """Rows per band: about BAND_PIXELS pixels, a multiple of `multiple`."""
        return max(1, BAND_PIXELS // (self.width * multiple)) * multiple

    def __array__(self, dtype=None, copy=None):
        if self._image is None:
            rgb = self._array.copy() if copy else self._array
        else:
            rgb = np.empty(self.shape, np.uint8)
            for top, band in self.bands(self.band_rows()):
                rgb[top:top + len(band)] = band
        return rgb if dtype is None else rgb.astype(dtype)


def rgb_converter(image):
    """The one conversion of a PIL image in any mode to uint8 RGB: a function for the image or any crop of it.

    Every PIL input (a file's decoded image, or an image the caller passes) goes through here.
    What depends on the whole image (the scale of 32-bit and float gray) is decided here, once.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_GRAY or mode == "I":
        divide = mode != "I" or _largest_value(image) > 255

        def convert(part):
            gray = np.asarray(part, dtype=np.float64)
            return _gray_to_rgb(gray / 257.0 if divide else gray)
    elif mode == "F":
        scale = _largest_value(image) <= 1.0

        def convert(part):
            gray = np.nan_to_num(np.asarray(part, dtype=np.float64))
            return _gray_to_rgb(gray * 255.0 if scale else gray)
    elif "A" in mode or (mode == "P" and "transparency" in image.info):
        def convert(part):                           # round(colour * (alpha / 255)) in float32, a channel at a time
            rgba = np.asarray(part if mode == "RGBA" else _converted(part, "RGBA"))
            alpha = rgba[:, :, 3].astype(np.float32) / 255.0
            rgb = np.empty(rgba.shape[:2] + (3,), np.uint8)
            for c in range(3):
                rgb[:, :, c] = np.round(rgba[:, :, c].astype(np.float32) * alpha)
            return rgb
    else:
        def convert(part):
            return np.ascontiguousarray(np.asarray(part if mode == "RGB" else _converted(part, "RGB")),
                                        dtype=np.uint8)
    return convert


def _converted(part, mode):
    try:
        return part.convert(mode)
    except ValueError as exc:                                # e.g. a mode Pillow cannot turn into RGB
        raise ImageError(f"cannot convert a mode {part.mode} image to {mode} ({one_line(exc, 80)})") from None


def _largest_value(image):
    """Largest pixel value of a one-band image (NaN as 0, as the conversion treats it), read band by band."""
    width, height = image.size
    rows = max(1, BAND_PIXELS // max(width, 1))
    largest = 0.0
    for top in range(0, height, rows):
        part = np.nan_to_num(np.asarray(image.crop((0, top, width, min(top + rows, height))), dtype=np.float64))
        largest = max(largest, float(part.max(initial=0)))
    return largest


def to_rgb_array(image):
    """A decoded PIL image in any mode -> C-contiguous uint8 RGB [H, W, 3]."""
    return np.asarray(Picture(image))


def _gray_to_rgb(gray):
    gray8 = np.clip(np.round(gray), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(gray8[:, :, None], 3, axis=2))


def is_pil_image(image):
    """Whether `image` is a PIL image (duck-typed: pillow is not imported for arrays)."""
    return hasattr(image, "mode") and hasattr(image, "size") and hasattr(image, "crop") \
        and not isinstance(image, np.ndarray)


def as_picture(image):
    """A Picture, a PIL image (any mode, as stored: no EXIF rotation) or an array (see as_rgb) -> Picture."""
    if isinstance(image, Picture):
        return image
    if is_pil_image(image):
        if image.size[0] <= 0 or image.size[1] <= 0:
            raise ImageError(f"the image is {image.size[0]} x {image.size[1]} pixels: it has no pixels")
        picture = Picture(image)
        picture.region(0, 0, min(1, picture.width), min(1, picture.height))   # an unconvertible mode fails now
        return picture
    return Picture(as_rgb(image))


def as_rgb(image):
    """An array the user passed (uint8 gray / RGB / RGBA), a PIL image or a Picture -> uint8 RGB [H, W, 3].

    Raises ImageError."""
    if isinstance(image, Picture) or is_pil_image(image):
        return np.asarray(as_picture(image))
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
