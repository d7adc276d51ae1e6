"""Each backend's operations against refimpl's: the same names and signatures, and the fused stages
against the composition of refimpl's ops, on random shapes (odd sizes included).

Bounds: per output element, from worst-case float32 rounding (bench/bounds.py derives them): a direct
conv differs from refimpl's by at most 2 gamma(K*K*C_in + 1) * (conv2d(|x|, |w|) + |b|), u = 2**-24;
a Winograd F(2x2, 3x3) stage by its own factor on the tile maxima of |x| (its transforms amplify the
rounding by at most 16); batch norm and the activation add a few counted roundings. The bounds hold for
any data, and test_broken_kernels_fail_the_bounds shows that a kernel off by one scaled channel fails.
"""
import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kernels
from bench.bounds import check_bound, conv_bound, winograd_bound, worst_ratio
from conftest import backend_param
from refimpl import batch_norm, concat, conv2d, ensemble, fully_connected, global_avg_pool, leaky_relu, max_pool, \
    sigmoid

REFIMPL_OPS = {"conv2d": conv2d.conv2d, "batch_norm": batch_norm.batch_norm, "leaky_relu": leaky_relu.leaky_relu,
               "max_pool2x2": max_pool.max_pool2x2, "global_avg_pool": global_avg_pool.global_avg_pool,
               "fully_connected": fully_connected.fully_connected, "sigmoid": sigmoid.sigmoid,
               "concat": concat.concat, "ensemble": ensemble.ensemble}
FUSED = ("conv_bn_leaky", "conv_bn_leaky_pool")
# roundings that batch norm and Leaky-ReLU add to the magnitude they act on, both sides counted: the kernel folds
# w * s and beta - mean * s (2) and rounds alpha * y (1); refimpl rounds var + eps, sqrt, 1 / ., scale * inv_std,
# x - mean, * s, + beta and alpha * y (8)
BN_LEAKY_ROUNDINGS = 11
LEAKY_ROUNDINGS = 1


@pytest.fixture(scope="module", params=[backend_param(name) for name in kernels.BACKENDS])
def ops(request):
    return kernels.backend(request.param)


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


def test_same_names_and_signatures_as_refimpl(ops):
    for name, reference in REFIMPL_OPS.items():
        assert inspect.signature(getattr(ops, name)) == inspect.signature(reference), name
    # the fused ops take conv2d's (x, w), batch_norm's parameters, leaky_relu's alpha, then conv2d's pad, dilation
    conv, bn, act = (inspect.signature(f).parameters for f in (conv2d.conv2d, batch_norm.batch_norm,
                                                               leaky_relu.leaky_relu))
    expected = [*list(conv.values())[:2], *list(bn.values())[1:], *list(act.values())[1:],
                *(p for p in conv.values() if p.name in ("pad", "dilation"))]
    for name in FUSED:
        assert list(inspect.signature(getattr(ops, name)).parameters.values()) == expected, name


@given(conv_case())
def test_conv2d_matches_refimpl(ops, case):
    x, w, b, pad, dilation, _ = case
    expected = conv2d.conv2d(x, w, b, pad=pad, dilation=dilation)
    got = ops.conv2d(x, w, b, pad=pad, dilation=dilation)
    assert got.dtype == np.float32
    report = check_bound("conv2d", expected, got, conv_bound(x, w, b, pad, dilation))
    assert report is None, report


def bn_bound(x, w, bn, eps, pad, dilation, pool=False):
    """conv_bound for conv -> batch norm (scale s = gamma / sqrt(var + eps): every term times |s|; plus
    |s * mean| + |beta|) -> Leaky-ReLU."""
    gamma, beta, mean, var = (a.astype(np.float64) for a in bn)
    s = gamma / np.sqrt(var + eps)
    return conv_bound(x, w, None, pad, dilation, pool, BN_LEAKY_ROUNDINGS, scale=s,
                      offset=np.abs(s * mean) + np.abs(beta))


