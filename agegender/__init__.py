"""agegender: age and gender of the faces in photos, on the light-weight multi-task CNN of this kit.

    from agegender import Estimator
    faces = Estimator().predict("photo.jpg")     # [Face(box=(l, t, r, b), age=..., gender='female', ...)]

Errors a caller sees: ImageError (a bad image file or array), DetectorUnavailableError
(face detection without the `detect` extra), refimpl.InputError and
refimpl.ModelFileError (a bad weights file). All but DetectorUnavailableError are
ValueErrors. The CLI is `agegender predict` (see cli.py).
"""
from refimpl import InputError, ModelFileError

from .errors import DetectorUnavailableError, ImageError
from .estimator import Estimator, Face
from .images import read_image

__all__ = ["Estimator", "Face", "read_image", "ImageError", "DetectorUnavailableError", "InputError",
           "ModelFileError"]
