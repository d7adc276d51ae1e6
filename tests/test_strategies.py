"""The test inputs themselves: every kind is what it says, and the hypothesis examples reach every kind.

The `ci` profile is derandomized (the same 12 examples every run). random_batch mixes the kinds inside
each batch (`kind` first, then the others in turn), so the examples cover every kind whatever n and kind
hypothesis draws; these tests count that for the shapes of the suite's @given tests.
"""
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import FLAT_KINDS, INPUT_KINDS, batch_kinds, one_image, random_batch


def neighbour_step(image):
    """Mean |difference| between horizontally adjacent pixels."""
    return float(np.abs(np.diff(image, axis=2)).mean())


@pytest.mark.parametrize("seed", range(5))
def test_every_kind_is_what_it_says(seed):
    rng = np.random.default_rng(seed)
    x = random_batch(rng, len(INPUT_KINDS), "uniform")
    assert x.shape == (len(INPUT_KINDS), 3, 64, 64) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1
    images = dict(zip(batch_kinds(len(INPUT_KINDS)), x))
    assert set(images) == set(INPUT_KINDS)
    assert images["zeros"].max() == 0 and images["ones"].min() == 1
    assert np.ptp(images["constant"]) == 0
    assert 1e-4 < images["small_noise"].std() < 1e-2
    assert images["uniform"].std() > 0.25 and neighbour_step(images["uniform"]) > 0.25
    for kind in ("gradient", "blobs"):                    # varied, but continuous: small steps between pixels
        assert np.ptp(images[kind]) > 0.02 and neighbour_step(images[kind]) < 0.05, kind
    steps = np.abs(np.diff(images["patches"], axis=2))    # flat cells of 4 px or more, edges between them
    assert steps.max() > 0.01 and (steps == 0).mean() >= 0.75
    for channel in images["checkerboard"]:                # two colours, alternating: steps of 0 or |a - b|
        assert len(np.unique(channel)) == 2 and len(np.unique(np.abs(np.diff(channel, axis=1)))) == 2


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown input kind 'noise'"):
        one_image(np.random.default_rng(0), "noise")


def kinds_drawn(max_n, min_n=1):
    """Counter of the image kinds hypothesis's examples produce for @given(kind, n in min_n..max_n, seed)."""
    seen = Counter()

    @given(kind=st.sampled_from(INPUT_KINDS), n=st.integers(min_n, max_n), seed=st.integers(0, 2**31))
    def draw(kind, n, seed):
        seen.update(batch_kinds(n, kind))

    draw()
    return seen


@pytest.mark.parametrize("min_n, max_n", [(1, 16), (1, 9), (1, 6), (2, 8), (1, 5)])
def test_the_examples_cover_every_kind(min_n, max_n):
    """The shapes of test_refimpl_model's and test_kernels_model's whole-network tests: every kind is drawn,
    and flat images (one value, or nearly) are at most half of what the network sees."""
    seen = kinds_drawn(max_n, min_n)
    assert set(seen) == set(INPUT_KINDS), f"never drawn: {set(INPUT_KINDS) - set(seen)}"
    flat = sum(seen[k] for k in FLAT_KINDS)
    assert flat <= sum(seen.values()) / 2, dict(seen)
