/* conv_kernel.h: the Cython backend's kernels in C: the fused conv + bias + Leaky-ReLU (+ 2x2 max pool) stage,
 * direct or Winograd F(2x2, 3x3), the global average pools and the heads program; and the structs of the tables
 * kernels/plan.py builds.
 *
 * How it differs from refimpl (NHWC with zero borders, BatchNorm folded, packed weights, register-blocked
 * tiles, Winograd, fused pool) and why that is fast: kernels/README.md. Portability: the vectors are GCC/Clang
 * vector extensions (8 x float32), no intrinsics; on x86-64 the same source is compiled for the baseline and
 * for avx2,fma and picked at run time. Flags relied on (kernels/build_flags.py): -O3 (unrolls the constant
 * RX/NV loops, keeps the accumulators in registers) and gcc's default -ffp-contract=fast in GNU C (FMA); no
 * -ffast-math.
 */
#ifndef AGEGENDER_CONV_KERNEL_H
#define AGEGENDER_CONV_KERNEL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The tables kernels/plan.py builds, one record per row. Each field is named once, in the X-macros below;
 * plan.py's STAGE, VIEW and HEAD_STEP are the same records as NumPy structured dtypes, and
 * tests/test_kernels_layout.py compares both layouts (the *_layout arrays below, offsetof and sizeof). */
#define AGK_STAGE_FIELDS(X)                                                                                  \
    /* source buffer: offset in the workspace, padded width, channels per pixel, border; channel slice */ \
    X(int64_t, src_off) X(int64_t, src_wp) X(int64_t, src_c) X(int64_t, src_p) X(int64_t, ci0) X(int64_t, cin) \
    /* destination buffer, likewise; cbuf: output channels written, a whole number of vectors */         \
    X(int64_t, dst_off) X(int64_t, dst_wp) X(int64_t, dst_c) X(int64_t, dst_p) X(int64_t, co0)              \
    X(int64_t, cbuf)                                                                                       \
    /* the conv: kernel, dilation, padding, 2x2 max pool after it, conv output size; algo 0 direct,   */ \
    /* 1 Winograd; offsets of its packed weights and bias; the Leaky-ReLU slope                        */ \
    X(int64_t, k) X(int64_t, dil) X(int64_t, pad) X(int64_t, pool) X(int64_t, oh) X(int64_t, ow)           \
    X(int64_t, w_off) X(int64_t, b_off) X(int64_t, algo) X(float, alpha)
enum { AGK_DIRECT = 0, AGK_WINOGRAD = 1 };         /* agk_stage.algo (plan.DIRECT, plan.WINOGRAD) */

/* A channel slice [c0, c0 + c) of an h x w buffer interior (the input image; a global average pool's source,
 * whose mean lands at dst of the per-image head vector) */
#define AGK_VIEW_FIELDS(X)                                                                                   \
    X(int64_t, off) X(int64_t, wp) X(int64_t, channels) X(int64_t, pad) X(int64_t, c0) X(int64_t, c)        \
    X(int64_t, h) X(int64_t, w) X(int64_t, dst)

/* One step of the heads on the per-image head vector hv (plan.py compiles refimpl/graph.py's head nodes):
 *   AGK_FC:      hv[dst + o] = params[b_off + o] + sum_i params[w_off + o * nin + i] * hv[src + i], o < n
 *   AGK_LEAKY:   hv[dst + i] = Leaky-ReLU(alpha) of hv[src + i], i < n;  AGK_SIGMOID likewise
 *   AGK_MEAN3:   hv[dst + i] = (hv[src + i] + hv[src2 + i] + hv[src3 + i]) / 3, i < n (the ensemble)       */
enum { AGK_FC = 0, AGK_LEAKY = 1, AGK_SIGMOID = 2, AGK_MEAN3 = 3 };   /* agk_head_step.op (plan.FC, ...) */
#define AGK_HEAD_STEP_FIELDS(X)                                                                              \
    X(int64_t, op) X(int64_t, dst) X(int64_t, src) X(int64_t, src2) X(int64_t, src3) X(int64_t, n)         \
    X(int64_t, nin) X(int64_t, w_off) X(int64_t, b_off) X(float, alpha)

