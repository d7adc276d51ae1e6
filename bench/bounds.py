"""Per-element error bounds for a float32 convolution computed two ways (a kernel and refimpl's conv2d).

One place for the bound, used by tests/test_kernels_ops.py and bench/test_stages.py. The bound is
worst-case rounding analysis (Higham, Accuracy and Stability of Numerical Algorithms, ch. 3), not a
measured tolerance, so it holds for any data and any summation order, and a wrong weight or a dropped
term shows up as soon as its effect exceeds the rounding a correct kernel may make.

Notation: u = 2**-24 is float32's unit roundoff; gamma(m) = m u / (1 - m u) bounds the relative error
accumulated over m roundings of non-negative magnitudes: |fl(sum of n products) - exact| <= gamma(n) *
sum |products|, whatever the order and with or without FMA (an FMA rounds once instead of twice).
Underflow adds at most eta = 2**-150 absolute per operation, hence the absolute floor m * eta (the
only absolute term; it is below 1e-40 and matters only for outputs that are exactly zero).

Direct convolution (conv_bound): each output is b + n products, n = K*K*C_in. refimpl computes the sum as
K*K matrix products over C_in accumulated tap by tap (the first into zeros, exactly), then adds b: at most
n + 1 roundings per product, error <= gamma(n + 1) * (conv2d(|x|, |w|) + |b|). The kernel starts its
accumulator at b and does n FMAs: the same bound. The two differ from the exact value in opposite
directions at worst, so |kernel - refimpl| <= 2 gamma(n + 1) * magnitude. The magnitude is itself
evaluated by refimpl's conv2d in float32 on non-negative values, low by at most gamma(n + 1) relative, so
the factor is divided by 1 - gamma(n + 1). A max pool (exact) takes the largest bound of its window;
Leaky-ReLU with alpha <= 1 does not enlarge a difference and its product alpha * y adds one rounding per
side (counted in `extra`).

Winograd F(2x2, 3x3) (winograd_bound): Y = A^T [sum_c (G g_c G^T) * (B^T d_c B)] A per 2x2 output tile
and its 4x4 input tile d. Its rounding errors hit the transformed terms, which include products
|g_kl| |d_st| at positions (s, t) that cancel exactly in exact arithmetic but not in float32, so the
direct magnitude conv2d(|x|, |w|) does not bound them (it can be zero where they are not). Bounding every
|d_st| by the tile's largest |x| (D_c) and every transformed weight by |G| |g_c| |G^T|:
    |V_pq| <= bsum_p bsum_q D_c, bsum = column sums of |B| = (2, 2, 2, 2)
    |U_pq| <= gmax_p gmax_q sum_kl |g_c,kl|, gmax = largest |G| entry per row = (1, 1/2, 1/2, 1)
    so each output (i, j) is bounded by sum_pq |A_pi| |A_qj| |U_pq| |V_pq| <= AMPLIFICATION * D_c sum|g_c|,
    AMPLIFICATION = max_i (sum_p |A_pi| gmax_p bsum_p)^2 = (2 (1 + 1/2 + 1/2))^2 = 16 (both columns of A).
Roundings along one path: V = B^T d B two 2-term sums (2), U rounded once from float64 (1), the C_in
products summed from zero (C_in), A^T M A two 3-term sums (4), + bias (1): C_in + 8, plus the extra
element-wise ones. The magnitude is conv2d(D, sum_kl |w|) (a 1x1 conv of the tile maxima; D >= |x| so it
also bounds the direct magnitude of refimpl's side), + |b|. Winograd factor: AMPLIFICATION *
gamma(C_in + 8 + extra) for the kernel + gamma(n + 1 + extra) for refimpl's direct sum. For the network's
channel counts this bound is 2 to 4 times the direct one: still a per-element bound, thousands of times
tighter than a bound over the whole batch.
"""
import numpy as np

from refimpl.conv2d import conv2d
from refimpl.max_pool import max_pool2x2

U = 2.0 ** -24          # float32 unit roundoff
ETA = 2.0 ** -150       # float32 underflow: absolute error of one operation near zero
AMPLIFICATION = 16      # Winograd F(2x2, 3x3): see the module docstring


def gamma(m):
    """Higham's gamma_m = m u / (1 - m u): relative error bound of m float32 roundings."""
    return m * U / (1 - m * U)


def direct_factor(n, extra=0):
    """|kernel - refimpl| <= direct_factor * magnitude, for n = K*K*C_in products and `extra` further roundings
    per side (batch norm, activation) on the same magnitude."""
    return 2 * gamma(n + 1 + extra) / (1 - gamma(n + 1))


def winograd_factor(c_in, extra=0):
    """The same for a Winograd F(2x2, 3x3) kernel against refimpl's direct 3x3 sum (magnitude: tile maxima)."""
    return AMPLIFICATION * gamma(c_in + 8 + extra) + gamma(9 * c_in + 1 + extra)    # magnitude in float64


