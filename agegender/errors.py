"""The error types the estimator and the CLI raise, besides refimpl's InputError and ModelFileError.

Every message is one line: the CLI prints it after the file name.
"""


class ImageError(ValueError):
    """A file or buffer is not a readable image: unknown format, corrupt, truncated, empty or too large."""


class DetectorUnavailableError(ImportError):
    """Face detection was asked for, but the `detect` extra (dlib-bin + face-recognition-models) is missing."""


def one_line(exc, limit=200):
    """An exception as one line of at most `limit` characters; foreign types keep their name as a prefix."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, ValueError) or type(exc) is ValueError or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
