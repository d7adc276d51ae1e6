"""The Numba backend: kernels/plan.py's tables (the same records the Cython backend runs) as Numba kernels.

The strategy is conv_kernel.h's, in Python syntax with numba_simd's 8-lane vectors; why it is fast (BN folding,
packing, fused stages, Winograd, threading) is told once, in kernels/README.md. Here: the register-blocked tiles
and the Winograd transforms, generated from one template each (numba has no templates, and keeps vectors in
registers only as named variables), the direct and Winograd stages, the heads program, and the executors (one
image per thread, or one image's rows split over the threads).

Compilation: every function is @njit(cache=True): the first import on a machine compiles (seconds; the
benchmark reports it) and writes numba's cache next to this file (or in NUMBA_CACHE_DIR); later loads
read it. kernels.load() runs one forward on zeros, so no compilation lands in a timing.
Flags: none (JIT below). Numba compiles for the CPU it runs on; no fastmath: llvm.fma is asked for
explicitly, the rest is IEEE float32.
"""
import threading

import numba
import numpy as np
from llvmlite import binding as _llvm
from numba import njit, prange

from . import ops
from .numba_simd import vadd, vbroadcast_at, vfma, vleaky, vload, vmax, vstore, vsub, vzero  # noqa: F401
from .plan import FC, LEAKY, MEAN3, SIGMOID, WINO_ROWS, WINOGRAD

NAME = "numba"
ISA = f"LLVM <8 x float> compiled for {numba.config.CPU_NAME or _llvm.get_host_cpu_name()}"
THREADING = "numba prange"

JIT = dict(nogil=True, cache=True, boundscheck=False, error_model="numpy")

# -- the micro-kernel: one template, a tile per shape ------------------------------------------------------
TILE_SHAPES = ((6, 2), (4, 2), (2, 2), (1, 2), (6, 1), (4, 1), (2, 1), (1, 1))   # (pixels, vectors of 8 channels)
TILE_ARGS = "src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, dst, di, dst_pix, bias, bi, has_bias, alpha"


def tile_source(rx, nv):
    """Python source of tile_{rx}x{nv}, conv_kernel.h's agk_tile(RX, NV): dst[di + r * dst_pix + 8 v + lane] for
    r < rx pixels and v < nv vectors, with the whole (ky, kx, ci) reduction in rx * nv vector accumulators a{r}{v}
    (registers: numba has no arrays of vectors, so each is a named variable). src[si] is the first pixel's receptive
    field corner, w[wi] the packed weight [0][0][0][co0]. has_bias: start from bias[bi:] and store
    Leaky-ReLU(alpha) of the result; else start from 0 and store it raw (for the pool)."""
    def vectors(fmt):                  # one statement per vector v, on one line
        return "; ".join(fmt.format(v=v, o=8 * v) for v in range(nv))

    def pixels(fmt, indent):           # a line per pixel r, one statement per vector v
        return [indent + "; ".join(fmt.format(r=r, v=v, o=8 * v) for v in range(nv)) for r in range(rx)]

    return "\n".join([
        f"def tile_{rx}x{nv}({TILE_ARGS}):",
        "    " + vectors("b{v} = vload(bias, bi + {o}) if has_bias else vzero()"),
        *pixels("a{r}{v} = b{v}", "    "),
        "    for ky in range(k):",
        "        for kx in range(k):",
        "            s = si + ky * dil * row_stride + kx * dil * pix_stride",
        "            wk = wi + (ky * k + kx) * cin * cbuf",
        "            for ci in range(cin):",
        "                " + vectors("w{v} = vload(w, wk + {o})"),
        *[f"                x = vbroadcast_at(src, s + {r} * pix_stride); " +
          vectors(f"a{r}{{v}} = vfma(x, w{{v}}, a{r}{{v}})") for r in range(rx)],
        "                s += 1",
        "                wk += cbuf",
        "    if has_bias:",
        *pixels("a{r}{v} = vleaky(a{r}{v}, alpha)", "        "),
        *pixels("vstore(dst, di + {r} * dst_pix + {o}, a{r}{v})", "    "),
    ]) + "\n"


def row_source():
    """Python source of conv_row: one output row of ow pixels, channels [co, co + 8 nv) (nv = 1 or 2), in tiles of
    6 pixels, then 4, 2, 1 (conv_kernel.h's agk_conv_row)."""
    lines = ["def conv_row(src, si, row_stride, pix_stride, cin, k, dil, w, wi, cbuf, ow, dst, di, dst_pix, bias, bi, "
             "has_bias, alpha, nv):", "    ox = 0"]
    for nv in (2, 1):
        lines.append(f"    if nv == {nv}:")
        for rx in (6, 4, 2, 1):
            lines += [f"        while ox + {rx} <= ow:",
                      f"            tile_{rx}x{nv}(src, si + ox * pix_stride, row_stride, pix_stride, cin, k, dil, w, "
                      f"wi, cbuf, dst, di + ox * dst_pix, dst_pix, bias, bi, has_bias, alpha)",
                      f"            ox += {rx}"]
    return "\n".join(lines) + "\n"