@given(conv_case(), st.sampled_from([0.1, 0.01, 0.0, 1.0]))
def test_conv_bn_leaky_matches_the_refimpl_composition(ops, case, alpha):
    x, w, _, pad, dilation, bn = case
    eps = 1e-5
    expected = leaky_relu.leaky_relu(batch_norm.batch_norm(conv2d.conv2d(x, w, pad=pad, dilation=dilation), *bn, eps),
                                     alpha)
    got = ops.conv_bn_leaky(x, w, *bn, eps, alpha, pad=pad, dilation=dilation)
    report = check_bound("conv_bn_leaky", expected, got, bn_bound(x, w, bn, eps, pad, dilation))
    assert report is None, report


@given(conv_case())
def test_conv_bn_leaky_pool_matches_the_refimpl_composition(ops, case):
    x, w, _, pad, dilation, bn = case
    eps, alpha = 1e-3, 0.1
    expected = max_pool.max_pool2x2(leaky_relu.leaky_relu(
        batch_norm.batch_norm(conv2d.conv2d(x, w, pad=pad, dilation=dilation), *bn, eps), alpha))
    got = ops.conv_bn_leaky_pool(x, w, *bn, eps, alpha, pad=pad, dilation=dilation)
    report = check_bound("conv_bn_leaky_pool", expected, got, bn_bound(x, w, bn, eps, pad, dilation, pool=True))
    assert report is None, report


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
    report = check_bound("winograd conv_bias_leaky", expected, got, winograd_bound(x, w, b, pool, LEAKY_ROUNDINGS))
    assert report is None, report


def test_winograd_refuses_shapes_it_does_not_handle(ops):
    x, w = np.zeros((1, 4, 7, 8), np.float32), np.zeros((4, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="Winograd"):
        ops.conv_bias_leaky(x, w, None, 0.1, pad=1, winograd=True)


def network_sized_conv():
    """The heaviest layer of the network: 48 -> 56 channels, 3x3, 32x32 (all tile shapes of the micro-kernel)."""
    rng = np.random.default_rng(1)
    x = rng.random((2, 48, 32, 32), dtype=np.float32)
    w = (rng.standard_normal((56, 48, 3, 3)) * 0.07).astype(np.float32)
    b = rng.standard_normal(56).astype(np.float32)
    return x, w, b


def test_network_sized_conv_matches_refimpl(ops):
    x, w, b = network_sized_conv()
    report = check_bound("conv2d 48->56", conv2d.conv2d(x, w, b, pad=1), ops.conv2d(x, w, b, pad=1),
                         conv_bound(x, w, b, pad=1))
    assert report is None, report


def test_broken_kernels_fail_the_bounds(ops):
    """A kernel run with wrong weights against refimpl with the true ones: one input channel's weights x 1.5
    (direct), x 1.02 (Winograd) fail the per-element bounds, while the true weights use a small part of them.
    (The former whole-batch tolerance, 1e-5 of the largest sum over the batch, 0.27 here, let the x 1.5 pass.)"""
    x, w, b = network_sized_conv()
    expected = conv2d.conv2d(x, w, b, pad=1)
    bound = conv_bound(x, w, b, pad=1)
    scaled = w.copy()
    scaled[:, 5] *= 1.5
    assert worst_ratio(expected, ops.conv2d(x, w, b, pad=1), bound) < 0.1
    report = check_bound("conv2d, channel 5 x 1.5", expected, ops.conv2d(x, scaled, b, pad=1), bound)
    assert report is not None and "elements off" in report

    expected = leaky_relu.leaky_relu(expected, 0.1)
    bound = winograd_bound(x, w, b, extra=LEAKY_ROUNDINGS)
    perturbed = w.copy()
    perturbed[:, 5] *= 1.02
    assert worst_ratio(expected, ops.conv_bias_leaky(x, w, b, 0.1, pad=1, winograd=True), bound) < 0.1
    report = check_bound("winograd, channel 5 x 1.02", expected,
                         ops.conv_bias_leaky(x, perturbed, b, 0.1, pad=1, winograd=True), bound)
    assert report is not None and "elements off" in report


def test_conv2d_shape_errors_as_refimpl(ops):
    x = np.zeros((1, 3, 8, 8), np.float32)
    for w in (np.zeros((4, 2, 3, 3), np.float32), np.zeros((4, 3, 3, 2), np.float32)):
        with pytest.raises(ValueError):
            conv2d.conv2d(x, w)
        with pytest.raises(ValueError):
            ops.conv2d(x, w)
