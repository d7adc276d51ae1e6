"""Tolerances of the peers that are not fp32-equivalent: they check the peer runs the same model, not that it
agrees with fp32 to the last bits. fp32-equivalent peers are held to the golden contract (refimpl.golden)."""
from refimpl import golden

from ..tensorrt_backend import FP16_AGE_TOLERANCE, FP16_GENDER_TOLERANCE

# fp16 storage (ncnn's default): the same 11-bit reasoning as TensorRT FP16 (bench/tensorrt_backend.py).
# bfloat16 keeps 8 significant bits (unit roundoff 3.9e-3, 8x fp16's): the fp16 bounds scaled by 4 (not 8: the
# rounding errors of 20 layers partly cancel; OpenVINO's bf16 default measured 0.44 years and 0.013 here, on an
# EPYC with AMX). A wrong model (a swapped or missing layer) moves ages by years and genders by tenths: still caught.
BF16_AGE_TOLERANCE = 4 * FP16_AGE_TOLERANCE            # 2 years
BF16_GENDER_TOLERANCE = 4 * FP16_GENDER_TOLERANCE      # 0.04


def for_precision(precision):
    """'f32' / 'f16' / 'bf16' -> tolerance(output name) for refimpl.golden.check_outputs."""
    if precision == "f32":
        return golden.tolerance
    age, gender = ((FP16_AGE_TOLERANCE, FP16_GENDER_TOLERANCE) if precision == "f16" else
                   (BF16_AGE_TOLERANCE, BF16_GENDER_TOLERANCE))
    return lambda name: age if name.startswith("age") else gender