# Winograd F(2x2, 3x3) transforms, as tables: a row of B^T is d_a -/+ d_b; a row of A^T is (m_a +/- m_b) +/- m_c.
B_T = ((0, "vsub", 2), (1, "vadd", 2), (2, "vsub", 1), (1, "vsub", 3))
A_T = ((0, "vadd", 1, "vadd", 2), (1, "vsub", 2, "vsub", 3))


def winograd_input_source():
    """Python source of winograd_input: V[4 i + j] = (B^T d B)[i, j] for one 4x4 input tile d, 8 channels, looped as
    conv_kernel.h's agk_winograd_layer_impl (per column j the rows of B^T d, then per row i times B); the loops run
    here, so the compiled function keeps the 16 intermediate vectors in registers."""
    lines = ["def winograd_input(src, d, row_stride, pix, scratch, v, vps):"]
    for j in range(4):
        lines += [f"    x{i} = vload(src, d + {i} * row_stride + {j} * pix)" for i in range(4)]
        lines += [f"    r{k}{j} = {op}(x{a}, x{b})" for k, (a, op, b) in enumerate(B_T)]
    for i in range(4):
        lines += [f"    vstore(scratch, v + {4 * i + k} * vps, {op}(r{i}{a}, r{i}{b}))"
                  for k, (a, op, b) in enumerate(B_T)]
    return "\n".join(lines) + "\n"


def winograd_output_source():
    """Python source of winograd_output: (y00, y01, y10, y11) = A^T M A for one tile's 16 products M[p] (8 channels
    at scratch[m + p * mps]), looped as conv_kernel.h (per column j the rows of A^T M, then per row times A)."""
    lines = ["def winograd_output(scratch, m, mps):"]
    for j in range(4):
        lines += [f"    m{i} = vload(scratch, m + {4 * i + j} * mps)" for i in range(4)]
        lines += [f"    s{k}{j} = {op2}({op1}(m{a}, m{b}), m{c})" for k, (a, op1, b, op2, c) in enumerate(A_T)]
    lines.append("    return (" + ", ".join(f"{op2}({op1}(s{i}{a}, s{i}{b}), s{i}{c})"
                                         for i in range(2) for a, op1, b, op2, c in A_T) + ")")
    return "\n".join(lines) + "\n"


def _define(source, name):
    """Compile generated source into this module and jit it. The code object is named after this file, which is what
    numba's cache keys on (the file's timestamp): the cache stays valid until the template changes."""
    exec(compile(source, __file__, "exec"), globals())
    globals()[name] = njit(**JIT)(globals()[name])


for _rx, _nv in TILE_SHAPES:
    _define(tile_source(_rx, _nv), f"tile_{_rx}x{_nv}")
_define(row_source(), "conv_row")
_define(winograd_input_source(), "winograd_input")
_define(winograd_output_source(), "winograd_output")