def conv_magnitude(x, w, b=None, pad=0, dilation=1):
    """conv2d(|x|, |w|) + |b| (float64): what every product and the bias of each output sum to in absolute value."""
    mag = conv2d(np.abs(x).astype(np.float32), np.abs(w).astype(np.float32), None, pad=pad, dilation=dilation)
    mag = mag.astype(np.float64)
    if b is not None:
        mag += np.abs(np.asarray(b, np.float64))[None, :, None, None]
    return mag


def winograd_magnitude(x, w, b=None):
    """Per output: sum_c D_c * sum_kl |w[., c]| + |b|, D_c the largest |x| of the output's 2x2 tile's 4x4 input
    tile (3x3 kernel, pad 1, even output sizes, as the Winograd stages)."""
    n, c_in, h, width = x.shape
    padded = np.pad(np.abs(np.asarray(x, np.float64)), ((0, 0), (0, 0), (1, 1), (1, 1)))
    tiles = np.lib.stride_tricks.sliding_window_view(padded, (4, 4), axis=(2, 3))[:, :, ::2, ::2]
    tile_max = tiles.max(axis=(4, 5))                                        # [N, C_in, H/2, W/2]
    w_sum = np.abs(np.asarray(w, np.float64)).sum(axis=(2, 3))              # [C_out, C_in]
    mag = np.einsum("nchw,oc->nohw", tile_max, w_sum)
    mag = mag.repeat(2, axis=2).repeat(2, axis=3)                            # each tile's 2x2 outputs
    if b is not None:
        mag += np.abs(np.asarray(b, np.float64))[None, :, None, None]
    return mag


def conv_bound(x, w, b=None, pad=0, dilation=1, pool=False, extra=0, scale=None, offset=None):
    """Per-element bound on |kernel - refimpl| for conv2d(x, w, b, pad, dilation) (+ pool). scale [C_out]
    multiplies each channel's magnitude (batch norm's gamma / sqrt(var + eps)); offset [C_out] is added to it
    (|scale * mean| + |beta|, the other terms batch norm sums)."""
    n = w.shape[1] * w.shape[2] * w.shape[3]
    return _finish(conv_magnitude(x, w, b, pad, dilation), direct_factor(n, extra), n + 1 + extra, pool, scale,
                   offset)


def winograd_bound(x, w, b=None, pool=False, extra=0, scale=None, offset=None):
    """The same for a Winograd F(2x2, 3x3) stage (3x3, pad 1, even output)."""
    c_in = w.shape[1]
    return _finish(winograd_magnitude(x, w, b), winograd_factor(c_in, extra), 9 * c_in + 1 + extra, pool, scale,
                   offset)


def _finish(mag, factor, roundings, pool, scale, offset):
    if scale is not None:
        mag = mag * np.abs(np.asarray(scale, np.float64))[None, :, None, None]
    if offset is not None:
        mag = mag + np.asarray(offset, np.float64)[None, :, None, None]
    bound = factor * mag + 2 * roundings * ETA
    return max_pool2x2(bound) if pool else bound


def check_bound(name, expected, got, bound):
    """None if |got - expected| <= bound element by element, else a report: tensor, shape, the worst error and
    its ratio to the bound, how many elements are off, the first ones (as refimpl.golden.compare)."""
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.shape != got.shape or bound.shape != expected.shape:
        return f"{name}: shape {list(got.shape)}, expected {list(expected.shape)}, bound {list(bound.shape)}"
    err = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    bad = ~(err <= bound)                                   # NaN counts as bad
    if not bad.any():
        return None
    ratio = err / np.maximum(bound, np.finfo(np.float64).tiny)
    first = [tuple(int(i) for i in idx) for idx in np.argwhere(bad)[:5]]
    where = ", ".join(f"{i}: expected {expected[i]:.7g} got {got[i]:.7g} bound {bound[i]:.3g}" for i in first)
    return (f"{name} {list(expected.shape)}: max abs error {np.nanmax(err):.3g}, worst error / bound "
            f"{np.nanmax(ratio):.3g}, {int(bad.sum())} of {bad.size} elements off; first {where}")


def worst_ratio(expected, got, bound):
    """max |got - expected| / bound: how much of the bound a result uses (< 1 passes)."""
    err = np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64))
    return float(np.max(err / np.maximum(bound, np.finfo(np.float64).tiny)))


# Intermediate tensors of the whole network (tests/test_refimpl_model.py, tests/test_kernels_model.py,
# bench/test_stages.py): activations reach a few tens in size; 20 layers of float32 sums in a different
# order (ONNX Runtime's MLAS blocks and fuses; the kernels fold BatchNorm and use Winograd) differ by ~1e-6
# relative. 1e-4 absolute plus 1e-5 relative of the tensor's largest value leaves a margin of ten. (One
# conv alone is held to the tighter per-element bounds above.)
def layer_tolerance(tensor):
    return 1e-4 + 1e-5 * float(np.abs(tensor).max())