#define AGK_DECLARE(T, name) T name;
typedef struct { AGK_STAGE_FIELDS(AGK_DECLARE) } agk_stage;
typedef struct { AGK_VIEW_FIELDS(AGK_DECLARE) } agk_view;
typedef struct { AGK_HEAD_STEP_FIELDS(AGK_DECLARE) } agk_head_step;
#undef AGK_DECLARE

/* {field name, C type, offset}, ended by {NULL, NULL, sizeof}: what the layout test reads */
typedef struct { const char *name, *type; size_t offset; } agk_field;
#define AGK_STAGE_ENTRY(T, name) {#name, #T, offsetof(agk_stage, name)},
#define AGK_VIEW_ENTRY(T, name) {#name, #T, offsetof(agk_view, name)},
#define AGK_HEAD_STEP_ENTRY(T, name) {#name, #T, offsetof(agk_head_step, name)},
static const agk_field agk_stage_layout[] = {AGK_STAGE_FIELDS(AGK_STAGE_ENTRY){NULL, NULL, sizeof(agk_stage)}};
static const agk_field agk_view_layout[] = {AGK_VIEW_FIELDS(AGK_VIEW_ENTRY){NULL, NULL, sizeof(agk_view)}};
static const agk_field agk_head_step_layout[] = {
    AGK_HEAD_STEP_FIELDS(AGK_HEAD_STEP_ENTRY){NULL, NULL, sizeof(agk_head_step)}};

#define AGK_LANES 8
typedef float agk_v8 __attribute__((vector_size(32)));
typedef float agk_v8u __attribute__((vector_size(32), aligned(4)));    /* unaligned loads and stores */
typedef int agk_i8 __attribute__((vector_size(32)));
typedef int agk_i8u __attribute__((vector_size(32), aligned(4)));

#define AGK_INLINE static inline __attribute__((always_inline))

AGK_INLINE agk_v8 agk_load(const float *p) { return *(const agk_v8u *)p; }
AGK_INLINE void agk_store(float *p, agk_v8 v) { *(agk_v8u *)p = v; }

/* x >= 0 ? x : alpha * x, lane by lane (-0.0 and NaN like refimpl's np.where(x >= 0, ...)) */
AGK_INLINE agk_v8 agk_leaky(agk_v8 x, float alpha) {
    agk_i8 keep = x >= (agk_v8){0, 0, 0, 0, 0, 0, 0, 0};
    agk_v8 neg = x * alpha;
    return (agk_v8)((keep & (agk_i8)x) | (~keep & (agk_i8)neg));
}

AGK_INLINE agk_v8 agk_max(agk_v8 a, agk_v8 b) {
    agk_i8 take_a = a >= b;
    return (agk_v8)((take_a & (agk_i8)a) | (~take_a & (agk_i8)b));
}

/* One tile: out[r][co0 + 8v + lane] for r < RX pixels of one row, v < NV vectors.
 *   src:  the input at (row oy + ky0, col ox + kx0, channel ci0) for the tile's first pixel
 *   w:    packed weights at [0][0][0][co0], c_out stride cbuf
 *   dst:  the output at the tile's first pixel and channel co0, pixel stride dst_pix
 *   bias: at co0, or NULL (accumulators start at 0 and the result is stored raw)      */
AGK_INLINE void agk_tile(const int RX, const int NV, const float *src, ptrdiff_t row_stride,
                         ptrdiff_t pix_stride, int cin, int k, int dil, const float *w, int cbuf,
                         float *dst, ptrdiff_t dst_pix, const float *bias, float alpha) {
    agk_v8 acc[6][2];
    for (int v = 0; v < NV; v++) {
        agk_v8 init = bias ? agk_load(bias + AGK_LANES * v) : (agk_v8){0, 0, 0, 0, 0, 0, 0, 0};
        for (int r = 0; r < RX; r++) acc[r][v] = init;
    }
    for (int ky = 0; ky < k; ky++) {
        for (int kx = 0; kx < k; kx++) {
            const float *s = src + ky * dil * row_stride + kx * dil * pix_stride;
            const float *wk = w + (ptrdiff_t)(ky * k + kx) * cin * cbuf;
            for (int ci = 0; ci < cin; ci++) {
                agk_v8 wv[2];
                for (int v = 0; v < NV; v++) wv[v] = agk_load(wk + AGK_LANES * v);
                for (int r = 0; r < RX; r++) {
                    float x = s[r * pix_stride];
                    for (int v = 0; v < NV; v++) acc[r][v] += x * wv[v];
                }
                s += 1;
                wk += cbuf;
            }
        }
    }
    for (int r = 0; r < RX; r++)
        for (int v = 0; v < NV; v++)
            agk_store(dst + r * dst_pix + AGK_LANES * v, bias ? agk_leaky(acc[r][v], alpha) : acc[r][v]);
}

