"""Each backend's operations against refimpl's: the same names and signatures, and the fused stages
against the composition of refimpl's ops, on random shapes (odd sizes included).

Tolerance: a conv output sums c_in * k * k products in a different order (and with FMA) than
refimpl's tensordot; 1e-5 relative to the largest |w| * |x| sum bounds that, plus 1e-6 absolute.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernels
from conftest import assert_close, backend_param
from refimpl import batch_norm, conv2d, leaky_relu, max_pool

REFIMPL_OPS = {"conv2d": conv2d.conv2d, "batch_norm": batch_norm.batch_norm, "leaky_relu": leaky_relu.leaky_relu,
               "max_pool2x2": max_pool.max_pool2x2}
NAMES = ("conv2d", "batch_norm", "leaky_relu", "max_pool2x2", "global_avg_pool", "fully_connected", "sigmoid",
         "concat", "ensemble", "conv_bn_leaky", "conv_bn_leaky_pool")




@pytest.fixture(scope="module", params=[backend_param(name) for name in kernels.BACKENDS])
def ops(request):
    return kernels.backend(request.param)


def conv_tolerance(x, w):
    bound = np.einsum("nchw,ockl->o", np.abs(x), np.abs(w)).max() if x.size and w.size else 0.0
    return 1e-6 + 1e-5 * float(bound)


@st.composite
def conv_case(draw):
    """A random conv problem: odd sizes, 1..5 batch, kernels 1, 3, 5, pad 0..2, dilation 1..2."""
    k = draw(st.sampled_from([1, 3, 5]))
    dilation = draw(st.integers(1, 2))
    pad = draw(st.integers(0, 2))
    span = dilation * (k - 1) + 1
    h = draw(st.integers(max(1, span - 2 * pad), 13))
    w = draw(st.integers(max(1, span - 2 * pad), 13))
    n, c_in, c_out = draw(st.integers(1, 5)), draw(st.integers(1, 9)), draw(st.integers(1, 27))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    if draw(st.booleans()):                       # a non-contiguous view with the same values
        x = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    weight = rng.standard_normal((c_out, c_in, k, k)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32) if draw(st.booleans()) else None
    bn = (rng.uniform(0.5, 2, c_out), rng.normal(0, 0.3, c_out), rng.normal(0, 0.5, c_out), rng.uniform(0.3, 3, c_out))
    bn = tuple(a.astype(np.float32) for a in bn)
    return x, weight, bias, pad, dilation, bn


def test_same_names_as_refimpl(ops):
    for name in NAMES:
        assert callable(getattr(ops, name)), name


@given(conv_case())
def test_conv2d_matches_refimpl(ops, case):
    x, w, b, pad, dilation, _ = case
    expected = conv2d.conv2d(x, w, b, pad=pad, dilation=dilation)
    got = ops.conv2d(x, w, b, pad=pad, dilation=dilation)
    assert got.dtype == np.float32
    assert_close("conv2d", expected, got, conv_tolerance(x, w))


@given(conv_case(), st.sampled_from([0.1, 0.01, 0.0, 1.0]))
def test_conv_bn_leaky_matches_the_refimpl_composition(ops, case, alpha):
    x, w, _, pad, dilation, bn = case
    eps = 1e-5
    expected = leaky_relu.leaky_relu(batch_norm.batch_norm(conv2d.conv2d(x, w, pad=pad, dilation=dilation), *bn, eps),
                                     alpha)
    got = ops.conv_bn_leaky(x, w, *bn, eps, alpha, pad=pad, dilation=dilation)
    scale = (bn[0] / np.sqrt(bn[3] + eps)).max()
    assert_close("conv_bn_leaky", expected, got, conv_tolerance(x, w) * float(scale) + 1e-5)


@given(conv_case())
def test_conv_bn_leaky_pool_matches_the_refimpl_composition(ops, case):
    x, w, _, pad, dilation, bn = case
    eps, alpha = 1e-3, 0.1
    expected = max_pool.max_pool2x2(leaky_relu.leaky_relu(
        batch_norm.batch_norm(conv2d.conv2d(x, w, pad=pad, dilation=dilation), *bn, eps), alpha))
    got = ops.conv_bn_leaky_pool(x, w, *bn, eps, alpha, pad=pad, dilation=dilation)
    scale = (bn[0] / np.sqrt(bn[3] + eps)).max()
    assert_close("conv_bn_leaky_pool", expected, got, conv_tolerance(x, w) * float(scale) + 1e-5)


@given(n=st.integers(1, 3), c_in=st.integers(1, 20), c_out=st.integers(1, 40), half_h=st.integers(1, 9),
       half_w=st.integers(1, 9), pool=st.booleans(), seed=st.integers(0, 2**31))
def test_winograd_stage_matches_the_refimpl_composition(ops, n, c_in, c_out, half_h, half_w, pool, seed):
    """The Winograd F(2x2, 3x3) form of a stage (3x3, pad 1, even sizes; channels not multiples of 8)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, 2 * half_h, 2 * half_w)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    expected = leaky_relu.leaky_relu(conv2d.conv2d(x, w, b, pad=1), 0.1)
    if pool:
        expected = max_pool.max_pool2x2(expected)
    got = ops.conv_bias_leaky(x, w, b, 0.1, pad=1, pool=pool, winograd=True)
    # the transforms add up to 4 x 4 terms before and after the products: a few more roundings than direct
    assert_close("winograd conv_bias_leaky", expected, got, 4 * conv_tolerance(x, w))


def test_winograd_refuses_shapes_it_does_not_handle(ops):
    x, w = np.zeros((1, 4, 7, 8), np.float32), np.zeros((4, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="Winograd"):
        ops.conv_bias_leaky(x, w, None, 0.1, pad=1, winograd=True)


def test_network_sized_conv_matches_refimpl(ops):
    """The heaviest layer of the network: 48 -> 56 channels, 3x3, 32x32 (all tile shapes of the micro-kernel)."""
    rng = np.random.default_rng(1)
    x = rng.random((2, 48, 32, 32), dtype=np.float32)
    w = (rng.standard_normal((56, 48, 3, 3)) * 0.07).astype(np.float32)
    b = rng.standard_normal(56).astype(np.float32)
    assert_close("conv2d 48->56", conv2d.conv2d(x, w, b, pad=1), ops.conv2d(x, w, b, pad=1), conv_tolerance(x, w))


def test_conv2d_shape_errors_as_refimpl(ops):
    x = np.zeros((1, 3, 8, 8), np.float32)
    for w in (np.zeros((4, 2, 3, 3), np.float32), np.zeros((4, 3, 3, 2), np.float32)):
        with pytest.raises(ValueError):
            conv2d.conv2d(x, w)
        with pytest.raises(ValueError):
            ops.conv2d(x, w)
