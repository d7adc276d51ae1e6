"""The Numba backend: refimpl's operations and the whole network as Numba kernels.

Strategy (the same program as the Cython backend, kernels/plan.py, in Python syntax):
- NHWC activations with zero borders, BatchNorm folded, weights packed [ky][kx][c_in][c_out/8][8].
- A register-blocked direct convolution: tile_RXxNV keeps RX output pixels x NV*8 output channels
  in RX*NV explicit vector accumulators (numba_simd.float32x8) for the whole (ky, kx, c_in)
  reduction; bias, Leaky-ReLU and (for pooled stages) the 2x2 max pool are applied on the way out.
  The tiles are written out by hand (RX in {6, 4, 2, 1}, NV in {2, 1}) because numba has no templates.
- Winograd F(2x2, 3x3) for the 3x3 'same' stages with even sizes (plan.winograd_applies), as conv_kernel.h:
  the 16 transformed products run through the same tiles as a 1x1 conv; a pooled stage takes the max over
  each 2x2 output tile.
- run_network runs every stage and the heads of one image per call of run_image; with T > 1 threads a
  prange over T workspaces takes images t, t + T, ...; with fewer images than threads (batch 1) each stage's
  output rows are split over the threads instead. Either way every output is computed by the same code in the
  same order, so results do not depend on T.

Compilation: every function is @njit(cache=True): the first import on a machine compiles (seconds; the
benchmark reports it) and writes numba's cache next to this file (or in NUMBA_CACHE_DIR); later loads
read it. kernels.load() runs one forward on zeros, so no compilation lands in a timing.
Flags: none. Numba compiles for the CPU it runs on (AVX2+FMA here, NEON on the Jetson Nano's
Cortex-A57); no fastmath: llvm.fma is asked for explicitly, the rest is IEEE float32.
"""
import threading

import numba
import numpy as np
from llvmlite import binding as _llvm
from numba import njit, prange

from . import ops
from .numba_simd import vadd, vbroadcast_at, vfma, vleaky, vload, vmax, vstore, vsub, vzero

NAME = "numba"
ISA = f"LLVM <8 x float> compiled for {numba.config.CPU_NAME or _llvm.get_host_cpu_name()}"
THREADING = "numba prange"
HEAD_SIZE = 1434     # floats in plan.head_params for this architecture (checked by Model)

JIT = dict(nogil=True, cache=True, boundscheck=False, error_model="numpy")

# layer table columns, as in kernels/plan.py
(SRC_OFF, SRC_WP, SRC_C, SRC_P, CI0, CIN, DST_OFF, DST_WP, DST_C, DST_P, CO0, CBUF,
 K, DIL, PAD, POOL, OH, OW, W_OFF, B_OFF, ALGO) = range(21)
WINOGRAD = 1
WINO_ROWS = 4        # tile rows per block, as plan.WINO_ROWS