/* One output row of ow pixels, channels [co, co + 8 nv) (nv = 1 or 2): tiles of 6 pixels, then 4, 2, 1. */
AGK_INLINE void agk_conv_row(const float *src, ptrdiff_t row_stride, ptrdiff_t pix_stride, int cin, int k,
                             int dil, const float *w, int cbuf, int ow, float *dst, ptrdiff_t dst_pix,
                             const float *bias, float alpha, int nv) {
#define AGK_TILE(RX, NV) agk_tile(RX, NV, src + ox * pix_stride, row_stride, pix_stride, cin, k, dil, w, cbuf, \
                                  dst + ox * dst_pix, dst_pix, bias, alpha)
    int ox = 0;
    if (nv == 2) {
        for (; ox + 6 <= ow; ox += 6) AGK_TILE(6, 2);
        if (ox + 4 <= ow) { AGK_TILE(4, 2); ox += 4; }
        if (ox + 2 <= ow) { AGK_TILE(2, 2); ox += 2; }
        if (ox < ow) AGK_TILE(1, 2);
    } else {
        for (; ox + 6 <= ow; ox += 6) AGK_TILE(6, 1);
        if (ox + 4 <= ow) { AGK_TILE(4, 1); ox += 4; }
        if (ox + 2 <= ow) { AGK_TILE(2, 1); ox += 2; }
        if (ox < ow) AGK_TILE(1, 1);
    }
#undef AGK_TILE
}

/* One fused stage (the direct convolution) over one image. Buffers are NHWC with a zero border:
 *   src: [H + 2 src_p, W + 2 src_p, src_c] at ws + src_off, reading channels [ci0, ci0 + cin)
 *   dst: [.. + 2 dst_p, .. + 2 dst_p, dst_c] at ws + dst_off, writing channels [co0, co0 + cbuf) of its interior
 *   conv output oh x ow (pooled: oh/2 x ow/2), weights [k][k][cin][cbuf] at w_off, bias [cbuf] at b_off
 *   scratch: 2 * ow * 16 floats (pool only)
 * Output channels are the outer loop (blocks of 16, then 8): a block's weights, k*k*cin*16 floats, stay in
 * L1 while every row of the image streams past them.                                                    */
AGK_INLINE void agk_conv_layer_impl(const agk_stage *s, const float *src_ws, float *dst_ws, const float *weights,
                                    const float *biases, float *scratch, int part, int parts) {
    const int cin = (int)s->cin, cbuf = (int)s->cbuf, k = (int)s->k, dil = (int)s->dil, oh = (int)s->oh;
    const int ow = (int)s->ow, pool = (int)s->pool, dc = (int)s->dst_c, dwp = (int)s->dst_wp;
    const float alpha = s->alpha, *w = weights + s->w_off, *b = biases + s->b_off;
    ptrdiff_t row_stride = (ptrdiff_t)s->src_wp * s->src_c, pix_stride = s->src_c;
    int rows = pool ? oh / 2 : oh, y0 = rows * part / parts, y1 = rows * (part + 1) / parts;
    const float *base = src_ws + s->src_off + (s->src_p - s->pad) * row_stride + (s->src_p - s->pad) * pix_stride
                        + s->ci0;
    float *out = dst_ws + s->dst_off + (s->dst_p * dwp + s->dst_p) * dc + s->co0;
    for (int co = 0; co < cbuf; co += 2 * AGK_LANES) {
        int nv = cbuf - co >= 2 * AGK_LANES ? 2 : 1, width = nv * AGK_LANES;
        if (!pool) {
            for (int oy = y0; oy < y1; oy++)
                agk_conv_row(base + oy * row_stride, row_stride, pix_stride, cin, k, dil, w + co, cbuf, ow,
                             out + (ptrdiff_t)oy * dwp * dc + co, dc, b + co, alpha, nv);
            continue;
        }
        int pw = ow / 2;
        for (int py = y0; py < y1; py++) {
            for (int r = 0; r < 2; r++)
                agk_conv_row(base + (2 * py + r) * row_stride, row_stride, pix_stride, cin, k, dil, w + co, cbuf,
                             2 * pw, scratch + (ptrdiff_t)r * 2 * pw * width, width, NULL, alpha, nv);
            float *o = out + (ptrdiff_t)py * dwp * dc + co;
            for (int px = 0; px < pw; px++) {
                const float *p0 = scratch + (ptrdiff_t)(2 * px) * width;
                const float *p1 = scratch + (ptrdiff_t)(2 * pw + 2 * px) * width;
                for (int v = 0; v < width; v += AGK_LANES) {
                    agk_v8 m = agk_max(agk_max(agk_load(p0 + v), agk_load(p0 + width + v)),
                                       agk_max(agk_load(p1 + v), agk_load(p1 + width + v)));
                    agk_store(o + (ptrdiff_t)px * dc + v, agk_leaky(m + agk_load(b + co + v), alpha));
                }
            }
        }
    }
}

