"""The Numba backend: refimpl's operations and the whole network as Numba kernels.

Strategy (the same program as the Cython backend, kernels/plan.py, in Python syntax):
- NHWC activations with zero borders, BatchNorm folded, weights packed [ky][kx][c_in][c_out/8][8].
- A register-blocked direct convolution: tile_RXxNV keeps RX output pixels x NV*8 output channels
  in RX*NV explicit vector accumulators (numba_simd.float32x8) for the whole (ky, kx, c_in)
  reduction; bias, Leaky-ReLU and (for pooled stages) the 2x2 max pool are applied on the way out.
  The tiles are written out by hand (RX in {4, 1}, NV in {3, 2, 1}) because numba has no templates.
- run_network runs every stage and the heads of one image per call of run_image; with T > 1 threads a
  prange over T workspaces takes images t, t + T, ... so results do not depend on T.

Compilation: every function is @njit(cache=True): the first import on a machine compiles (seconds; the
benchmark reports it) and writes numba's cache next to this file (or in NUMBA_CACHE_DIR); later loads
read it. kernels.load() runs one forward on zeros, so no compilation lands in a timing.
Flags: none. Numba compiles for the CPU it runs on (AVX2+FMA here, NEON on the Jetson Nano's
Cortex-A57); no fastmath: llvm.fma is asked for explicitly, the rest is IEEE float32.
"""
import numba
import numpy as np
from numba import njit, prange

from . import ops
from .numba_simd import vadd, vbroadcast_at, vfma, vleaky, vload, vmax, vstore, vzero

NAME = "numba"
ISA = f"LLVM <8 x float> for {numba.config.CPU_NAME or __import__('llvmlite.binding', fromlist=['x']).get_host_cpu_name()}"
THREADING = "numba prange"
HEAD_SIZE = 1434     # floats in plan.head_params for this architecture (checked by Model)

JIT = dict(nogil=True, cache=True, boundscheck=False, error_model="numpy")

# layer table columns, as in kernels/plan.py
(SRC_OFF, SRC_WP, SRC_C, SRC_P, CI0, CIN, DST_OFF, DST_WP, DST_C, DST_P, CO0, CBUF,
 K, DIL, PAD, POOL, OH, OW, W_OFF, B_OFF) = range(20)


