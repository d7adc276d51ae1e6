"""What every peer runner shares: a Runner (bench/backends.py) that knows its precision."""
import numpy as np

from refimpl import spec

from ..backends import Runner
from . import tolerances


class PeerRunner(Runner):
    """A peer at one thread count; `precision` ('f32', 'f16', 'bf16') sets `fp32` and the tolerance."""
    precision = "f32"

    def __init__(self, name, threads):
        super().__init__(threads)
        self.name = name

    @property
    def fp32(self):
        return self.precision == "f32"

    def tolerance(self, output_name):
        return tolerances.for_precision(self.precision)(output_name)


def as_contract(values):
    """{output name: array-like} -> {output name: float32 [N, 1]}, refimpl's contract."""
    return {name: np.asarray(values[name], np.float32).reshape(-1, 1) for name in spec.OUTPUT_NAMES}