/* Winograd F(2x2, 3x3) for 3x3, dilation 1, pad 1 stages with an even output size (algo 1 of the plan).
 * Each 4x4 input tile d gives a 2x2 output tile Y = A^T [ (G g G^T) .* (B^T d B) ] A: 16 multiplies per
 * output tile and channel pair instead of 36. The 16 element-wise products over channels are 16 small
 * matrix products V[p] [tiles x cin] x U[p] [cin x cbuf], run by the same register-blocked micro-kernel
 * as a 1x1 conv. U (the transformed weights, [16][cin][cbuf]) is made once at load (kernels/plan.py).
 * A 2x2 output tile is exactly one 2x2 pool window, so pooling is a max over the tile's four outputs.
 * The transforms only add and subtract (B, A) or scale by 1/2 (G, at load): the float32 results differ
 * from the direct convolution by a few ulps of the partial sums, well inside the tolerances.
 * scratch: 16 * (AGK_WINO_ROWS * (ow/2) * (round_up(cin, 8) + cbuf) + 32) floats.
 * part, parts: this call computes tile rows [nty * part / parts, nty * (part + 1) / parts) (threads). */
#define AGK_WINO_ROWS 4
AGK_INLINE void agk_winograd_layer_impl(const agk_stage *s, const float *src_ws, float *dst_ws,
                                        const float *weights, const float *biases, float *scratch, int part,
                                        int parts) {
    const int cin = (int)s->cin, cbuf = (int)s->cbuf, pool = (int)s->pool, dc = (int)s->dst_c, dwp = (int)s->dst_wp;
    const float alpha = s->alpha, *u = weights + s->w_off, *b = biases + s->b_off;
    ptrdiff_t row_stride = (ptrdiff_t)s->src_wp * s->src_c, pix = s->src_c;
    const float *base = src_ws + s->src_off + (s->src_p - 1) * row_stride + (s->src_p - 1) * pix + s->ci0;
    float *out = dst_ws + s->dst_off + (s->dst_p * dwp + s->dst_p) * dc + s->co0;
    int nty = (int)s->oh / 2, ntx = (int)s->ow / 2, cinp = (cin + AGK_LANES - 1) / AGK_LANES * AGK_LANES;
    float *V = scratch;
    float *M = scratch + (ptrdiff_t)16 * (AGK_WINO_ROWS * ntx * cinp + 16);
    int ty_end = nty * (part + 1) / parts;
    for (int ty0 = nty * part / parts; ty0 < ty_end; ty0 += AGK_WINO_ROWS) {
        int nt = (ty_end - ty0 < AGK_WINO_ROWS ? ty_end - ty0 : AGK_WINO_ROWS) * ntx;
        /* position strides padded by one cache line: 16 streams 4 KiB apart would share an L1 set */
        ptrdiff_t vps = (ptrdiff_t)nt * cinp + 16, mps = (ptrdiff_t)nt * cbuf + 16;
        for (int t = 0; t < nt; t++) {                      /* V = B^T d B, 8 channels at a time */
            const float *d = base + (ptrdiff_t)2 * (ty0 + t / ntx) * row_stride + 2 * (t % ntx) * pix;
            for (int c = 0; c < cinp; c += AGK_LANES) {
                agk_v8 x[4][4], r[4][4];
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++) x[i][j] = agk_load(d + i * row_stride + j * pix + c);
                for (int j = 0; j < 4; j++) {
                    r[0][j] = x[0][j] - x[2][j];
                    r[1][j] = x[1][j] + x[2][j];
                    r[2][j] = x[2][j] - x[1][j];
                    r[3][j] = x[1][j] - x[3][j];
                }
                float *v = V + (ptrdiff_t)t * cinp + c;
                for (int i = 0; i < 4; i++) {
                    agk_store(v + (4 * i + 0) * vps, r[i][0] - r[i][2]);
                    agk_store(v + (4 * i + 1) * vps, r[i][1] + r[i][2]);
                    agk_store(v + (4 * i + 2) * vps, r[i][2] - r[i][1]);
                    agk_store(v + (4 * i + 3) * vps, r[i][1] - r[i][3]);
                }
            }
        }
        for (int p = 0; p < 16; p++)                        /* M[p] = V[p] U[p] */
            for (int co = 0; co < cbuf; co += 2 * AGK_LANES)
                agk_conv_row(V + p * vps, 0, cinp, cin, 1, 1, u + (ptrdiff_t)p * cin * cbuf + co, cbuf, nt,
                             M + p * mps + co, cbuf, NULL, alpha, cbuf - co >= 2 * AGK_LANES ? 2 : 1);
        for (int t = 0; t < nt; t++) {                      /* Y = A^T M A, + bias, Leaky-ReLU (pool) */
            int ty = ty0 + t / ntx, tx = t % ntx;
            for (int co = 0; co < cbuf; co += AGK_LANES) {
                const float *m = M + (ptrdiff_t)t * cbuf + co;
                agk_v8 s0[4], s1[4];
                for (int j = 0; j < 4; j++) {
                    agk_v8 m0 = agk_load(m + (0 + j) * mps), m1 = agk_load(m + (4 + j) * mps);
                    agk_v8 m2 = agk_load(m + (8 + j) * mps), m3 = agk_load(m + (12 + j) * mps);
                    s0[j] = m0 + m1 + m2;
                    s1[j] = m1 - m2 - m3;
                }
                agk_v8 y00 = s0[0] + s0[1] + s0[2], y01 = s0[1] - s0[2] - s0[3];
                agk_v8 y10 = s1[0] + s1[1] + s1[2], y11 = s1[1] - s1[2] - s1[3];
                agk_v8 bias = agk_load(b + co);
                if (pool) {
                    agk_v8 y = agk_max(agk_max(y00, y01), agk_max(y10, y11));
                    agk_store(out + ((ptrdiff_t)ty * dwp + tx) * dc + co, agk_leaky(y + bias, alpha));
                } else {
                    float *o = out + ((ptrdiff_t)2 * ty * dwp + 2 * tx) * dc + co;
                    agk_store(o, agk_leaky(y00 + bias, alpha));
                    agk_store(o + dc, agk_leaky(y01 + bias, alpha));
                    agk_store(o + (ptrdiff_t)dwp * dc, agk_leaky(y10 + bias, alpha));
                    agk_store(o + (ptrdiff_t)dwp * dc + dc, agk_leaky(y11 + bias, alpha));
                }
            }
        }
    }
}