@njit(**JIT)
def tile_6x2(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """The micro-kernel: dst[di + r * dst_pix + 8 v + lane] for r < 6 pixels, v < 2 vectors, with the
    whole (ky, kx, ci) reduction in 12 vector accumulators. src[si] is the first pixel's receptive
    field corner, w[wi] the packed weight [0][0][0][co0]. has_bias: start from bias[bi:] and store
    Leaky-ReLU(alpha) of the result; else start from 0 and store it raw (for the pool)."""
    b0 = vload(bias, bi + 0) if has_bias else vzero()
    b1 = vload(bias, bi + 8) if has_bias else vzero()
    a00 = b0; a01 = b1
    a10 = b0; a11 = b1
    a20 = b0; a21 = b1
    a30 = b0; a31 = b1
    a40 = b0; a41 = b1
    a50 = b0; a51 = b1
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
                x = vbroadcast_at(src, s + 4 * pix_stride); a40 = vfma(x, w0, a40); a41 = vfma(x, w1, a41)
                x = vbroadcast_at(src, s + 5 * pix_stride); a50 = vfma(x, w0, a50); a51 = vfma(x, w1, a51)
                s += 1
                wk += cbuf
    if has_bias:
        a00 = vleaky(a00, alpha); a01 = vleaky(a01, alpha)
        a10 = vleaky(a10, alpha); a11 = vleaky(a11, alpha)
        a20 = vleaky(a20, alpha); a21 = vleaky(a21, alpha)
        a30 = vleaky(a30, alpha); a31 = vleaky(a31, alpha)
        a40 = vleaky(a40, alpha); a41 = vleaky(a41, alpha)
        a50 = vleaky(a50, alpha); a51 = vleaky(a51, alpha)
    vstore(dst, di + 0, a00); vstore(dst, di + 8, a01)
    vstore(dst, di + dst_pix + 0, a10); vstore(dst, di + dst_pix + 8, a11)
    vstore(dst, di + 2 * dst_pix + 0, a20); vstore(dst, di + 2 * dst_pix + 8, a21)
    vstore(dst, di + 3 * dst_pix + 0, a30); vstore(dst, di + 3 * dst_pix + 8, a31)
    vstore(dst, di + 4 * dst_pix + 0, a40); vstore(dst, di + 4 * dst_pix + 8, a41)
    vstore(dst, di + 5 * dst_pix + 0, a50); vstore(dst, di + 5 * dst_pix + 8, a51)


@njit(**JIT)
def tile_4x2(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """4 pixels x 16 channels; see tile_6x2."""
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
def tile_2x2(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """2 pixels x 16 channels; see tile_6x2."""
    b0 = vload(bias, bi + 0) if has_bias else vzero()
    b1 = vload(bias, bi + 8) if has_bias else vzero()
    a00 = b0; a01 = b1
    a10 = b0; a11 = b1
    for ky in range(k):
        for kx in range(k):
            s = si + ky * dil * row_stride + kx * dil * pix_stride
            wk = wi + (ky * k + kx) * cin * cbuf
            for ci in range(cin):
                w0 = vload(w, wk + 0); w1 = vload(w, wk + 8)
                x = vbroadcast_at(src, s); a00 = vfma(x, w0, a00); a01 = vfma(x, w1, a01)
                x = vbroadcast_at(src, s + pix_stride); a10 = vfma(x, w0, a10); a11 = vfma(x, w1, a11)
                s += 1
                wk += cbuf
    if has_bias:
        a00 = vleaky(a00, alpha); a01 = vleaky(a01, alpha)
        a10 = vleaky(a10, alpha); a11 = vleaky(a11, alpha)
    vstore(dst, di + 0, a00); vstore(dst, di + 8, a01)
    vstore(dst, di + dst_pix + 0, a10); vstore(dst, di + dst_pix + 8, a11)


@njit(**JIT)
def tile_1x2(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """1 pixels x 16 channels; see tile_6x2."""
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
def tile_6x1(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """6 pixels x 8 channels; see tile_6x2."""
    b0 = vload(bias, bi + 0) if has_bias else vzero()
    a00 = b0
    a10 = b0
    a20 = b0
    a30 = b0
    a40 = b0
    a50 = b0
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
                x = vbroadcast_at(src, s + 4 * pix_stride); a40 = vfma(x, w0, a40)
                x = vbroadcast_at(src, s + 5 * pix_stride); a50 = vfma(x, w0, a50)
                s += 1
                wk += cbuf
    if has_bias:
        a00 = vleaky(a00, alpha)
        a10 = vleaky(a10, alpha)
        a20 = vleaky(a20, alpha)
        a30 = vleaky(a30, alpha)
        a40 = vleaky(a40, alpha)
        a50 = vleaky(a50, alpha)
    vstore(dst, di + 0, a00)
    vstore(dst, di + dst_pix + 0, a10)
    vstore(dst, di + 2 * dst_pix + 0, a20)
    vstore(dst, di + 3 * dst_pix + 0, a30)
    vstore(dst, di + 4 * dst_pix + 0, a40)
    vstore(dst, di + 5 * dst_pix + 0, a50)


@njit(**JIT)
def tile_4x1(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """4 pixels x 8 channels; see tile_6x2."""
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
def tile_2x1(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """2 pixels x 8 channels; see tile_6x2."""
    b0 = vload(bias, bi + 0) if has_bias else vzero()
    a00 = b0
    a10 = b0
    for ky in range(k):
        for kx in range(k):
            s = si + ky * dil * row_stride + kx * dil * pix_stride
            wk = wi + (ky * k + kx) * cin * cbuf
            for ci in range(cin):
                w0 = vload(w, wk + 0)
                x = vbroadcast_at(src, s); a00 = vfma(x, w0, a00)
                x = vbroadcast_at(src, s + pix_stride); a10 = vfma(x, w0, a10)
                s += 1
                wk += cbuf
    if has_bias:
        a00 = vleaky(a00, alpha)
        a10 = vleaky(a10, alpha)
    vstore(dst, di + 0, a00)
    vstore(dst, di + dst_pix + 0, a10)


@njit(**JIT)
def tile_1x1(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi,
              has_bias, alpha):
    """1 pixels x 8 channels; see tile_6x2."""
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
             has_bias, alpha, nv):
    """One output row of ow pixels, channels [co, co + 8 nv) (nv = 1 or 2; w[wi], bias[bi], dst[di] at co):
    tiles of 6 pixels, then 4, 2, 1."""
    ox = 0
    if nv == 2:
        while ox + 6 <= ow:
            tile_6x2(src, si + ox * pix_stride, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst,
                     di + ox * dst_pix, dst_pix, bias, bi, has_bias, alpha)
            ox += 6
        if ox + 4 <= ow:
            tile_4x2(src, si + ox * pix_stride, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst,
                     di + ox * dst_pix, dst_pix, bias, bi, has_bias, alpha)
            ox += 4
        if ox + 2 <= ow:
            tile_2x2(src, si + ox * pix_stride, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst,
                     di + ox * dst_pix, dst_pix, bias, bi, has_bias, alpha)
            ox += 2
        if ox < ow:
            tile_1x2(src, si + ox * pix_stride, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst,
                     di + ox * dst_pix, dst_pix, bias, bi, has_bias, alpha)
    else:
        while ox + 6 <= ow:
            tile_6x1(src, si + ox * pix_stride, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst,
                     di + ox * dst_pix, dst_pix, bias, bi, has_bias, alpha)
            ox += 6
        if ox + 4 <= ow:
            tile_4x1(src, si + ox * pix_stride, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst,
                     di + ox * dst_pix, dst_pix, bias, bi, has_bias, alpha)
            ox += 4
        if ox + 2 <= ow:
            tile_2x1(src, si + ox * pix_stride, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst,
                     di + ox * dst_pix, dst_pix, bias, bi, has_bias, alpha)
            ox += 2
        if ox < ow:
            tile_1x1(src, si + ox * pix_stride, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst,
                     di + ox * dst_pix, dst_pix, bias, bi, has_bias, alpha)


@njit(**JIT)
def run_layer(src, dst, r, alpha, weights, biases, scratch, part, parts):
    """One fused stage (one row r of the layer table) on one image, as conv_kernel.h's agk_conv_layer_impl:
    output channels in blocks of 16 (then 8) outermost, so a block's weights stay in L1 over all rows.
    part < parts: only this share of the output rows (threads splitting one image)."""
    row_stride, pix_stride = r[SRC_WP] * r[SRC_C], r[SRC_C]
    base = r[SRC_OFF] + (r[SRC_P] - r[PAD]) * row_stride + (r[SRC_P] - r[PAD]) * pix_stride + r[CI0]
    dc, dwp = r[DST_C], r[DST_WP]
    out = r[DST_OFF] + (r[DST_P] * dwp + r[DST_P]) * dc + r[CO0]
    cin, k, dil, cbuf, oh, ow = r[CIN], r[K], r[DIL], r[CBUF], r[OH], r[OW]
    wi, bi = r[W_OFF], r[B_OFF]
    rows = oh // 2 if r[POOL] != 0 else oh
    y0, y1 = rows * part // parts, rows * (part + 1) // parts
    # addresses, not arrays, into the hot calls: no reference counting per tile (see numba_simd)
    src, dst, weights, biases, scratch = src.ctypes.data, dst.ctypes.data, weights.ctypes.data, \
        biases.ctypes.data, scratch.ctypes.data
    act, raw = np.bool_(True), np.bool_(False)       # not literals: one compiled conv_row for every call site
    for co in range(0, cbuf, 16):
        nv = 2 if cbuf - co >= 16 else 1
        width = 8 * nv
        if r[POOL] == 0:
            for oy in range(y0, y1):
                conv_row(src, base + oy * row_stride, row_stride, pix_stride, cin, k, dil, weights, wi + co, cbuf,
                         ow, dst, out + oy * dwp * dc + co, dc, biases, bi + co, act, alpha, nv)
            continue
        pw = ow // 2
        for py in range(y0, y1):
            for half in range(2):
                conv_row(src, base + (2 * py + half) * row_stride, row_stride, pix_stride, cin, k, dil, weights,
                         wi + co, cbuf, 2 * pw, scratch, half * 2 * pw * width, width, biases, bi + co, raw,
                         alpha, nv)
            o = out + py * dwp * dc + co
            for px in range(pw):
                a, c = 2 * px * width, (2 * pw + 2 * px) * width
                for v in range(0, width, 8):
                    m = vmax(vmax(vload(scratch, a + v), vload(scratch, a + width + v)),
                             vmax(vload(scratch, c + v), vload(scratch, c + width + v)))
                    vstore(dst, o + px * dc + v, vleaky(vadd(m, vload(biases, bi + co + v)), alpha))


@njit(**JIT)
def run_winograd(src, dst, r, alpha, u, biases, scratch, part, parts):
    """Winograd F(2x2, 3x3) stage (3x3, dilation 1, pad 1, even output), as conv_kernel.h's
    agk_winograd_layer_impl: V = B^T d B per 4x4 input tile and 8 channels, 16 products V[p] U[p] by the
    1x1-conv micro-kernel, Y = A^T M A per tile, + bias, Leaky-ReLU, and the 2x2 pool as a max over a tile."""
    row_stride, pix = r[SRC_WP] * r[SRC_C], r[SRC_C]
    base = r[SRC_OFF] + (r[SRC_P] - 1) * row_stride + (r[SRC_P] - 1) * pix + r[CI0]
    dc, dwp = r[DST_C], r[DST_WP]
    out = r[DST_OFF] + (r[DST_P] * dwp + r[DST_P]) * dc + r[CO0]
    cin, cbuf, pool = r[CIN], r[CBUF], r[POOL]
    wi, bi = r[W_OFF], r[B_OFF]
    nty, ntx = r[OH] // 2, r[OW] // 2
    cinp = (cin + 7) // 8 * 8
    m_base = 16 * (WINO_ROWS * ntx * cinp + 16)
    src, dst, u, biases, scratch = src.ctypes.data, dst.ctypes.data, u.ctypes.data, biases.ctypes.data, \
        scratch.ctypes.data
    zero, one, raw = np.int64(0), np.int64(1), np.bool_(False)     # not literals: the same conv_row as run_layer
    ty_end = nty * (part + 1) // parts                   # this part's tile rows (threads splitting an image)
    for ty0 in range(nty * part // parts, ty_end, WINO_ROWS):
        nt = min(WINO_ROWS, ty_end - ty0) * ntx
        vps, mps = nt * cinp + 16, nt * cbuf + 16        # + one cache line: not 4 KiB apart (L1 sets)
        for t in range(nt):                                  # V = B^T d B, in registers
            d = base + 2 * (ty0 + t // ntx) * row_stride + 2 * (t % ntx) * pix
            for c in range(0, cinp, 8):
                x0, x1, x2, x3 = d + c, d + c + row_stride, d + c + 2 * row_stride, d + c + 3 * row_stride
                # rows of B^T d: r0 = d0 - d2, r1 = d1 + d2, r2 = d2 - d1, r3 = d1 - d3 (d_i: input row i)
                a, b_, c_, e = vload(src, x0), vload(src, x1), vload(src, x2), vload(src, x3)
                r00, r10, r20, r30 = vsub(a, c_), vadd(b_, c_), vsub(c_, b_), vsub(b_, e)
                a, b_, c_, e = vload(src, x0 + pix), vload(src, x1 + pix), vload(src, x2 + pix), vload(src, x3 + pix)
                r01, r11, r21, r31 = vsub(a, c_), vadd(b_, c_), vsub(c_, b_), vsub(b_, e)
                a, b_, c_, e = vload(src, x0 + 2 * pix), vload(src, x1 + 2 * pix), vload(src, x2 + 2 * pix), \
                    vload(src, x3 + 2 * pix)
                r02, r12, r22, r32 = vsub(a, c_), vadd(b_, c_), vsub(c_, b_), vsub(b_, e)
                a, b_, c_, e = vload(src, x0 + 3 * pix), vload(src, x1 + 3 * pix), vload(src, x2 + 3 * pix), \
                    vload(src, x3 + 3 * pix)
                r03, r13, r23, r33 = vsub(a, c_), vadd(b_, c_), vsub(c_, b_), vsub(b_, e)
                # columns: (B^T d) B, stored at V[4 i + j]
                v = t * cinp + c
                vstore(scratch, v, vsub(r00, r02))
                vstore(scratch, v + vps, vadd(r01, r02))
                vstore(scratch, v + 2 * vps, vsub(r02, r01))
                vstore(scratch, v + 3 * vps, vsub(r01, r03))
                vstore(scratch, v + 4 * vps, vsub(r10, r12))
                vstore(scratch, v + 5 * vps, vadd(r11, r12))
                vstore(scratch, v + 6 * vps, vsub(r12, r11))
                vstore(scratch, v + 7 * vps, vsub(r11, r13))
                vstore(scratch, v + 8 * vps, vsub(r20, r22))
                vstore(scratch, v + 9 * vps, vadd(r21, r22))
                vstore(scratch, v + 10 * vps, vsub(r22, r21))
                vstore(scratch, v + 11 * vps, vsub(r21, r23))
                vstore(scratch, v + 12 * vps, vsub(r30, r32))
                vstore(scratch, v + 13 * vps, vadd(r31, r32))
                vstore(scratch, v + 14 * vps, vsub(r32, r31))
                vstore(scratch, v + 15 * vps, vsub(r31, r33))
        for p in range(16):                                  # M[p] = V[p] U[p]
            for co in range(0, cbuf, 16):
                conv_row(scratch, p * vps, zero, cinp, cin, one, one, u, wi + p * cin * cbuf + co, cbuf, nt, scratch,
                         m_base + p * mps + co, cbuf, biases, bi, raw, alpha, 2 if cbuf - co >= 16 else 1)
        for t in range(nt):                                  # Y = A^T M A
            ty, tx = ty0 + t // ntx, t % ntx
            for co in range(0, cbuf, 8):
                m = m_base + t * cbuf + co
                m0, m1, m2, m3 = vload(scratch, m), vload(scratch, m + 4 * mps), vload(scratch, m + 8 * mps), \
                    vload(scratch, m + 12 * mps)
                s00, s10 = vadd(vadd(m0, m1), m2), vsub(vsub(m1, m2), m3)
                m0, m1, m2, m3 = vload(scratch, m + mps), vload(scratch, m + 5 * mps), \
                    vload(scratch, m + 9 * mps), vload(scratch, m + 13 * mps)
                s01, s11 = vadd(vadd(m0, m1), m2), vsub(vsub(m1, m2), m3)
                m0, m1, m2, m3 = vload(scratch, m + 2 * mps), vload(scratch, m + 6 * mps), \
                    vload(scratch, m + 10 * mps), vload(scratch, m + 14 * mps)
                s02, s12 = vadd(vadd(m0, m1), m2), vsub(vsub(m1, m2), m3)
                m0, m1, m2, m3 = vload(scratch, m + 3 * mps), vload(scratch, m + 7 * mps), \
                    vload(scratch, m + 11 * mps), vload(scratch, m + 15 * mps)
                s03, s13 = vadd(vadd(m0, m1), m2), vsub(vsub(m1, m2), m3)
                y00, y01 = vadd(vadd(s00, s01), s02), vsub(vsub(s01, s02), s03)
                y10, y11 = vadd(vadd(s10, s11), s12), vsub(vsub(s11, s12), s13)
                bias = vload(biases, bi + co)
                if pool:
                    y = vmax(vmax(y00, y01), vmax(y10, y11))
                    vstore(dst, out + (ty * dwp + tx) * dc + co, vleaky(vadd(y, bias), alpha))
                else:
                    o = out + (2 * ty * dwp + 2 * tx) * dc + co
                    vstore(dst, o, vleaky(vadd(y00, bias), alpha))
                    vstore(dst, o + dc, vleaky(vadd(y01, bias), alpha))
                    vstore(dst, o + dwp * dc, vleaky(vadd(y10, bias), alpha))
                    vstore(dst, o + dwp * dc + dc, vleaky(vadd(y11, bias), alpha))


@njit(**JIT)
def conv_layer(src, dst, layers, alphas, weights, biases, scratch):
    """Every row of a layer table on one image (src and dst: the flat buffers the offsets point into)."""
    for i in range(layers.shape[0]):
        if layers[i, ALGO] == WINOGRAD:
            run_winograd(src, dst, layers[i], alphas[i], weights, biases, scratch, 0, 1)
        else:
            run_layer(src, dst, layers[i], alphas[i], weights, biases, scratch, 0, 1)


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
def copy_input(x, n, ws, image):
    """NCHW image n -> the NHWC image buffer's interior."""
    off, wp, ch, p = image[0], image[1], image[2], image[3]
    for y in range(x.shape[2]):
        row = off + ((y + p) * wp + p) * ch
        for xx in range(x.shape[3]):
            for c in range(x.shape[1]):
                ws[row + xx * ch + c] = x[n, c, y, xx]


@njit(**JIT)
def run_stage(ws, layers, i, alphas, weights, biases, scratch, part, parts):
    if layers[i, ALGO] == WINOGRAD:
        run_winograd(ws, ws, layers[i], alphas[i], weights, biases, scratch, part, parts)
    else:
        run_layer(ws, ws, layers[i], alphas[i], weights, biases, scratch, part, parts)


@njit(**JIT)
def run_image(x, n, ws, scratch, image, layers, alphas, weights, biases, g, hp, head_alpha, out, first, last,
              do_heads, feat, hidden):
    if first == 0:
        copy_input(x, n, ws, image)
    for i in range(first, last):
        run_stage(ws, layers, i, alphas, weights, biases, scratch, 0, 1)
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


@njit(parallel=True, **JIT)
def _run_rows(x, ws, scratch, image, layers, alphas, weights, biases, g, hp, head_alpha, out, first, last,
              do_heads, nt):
    feat, hidden = np.empty(64, np.float32), np.empty(28, np.float32)
    for n in range(x.shape[0]):
        if first == 0:
            copy_input(x, n, ws[0], image)
        for i in range(first, last):
            for t in prange(nt):
                run_stage(ws[0], layers, i, alphas, weights, biases, scratch[t], t, nt)
        if do_heads:
            heads(ws[0], g, hp, head_alpha, out, n, feat, hidden)


def thread_limit():
    """(the most threads this backend can run, why): numba's thread pool, fixed when numba starts."""
    n = numba.config.NUMBA_NUM_THREADS
    return n, f"numba's thread pool has {n} (NUMBA_NUM_THREADS, which defaults to the CPU count; set it before " \
              f"Python starts to allow more)"


def run_network(x, ws, scratch, image, layers, alphas, weights, biases, g, head_params, head_alpha, out,
                first, last, do_heads, threads):
    """threads <= batch: images n = t, t + T, ... run in workspace t (T = threads). threads > batch: the images one
    after the other, each stage's output rows split over the threads. See Model.forward."""
    nt = int(threads)
    if nt > ws.shape[0] or nt > scratch.shape[0]:
        raise ValueError(f"{threads} threads but {ws.shape[0]} workspaces")
    args = (x, ws, scratch, image, layers, alphas, weights, biases, g, head_params, np.float32(head_alpha), out,
            int(first), int(last), bool(do_heads))
    if nt <= 1:
        _run_serial(*args)
        return
    if nt > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"{nt} threads, but numba has {numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)")
    numba.set_num_threads(nt)                        # per calling thread in numba
    _launch(_run_rows if nt > x.shape[0] else _run_parallel, (*args, nt))


THREADSAFE_LAYERS = ("omp", "tbb")    # numba's workqueue layer aborts the process on concurrent parallel launches
_launch_lock = threading.Lock()
_threadsafe_layer = None              # unknown until the first parallel launch picks a threading layer


def _launch(parallel_fn, args):
    """Run a parallel=True executor; one at a time (a lock, without the GIL) unless numba's threading layer is
    thread-safe, so a Model shared by threads works on every layer (NUMBA_THREADING_LAYER=workqueue included)."""
    global _threadsafe_layer
    if _threadsafe_layer:
        parallel_fn(*args)
        return
    with _launch_lock:
        parallel_fn(*args)
        _threadsafe_layer = numba.threading_layer() in THREADSAFE_LAYERS


globals().update(ops.bind(conv_layer))
__all__ = ["run_network", "conv_layer", *ops.__all__]
