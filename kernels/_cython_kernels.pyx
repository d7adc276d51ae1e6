# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Cython backend's compiled executor: the plan of kernels/plan.py, one image per thread.

How it differs from refimpl/model.py: the network is one table of fused stages (conv + folded
BatchNorm + Leaky-ReLU (+ max pool)) run by conv_kernel.h in NHWC buffers; the heads (GAP,
the six FCs, sigmoids, the ensemble) are plain C loops here. Threads (OpenMP, prange) take
whole images, each in its own workspace, so the result of an image does not depend on the
thread count. Without OpenMP (no -fopenmp at build) prange runs serially.
Compiler flags: kernels/build_flags.py, the only place they are set (-O3 -funroll-loops -std=gnu11 -fopenmp, no
-ffast-math, no -march by default; conv_kernel.h picks AVX2/FMA at run time on x86-64). This file relies on
none of them beyond -O3. On the Jetson Nano: `AGEGENDER_NATIVE=1 pip install .` (gcc -mcpu=native, the
Cortex-A57's NEON) or AGEGENDER_CFLAGS=-mcpu=cortex-a57; aarch64 gcc vectorizes with NEON even without it.
"""
from cython.parallel cimport prange
from libc.math cimport expf
from libc.string cimport memset

import numpy as np

cdef extern from "conv_kernel.h" nogil:
    ctypedef void (*agk_layer_fn)(const float *src, int swp, int sc, int sp, int ci0, int cin, float *dst,
                                  int dwp, int dc, int dp, int co0, int cbuf, int k, int dil, int pad,
                                  int pool, int oh, int ow, const float *w, const float *b, float alpha,
                                  float *scratch, int algo, int part, int parts)
    agk_layer_fn agk_select(const char **isa)

cdef const char *_isa_name = NULL
cdef agk_layer_fn _layer = agk_select(&_isa_name)
ISA = _isa_name.decode()

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define AGK_OPENMP 1
    #else
    #define AGK_OPENMP 0
    #endif
    """
    int AGK_OPENMP

OPENMP = bool(AGK_OPENMP)

# layer table columns, as in kernels/plan.py
DEF SRC_OFF = 0
DEF SRC_WP = 1
DEF SRC_C = 2
DEF SRC_P = 3
DEF CI0 = 4
DEF CIN = 5
DEF DST_OFF = 6
DEF DST_WP = 7
DEF DST_C = 8
DEF DST_P = 9
DEF CO0 = 10
DEF CBUF = 11
DEF K = 12
DEF DIL = 13
DEF PAD = 14
DEF POOL = 15
DEF OH = 16
DEF OW = 17
DEF W_OFF = 18
DEF B_OFF = 19
DEF ALGO = 20


cdef inline void run_layer(const long long[:, ::1] layers, Py_ssize_t i, float alpha, float *ws,
                           const float *weights, const float *biases, float *scratch, int part=0,
                           int parts=1) noexcept nogil:
    cdef const long long *r = &layers[i, 0]
    _layer(ws + r[SRC_OFF], <int>r[SRC_WP], <int>r[SRC_C], <int>r[SRC_P], <int>r[CI0], <int>r[CIN],
           ws + r[DST_OFF], <int>r[DST_WP], <int>r[DST_C], <int>r[DST_P], <int>r[CO0], <int>r[CBUF],
           <int>r[K], <int>r[DIL], <int>r[PAD], <int>r[POOL], <int>r[OH], <int>r[OW],
           weights + r[W_OFF], biases + r[B_OFF], alpha, scratch, <int>r[ALGO], part, parts)


def conv_layer(float[::1] src, float[::1] dst, const long long[:, ::1] layers, const float[::1] alphas,
               const float[::1] weights, const float[::1] biases, float[::1] scratch):
    """Run every row of a layer table on one image: src and dst are the flat buffers the offsets point into
    (the same array for a network; two for a single op)."""
    cdef Py_ssize_t i
    cdef const long long *r
    for i in range(layers.shape[0]):
        r = &layers[i, 0]
        with nogil:
            _layer(&src[0] + r[SRC_OFF], <int>r[SRC_WP], <int>r[SRC_C], <int>r[SRC_P], <int>r[CI0], <int>r[CIN],
                   &dst[0] + r[DST_OFF], <int>r[DST_WP], <int>r[DST_C], <int>r[DST_P], <int>r[CO0],
                   <int>r[CBUF], <int>r[K], <int>r[DIL], <int>r[PAD], <int>r[POOL], <int>r[OH], <int>r[OW],
                   &weights[0] + r[W_OFF], &biases[0] + r[B_OFF], alphas[i], &scratch[0],
                   <int>r[ALGO], 0, 1)


cdef inline float sigmoid(float x) noexcept nogil:
    cdef float e
    if x >= 0:
        return 1.0 / (1.0 + expf(-x))
    e = expf(x)
    return e / (1.0 + e)


cdef inline void gap(const float *ws, const long long[:, ::1] g, Py_ssize_t i, float *out) noexcept nogil:
    """out[c] = mean over the h x w interior of channels [c0, c0 + c) of a buffer."""
    cdef Py_ssize_t y, x, c
    cdef long long wp = g[i, 1], ch = g[i, 2], p = g[i, 3], c0 = g[i, 4], nc = g[i, 5], h = g[i, 6], w = g[i, 7]
    cdef const float *px
    for c in range(nc):
        out[c] = 0
    for y in range(h):
        for x in range(w):
            px = ws + g[i, 0] + ((y + p) * wp + x + p) * ch + c0
            for c in range(nc):
                out[c] += px[c]
    for c in range(nc):
        out[c] = out[c] / <float>(h * w)


cdef inline float dot(const float *a, const float *b, Py_ssize_t n) noexcept nogil:
    cdef float s = 0
    cdef Py_ssize_t i
    for i in range(n):
        s += a[i] * b[i]
    return s


cdef void heads(const float *ws, const long long[:, ::1] g, const float *p, float alpha, float[:, ::1] out,
                Py_ssize_t n) noexcept nogil:
    """GAP + FCs + sigmoids + ensemble of one image -> out[:, n] in spec.OUTPUT_NAMES order.
    p: the FC weights and biases of plan.HEAD_NAMES, flat: gv [32] + 1, av [32] + 1, fc1 [28 x 44] + 28,
    fc_gender [28] + 1, fc_age [28] + 1, low [2 x 24] + 2."""
    cdef float feat[64]
    cdef float hidden[28]
    cdef float gv, av, gf, af, gl, al, z
    cdef Py_ssize_t j
    gap(ws, g, 0, feat)
    gv = sigmoid(dot(p, feat, 32) + p[32])
    gap(ws, g, 1, feat)
    av = dot(p + 33, feat, 32) + p[65]
    gap(ws, g, 2, feat)
    for j in range(28):
        z = dot(p + 66 + 44 * j, feat, 44) + p[66 + 1232 + j]
        hidden[j] = z if z >= 0 else z * alpha
    gf = sigmoid(dot(p + 1326, hidden, 28) + p[1354])
    af = dot(p + 1355, hidden, 28) + p[1383]
    gap(ws, g, 3, feat)
    gl = sigmoid(dot(p + 1384, feat, 24) + p[1432])
    al = dot(p + 1408, feat, 24) + p[1433]
    out[0, n] = (af + av + al) / 3.0
    out[1, n] = (gf + gv + gl) / 3.0
    out[2, n] = af
    out[3, n] = gf
    out[4, n] = av
    out[5, n] = gv
    out[6, n] = al
    out[7, n] = gl


cdef void run_image(const float[:, :, :, ::1] x, Py_ssize_t n, float *ws, float[:, ::1] scratch,
                    const long long[::1] image, const long long[:, ::1] layers, const float[::1] alphas,
                    const float *weights, const float *biases, const long long[:, ::1] g, const float *hp,
                    float head_alpha, float[:, ::1] out, Py_ssize_t first, Py_ssize_t last,
                    bint do_heads, int parts) noexcept nogil:
    """One image in workspace ws; parts > 1: every stage's output rows split over `parts` threads (scratch[t])."""
    cdef Py_ssize_t c, y, xx, i
    cdef int t
    cdef long long wp = image[1], ch = image[2], p = image[3]
    cdef float *dst
    if first == 0:                                   # NCHW image -> the NHWC image buffer's interior
        for y in range(x.shape[2]):
            dst = ws + image[0] + ((y + p) * wp + p) * ch
            for xx in range(x.shape[3]):
                for c in range(x.shape[1]):
                    dst[xx * ch + c] = x[n, c, y, xx]
    for i in range(first, last):
        if parts <= 1:
            run_layer(layers, i, alphas[i], ws, weights, biases, &scratch[0, 0])
        else:
            for t in prange(parts, num_threads=parts, schedule="static", chunksize=1):
                run_layer(layers, i, alphas[i], ws, weights, biases, &scratch[t, 0], t, parts)
    if do_heads:
        heads(ws, g, hp, head_alpha, out, n)


HEAD_SIZE = 1434     # floats in plan.head_params for this architecture (checked by Model)


def run_network(const float[:, :, :, ::1] x, float[:, ::1] ws, float[:, ::1] scratch,
                const long long[::1] image, const long long[:, ::1] layers, const float[::1] alphas,
                const float[::1] weights, const float[::1] biases, const long long[:, ::1] g,
                const float[::1] head_params, float head_alpha, float[:, ::1] out,
                Py_ssize_t first, Py_ssize_t last, bint do_heads, int threads):
    """threads <= batch: images n = t, t + T, t + 2T, ... run in workspace t (T = threads). threads > batch: the
    images one after the other, each stage's rows split over the threads. See Model.forward."""
    cdef Py_ssize_t t, n, batch = x.shape[0]
    cdef int nt = threads
    if nt > ws.shape[0] or nt > scratch.shape[0]:
        raise ValueError(f"{threads} threads but {ws.shape[0]} workspaces")
    if nt > batch or nt <= 1:
        with nogil:
            for n in range(batch):
                run_image(x, n, &ws[0, 0], scratch, image, layers, alphas, &weights[0], &biases[0],
                          g, &head_params[0], head_alpha, out, first, last, do_heads, nt)
        return
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static", chunksize=1):
        n = t
        while n < batch:
            run_image(x, n, &ws[t, 0], scratch[t:t + 1], image, layers, alphas, &weights[0], &biases[0],
                      g, &head_params[0], head_alpha, out, first, last, do_heads, 1)
            n = n + nt