#define AGK_STAGE_ARGS                                                                                    \
    const agk_stage *s, const float *src_ws, float *dst_ws, const float *weights, const float *biases,       \
        float *scratch, int part, int parts

/* One stage s (a row of plan.stages) on one image: src_ws and dst_ws are the buffers its offsets point into (the
 * same workspace in the network), weights and biases the plan's packed arrays. algo 0: direct convolution;
 * algo 1: Winograd F(2x2, 3x3) (the plan picks it only where it applies). part < parts: this call computes
 * its share of the output rows (threads split one image's rows this way; every row is computed the same
 * whichever the split, so results do not depend on the thread count). */
AGK_INLINE void agk_stage_impl(AGK_STAGE_ARGS) {
    if (s->algo == AGK_WINOGRAD)
        agk_winograd_layer_impl(s, src_ws, dst_ws, weights, biases, scratch, part, parts);
    else
        agk_conv_layer_impl(s, src_ws, dst_ws, weights, biases, scratch, part, parts);
}

static void agk_stage_generic(AGK_STAGE_ARGS) {
    agk_stage_impl(s, src_ws, dst_ws, weights, biases, scratch, part, parts);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX2__)
/* the same code compiled for AVX2 + FMA, chosen at run time */
__attribute__((target("avx2,fma"))) static void agk_stage_avx2(AGK_STAGE_ARGS) {
    agk_stage_impl(s, src_ws, dst_ws, weights, biases, scratch, part, parts);
}
static int agk_use_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#define AGK_HAVE_DISPATCH 1
#endif