@njit(**JIT)
def tile_4x3(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """The micro-kernel: dst[di + r * dst_pix + 8 v + lane] for r < 4 pixels, v < 3 vectors, with the
    whole (ky, kx, ci) reduction in 12 vector accumulators. src[si] is the first pixel's receptive
    field corner, w[wi] the packed weight [0][0][0][co0]. has_bias: start from bias[bi:] and store
    Leaky-ReLU(alpha) of the result; else start from 0 and store it raw (for the pool)."""
    b0 = vload(bias, bi + 0) if has_bias else vzero()
    b1 = vload(bias, bi + 8) if has_bias else vzero()
    b2 = vload(bias, bi + 16) if has_bias else vzero()
    a00 = b0; a01 = b1; a02 = b2
    a10 = b0; a11 = b1; a12 = b2
    a20 = b0; a21 = b1; a22 = b2
    a30 = b0; a31 = b1; a32 = b2
    for ky in range(k):
        for kx in range(k):
            s = si + ky * dil * row_stride + kx * dil * pix_stride
            wk = wi + (ky * k + kx) * cin * cbuf
            for ci in range(cin):
                w0 = vload(w, wk + 0); w1 = vload(w, wk + 8); w2 = vload(w, wk + 16)
                x = vbroadcast_at(src, s); a00 = vfma(x, w0, a00); a01 = vfma(x, w1, a01); a02 = vfma(x, w2, a02)
                x = vbroadcast_at(src, s + pix_stride); a10 = vfma(x, w0, a10); a11 = vfma(x, w1, a11); a12 = vfma(x, w2, a12)
                x = vbroadcast_at(src, s + 2 * pix_stride); a20 = vfma(x, w0, a20); a21 = vfma(x, w1, a21); a22 = vfma(x, w2, a22)
                x = vbroadcast_at(src, s + 3 * pix_stride); a30 = vfma(x, w0, a30); a31 = vfma(x, w1, a31); a32 = vfma(x, w2, a32)
                s += 1
                wk += cbuf
    if has_bias:
        a00 = vleaky(a00, alpha); a01 = vleaky(a01, alpha); a02 = vleaky(a02, alpha)
        a10 = vleaky(a10, alpha); a11 = vleaky(a11, alpha); a12 = vleaky(a12, alpha)
        a20 = vleaky(a20, alpha); a21 = vleaky(a21, alpha); a22 = vleaky(a22, alpha)
        a30 = vleaky(a30, alpha); a31 = vleaky(a31, alpha); a32 = vleaky(a32, alpha)
    vstore(dst, di + 0, a00); vstore(dst, di + 8, a01); vstore(dst, di + 16, a02)
    vstore(dst, di + dst_pix + 0, a10); vstore(dst, di + dst_pix + 8, a11); vstore(dst, di + dst_pix + 16, a12)
    vstore(dst, di + 2 * dst_pix + 0, a20); vstore(dst, di + 2 * dst_pix + 8, a21); vstore(dst, di + 2 * dst_pix + 16, a22)
    vstore(dst, di + 3 * dst_pix + 0, a30); vstore(dst, di + 3 * dst_pix + 8, a31); vstore(dst, di + 3 * dst_pix + 16, a32)


@njit(**JIT)
def tile_4x2(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """4 pixels x 16 channels; see tile_4x3."""
    b0 = vload(bias, bi + 0) if has_bias else vzero()
    b1 = vload(bias, bi + 8) if has_bias else vzero()
    a00 = b0; a01 = b1
    a10 = b0; a11 = b1
    a20 = b0; a21 = b1
    a30 = b0; a31 = b1
    for ky in range(k):
        for kx in range(k):
            s = si + ky * dil * row_stride + kx * dil * pix_stride
            wk = wi + (ky * k + kx) * cin * cbuf
            for ci in range(cin):
                w0 = vload(w, wk + 0); w1 = vload(w, wk + 8)
                x = vbroadcast_at(src, s); a00 = vfma(x, w0, a00); a01 = vfma(x, w1, a01)
                x = vbroadcast_at(src, s + pix_stride); a10 = vfma(x, w0, a10); a11 = vfma(x, w1, a11)
                x = vbroadcast_at(src, s + 2 * pix_stride); a20 = vfma(x, w0, a20); a21 = vfma(x, w1, a21)
                x = vbroadcast_at(src, s + 3 * pix_stride); a30 = vfma(x, w0, a30); a31 = vfma(x, w1, a31)
                s += 1
                wk += cbuf
    if has_bias:
        a00 = vleaky(a00, alpha); a01 = vleaky(a01, alpha)
        a10 = vleaky(a10, alpha); a11 = vleaky(a11, alpha)
        a20 = vleaky(a20, alpha); a21 = vleaky(a21, alpha)
        a30 = vleaky(a30, alpha); a31 = vleaky(a31, alpha)
    vstore(dst, di + 0, a00); vstore(dst, di + 8, a01)
    vstore(dst, di + dst_pix + 0, a10); vstore(dst, di + dst_pix + 8, a11)
    vstore(dst, di + 2 * dst_pix + 0, a20); vstore(dst, di + 2 * dst_pix + 8, a21)
    vstore(dst, di + 3 * dst_pix + 0, a30); vstore(dst, di + 3 * dst_pix + 8, a31)


@njit(**JIT)
def tile_4x1(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """4 pixels x 8 channels; see tile_4x3."""
    b0 = vload(bias, bi + 0) if has_bias else vzero()
    a00 = b0
    a10 = b0
    a20 = b0
    a30 = b0
    for ky in range(k):
        for kx in range(k):
            s = si + ky * dil * row_stride + kx * dil * pix_stride
            wk = wi + (ky * k + kx) * cin * cbuf
            for ci in range(cin):
                w0 = vload(w, wk + 0)
                x = vbroadcast_at(src, s); a00 = vfma(x, w0, a00)
                x = vbroadcast_at(src, s + pix_stride); a10 = vfma(x, w0, a10)
                x = vbroadcast_at(src, s + 2 * pix_stride); a20 = vfma(x, w0, a20)
                x = vbroadcast_at(src, s + 3 * pix_stride); a30 = vfma(x, w0, a30)
                s += 1
                wk += cbuf
    if has_bias:
        a00 = vleaky(a00, alpha)
        a10 = vleaky(a10, alpha)
        a20 = vleaky(a20, alpha)
        a30 = vleaky(a30, alpha)
    vstore(dst, di + 0, a00)
    vstore(dst, di + dst_pix + 0, a10)
    vstore(dst, di + 2 * dst_pix + 0, a20)
    vstore(dst, di + 3 * dst_pix + 0, a30)


@njit(**JIT)
def tile_1x3(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """1 pixels x 24 channels; see tile_4x3."""
    b0 = vload(bias, bi + 0) if has_bias else vzero()
    b1 = vload(bias, bi + 8) if has_bias else vzero()
    b2 = vload(bias, bi + 16) if has_bias else vzero()
    a00 = b0; a01 = b1; a02 = b2
    for ky in range(k):
        for kx in range(k):
            s = si + ky * dil * row_stride + kx * dil * pix_stride
            wk = wi + (ky * k + kx) * cin * cbuf
            for ci in range(cin):
                w0 = vload(w, wk + 0); w1 = vload(w, wk + 8); w2 = vload(w, wk + 16)
                x = vbroadcast_at(src, s); a00 = vfma(x, w0, a00); a01 = vfma(x, w1, a01); a02 = vfma(x, w2, a02)
                s += 1
                wk += cbuf
    if has_bias:
        a00 = vleaky(a00, alpha); a01 = vleaky(a01, alpha); a02 = vleaky(a02, alpha)
    vstore(dst, di + 0, a00); vstore(dst, di + 8, a01); vstore(dst, di + 16, a02)


@njit(**JIT)
def tile_1x2(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """1 pixels x 16 channels; see tile_4x3."""
    b0 = vload(bias, bi + 0) if has_bias else vzero()
    b1 = vload(bias, bi + 8) if has_bias else vzero()
    a00 = b0; a01 = b1
    for ky in range(k):
        for kx in range(k):
            s = si + ky * dil * row_stride + kx * dil * pix_stride
            wk = wi + (ky * k + kx) * cin * cbuf
            for ci in range(cin):
                w0 = vload(w, wk + 0); w1 = vload(w, wk + 8)
                x = vbroadcast_at(src, s); a00 = vfma(x, w0, a00); a01 = vfma(x, w1, a01)
                s += 1
                wk += cbuf
    if has_bias:
        a00 = vleaky(a00, alpha); a01 = vleaky(a01, alpha)
    vstore(dst, di + 0, a00); vstore(dst, di + 8, a01)


@njit(**JIT)
def tile_1x1(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """1 pixels x 8 channels; see tile_4x3."""
    b0 = vload(bias, bi + 0) if has_bias else vzero()
    a00 = b0
    for ky in range(k):
        for kx in range(k):
            s = si + ky * dil * row_stride + kx * dil * pix_stride
            wk = wi + (ky * k + kx) * cin * cbuf
            for ci in range(cin):
                w0 = vload(w, wk + 0)
                x = vbroadcast_at(src, s); a00 = vfma(x, w0, a00)
                s += 1
                wk += cbuf
    if has_bias:
        a00 = vleaky(a00, alpha)
    vstore(dst, di + 0, a00)



@njit(**JIT)
def conv_row(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, ow, dst, di, dst_pix, bias, bi,
             has_bias, alpha):
    """One output row of ow pixels and all cbuf channels, in tiles of 4 pixels x (24, 16 or 8) channels."""
    co = 0
    while co < cbuf:
        left = (cbuf - co) // 8
        nv = 2 if left == 4 else (3 if left >= 3 else left)       # 7 -> 3 + 2 + 2, 4 -> 2 + 2
        ox = 0
        while ox + 4 <= ow:
            s, d = si + ox * pix_stride, di + ox * dst_pix + co
            if nv == 3:
                tile_4x3(src, s, row_stride, pix_stride, cin, k, dil, w, wi + co, cbuf, dst, d, dst_pix, bias, bi + co,
                         has_bias, alpha)
            elif nv == 2:
                tile_4x2(src, s, row_stride, pix_stride, cin, k, dil, w, wi + co, cbuf, dst, d, dst_pix, bias, bi + co,
                         has_bias, alpha)
            else:
                tile_4x1(src, s, row_stride, pix_stride, cin, k, dil, w, wi + co, cbuf, dst, d, dst_pix, bias, bi + co,
                         has_bias, alpha)
            ox += 4
        while ox < ow:
            s, d = si + ox * pix_stride, di + ox * dst_pix + co
            if nv == 3:
                tile_1x3(src, s, row_stride, pix_stride, cin, k, dil, w, wi + co, cbuf, dst, d, dst_pix, bias, bi + co,
                         has_bias, alpha)
            elif nv == 2:
                tile_1x2(src, s, row_stride, pix_stride, cin, k, dil, w, wi + co, cbuf, dst, d, dst_pix, bias, bi + co,
                         has_bias, alpha)
            else:
                tile_1x1(src, s, row_stride, pix_stride, cin, k, dil, w, wi + co, cbuf, dst, d, dst_pix, bias, bi + co,
                         has_bias, alpha)
            ox += 1
        co += nv * 8


@njit(**JIT)
def run_layer(src, dst, r, alpha, weights, biases, scratch):
    """One fused stage (one row r of the layer table) on one image; see conv_kernel.h's agk_conv_layer_impl."""
    row_stride, pix_stride = r[SRC_WP] * r[SRC_C], r[SRC_C]
    base = r[SRC_OFF] + (r[SRC_P] - r[PAD]) * row_stride + (r[SRC_P] - r[PAD]) * pix_stride + r[CI0]
    dc, dwp = r[DST_C], r[DST_WP]
    out = r[DST_OFF] + (r[DST_P] * dwp + r[DST_P]) * dc + r[CO0]
    cin, k, dil, cbuf, oh, ow = r[CIN], r[K], r[DIL], r[CBUF], r[OH], r[OW]
    wi, bi = r[W_OFF], r[B_OFF]
    if r[POOL] == 0:
        for oy in range(oh):
            conv_row(src, base + oy * row_stride, row_stride, pix_stride, cin, k, dil, weights, wi, cbuf, ow,
                     dst, out + oy * dwp * dc, dc, biases, bi, True, alpha)
        return
    ph, pw = oh // 2, ow // 2
    for py in range(ph):
        for half in range(2):
            conv_row(src, base + (2 * py + half) * row_stride, row_stride, pix_stride, cin, k, dil, weights, wi,
                     cbuf, 2 * pw, scratch, half * 2 * pw * cbuf, cbuf, biases, bi, False, alpha)
        o = out + py * dwp * dc
        for px in range(pw):
            a, c = 2 * px * cbuf, (2 * pw + 2 * px) * cbuf
            for v in range(0, cbuf, 8):
                m = vmax(vmax(vload(scratch, a + v), vload(scratch, a + cbuf + v)),
                         vmax(vload(scratch, c + v), vload(scratch, c + cbuf + v)))
                vstore(dst, o + px * dc + v, vleaky(vadd(m, vload(biases, bi + v)), alpha))


@njit(**JIT)
def conv_layer(src, dst, layers, alphas, weights, biases, scratch):
    """Every row of a layer table on one image (src and dst: the flat buffers the offsets point into)."""
    for i in range(layers.shape[0]):
        run_layer(src, dst, layers[i], alphas[i], weights, biases, scratch)


@njit(**JIT)
def _sigmoid(x):
    if x >= 0:
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))
    e = np.exp(x)
    return e / (np.float32(1.0) + e)


@njit(**JIT)
def _gap(ws, g, i, feat):
    """feat[:c] = mean over the h x w interior of channels [c0, c0 + c) of a buffer (row i of plan.gap)."""
    off, wp, ch, p, c0, nc, h, w = g[i, 0], g[i, 1], g[i, 2], g[i, 3], g[i, 4], g[i, 5], g[i, 6], g[i, 7]
    feat[:nc] = 0
    for y in range(h):
        for x in range(w):
            px = off + ((y + p) * wp + x + p) * ch + c0
            for c in range(nc):
                feat[c] += ws[px + c]
    for c in range(nc):
        feat[c] = feat[c] / np.float32(h * w)


@njit(**JIT)
def _dot(p, start, feat, n):
    s = np.float32(0.0)
    for i in range(n):
        s += p[start + i] * feat[i]
    return s


@njit(**JIT)
def heads(ws, g, p, alpha, out, n, feat, hidden):
    """GAP + FCs + sigmoids + ensemble of one image -> out[:, n], spec.OUTPUT_NAMES order (as _cython_kernels)."""
    _gap(ws, g, 0, feat)
    gv = _sigmoid(_dot(p, 0, feat, 32) + p[32])
    _gap(ws, g, 1, feat)
    av = _dot(p, 33, feat, 32) + p[65]
    _gap(ws, g, 2, feat)
    for j in range(28):
        z = _dot(p, 66 + 44 * j, feat, 44) + p[1298 + j]
        hidden[j] = z if z >= 0 else z * alpha
    gf = _sigmoid(_dot(p, 1326, hidden, 28) + p[1354])
    af = _dot(p, 1355, hidden, 28) + p[1383]
    _gap(ws, g, 3, feat)
    gl = _sigmoid(_dot(p, 1384, feat, 24) + p[1432])
    al = _dot(p, 1408, feat, 24) + p[1433]
    out[0, n] = (af + av + al) / np.float32(3.0)
    out[1, n] = (gf + gv + gl) / np.float32(3.0)
    out[2, n], out[3, n], out[4, n], out[5, n], out[6, n], out[7, n] = af, gf, av, gv, al, gl


@njit(**JIT)
def run_image(x, n, ws, scratch, image, layers, alphas, weights, biases, g, hp, head_alpha, out, first, last,
              do_heads, feat, hidden):
    if first == 0:                                   # NCHW image -> the NHWC image buffer's interior
        off, wp, ch, p = image[0], image[1], image[2], image[3]
        for y in range(x.shape[2]):
            row = off + ((y + p) * wp + p) * ch
            for xx in range(x.shape[3]):
                for c in range(x.shape[1]):
                    ws[row + xx * ch + c] = x[n, c, y, xx]
    for i in range(first, last):
        run_layer(ws, ws, layers[i], alphas[i], weights, biases, scratch)
    if do_heads:
        heads(ws, g, hp, head_alpha, out, n, feat, hidden)


@njit(**JIT)
def _run_serial(x, ws, scratch, image, layers, alphas, weights, biases, g, hp, head_alpha, out, first, last,
                do_heads):
    feat, hidden = np.empty(64, np.float32), np.empty(28, np.float32)
    for n in range(x.shape[0]):
        run_image(x, n, ws[0], scratch[0], image, layers, alphas, weights, biases, g, hp, head_alpha, out,
                  first, last, do_heads, feat, hidden)


@njit(parallel=True, **JIT)
def _run_parallel(x, ws, scratch, image, layers, alphas, weights, biases, g, hp, head_alpha, out, first, last,
                  do_heads, nt):
    for t in prange(nt):
        feat, hidden = np.empty(64, np.float32), np.empty(28, np.float32)
        for n in range(t, x.shape[0], nt):
            run_image(x, n, ws[t], scratch[t], image, layers, alphas, weights, biases, g, hp, head_alpha, out,
                      first, last, do_heads, feat, hidden)


def run_network(x, ws, scratch, image, layers, alphas, weights, biases, g, head_params, head_alpha, out,
                first, last, do_heads, threads):
    """Images n = t, t + T, ... run in workspace t (T = threads, at most the batch); see Model.forward."""
    nt = min(int(threads), x.shape[0])
    if nt > ws.shape[0]:
        raise ValueError(f"{threads} threads but {ws.shape[0]} workspaces")
    args = (x, ws, scratch, image, layers, alphas, weights, biases, g, head_params, np.float32(head_alpha), out,
            int(first), int(last), bool(do_heads))
    if nt <= 1:
        _run_serial(*args)
    else:
        if nt > numba.config.NUMBA_NUM_THREADS:
            raise ValueError(f"{nt} threads, but numba has {numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)")
        numba.set_num_threads(nt)
        _run_parallel(*args, nt)


globals().update(ops.bind(conv_layer))
__all__ = ["run_network", "conv_layer", *ops.__all__]
