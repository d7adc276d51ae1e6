# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Cython backend's executor: kernels/plan.py's tables run by conv_kernel.h, one image per OpenMP thread.

The tables (stages, views, head steps) arrive as NumPy structured arrays whose records are conv_kernel.h's
structs (plan.STAGE, plan.VIEW, plan.HEAD_STEP; tests/test_kernels_layout.py checks the layouts through
LAYOUTS below); here they are passed on as uint8 views and read as those structs. How the kernels are fast,
the threading and the compiler flags: kernels/README.md.
"""
from cython.parallel cimport prange

cdef extern from "conv_kernel.h" nogil:
    ctypedef struct agk_stage:
        pass
    ctypedef struct agk_view:
        pass
    ctypedef struct agk_head_step:
        pass
    ctypedef struct agk_field:
        const char *name
        const char *type
        size_t offset
    ctypedef void (*agk_stage_fn)(const agk_stage *s, const float *src_ws, float *dst_ws, const float *weights,
                                  const float *biases, float *scratch, int part, int parts)
    agk_stage_fn agk_select(const char **isa)
    void agk_copy_image(const agk_view *v, const float *x, float *ws)
    void agk_global_avg_pool(const agk_view *v, const float *ws, float *hv)
    void agk_run_heads(const agk_head_step *steps, long long n_steps, const float *params, float *hv)
    const agk_field agk_stage_layout[]
    const agk_field agk_view_layout[]
    const agk_field agk_head_step_layout[]
    enum: AGK_MAX_HEAD

cdef const char *_isa_name = NULL
cdef agk_stage_fn _stage = agk_select(&_isa_name)
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
MAX_HEAD = AGK_MAX_HEAD          # floats of one image's head vector (plan.head_size must fit)


cdef _layout(const agk_field *fields):
    cdef Py_ssize_t i = 0
    out = []
    while fields[i].name != NULL:
        out.append((fields[i].name.decode(), fields[i].type.decode(), fields[i].offset))
        i += 1
    return out, fields[i].offset


# {struct: ([(field, C type, offsetof)], sizeof)}: what tests/test_kernels_layout.py compares with plan.py's dtypes
LAYOUTS = {"agk_stage": _layout(agk_stage_layout), "agk_view": _layout(agk_view_layout),
           "agk_head_step": _layout(agk_head_step_layout)}
cdef Py_ssize_t STAGE_SIZE = LAYOUTS["agk_stage"][1], VIEW_SIZE = LAYOUTS["agk_view"][1]
cdef Py_ssize_t STEP_SIZE = LAYOUTS["agk_head_step"][1]


cdef inline const agk_stage *stage_at(const unsigned char[::1] stages, Py_ssize_t i) noexcept nogil:
    return <const agk_stage *>&stages[i * STAGE_SIZE]


def conv_layer(float[::1] src, float[::1] dst, const unsigned char[::1] stages, const float[::1] weights,
               const float[::1] biases, float[::1] scratch):
    """Run every stage of a table (plan.STAGE records as uint8) on one image: src and dst are the flat buffers the
    offsets point into (the same array in the network; two for a single op)."""
    cdef Py_ssize_t i
    for i in range(stages.shape[0] // STAGE_SIZE):
        with nogil:
            _stage(stage_at(stages, i), &src[0], &dst[0], &weights[0], &biases[0], &scratch[0], 0, 1)


cdef void run_image(const float[:, :, :, ::1] x, Py_ssize_t n, float *ws, float[:, ::1] scratch,
                    const agk_view *image, const unsigned char[::1] stages, const float *weights,
                    const float *biases, const unsigned char[::1] pools, const unsigned char[::1] steps,
                    const float *params, float[:, ::1] hv, Py_ssize_t first, Py_ssize_t last, bint heads,
                    int parts) noexcept nogil:
    """One image in workspace ws; parts > 1: every stage's output rows split over `parts` threads (scratch[t])."""
    cdef Py_ssize_t i
    cdef int t
    cdef float h[AGK_MAX_HEAD]
    if first == 0:
        agk_copy_image(image, &x[n, 0, 0, 0], ws)
    for i in range(first, last):
        if parts <= 1:
            _stage(stage_at(stages, i), ws, ws, weights, biases, &scratch[0, 0], 0, 1)
        else:
            for t in prange(parts, num_threads=parts, schedule="static", chunksize=1):
                _stage(stage_at(stages, i), ws, ws, weights, biases, &scratch[t, 0], t, parts)
    if heads:
        for i in range(pools.shape[0] // VIEW_SIZE):
            agk_global_avg_pool(<const agk_view *>&pools[i * VIEW_SIZE], ws, h)
        agk_run_heads(<const agk_head_step *>&steps[0], steps.shape[0] // STEP_SIZE, params, h)
        for i in range(hv.shape[0]):
            hv[i, n] = h[i]


def run_network(const float[:, :, :, ::1] x, float[:, ::1] ws, float[:, ::1] scratch, const unsigned char[::1] image,
                const unsigned char[::1] stages, const float[::1] weights, const float[::1] biases,
                const unsigned char[::1] pools, const unsigned char[::1] steps, const float[::1] params,
                float[:, ::1] hv, Py_ssize_t first, Py_ssize_t last, bint heads, int threads):
    """Stages [first, last) and (heads) the pools and head steps of every image of x -> hv[:, n], the head vector of
    image n. The tables are plan.py's structured arrays viewed as uint8. threads <= batch: images n = t, t + T, ...
    run in workspace t (T = threads); threads > batch: the images one after the other, each stage's rows split over
    the threads."""
    cdef Py_ssize_t t, n, batch = x.shape[0]
    cdef int nt = threads
    cdef const agk_view *im = <const agk_view *>&image[0]
    if nt > ws.shape[0] or nt > scratch.shape[0]:
        raise ValueError(f"{threads} threads but {ws.shape[0]} workspaces")
    if hv.shape[0] > AGK_MAX_HEAD or hv.shape[1] < batch:
        raise ValueError(f"head vectors {hv.shape[0]} x {hv.shape[1]}: at most {AGK_MAX_HEAD} floats, {batch} images")
    if stages.shape[0] % STAGE_SIZE or pools.shape[0] % VIEW_SIZE or steps.shape[0] % STEP_SIZE or \
            image.shape[0] != VIEW_SIZE or not 0 <= first <= last <= stages.shape[0] // STAGE_SIZE:
        raise ValueError("tables that are not whole records of conv_kernel.h's structs (plan.STAGE, VIEW, HEAD_STEP)")
    if nt > batch or nt <= 1:
        with nogil:
            for n in range(batch):
                run_image(x, n, &ws[0, 0], scratch, im, stages, &weights[0], &biases[0], pools, steps, &params[0],
                          hv, first, last, heads, nt)
        return
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static", chunksize=1):
        n = t
        while n < batch:
            run_image(x, n, &ws[t, 0], scratch[t:t + 1], im, stages, &weights[0], &biases[0], pools, steps,
                      &params[0], hv, first, last, heads, 1)
            n = n + nt