typedef void (*agk_stage_fn)(AGK_STAGE_ARGS);

/* -> the stage function for this CPU, and its name for available_backends() / the benchmark */
static agk_stage_fn agk_select(const char **isa) {
#ifdef AGK_HAVE_DISPATCH
    if (agk_use_avx2()) {
        *isa = "x86-64 + avx2/fma (runtime dispatch)";
        return agk_stage_avx2;
    }
    *isa = "x86-64 baseline (sse2)";
#elif defined(__AVX2__)
    *isa = "avx2 (compile-time -march)";
#elif defined(__ARM_NEON) || defined(__aarch64__)
    *isa = "neon";
#else
    *isa = "generic C vectors";
#endif
    return agk_stage_generic;
}

/* Before the stages: an NCHW image x [v->c, v->h, v->w] -> the interior of the NHWC image buffer of view v.
 * (The view's fields are read once into locals here and below: the float stores may alias them.) */
static void agk_copy_image(const agk_view *v, const float *x, float *ws) {
    const int64_t h = v->h, w = v->w, c = v->c, channels = v->channels, wp = v->wp, pad = v->pad;
    float *interior = ws + v->off + v->c0;
    for (int64_t y = 0; y < h; y++) {
        float *row = interior + ((y + pad) * wp + pad) * channels;
        for (int64_t px = 0; px < w; px++)
            for (int64_t ch = 0; ch < c; ch++) row[px * channels + ch] = x[(ch * h + y) * w + px];
    }
}

/* -- after the stages: global average pools and the heads, scalar C (about 1,500 multiply-adds) -------- */

/* hv[v->dst + c] = mean over the h x w interior of channel c0 + c of the buffer at ws + v->off, c < v->c */
static void agk_global_avg_pool(const agk_view *v, const float *ws, float *hv) {
    const int64_t h = v->h, w = v->w, c = v->c, channels = v->channels, wp = v->wp, pad = v->pad;
    const float *interior = ws + v->off + v->c0;
    float *out = hv + v->dst;
    for (int64_t ch = 0; ch < c; ch++) out[ch] = 0;
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++) {
            const float *px = interior + ((y + pad) * wp + x + pad) * channels;
            for (int64_t ch = 0; ch < c; ch++) out[ch] += px[ch];
        }
    for (int64_t ch = 0; ch < c; ch++) out[ch] = out[ch] / (float)(h * w);
}

static inline float agk_sigmoid(float x) {
    if (x >= 0) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* The head program (plan.head_steps) on one image's head vector hv (plan.head_size <= AGK_MAX_HEAD floats). */
#define AGK_MAX_HEAD 1024
static void agk_run_heads(const agk_head_step *steps, int64_t n_steps, const float *params, float *hv) {
    for (int64_t i = 0; i < n_steps; i++) {
        const agk_head_step st = steps[i];                  /* a copy: the float stores below may alias it */
        float *dst = hv + st.dst;
        const float *src = hv + st.src, *src2 = hv + st.src2, *src3 = hv + st.src3;
        switch (st.op) {
        case AGK_FC:
            for (int64_t o = 0; o < st.n; o++) {
                const float *w = params + st.w_off + o * st.nin;
                float z = 0;
                for (int64_t j = 0; j < st.nin; j++) z += w[j] * src[j];
                dst[o] = z + params[st.b_off + o];
            }
            break;
        case AGK_LEAKY:
            for (int64_t o = 0; o < st.n; o++) dst[o] = src[o] >= 0 ? src[o] : src[o] * st.alpha;
            break;
        case AGK_SIGMOID:
            for (int64_t o = 0; o < st.n; o++) dst[o] = agk_sigmoid(src[o]);
            break;
        case AGK_MEAN3:
            for (int64_t o = 0; o < st.n; o++) dst[o] = (src[o] + src2[o] + src3[o]) / 3.0f;
            break;
        }
    }
}

#endif