# -- one stage (a record of plan.STAGE) on one image ------------------------------------------------------
@njit(**JIT)
def run_layer(src, dst, r, weights, biases, scratch, part, parts):
    """The direct convolution stage, as conv_kernel.h's agk_conv_layer_impl: output channels in blocks of 16 (then
    8) outermost, so a block's weights stay in L1 over all rows. part < parts: only this share of the output rows
    (threads splitting one image)."""
    row_stride, pix_stride = r.src_wp * r.src_c, r.src_c
    base = r.src_off + (r.src_p - r.pad) * row_stride + (r.src_p - r.pad) * pix_stride + r.ci0
    dc, dwp = r.dst_c, r.dst_wp
    out = r.dst_off + (r.dst_p * dwp + r.dst_p) * dc + r.co0
    cin, k, dil, cbuf, oh, ow, alpha = r.cin, r.k, r.dil, r.cbuf, r.oh, r.ow, r.alpha
    wi, bi = r.w_off, r.b_off
    rows = oh // 2 if r.pool != 0 else oh
    y0, y1 = rows * part // parts, rows * (part + 1) // parts
    # addresses, not arrays, into the hot calls: no reference counting per tile (see numba_simd)
    src, dst, weights, biases, scratch = src.ctypes.data, dst.ctypes.data, weights.ctypes.data, \
        biases.ctypes.data, scratch.ctypes.data
    act, raw = np.bool_(True), np.bool_(False)       # not literals: one compiled conv_row for every call site
    for co in range(0, cbuf, 16):
        nv = 2 if cbuf - co >= 16 else 1
        width = 8 * nv
        if r.pool == 0:
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
def run_winograd(src, dst, r, u, biases, scratch, part, parts):
    """Winograd F(2x2, 3x3) stage (3x3, dilation 1, pad 1, even output), as conv_kernel.h's
    agk_winograd_layer_impl: V = B^T d B per 4x4 input tile and 8 channels, 16 products V[p] U[p] by the
    1x1-conv micro-kernel, Y = A^T M A per tile, + bias, Leaky-ReLU, and the 2x2 pool as a max over a tile.
    The transforms are generated from the B^T and A^T tables (winograd_input, winograd_output)."""
    row_stride, pix = r.src_wp * r.src_c, r.src_c
    base = r.src_off + (r.src_p - 1) * row_stride + (r.src_p - 1) * pix + r.ci0
    dc, dwp = r.dst_c, r.dst_wp
    out = r.dst_off + (r.dst_p * dwp + r.dst_p) * dc + r.co0
    cin, cbuf, pool, alpha = r.cin, r.cbuf, r.pool, r.alpha
    wi, bi = r.w_off, r.b_off
    nty, ntx = r.oh // 2, r.ow // 2
    cinp = (cin + 7) // 8 * 8
    m_base = 16 * (WINO_ROWS * ntx * cinp + 16)
    src, dst, u, biases, scratch = src.ctypes.data, dst.ctypes.data, u.ctypes.data, biases.ctypes.data, \
        scratch.ctypes.data
    zero, one, raw = np.int64(0), np.int64(1), np.bool_(False)     # not literals: the same conv_row as run_layer
    ty_end = nty * (part + 1) // parts                   # this part's tile rows (threads splitting an image)
    for ty0 in range(nty * part // parts, ty_end, WINO_ROWS):
        nt = min(WINO_ROWS, ty_end - ty0) * ntx
        vps, mps = nt * cinp + 16, nt * cbuf + 16        # + one cache line: not 4 KiB apart (L1 sets)
        for t in range(nt):                              # V = B^T d B
            d = base + 2 * (ty0 + t // ntx) * row_stride + 2 * (t % ntx) * pix
            for c in range(0, cinp, 8):
                winograd_input(src, d + c, row_stride, pix, scratch, t * cinp + c, vps)
        for p in range(16):                              # M[p] = V[p] U[p]
            for co in range(0, cbuf, 16):
                conv_row(scratch, p * vps, zero, cinp, cin, one, one, u, wi + p * cin * cbuf + co, cbuf, nt, scratch,
                         m_base + p * mps + co, cbuf, biases, bi, raw, alpha, 2 if cbuf - co >= 16 else 1)
        for t in range(nt):                              # Y = A^T M A
            ty, tx = ty0 + t // ntx, t % ntx
            for co in range(0, cbuf, 8):
                y00, y01, y10, y11 = winograd_output(scratch, m_base + t * cbuf + co, mps)
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
def run_stage(src, dst, r, weights, biases, scratch, part, parts):
    if r.algo == WINOGRAD:
        run_winograd(src, dst, r, weights, biases, scratch, part, parts)
    else:
        run_layer(src, dst, r, weights, biases, scratch, part, parts)


@njit(**JIT)
def conv_layer(src, dst, stages, weights, biases, scratch):
    """Every stage of a plan.STAGE array on one image (src and dst: the flat buffers the offsets point into)."""
    for i in range(stages.shape[0]):
        run_stage(src, dst, stages[i], weights, biases, scratch, 0, 1)


# -- before and after the stages: the input copy, the pools and the heads program ---------------------------
@njit(**JIT)
def copy_image(v, x, n, ws):
    """NCHW image n of x -> the interior of the NHWC image buffer (v: a plan.VIEW record)."""
    h, w, c, channels, wp, pad = v.h, v.w, v.c, v.channels, v.wp, v.pad
    interior = v.off + v.c0
    for y in range(h):
        row = interior + ((y + pad) * wp + pad) * channels
        for px in range(w):
            for ch in range(c):
                ws[row + px * channels + ch] = x[n, ch, y, px]


@njit(**JIT)
def pool_into(v, ws, hv):
    """hv[v.dst + c] = mean over the h x w interior of channel c0 + c of a buffer (v: a plan.VIEW record)."""
    h, w, c, channels, wp, pad, dst = v.h, v.w, v.c, v.channels, v.wp, v.pad, v.dst
    interior = v.off + v.c0
    hv[dst:dst + c] = 0
    for y in range(h):
        for x in range(w):
            px = interior + ((y + pad) * wp + x + pad) * channels
            for ch in range(c):
                hv[dst + ch] += ws[px + ch]
    for ch in range(c):
        hv[dst + ch] = hv[dst + ch] / np.float32(h * w)


@njit(**JIT)
def sigmoid32(x):
    if x >= 0:
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))
    e = np.exp(x)
    return e / (np.float32(1.0) + e)


