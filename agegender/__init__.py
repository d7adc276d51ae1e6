"""agegender: age and gender of the faces in photos, on the light-weight multi-task CNN of this kit.

    from agegender import Estimator
    faces = Estimator().predict("photo.jpg")     # [Face(box=(l, t, r, b), age=..., gender='female', ...)]

Errors a caller sees: ImageError (a bad image file or array), DetectorUnavailableError
(face detection without the `detect` extra), refimpl.InputError and
refimpl.ModelFileError (a bad weights file). All but DetectorUnavailableError are
ValueErrors. The CLI is `agegender predict` (see cli.py); predict_to_parquet(paths, out,
client=None) writes a Parquet data set, on a Dask cluster if given one (scale.py). The names below load on
first use, so that the CLI starts without importing numpy for `--help`.
"""
from .errors import DetectorUnavailableError, ImageError

__all__ = ["Estimator", "Face", "read_image", "ImageError", "DetectorUnavailableError", "InputError",
           "ModelFileError", "predict_to_parquet"]

_LAZY = {"Estimator": ".estimator", "Face": ".estimator", "read_image": ".images",
         "InputError": "refimpl", "ModelFileError": "refimpl", "predict_to_parquet": ".scale"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'agegender' has no attribute {name!r}")
