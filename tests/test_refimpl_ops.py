"""Each refimpl op against an independent definition, with shapes and weights drawn by hypothesis."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import assert_close
from refimpl.batch_norm import batch_norm
from refimpl.concat import concat
from refimpl.conv2d import conv2d
from refimpl.ensemble import ensemble
from refimpl.fully_connected import fully_connected
from refimpl.global_avg_pool import global_avg_pool
from refimpl.golden import compare
from refimpl.leaky_relu import leaky_relu
from refimpl.max_pool import max_pool2x2
from refimpl.sigmoid import sigmoid

# float32 results checked against float64 definitions. A float32 sum of K products, in any order and with
# or without FMA, is within gamma_K = K u / (1 - K u) of the sum of |products| (Higham, "Accuracy and
# Stability of Numerical Algorithms", 3.1; u = 2^-24); the bias adds one more term and the result one more
# rounding, hence (K + 2) u, bounded per tensor by its largest sum of |terms|.
F32_UNIT = 2.0 ** -24


def sum_tolerance(terms, abs_sums):
    """The bound for float32 sums of `terms` products whose sums of |products| (and |bias|) are `abs_sums`."""
    return (terms + 2) * F32_UNIT * float(np.max(abs_sums))


def seeded(seed, shape, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def conv2d_loops(x, w, b, pad, dilation):
    """Direct definition with explicit indices, in float64."""
    n, c_in, h, width = x.shape
    c_out, _, k, _ = w.shape
    out_h, out_w = h + 2 * pad - dilation * (k - 1), width + 2 * pad - dilation * (k - 1)
    out = np.zeros((n, c_out, out_h, out_w))
    for out_y in range(out_h):
        for out_x in range(out_w):
            for ky in range(k):
                for kx in range(k):
                    in_y, in_x = out_y + ky * dilation - pad, out_x + kx * dilation - pad
                    if 0 <= in_y < h and 0 <= in_x < width:
                        out[:, :, out_y, out_x] += x[:, :, in_y, in_x].astype(np.float64) @ w[:, :, ky, kx].T
    return out + (0 if b is None else b.reshape(1, -1, 1, 1))


conv_cases = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(1, 9),
                       st.integers(1, 9), st.sampled_from([1, 3, 5]), st.sampled_from([1, 2]), st.integers(0, 3),
                       st.booleans(), st.integers(0, 2**31))


@given(conv_cases)
def test_conv2d_matches_direct_loops(case):
    n, c_in, c_out, h, w_, k, d, pad, with_bias, seed = case
    if h + 2 * pad < d * (k - 1) + 1 or w_ + 2 * pad < d * (k - 1) + 1:
        pad += d * (k - 1)                                  # keep at least one output pixel
    x, w = seeded(seed, (n, c_in, h, w_)), seeded(seed + 1, (c_out, c_in, k, k))
    b = seeded(seed + 2, (c_out,)) if with_bias else None
    abs_b = None if b is None else np.abs(b)
    assert_close("conv2d", conv2d_loops(x, w, b, pad, d), conv2d(x, w, b, pad=pad, dilation=d),
                 sum_tolerance(c_in * k * k, conv2d_loops(np.abs(x), np.abs(w), abs_b, pad, d)))


@given(st.integers(1, 4), st.integers(3, 12), st.integers(0, 2**31))
def test_conv2d_matches_scipy_correlate(c_in, size, seed):
    signal = pytest.importorskip("scipy.signal", reason="scipy gives an independent correlation")
    x, w = seeded(seed, (1, c_in, size, size)), seeded(seed + 1, (1, c_in, 3, 3))
    expected = signal.correlate(x[0].astype(np.float64), w[0].astype(np.float64), mode="same")[c_in // 2]
    abs_sums = signal.correlate(np.abs(x[0]).astype(np.float64), np.abs(w[0]).astype(np.float64), mode="same")
    assert_close("conv2d vs scipy", expected[None, None], conv2d(x, w, pad=1), sum_tolerance(c_in * 9, abs_sums))


def test_conv2d_rejects_mismatched_weight():
    with pytest.raises(ValueError, match=r"does not fit weight"):
        conv2d(np.zeros((1, 3, 8, 8), np.float32), np.zeros((4, 2, 3, 3), np.float32))


@given(st.integers(1, 3), st.integers(1, 8), st.integers(1, 6), st.floats(1e-6, 1e-2), st.integers(0, 2**31))
def test_batch_norm_matches_formula(n, c, size, eps, seed):
    rng = np.random.default_rng(seed)
    x = seeded(seed, (n, c, size, size), 3.0)
    scale, bias, mean = seeded(seed + 1, (c,)), seeded(seed + 2, (c,)), seeded(seed + 3, (c,))
    var = rng.uniform(0.01, 4.0, c).astype(np.float32)
    expected = np.empty((n, c, size, size))
    for ch in range(c):
        expected[:, ch] = scale[ch] * (x[:, ch].astype(np.float64) - mean[ch]) / np.sqrt(var[ch] + eps) + bias[ch]
    got = batch_norm(x, scale, bias, mean, var, eps)
    assert got.dtype == np.float32
    assert_close("batch_norm", expected, got, 1e-5 * (1 + np.abs(expected).max()))


@given(arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
              elements=st.floats(-1e4, 1e4, width=32)), st.sampled_from([0.1, 0.01, 0.3]))
def test_leaky_relu_matches_formula(x, alpha):
    expected = np.array([v if v >= 0 else alpha * np.float64(v) for v in x.ravel()]).reshape(x.shape)
    assert_close("leaky_relu", expected, leaky_relu(x, alpha), 1e-6 * (1 + np.abs(expected).max()))


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31))
def test_max_pool_matches_loops(n, c, h, w, seed):
    x = seeded(seed, (n, c, max(h, 2), max(w, 2)))
    out_h, out_w = x.shape[2] // 2, x.shape[3] // 2
    expected = np.empty((n, c, out_h, out_w), np.float32)
    for oy in range(out_h):
        for ox in range(out_w):
            expected[:, :, oy, ox] = np.maximum(np.maximum(x[:, :, 2 * oy, 2 * ox], x[:, :, 2 * oy, 2 * ox + 1]),
                                                np.maximum(x[:, :, 2 * oy + 1, 2 * ox], x[:, :, 2 * oy + 1, 2 * ox + 1]))
    assert_close("max_pool2x2", expected, max_pool2x2(x), 0.0)


@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**31))
def test_global_avg_pool_matches_sum(n, c, size, seed):
    x = seeded(seed, (n, c, size, size))
    expected = x.astype(np.float64).sum(axis=(2, 3)) / (size * size)
    assert_close("global_avg_pool", expected, global_avg_pool(x), 1e-6)


@given(st.integers(1, 5), st.integers(1, 48), st.integers(1, 30), st.integers(0, 2**31))
def test_fully_connected_matches_loops(n, n_in, n_out, seed):
    x, w, b = seeded(seed, (n, n_in)), seeded(seed + 1, (n_out, n_in)), seeded(seed + 2, (n_out,))
    expected = np.array([[b[o] + sum(float(x[i, j]) * float(w[o, j]) for j in range(n_in)) for o in range(n_out)]
                         for i in range(n)])
    abs_sums = np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64) + np.abs(b)
    assert_close("fully_connected", expected, fully_connected(x, w, b), sum_tolerance(n_in, abs_sums))


@given(arrays(np.float32, st.integers(1, 50), elements=st.floats(-200, 200, width=32)))
def test_sigmoid_matches_formula_without_overflow(x):
    with np.errstate(over="raise"):
        got = sigmoid(x)
    expected = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert_close("sigmoid", expected, got, 1e-7)


def test_concat_and_ensemble():
    a, b = np.ones((2, 3, 4, 4), np.float32), np.zeros((2, 5, 4, 4), np.float32)
    out = concat([a, b])
    assert out.shape == (2, 8, 4, 4) and out[:, :3].all() and not out[:, 3:].any()
    parts = [np.full((2, 1), v, np.float32) for v in (1.0, 2.0, 6.0)]
    assert_close("ensemble", np.full((2, 1), 3.0), ensemble(parts), 0.0)


@pytest.mark.parametrize("seed", range(5))
def test_the_sum_bounds_catch_a_weight_off_by_2e_5(seed):
    """The bounds above are tight enough that weights off by 2e-5 relative (a tenth of float16's step) fail,
    where the former 1e-4 * K absolute let them pass."""
    x, w = seeded(seed, (2, 3, 8, 8)), seeded(seed + 1, (4, 3, 3, 3))
    off = (w * np.float32(1 + 2e-5)).astype(np.float32)
    exact, bound = conv2d_loops(x, w, None, 1, 1), sum_tolerance(27, conv2d_loops(np.abs(x), np.abs(w), None, 1, 1))
    assert compare("conv2d", exact, conv2d(x, off, pad=1), bound) is not None
    assert compare("conv2d", exact, conv2d(x, off, pad=1), 1e-4 * 27) is None
    v, m = seeded(seed, (3, 48)), seeded(seed + 1, (8, 48))
    exact, zero = v.astype(np.float64) @ m.T.astype(np.float64), np.zeros(8, np.float32)
    bound = sum_tolerance(48, np.abs(v).astype(np.float64) @ np.abs(m).T)
    assert compare("fully_connected", exact, fully_connected(v, (m * np.float32(1 + 2e-5)), zero), bound) is not None