@njit(**JIT)
def run_heads(steps, params, hv):
    """The head program (plan.HEAD_STEP records; conv_kernel.h's agk_run_heads says what each op computes)."""
    for i in range(steps.shape[0]):
        st = steps[i]
        dst, src, n, nin, alpha = st.dst, st.src, st.n, st.nin, st.alpha
        if st.op == FC:
            for o in range(n):
                z = np.float32(0.0)
                w = st.w_off + o * nin
                for j in range(nin):
                    z += params[w + j] * hv[src + j]
                hv[dst + o] = z + params[st.b_off + o]
        elif st.op == LEAKY:
            for o in range(n):
                z = hv[src + o]
                hv[dst + o] = z if z >= 0 else z * alpha
        elif st.op == SIGMOID:
            for o in range(n):
                hv[dst + o] = sigmoid32(hv[src + o])
        elif st.op == MEAN3:
            for o in range(n):
                hv[dst + o] = (hv[src + o] + hv[st.src2 + o] + hv[st.src3 + o]) / np.float32(3.0)


# -- the executors ----------------------------------------------------------------------------------------
@njit(**JIT)
def run_image(x, n, ws, scratch, image, stages, weights, biases, pools, steps, params, hv, first, last, heads, h):
    """Stages [first, last) of image n in workspace ws (+ heads: its head vector h -> hv[:, n])."""
    if first == 0:
        copy_image(image[0], x, n, ws)
    for i in range(first, last):
        run_stage(ws, ws, stages[i], weights, biases, scratch, 0, 1)
    if heads:
        finish(ws, pools, steps, params, h, hv, n)


@njit(**JIT)
def finish(ws, pools, steps, params, h, hv, n):
    for i in range(pools.shape[0]):
        pool_into(pools[i], ws, h)
    run_heads(steps, params, h)
    for j in range(hv.shape[0]):
        hv[j, n] = h[j]


@njit(**JIT)
def _run_serial(x, ws, scratch, image, stages, weights, biases, pools, steps, params, hv, first, last, heads):
    h = np.empty(hv.shape[0], np.float32)
    for n in range(x.shape[0]):
        run_image(x, n, ws[0], scratch[0], image, stages, weights, biases, pools, steps, params, hv, first, last,
                  heads, h)


@njit(parallel=True, **JIT)
def _run_parallel(x, ws, scratch, image, stages, weights, biases, pools, steps, params, hv, first, last, heads,
                  nt):
    for t in prange(nt):
        h = np.empty(hv.shape[0], np.float32)
        for n in range(t, x.shape[0], nt):
            run_image(x, n, ws[t], scratch[t], image, stages, weights, biases, pools, steps, params, hv, first,
                      last, heads, h)


@njit(parallel=True, **JIT)
def _run_rows(x, ws, scratch, image, stages, weights, biases, pools, steps, params, hv, first, last, heads, nt):
    h = np.empty(hv.shape[0], np.float32)
    for n in range(x.shape[0]):
        if first == 0:
            copy_image(image[0], x, n, ws[0])
        for i in range(first, last):
            for t in prange(nt):
                run_stage(ws[0], ws[0], stages[i], weights, biases, scratch[t], t, nt)
        if heads:
            finish(ws[0], pools, steps, params, h, hv, n)


def tables(plan):
    """The plan's records as the executors take them: (image, stages, pools, head steps), plan.py's arrays."""
    return plan.image, plan.stages_table, plan.pools, plan.head_steps


def thread_limit():
    """(the most threads this backend can run, why): numba's thread pool, fixed when numba starts."""
    n = numba.config.NUMBA_NUM_THREADS
    return n, f"numba's thread pool has {n} (NUMBA_NUM_THREADS, which defaults to the CPU count; set it before " \
              f"Python starts to allow more)"


def run_network(x, ws, scratch, image, stages, weights, biases, pools, steps, params, hv, first, last, heads,
                threads):
    """Stages [first, last) and (heads) the pools and head steps of every image of x -> hv[:, n]. threads <= batch:
    images n = t, t + T, ... run in workspace t (T = threads). threads > batch: the images one after the other, each
    stage's output rows split over the threads. See Model.forward."""
    nt = int(threads)
    if nt > ws.shape[0] or nt > scratch.shape[0]:
        raise ValueError(f"{threads} threads but {ws.shape[0]} workspaces")
    args = (x, ws, scratch, image, stages, weights, biases, pools, steps, params, hv, int(first), int(last),
            bool(heads))
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
