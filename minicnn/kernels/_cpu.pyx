# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""C99 + OpenMP kernels (csrc/) behind the signatures of ``minicnn.kernels``.

Besides im2col / col2im and pooling: the fused conv layer and a threaded matmul (they call the
OpenBLAS NumPy links, handed over by ``_set_blas``), and one-pass ReLU, SGD and batch-norm loops;
for the kernel benchmark, ``stream_store`` / ``stream_load``: the memory ceilings (csrc/stream.c).

Each wrapper validates its arguments cheaply (a few integer comparisons), makes non-contiguous
input contiguous, allocates the result, and calls the C kernel with the GIL released and the
thread count of ``minicnn.backend.get_num_threads()``.  Bad arguments raise ``TypeError`` /
``ValueError`` naming the argument and the shapes; nothing that Python can pass makes the C code
read or write out of bounds.

``im2col`` and ``col2im`` also take ``out=``: an array of the exact result shape and dtype to
write into (``minicnn.functional.conv`` uses it for its reused scratch buffers).  For ``col2im``
it must be C-contiguous; for ``im2col`` it may be any view whose rows (last axis) are contiguous
and do not overlap, e.g. ``buf.transpose(1, 0, 2)`` of a (K, N, L) buffer, and ``col2im``
reads such a view of ``cols`` without copying it.

An array a kernel writes must not overlap one it reads (``_check_disjoint``): the result would
depend on the order of the loads and stores, and the threads'.  The elementwise kernels may
work in place.
"""
import math
import numbers
import operator

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint32_t, uintptr_t

from minicnn import backend as _backend

cnp.import_array()

cdef extern from "minicnn_kernels.h" nogil:
    ctypedef struct mc_geom:
        int64_t n, c, h, w
        int64_t kh, kw
        int64_t sh, sw
        int64_t ph, pw
        int64_t oh, ow

    int mc_openmp_enabled()
    void mc_stream_store(uint32_t *dst, int64_t n, int nt)
    uint32_t mc_stream_load(const uint32_t *src, int64_t n, int nt)
    void mc_im2col_f32(const float *x, float *cols, int64_t img_stride, int64_t row_stride,
                       const mc_geom *g, int nt)
    void mc_im2col_f64(const double *x, double *cols, int64_t img_stride, int64_t row_stride,
                       const mc_geom *g, int nt)
    void mc_col2im_f32(const float *cols, int64_t img_stride, int64_t row_stride, float *dx,
                       const mc_geom *g, int nt)
    void mc_col2im_f64(const double *cols, int64_t img_stride, int64_t row_stride, double *dx,
                       const mc_geom *g, int nt)
    void mc_maxpool_forward_f32(const float *x, float *out, int32_t *am, const mc_geom *g, int nt)
    void mc_maxpool_forward_f64(const double *x, double *out, int32_t *am, const mc_geom *g, int nt)
    int64_t mc_maxpool_backward_f32(const float *d, const int32_t *am, float *dx, const mc_geom *g, int nt)
    int64_t mc_maxpool_backward_f64(const double *d, const int32_t *am, double *dx, const mc_geom *g, int nt)
    void mc_avgpool_forward_f32(const float *x, float *out, const mc_geom *g, int nt)
    void mc_avgpool_forward_f64(const double *x, double *out, const mc_geom *g, int nt)
    void mc_avgpool_backward_f32(const float *d, float *dx, const mc_geom *g, int nt)
    void mc_avgpool_backward_f64(const double *d, double *dx, const mc_geom *g, int nt)

    ctypedef struct mc_blas:
        void *sgemm
        void *dgemm
        int ilp64
        int own_sgemm
    int mc_sgemm_avx512_supported()
    void mc_sgemm(int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                  const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate) nogil
    void mc_sgemm_loops(int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                        const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate) nogil
    void mc_layer_sgemm_repeat(const mc_blas *blas, int trans_b, int64_t m, int64_t n, int64_t k,
                               const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
                               int64_t ldc, int64_t repeat) nogil
    void mc_relu_forward_f32(const float *x, float *out, int64_t n, int nt)
    void mc_relu_forward_f64(const double *x, double *out, int64_t n, int nt)
    void mc_relu_backward_f32(const float *d, const float *out, float *dx, int64_t n, int nt)
    void mc_relu_backward_f64(const double *d, const double *out, double *dx, int64_t n, int nt)
    void mc_sgd_step_f32(float *p, const float *g, float *buf, int64_t n, float lr, float momentum,
                         float dampening_keep, float weight_decay, int nesterov, int first, int nt)
    void mc_sgd_step_f64(double *p, const double *g, double *buf, int64_t n, double lr,
                         double momentum, double dampening_keep, double weight_decay,
                         int nesterov, int first, int nt)
    void mc_channel_stats_f32(const float *x, int64_t n, int64_t c, int64_t s, float *mean,
                              float *var, int nt)
    void mc_channel_stats_f64(const double *x, int64_t n, int64_t c, int64_t s, double *mean,
                              double *var, int nt)
    void mc_batchnorm_apply_f32(const float *x, const float *mean, const float *inv_std,
                                const float *gamma, const float *beta, float *xhat, float *out,
                                int64_t n, int64_t c, int64_t s, int nt)
    void mc_batchnorm_apply_f64(const double *x, const double *mean, const double *inv_std,
                                const double *gamma, const double *beta, double *xhat,
                                double *out, int64_t n, int64_t c, int64_t s, int nt)
    void mc_batchnorm_backward_f32(const float *dout, const float *xhat, const float *gamma,
                                   const float *inv_std, int batch_stats, float *dx,
                                   float *dgamma, float *dbeta, int64_t n, int64_t c, int64_t s,
                                   int nt)
    void mc_batchnorm_backward_f64(const double *dout, const double *xhat, const double *gamma,
                                   const double *inv_std, int batch_stats, double *dx,
                                   double *dgamma, double *dbeta, int64_t n, int64_t c,
                                   int64_t s, int nt)
    void mc_matmul_f32(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a,
                       int64_t lda, const float *b, int64_t ldb, float *c, int64_t ldc,
                       const mc_blas *blas, int nt)
    void mc_matmul_f64(int ta, int tb, int64_t m, int64_t n, int64_t k, const double *a,
                       int64_t lda, const double *b, int64_t ldb, double *c, int64_t ldc,
                       const mc_blas *blas, int nt)
    void mc_conv_forward_f32(const float *x, const float *w, const float *bias, float *out,
                             float *work, int64_t f, const mc_geom *g, const mc_blas *blas, int nt)
    void mc_conv_forward_f64(const double *x, const double *w, const double *bias, double *out,
                             double *work, int64_t f, const mc_geom *g, const mc_blas *blas, int nt)
    void mc_conv_backward_f32(const float *x, const float *w, const float *dout, float *dx,
                              float *dw1t_parts, float *work, int64_t blocks, int64_t f,
                              const mc_geom *g, const mc_blas *blas, int nt)
    void mc_conv_backward_f64(const double *x, const double *w, const double *dout, double *dx,
                              double *dw1t_parts, double *work, int64_t blocks, int64_t f,
                              const mc_geom *g, const mc_blas *blas, int nt)
    int64_t mc_conv_work_elems_f32(int64_t f, const mc_geom *g, int nt)
    void mc_winograd_forward_f32(const float *x, const float *u, const float *bias, float *out,
                                 float *work, int64_t f, const mc_geom *g, const mc_blas *blas,
                                 int nt)
    void mc_winograd_forward_f64(const double *x, const double *u, const double *bias,
                                 double *out, double *work, int64_t f, const mc_geom *g,
                                 const mc_blas *blas, int nt)
    void mc_winograd_backward_f32(const float *x, const float *ut, const float *dout, float *dx,
                                  float *du_parts, float *db_parts, float *work, int64_t blocks,
                                  int64_t f, const mc_geom *g, const mc_blas *blas, int nt)
    void mc_winograd_backward_f64(const double *x, const double *ut, const double *dout,
                                  double *dx, double *du_parts, double *db_parts, double *work,
                                  int64_t blocks, int64_t f, const mc_geom *g,
                                  const mc_blas *blas, int nt)
    int64_t mc_winograd_work_elems_f32(int64_t f, const mc_geom *g, int nt)

# Every size, kernel, stride and padding must stay below this so no index arithmetic in C
# (int64) can overflow and argmax (int32) can address any plane.
cdef enum:
    LIMIT = 2147483647
# Arrays the kernels are asked to produce from shapes (cols, dx) must stay far from int64 overflow.
cdef object MAX_ELEMS = 2 ** 60

_get_num_threads = _backend.get_num_threads


def openmp_enabled():
    """True if the kernels were compiled with OpenMP (else they run on one thread)."""
    return bool(mc_openmp_enabled())


cdef inline int _threads() except? -1:
    n = _get_num_threads()
    return n if type(n) is int and 1 <= n <= 1024 else 1


cdef int64_t _as_size(object v, str name, str op, int64_t minimum) except -1:
    try:
        if isinstance(v, bool):
            raise TypeError
        n = operator.index(v)                           # a Python int, of any size
    except TypeError:
        raise TypeError(f"{op}: {name} must hold ints, got {v!r}") from None
    if n < minimum or n > LIMIT:
        raise ValueError(f"{op}: {name} must be in [{minimum}, {LIMIT}], got {n}")
    return n


cdef double _as_real(object v, str name, str op) except? -1:
    """v as a finite C double (a Python or NumPy real number)."""
    if type(v) is not float and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
        raise TypeError(f"{op}: {name} must be a real number, got {v!r}")
    try:
        r = float(v)
    except OverflowError:                           # an int beyond float's range
        r = math.inf
    if not math.isfinite(r):
        raise ValueError(f"{op}: {name} must be finite, got {r}")
    return r


cdef tuple _shape_tuple(object v, str name, str op):
    """A shape argument as a tuple (its entries are checked by the caller)."""
    if not isinstance(v, (tuple, list)):
        raise TypeError(f"{op}: {name} must be a tuple of ints, got {v!r}")
    return tuple(v)


cdef void _pair(object value, str name, str op, int64_t minimum, int64_t *a, int64_t *b) except *:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        a[0] = _as_size(value[0], name, op, minimum)
        b[0] = _as_size(value[1], name, op, minimum)
    else:
        try:
            a[0] = b[0] = _as_size(value, name, op, minimum)
        except TypeError:
            raise TypeError(f"{op}: {name} must be an int or an (h, w) pair of ints, "
                            f"got {value!r}") from None


cdef cnp.ndarray _float_array(object x, str name, str op, int ndim):
    """x as an aligned, C-contiguous, native-order float32/float64 array of ndim dimensions."""
    cdef cnp.ndarray a
    if not isinstance(x, cnp.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(x).__name__}")
    a = <cnp.ndarray>x
    if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32 and cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT64:
        raise TypeError(f"{op}: {name} must be float32 or float64, got dtype {a.dtype} "
                        f"({name}.shape={(<object>a).shape})")
    if cnp.PyArray_NDIM(a) != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D, got {name}.shape={(<object>a).shape}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)
            and cnp.PyArray_ISNOTSWAPPED(a)):
        a = np.array(a, dtype=a.dtype.newbyteorder("="), order="C", copy=True)
    return a


def _huge_page_bytes():
    """The size of a transparent huge page (Linux, 2 MiB on x86-64), or 0 where there are none."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            size = int(f.read())
    except (OSError, ValueError):
        return 0
    return size if 0 < size <= 32 << 20 and size & (size - 1) == 0 else 0


# Results of at least 4 MiB (where NumPy asks the kernel for transparent huge pages) start on a
# huge-page boundary.  malloc's mapping starts mid-page, and its first and last partial huge pages
# fall back to 4 KiB pages: 512 more page faults for case D's im2col (75 MiB), whose fresh result
# took ~20% longer to fill on 2 threads than an aligned one (benchmarks/NOTES.md, round 7).
cdef Py_ssize_t HUGE_PAGE = _huge_page_bytes()
cdef Py_ssize_t ALIGN_FROM = 4 << 20


cdef cnp.ndarray _new(int ndim, cnp.npy_intp *dims, int typenum):
    """An uninitialised C-contiguous result; a large one starts on a huge-page boundary."""
    cdef cnp.ndarray raw, result
    cdef uintptr_t start
    nbytes = cnp.PyArray_DescrFromType(typenum).itemsize      # a Python int: never overflows
    for i in range(ndim):
        nbytes *= dims[i]
    if HUGE_PAGE == 0 or nbytes < ALIGN_FROM:
        return cnp.PyArray_EMPTY(ndim, dims, typenum, 0)
    # the first huge-page boundary of a buffer one page longer; untouched bytes cost no memory
    raw = np.empty(nbytes + HUGE_PAGE, np.uint8)
    start = <uintptr_t>cnp.PyArray_DATA(raw)
    start += (-start) & <uintptr_t>(HUGE_PAGE - 1)
    result = cnp.PyArray_SimpleNewFromData(ndim, dims, typenum, <void *>start)
    cnp.set_array_base(result, raw)                 # result keeps raw (its memory) alive
    return result


cdef cnp.ndarray _result(object out, int ndim, cnp.npy_intp *dims, int typenum, str op,
                         str name="out"):
    """A new result array, or the caller's buffer ``out`` (the argument ``name``), checked."""
    if out is None:
        return _new(ndim, dims, typenum)
    return _check_out(out, ndim, dims, typenum, op, name)


cdef void _nchw_dims(cnp.npy_intp *dims, const mc_geom *g, bint output) noexcept:
    """dims = the (N, C, H, W) input shape of g, or its (N, C, OH, OW) output shape."""
    dims[0] = g.n
    dims[1] = g.c
    dims[2] = g.oh if output else g.h
    dims[3] = g.ow if output else g.w


cdef cnp.ndarray _check_out(object out, int ndim, cnp.npy_intp *dims, int typenum, str op,
                            str name="out"):
    """A caller-provided result buffer: exact shape and dtype, C-contiguous, aligned, writeable."""
    cdef cnp.ndarray o
    cdef int d
    if not isinstance(out, cnp.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(out).__name__}")
    o = <cnp.ndarray>out
    want = tuple(dims[d] for d in range(ndim))
    if (cnp.PyArray_TYPE(o) != typenum or not cnp.PyArray_ISNOTSWAPPED(o)
            or cnp.PyArray_NDIM(o) != ndim or (<object>o).shape != want):
        raise ValueError(f"{op}: {name} must have shape {want} and dtype "
                         f"{'float32' if typenum == cnp.NPY_FLOAT32 else 'float64'}, got "
                         f"shape {(<object>o).shape} dtype {o.dtype}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(o) and cnp.PyArray_ISALIGNED(o)
            and cnp.PyArray_ISWRITEABLE(o)):
        raise ValueError(f"{op}: {name} must be C-contiguous, aligned and writeable "
                         f"({name}.shape={(<object>o).shape})")
    return o


cdef void _extent(cnp.ndarray a, uintptr_t *lo, uintptr_t *hi) noexcept:
    """[lo, hi): the addresses a's elements occupy at most (empty for an empty array)."""
    cdef uintptr_t start = <uintptr_t>cnp.PyArray_DATA(a)
    cdef cnp.npy_intp step
    cdef int d
    lo[0] = hi[0] = start
    if cnp.PyArray_SIZE(a) == 0:
        return
    hi[0] = start + <uintptr_t>cnp.PyArray_ITEMSIZE(a)
    for d in range(cnp.PyArray_NDIM(a)):
        step = cnp.PyArray_STRIDE(a, d) * (cnp.PyArray_DIM(a, d) - 1)
        if step < 0:
            lo[0] -= <uintptr_t>(-step)
        else:
            hi[0] += <uintptr_t>step


cdef void _check_disjoint(str op, cnp.ndarray written, str name, tuple reads,
                          bint same_ok=False) except *:
    """The kernel writes ``written`` while it reads each array of ``reads`` (pairs of name and
    array, or None): their memory must not overlap, or the result would depend on the order of
    the loads and stores.  ``same_ok``: an elementwise kernel reads each element before it writes
    it, so ``written`` may be the very array it reads (the same elements, in place)."""
    cdef uintptr_t w_lo, w_hi, r_lo, r_hi
    _extent(written, &w_lo, &w_hi)
    for read_name, read in reads:
        if read is None:
            continue
        _extent(<cnp.ndarray>read, &r_lo, &r_hi)
        if w_hi <= r_lo or r_hi <= w_lo:
            continue
        if same_ok and w_lo == r_lo and w_hi == r_hi:
            continue                    # same shape and C-contiguous (checked): the same elements
        raise ValueError(f"{op}: {name} must not overlap {read_name} in memory "
                         f"({name}.shape={(<object>written).shape}, "
                         f"{read_name}.shape={(<object>read).shape})")


cdef void _window_geom(mc_geom *g, str op, object x_shape, object kernel_size, object stride,
                       object padding) except *:
    """Fill g from an (N, C, H, W) shape and the window; checks the window fits the padded input."""
    if not isinstance(x_shape, tuple) or len(x_shape) != 4:
        raise ValueError(f"{op}: x_shape must be a 4-tuple (N, C, H, W), got {x_shape!r}")
    g.n = _as_size(x_shape[0], "x_shape", op, 0)
    g.c = _as_size(x_shape[1], "x_shape", op, 0)
    g.h = _as_size(x_shape[2], "x_shape", op, 1)
    g.w = _as_size(x_shape[3], "x_shape", op, 1)
    _pair(kernel_size, "kernel_size", op, 1, &g.kh, &g.kw)
    _pair(stride, "stride", op, 1, &g.sh, &g.sw)
    _pair(padding, "padding", op, 0, &g.ph, &g.pw)
    if g.kh > g.h + 2 * g.ph or g.kw > g.w + 2 * g.pw:
        raise ValueError(f"{op}: kernel_size {(g.kh, g.kw)} is larger than the padded input "
                         f"{(g.h + 2 * g.ph, g.w + 2 * g.pw)} (x.shape={x_shape}, "
                         f"padding={(g.ph, g.pw)})")
    g.oh = (g.h + 2 * g.ph - g.kh) // g.sh + 1
    g.ow = (g.w + 2 * g.pw - g.kw) // g.sw + 1
    if g.h * g.w > LIMIT:
        raise ValueError(f"{op}: a plane of {g.h}x{g.w} is too large for int32 indices")
    if (<object>g.n) * g.c * g.kh * g.kw * g.oh * g.ow > MAX_ELEMS or (<object>g.n) * g.c * g.h * g.w > MAX_ELEMS:
        raise ValueError(f"{op}: x_shape={x_shape} with kernel_size={(g.kh, g.kw)} is too large")


cdef void _pool_padding_ok(mc_geom *g, str op, object x_shape) except *:
    # Every window must hold a real cell (PyTorch's rule), or max would have nothing to pick.
    if g.ph > g.kh // 2 or g.pw > g.kw // 2:
        raise ValueError(f"{op}: padding {(g.ph, g.pw)} must be at most half of kernel_size "
                         f"{(g.kh, g.kw)} (x.shape={x_shape})")


# ---------------------------------------------------------------- im2col / col2im

def im2col(x, kernel_size, stride, padding, out=None):
    """x (N, C, H, W) -> cols (N, C*KH*KW, OH*OW); see minicnn.kernels."""
    cdef cnp.ndarray a = _float_array(x, "x", "im2col", 4)
    cdef mc_geom g
    cdef cnp.npy_intp dims[3]
    cdef cnp.ndarray cols
    cdef int typenum = cnp.PyArray_TYPE(a), nt = _threads()
    cdef int64_t img_stride, row_stride
    _window_geom(&g, "im2col", (<object>a).shape, kernel_size, stride, padding)
    dims[0] = g.n
    dims[1] = g.c * g.kh * g.kw
    dims[2] = g.oh * g.ow
    if out is None:
        cols = _new(3, dims, typenum)
        img_stride, row_stride = dims[1] * dims[2], dims[2]
    else:
        cols = _check_rows_out(out, dims, typenum, &img_stride, &row_stride)
        _check_disjoint("im2col", cols, "out", (("x", a),))
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            mc_im2col_f32(<const float *>cnp.PyArray_DATA(a), <float *>cnp.PyArray_DATA(cols),
                          img_stride, row_stride, &g, nt)
    else:
        with nogil:
            mc_im2col_f64(<const double *>cnp.PyArray_DATA(a), <double *>cnp.PyArray_DATA(cols),
                          img_stride, row_stride, &g, nt)
    return cols


cdef cnp.ndarray _check_rows_out(object out, cnp.npy_intp *dims, int typenum,
                                 int64_t *img_stride, int64_t *row_stride):
    """im2col's out: exact shape and dtype, contiguous non-overlapping rows; returns the strides."""
    cdef cnp.ndarray o
    cdef int64_t item, s0, s1, n = dims[0], k = dims[1], l = dims[2]
    if not isinstance(out, cnp.ndarray):
        raise TypeError(f"im2col: out must be a numpy.ndarray, got {type(out).__name__}")
    o = <cnp.ndarray>out
    want = (n, k, l)
    if (cnp.PyArray_TYPE(o) != typenum or not cnp.PyArray_ISNOTSWAPPED(o)
            or cnp.PyArray_NDIM(o) != 3 or (<object>o).shape != want):
        raise ValueError(f"im2col: out must have shape {want} and dtype "
                         f"{'float32' if typenum == cnp.NPY_FLOAT32 else 'float64'}, got "
                         f"shape {(<object>o).shape} dtype {o.dtype}")
    item = cnp.PyArray_ITEMSIZE(o)
    if cnp.PyArray_SIZE(o) == 0:                    # nothing to write (NumPy's strides may be 0)
        img_stride[0] = row_stride[0] = 0
        return o
    s0, s1 = cnp.PyArray_STRIDE(o, 0), cnp.PyArray_STRIDE(o, 1)
    if n == 1:
        s0 = k * max(s1, l * item)
    if k == 1:
        s1 = l * item
    ok = (cnp.PyArray_ISALIGNED(o) and cnp.PyArray_ISWRITEABLE(o)
          and (l == 1 or cnp.PyArray_STRIDE(o, 2) == item)
          and s0 % item == 0 and s1 % item == 0
          and s0 >= l * item and s1 >= l * item
          and (s0 >= k * s1 or s1 >= n * s0))
    if not ok:
        raise ValueError(f"im2col: out must be aligned and writeable with contiguous, "
                         f"non-overlapping rows (out.shape={want}, "
                         f"out.strides={(<object>o).strides})")
    img_stride[0] = s0 // item
    row_stride[0] = s1 // item
    return o


def col2im(cols, x_shape, kernel_size, stride, padding, out=None):
    """cols (N, C*KH*KW, OH*OW) -> dx (N, C, H, W), summing overlapping windows."""
    cdef cnp.ndarray a
    cdef mc_geom g
    cdef cnp.npy_intp dims[4]
    cdef cnp.ndarray dx
    cdef int typenum, nt = _threads()
    cdef int64_t img_stride, row_stride, item
    a = _rows_array(cols)
    x_shape = _shape_tuple(x_shape, "x_shape", "col2im")
    _window_geom(&g, "col2im", x_shape, kernel_size, stride, padding)
    if (cnp.PyArray_DIM(a, 0) != g.n or cnp.PyArray_DIM(a, 1) != g.c * g.kh * g.kw
            or cnp.PyArray_DIM(a, 2) != g.oh * g.ow):
        raise ValueError(f"col2im: cols must have shape {(g.n, g.c * g.kh * g.kw, g.oh * g.ow)} "
                         f"for x_shape={x_shape}, kernel_size={(g.kh, g.kw)}, "
                         f"stride={(g.sh, g.sw)}, padding={(g.ph, g.pw)}; got {(<object>a).shape}")
    typenum = cnp.PyArray_TYPE(a)
    item = cnp.PyArray_ITEMSIZE(a)
    img_stride = cnp.PyArray_STRIDE(a, 0) // item
    row_stride = cnp.PyArray_STRIDE(a, 1) // item
    _nchw_dims(dims, &g, False)
    dx = _result(out, 4, dims, typenum, "col2im")
    _check_disjoint("col2im", dx, "out", (("cols", a),))
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            mc_col2im_f32(<const float *>cnp.PyArray_DATA(a), img_stride, row_stride,
                          <float *>cnp.PyArray_DATA(dx), &g, nt)
    else:
        with nogil:
            mc_col2im_f64(<const double *>cnp.PyArray_DATA(a), img_stride, row_stride,
                          <double *>cnp.PyArray_DATA(dx), &g, nt)
    return dx


cdef cnp.ndarray _rows_array(object cols):
    """cols as a 3-D float array whose rows are contiguous (strided views kept, else copied)."""
    cdef cnp.ndarray a
    cdef int64_t item
    if not isinstance(cols, cnp.ndarray):
        raise TypeError(f"col2im: cols must be a numpy.ndarray, got {type(cols).__name__}")
    a = <cnp.ndarray>cols
    if cnp.PyArray_NDIM(a) != 3 or cnp.PyArray_IS_C_CONTIGUOUS(a):
        return _float_array(a, "cols", "col2im", 3)
    if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32 and cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT64:
        return _float_array(a, "cols", "col2im", 3)     # raises the dtype error
    item = cnp.PyArray_ITEMSIZE(a)
    if (cnp.PyArray_ISALIGNED(a) and cnp.PyArray_ISNOTSWAPPED(a)
            and (cnp.PyArray_DIM(a, 2) <= 1 or cnp.PyArray_STRIDE(a, 2) == item)
            and cnp.PyArray_STRIDE(a, 0) >= 0 and cnp.PyArray_STRIDE(a, 1) >= 0
            and cnp.PyArray_STRIDE(a, 0) % item == 0 and cnp.PyArray_STRIDE(a, 1) % item == 0):
        return a
    return np.array(a, dtype=a.dtype.newbyteorder("="), order="C", copy=True)


# ---------------------------------------------------------------- pooling

def maxpool_forward(x, kernel_size, stride, padding):
    """x (N, C, H, W) -> (out (N, C, OH, OW), argmax int32 (N, C, OH, OW))."""
    cdef cnp.ndarray a = _float_array(x, "x", "maxpool_forward", 4)
    cdef mc_geom g
    cdef cnp.npy_intp dims[4]
    cdef cnp.ndarray out, argmax
    cdef int typenum = cnp.PyArray_TYPE(a), nt = _threads()
    _window_geom(&g, "maxpool_forward", (<object>a).shape, kernel_size, stride, padding)
    _pool_padding_ok(&g, "maxpool_forward", (<object>a).shape)
    _nchw_dims(dims, &g, True)
    out = _new(4, dims, typenum)
    argmax = _new(4, dims, cnp.NPY_INT32)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            mc_maxpool_forward_f32(<const float *>cnp.PyArray_DATA(a), <float *>cnp.PyArray_DATA(out),
                                   <int32_t *>cnp.PyArray_DATA(argmax), &g, nt)
    else:
        with nogil:
            mc_maxpool_forward_f64(<const double *>cnp.PyArray_DATA(a), <double *>cnp.PyArray_DATA(out),
                                   <int32_t *>cnp.PyArray_DATA(argmax), &g, nt)
    return out, argmax


def maxpool_backward(dout, argmax, x_shape):
    """dx[n, c].flat[argmax[n, c, k]] += dout[n, c].flat[k]  -> dx (N, C, H, W)."""
    cdef cnp.ndarray d = _float_array(dout, "dout", "maxpool_backward", 4)
    cdef cnp.ndarray am
    cdef mc_geom g
    cdef cnp.npy_intp dims[4]
    cdef cnp.ndarray dx
    cdef int typenum = cnp.PyArray_TYPE(d), nt = _threads()
    cdef int64_t bad
    if not isinstance(argmax, cnp.ndarray):
        raise TypeError(f"maxpool_backward: argmax must be a numpy.ndarray, got {type(argmax).__name__}")
    am = <cnp.ndarray>argmax
    if cnp.PyArray_TYPE(am) != cnp.NPY_INT32:
        raise TypeError(f"maxpool_backward: argmax must be int32, got dtype {am.dtype} "
                        f"(argmax.shape={(<object>am).shape})")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(am) and cnp.PyArray_ISALIGNED(am)
            and cnp.PyArray_ISNOTSWAPPED(am)):
        am = np.array(am, dtype=np.dtype(np.int32), order="C", copy=True)
    if (<object>am).shape != (<object>d).shape:
        raise ValueError(f"maxpool_backward: argmax.shape={(<object>am).shape} must equal "
                         f"dout.shape={(<object>d).shape}")
    if not isinstance(x_shape, tuple) or len(x_shape) != 4:
        raise ValueError(f"maxpool_backward: x_shape must be a 4-tuple (N, C, H, W), got {x_shape!r}")
    g.n = _as_size(x_shape[0], "x_shape", "maxpool_backward", 0)
    g.c = _as_size(x_shape[1], "x_shape", "maxpool_backward", 0)
    g.h = _as_size(x_shape[2], "x_shape", "maxpool_backward", 1)
    g.w = _as_size(x_shape[3], "x_shape", "maxpool_backward", 1)
    if cnp.PyArray_DIM(d, 0) != g.n or cnp.PyArray_DIM(d, 1) != g.c:
        raise ValueError(f"maxpool_backward: dout.shape={(<object>d).shape} does not match "
                         f"x_shape={x_shape} in (N, C)")
    if g.h * g.w > LIMIT or (<object>g.n) * g.c * g.h * g.w > MAX_ELEMS:
        raise ValueError(f"maxpool_backward: x_shape={x_shape} is too large (a plane must fit "
                         f"int32 indices)")
    g.oh = cnp.PyArray_DIM(d, 2)
    g.ow = cnp.PyArray_DIM(d, 3)
    g.kh = g.kw = g.sh = g.sw = 1
    g.ph = g.pw = 0
    _nchw_dims(dims, &g, False)
    dx = _new(4, dims, typenum)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            bad = mc_maxpool_backward_f32(<const float *>cnp.PyArray_DATA(d),
                                          <const int32_t *>cnp.PyArray_DATA(am),
                                          <float *>cnp.PyArray_DATA(dx), &g, nt)
    else:
        with nogil:
            bad = mc_maxpool_backward_f64(<const double *>cnp.PyArray_DATA(d),
                                          <const int32_t *>cnp.PyArray_DATA(am),
                                          <double *>cnp.PyArray_DATA(dx), &g, nt)
    if bad:
        raise ValueError(f"maxpool_backward: {bad} argmax entries are outside [0, H*W) = "
                         f"[0, {g.h * g.w}) for x_shape={x_shape}")
    return dx


def avgpool_forward(x, kernel_size, stride, padding):
    """x (N, C, H, W) -> out (N, C, OH, OW); zero padding counts in the divisor KH*KW."""
    cdef cnp.ndarray a = _float_array(x, "x", "avgpool_forward", 4)
    cdef mc_geom g
    cdef cnp.npy_intp dims[4]
    cdef cnp.ndarray out
    cdef int typenum = cnp.PyArray_TYPE(a), nt = _threads()
    _window_geom(&g, "avgpool_forward", (<object>a).shape, kernel_size, stride, padding)
    _nchw_dims(dims, &g, True)
    out = _new(4, dims, typenum)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            mc_avgpool_forward_f32(<const float *>cnp.PyArray_DATA(a), <float *>cnp.PyArray_DATA(out), &g, nt)
    else:
        with nogil:
            mc_avgpool_forward_f64(<const double *>cnp.PyArray_DATA(a), <double *>cnp.PyArray_DATA(out), &g, nt)
    return out


def avgpool_backward(dout, x_shape, kernel_size, stride, padding):
    """dout (N, C, OH, OW) -> dx (N, C, H, W): each window spreads dout / (KH*KW) over its cells."""
    cdef cnp.ndarray d = _float_array(dout, "dout", "avgpool_backward", 4)
    cdef mc_geom g
    cdef cnp.npy_intp dims[4]
    cdef cnp.ndarray dx
    cdef int typenum = cnp.PyArray_TYPE(d), nt = _threads()
    x_shape = _shape_tuple(x_shape, "x_shape", "avgpool_backward")
    _window_geom(&g, "avgpool_backward", x_shape, kernel_size, stride, padding)
    if (<object>d).shape != (g.n, g.c, g.oh, g.ow):
        raise ValueError(f"avgpool_backward: dout must have shape {(g.n, g.c, g.oh, g.ow)} for "
                         f"x_shape={x_shape}, kernel_size={(g.kh, g.kw)}, "
                         f"stride={(g.sh, g.sw)}, padding={(g.ph, g.pw)}; got {(<object>d).shape}")
    _nchw_dims(dims, &g, False)
    dx = _new(4, dims, typenum)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            mc_avgpool_backward_f32(<const float *>cnp.PyArray_DATA(d), <float *>cnp.PyArray_DATA(dx), &g, nt)
    else:
        with nogil:
            mc_avgpool_backward_f64(<const double *>cnp.PyArray_DATA(d), <double *>cnp.PyArray_DATA(dx), &g, nt)
    return dx


# ---------------------------------------------------------------- the benchmark's memory ceilings

cdef cnp.ndarray _words(object a, str name, str op, bint written):
    """a as a C-contiguous, aligned uint32 array (writeable if ``written``), any shape."""
    cdef cnp.ndarray arr
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != cnp.NPY_UINT32:
        raise TypeError(f"{op}: {name} must be uint32, got dtype {arr.dtype} "
                        f"({name}.shape={(<object>arr).shape})")
    if (not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISALIGNED(arr)
            or (written and not cnp.PyArray_ISWRITEABLE(arr))):
        raise ValueError(f"{op}: {name} must be C-contiguous and aligned"
                         f"{', and writeable' if written else ''} "
                         f"({name}.shape={(<object>arr).shape}, strides={(<object>arr).strides})")
    return arr


def stream_store(dst):
    """Fill ``dst`` (uint32) with a non-zero word on the kernels' threads: how fast they can
    store, the ceiling of a kernel that mostly writes (im2col)."""
    cdef cnp.ndarray d = _words(dst, "dst", "stream_store", True)
    cdef int64_t n = cnp.PyArray_SIZE(d)
    cdef int nt = _threads()
    with nogil:
        mc_stream_store(<uint32_t *>cnp.PyArray_DATA(d), n, nt)


def stream_load(src):
    """The xor of every word of ``src`` (uint32), on the kernels' threads: how fast they can
    load, the ceiling of a kernel that mostly reads (col2im)."""
    cdef cnp.ndarray s = _words(src, "src", "stream_load", False)
    cdef int64_t n = cnp.PyArray_SIZE(s)
    cdef int nt = _threads()
    cdef uint32_t acc
    with nogil:
        acc = mc_stream_load(<const uint32_t *>cnp.PyArray_DATA(s), n, nt)
    return int(acc)


# ---------------------------------------------------------------- ReLU and the SGD update

cdef cnp.ndarray _same_as(object a, cnp.ndarray like, str name, str op, bint inplace):
    """a as a float array of like's dtype and shape; C-contiguous, aligned, native order.

    ``inplace``: a is updated in place, so it must already be all that and writeable."""
    cdef cnp.ndarray arr
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(a).__name__}")
    arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != cnp.PyArray_TYPE(like) or (<object>arr).shape != (<object>like).shape:
        raise ValueError(f"{op}: {name} must have shape {(<object>like).shape} and dtype "
                         f"{like.dtype}, got shape {(<object>arr).shape} dtype {arr.dtype}")
    ok = (cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)
          and cnp.PyArray_ISNOTSWAPPED(arr))
    if inplace and not (ok and cnp.PyArray_ISWRITEABLE(arr)):
        raise ValueError(f"{op}: {name} is updated in place, so it must be C-contiguous, "
                         f"aligned and writeable ({name}.shape={(<object>arr).shape})")
    if not ok:
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C", copy=True)
    return arr


cdef cnp.ndarray _any_float(object x, str name, str op):
    """x as a C-contiguous float32/float64 array of any shape."""
    if not isinstance(x, cnp.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(x).__name__}")
    return _float_array(x, name, op, cnp.PyArray_NDIM(<cnp.ndarray>x))


def relu_forward(x, out=None):
    """out = max(x, 0) elementwise (NaN stays NaN), any shape."""
    cdef cnp.ndarray a = _any_float(x, "x", "relu_forward")
    cdef cnp.ndarray o = (np.empty_like(a) if out is None
                          else _same_as(out, a, "out", "relu_forward", True))
    cdef int64_t n = cnp.PyArray_SIZE(a)
    cdef int nt = _threads()
    _check_disjoint("relu_forward", o, "out", (("x", a),), True)
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        with nogil:
            mc_relu_forward_f32(<const float *>cnp.PyArray_DATA(a), <float *>cnp.PyArray_DATA(o), n, nt)
    else:
        with nogil:
            mc_relu_forward_f64(<const double *>cnp.PyArray_DATA(a), <double *>cnp.PyArray_DATA(o), n, nt)
    return o


def relu_backward(dout, out, dx=None):
    """dx = dout where out > 0, else 0; ``out`` is relu_forward's result."""
    cdef cnp.ndarray d = _any_float(dout, "dout", "relu_backward")
    cdef cnp.ndarray o = _same_as(out, d, "out", "relu_backward", False)
    cdef cnp.ndarray r = (np.empty_like(d) if dx is None
                          else _same_as(dx, d, "dx", "relu_backward", True))
    cdef int64_t n = cnp.PyArray_SIZE(d)
    cdef int nt = _threads()
    _check_disjoint("relu_backward", r, "dx", (("dout", d), ("out", o)), True)
    if cnp.PyArray_TYPE(d) == cnp.NPY_FLOAT32:
        with nogil:
            mc_relu_backward_f32(<const float *>cnp.PyArray_DATA(d), <const float *>cnp.PyArray_DATA(o),
                                 <float *>cnp.PyArray_DATA(r), n, nt)
    else:
        with nogil:
            mc_relu_backward_f64(<const double *>cnp.PyArray_DATA(d), <const double *>cnp.PyArray_DATA(o),
                                 <double *>cnp.PyArray_DATA(r), n, nt)
    return r


def sgd_step(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """One SGD step on p (and its momentum buffer buf, None without momentum), in place.

    The same formula as ``minicnn.optim.SGD._update`` (see csrc/elementwise_tmpl.h)."""
    cdef cnp.ndarray pa = _any_float(p, "p", "sgd_step")
    cdef cnp.ndarray ga, ba = None
    cdef int64_t n = cnp.PyArray_SIZE(pa)
    cdef int nt = _threads(), nest = 1 if nesterov else 0, first_step = 1 if first else 0
    cdef void *buf_data = NULL
    cdef double c_lr = _as_real(lr, "lr", "sgd_step")
    cdef double c_momentum = _as_real(momentum, "momentum", "sgd_step")
    cdef double keep = 1 - _as_real(dampening, "dampening", "sgd_step")
    cdef double c_wd = _as_real(weight_decay, "weight_decay", "sgd_step")
    if pa is not p:
        raise ValueError(f"sgd_step: p is updated in place, so it must be a C-contiguous, aligned "
                         f"float array (p.shape={p.shape})")
    ga = _same_as(g, pa, "g", "sgd_step", False)
    if not cnp.PyArray_ISWRITEABLE(pa):
        raise ValueError(f"sgd_step: p must be writeable (p.shape={p.shape})")
    if buf is not None:
        ba = _same_as(buf, pa, "buf", "sgd_step", True)
        buf_data = cnp.PyArray_DATA(ba)
    elif c_momentum != 0:
        raise ValueError("sgd_step: momentum != 0 needs a momentum buffer buf")
    _check_disjoint("sgd_step", pa, "p", (("g", ga),), True)
    if ba is not None:
        _check_disjoint("sgd_step", ba, "buf", (("p", pa), ("g", ga)))
    if cnp.PyArray_TYPE(pa) == cnp.NPY_FLOAT32:
        with nogil:
            mc_sgd_step_f32(<float *>cnp.PyArray_DATA(pa), <const float *>cnp.PyArray_DATA(ga),
                            <float *>buf_data, n, <float>c_lr, <float>c_momentum, <float>keep,
                            <float>c_wd, nest, first_step, nt)
    else:
        with nogil:
            mc_sgd_step_f64(<double *>cnp.PyArray_DATA(pa), <const double *>cnp.PyArray_DATA(ga),
                            <double *>buf_data, n, c_lr, c_momentum, keep, c_wd, nest,
                            first_step, nt)


# ---------------------------------------------------------------- batch normalization
#
# x is viewed as (N, C, S): N = x.shape[0], C = x.shape[1], S = the rest (H*W, or 1).

cdef void _ncs(cnp.ndarray x, str op, int64_t *n, int64_t *c, int64_t *s) except *:
    if cnp.PyArray_NDIM(x) < 2:
        raise ValueError(f"{op}: x must be (N, C, ...), got x.shape={(<object>x).shape}")
    n[0], c[0] = cnp.PyArray_DIM(x, 0), cnp.PyArray_DIM(x, 1)
    s[0] = cnp.PyArray_SIZE(x) // (n[0] * c[0]) if n[0] * c[0] > 0 else 0


cdef cnp.ndarray _channel_vector(object v, cnp.ndarray like, int64_t c, str name, str op):
    """v as a contiguous vector of c values of like's dtype (any shape holding c values)."""
    if not isinstance(v, cnp.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(v).__name__}")
    if (<cnp.ndarray>v).size != c or cnp.PyArray_TYPE(<cnp.ndarray>v) != cnp.PyArray_TYPE(like):
        raise ValueError(f"{op}: {name} must hold {c} values (one per channel) of dtype "
                         f"{like.dtype}, got shape {v.shape} dtype {v.dtype}")
    return _any_float(np.ravel(v), name, op)


def channel_stats(x):
    """Per-channel mean and biased variance of x (N, C, ...) over all axes but 1: (mean, var)."""
    cdef cnp.ndarray a = _any_float(x, "x", "channel_stats")
    cdef int64_t n, c, s
    cdef int nt = _threads()
    cdef cnp.ndarray mean, var
    _ncs(a, "channel_stats", &n, &c, &s)
    if n * s == 0:
        raise ValueError(f"channel_stats: x has no values per channel (x.shape={x.shape})")
    mean, var = np.empty(c, dtype=a.dtype), np.empty(c, dtype=a.dtype)
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        with nogil:
            mc_channel_stats_f32(<const float *>cnp.PyArray_DATA(a), n, c, s,
                                 <float *>cnp.PyArray_DATA(mean), <float *>cnp.PyArray_DATA(var), nt)
    else:
        with nogil:
            mc_channel_stats_f64(<const double *>cnp.PyArray_DATA(a), n, c, s,
                                 <double *>cnp.PyArray_DATA(mean), <double *>cnp.PyArray_DATA(var), nt)
    return mean, var


def batchnorm_apply(x, mean, inv_std, gamma, beta, xhat=None, out=None):
    """xhat = (x - mean) * inv_std and out = gamma * xhat + beta, per channel: (xhat, out)."""
    cdef cnp.ndarray a = _any_float(x, "x", "batchnorm_apply")
    cdef int64_t n, c, s
    cdef int nt = _threads()
    _ncs(a, "batchnorm_apply", &n, &c, &s)
    cdef cnp.ndarray m = _channel_vector(mean, a, c, "mean", "batchnorm_apply")
    cdef cnp.ndarray k = _channel_vector(inv_std, a, c, "inv_std", "batchnorm_apply")
    cdef cnp.ndarray g = _channel_vector(gamma, a, c, "gamma", "batchnorm_apply")
    cdef cnp.ndarray b = _channel_vector(beta, a, c, "beta", "batchnorm_apply")
    cdef cnp.ndarray h = (np.empty_like(a) if xhat is None
                          else _same_as(xhat, a, "xhat", "batchnorm_apply", True))
    cdef cnp.ndarray o = (np.empty_like(a) if out is None
                          else _same_as(out, a, "out", "batchnorm_apply", True))
    vectors = (("mean", m), ("inv_std", k), ("gamma", g), ("beta", b))
    _check_disjoint("batchnorm_apply", h, "xhat", (("x", a),), True)
    _check_disjoint("batchnorm_apply", o, "out", (("x", a),), True)
    _check_disjoint("batchnorm_apply", o, "out", (("xhat", h),) + vectors)
    _check_disjoint("batchnorm_apply", h, "xhat", vectors)
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        with nogil:
            mc_batchnorm_apply_f32(<const float *>cnp.PyArray_DATA(a), <const float *>cnp.PyArray_DATA(m),
                                   <const float *>cnp.PyArray_DATA(k), <const float *>cnp.PyArray_DATA(g),
                                   <const float *>cnp.PyArray_DATA(b), <float *>cnp.PyArray_DATA(h),
                                   <float *>cnp.PyArray_DATA(o), n, c, s, nt)
    else:
        with nogil:
            mc_batchnorm_apply_f64(<const double *>cnp.PyArray_DATA(a), <const double *>cnp.PyArray_DATA(m),
                                   <const double *>cnp.PyArray_DATA(k), <const double *>cnp.PyArray_DATA(g),
                                   <const double *>cnp.PyArray_DATA(b), <double *>cnp.PyArray_DATA(h),
                                   <double *>cnp.PyArray_DATA(o), n, c, s, nt)
    return h, o


def batchnorm_backward(dout, xhat, gamma, inv_std, batch_stats, dx=None):
    """(dx, dgamma, dbeta) of batch normalization; see csrc/batchnorm_tmpl.h."""
    cdef cnp.ndarray d = _any_float(dout, "dout", "batchnorm_backward")
    cdef int64_t n, c, s
    cdef int nt = _threads(), stats = 1 if batch_stats else 0
    cdef cnp.ndarray dgamma, dbeta
    _ncs(d, "batchnorm_backward", &n, &c, &s)
    cdef cnp.ndarray h = _same_as(xhat, d, "xhat", "batchnorm_backward", False)
    cdef cnp.ndarray g = _channel_vector(gamma, d, c, "gamma", "batchnorm_backward")
    cdef cnp.ndarray k = _channel_vector(inv_std, d, c, "inv_std", "batchnorm_backward")
    cdef cnp.ndarray r = (np.empty_like(d) if dx is None
                          else _same_as(dx, d, "dx", "batchnorm_backward", True))
    _check_disjoint("batchnorm_backward", r, "dx", (("dout", d), ("xhat", h)), True)
    _check_disjoint("batchnorm_backward", r, "dx", (("gamma", g), ("inv_std", k)))
    dgamma, dbeta = np.empty(c, dtype=d.dtype), np.empty(c, dtype=d.dtype)
    if cnp.PyArray_TYPE(d) == cnp.NPY_FLOAT32:
        with nogil:
            mc_batchnorm_backward_f32(<const float *>cnp.PyArray_DATA(d), <const float *>cnp.PyArray_DATA(h),
                                      <const float *>cnp.PyArray_DATA(g), <const float *>cnp.PyArray_DATA(k),
                                      stats, <float *>cnp.PyArray_DATA(r),
                                      <float *>cnp.PyArray_DATA(dgamma), <float *>cnp.PyArray_DATA(dbeta),
                                      n, c, s, nt)
    else:
        with nogil:
            mc_batchnorm_backward_f64(<const double *>cnp.PyArray_DATA(d), <const double *>cnp.PyArray_DATA(h),
                                      <const double *>cnp.PyArray_DATA(g), <const double *>cnp.PyArray_DATA(k),
                                      stats, <double *>cnp.PyArray_DATA(r),
                                      <double *>cnp.PyArray_DATA(dgamma), <double *>cnp.PyArray_DATA(dbeta),
                                      n, c, s, nt)
    return r, dgamma, dbeta


# ---------------------------------------------------------------- fused convolution
#
# conv_tmpl.h runs a whole conv layer image by image, calling the BLAS NumPy uses from its own
# OpenMP threads.  _set_blas() hands it that BLAS (minicnn.kernels does, at import, with what
# minicnn.kernels._blas found); until then fused_conv_available() is False.

ctypedef void (*set_threads_fn)(int) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil

cdef mc_blas _blas
cdef set_threads_fn _blas_set_threads = NULL
cdef get_threads_fn _blas_get_threads = NULL
cdef object _blas_owner = None                      # keeps the library object alive
cdef int _blas_users = 0                            # fused calls running now (any thread)
cdef int _blas_threads_saved = 1                    # the BLAS's thread count before the first

# Blocks of images whose dW and db are summed separately (then added in block order): a
# function of N only, so the result does not depend on the thread count.
cdef enum:
    CONV_BLOCKS = 16


def _set_blas(openblas):
    """Use ``openblas`` (a ``minicnn.kernels._blas.OpenBLAS``; None: none) for the fused conv."""
    from minicnn.kernels._blas import OpenBLAS
    global _blas_owner, _blas_set_threads, _blas_get_threads
    if openblas is None:
        _blas_owner = None
        return
    if not isinstance(openblas, OpenBLAS):
        raise TypeError(f"_set_blas: expected an OpenBLAS, got {type(openblas).__name__}")
    _blas.sgemm = <void *><uintptr_t>openblas.sgemm
    _blas.dgemm = <void *><uintptr_t>openblas.dgemm
    _blas.ilp64 = 1 if openblas.ilp64 else 0
    _blas_set_threads = <set_threads_fn><void *><uintptr_t>openblas.set_num_threads
    _blas_get_threads = <get_threads_fn><void *><uintptr_t>openblas.get_num_threads
    _blas_owner = openblas


cdef void _blas_single_thread_enter() noexcept:
    """Before a fused call, with the GIL held: the first of the running calls sets the BLAS to
    one thread (each of our threads runs its own GEMMs); the last one to leave restores it, so
    calls overlapping from several Python threads never leave the BLAS at one thread."""
    global _blas_users, _blas_threads_saved
    if _blas_users == 0:
        _blas_threads_saved = _blas_get_threads()
        _blas_set_threads(1)
    _blas_users += 1


cdef void _blas_single_thread_exit() noexcept:
    global _blas_users
    _blas_users -= 1
    if _blas_users == 0:
        _blas_set_threads(_blas_threads_saved)


cdef void _require_blas(str op) except *:
    if _blas_owner is None:
        raise RuntimeError(f"{op}: no usable BLAS (see minicnn.kernels._blas)")


def fused_conv_available():
    """True when conv_forward / conv_backward can run (a usable BLAS was found)."""
    return _blas_owner is not None


def sgemm_avx512_supported():
    """True when this CPU runs csrc/small_gemm.c's AVX-512 kernels (else they are plain loops)."""
    return mc_sgemm_avx512_supported() != 0


def _set_own_sgemm(enabled):
    """The conv layers' float32 products: minicnn's kernels (True) or the BLAS (False)."""
    _blas.own_sgemm = 1 if enabled else 0


def own_sgemm_enabled():
    return _blas.own_sgemm != 0


cdef tuple _sgemm_operands(object a, object b, bint trans_b, str op):
    """(a, b, m, n, k) for C (m, n) = a @ b, or a @ b.T when trans_b: float32 2-D arrays."""
    cdef cnp.ndarray aa = _float_array(a, "a", op, 2)
    cdef cnp.ndarray ba = _float_array(b, "b", op, 2)
    cdef int64_t m, n, k, kb
    if cnp.PyArray_TYPE(aa) != cnp.NPY_FLOAT32 or cnp.PyArray_TYPE(ba) != cnp.NPY_FLOAT32:
        raise TypeError(f"{op}: a and b must be float32, got {aa.dtype} and {ba.dtype}")
    m, k = cnp.PyArray_DIM(aa, 0), cnp.PyArray_DIM(aa, 1)
    kb, n = cnp.PyArray_DIM(ba, 0), cnp.PyArray_DIM(ba, 1)
    if trans_b:
        kb, n = n, kb
    if k != kb:
        raise ValueError(f"{op}: inner sizes differ: a.shape={(<object>aa).shape}, "
                         f"b.shape={(<object>ba).shape}, trans_b={bool(trans_b)}")
    return aa, ba, m, n, k


def small_sgemm(a, b, trans_b=False, c=None, loops=False):
    """a @ b, or a @ b.T when trans_b, for 2-D float32 arrays, by csrc/small_gemm.c's kernels
    (one thread; ``loops``: its plain loops instead); with ``c`` (C-contiguous float32 of the
    result's shape) the product is added to c, which is returned.  For tests of those kernels."""
    cdef cnp.ndarray aa, ba, o
    cdef cnp.npy_intp dims[2]
    cdef int tb = 1 if trans_b else 0, accumulate = 0 if c is None else 1
    cdef bint plain = bool(loops)
    cdef int64_t m, n, k
    aa, ba, m, n, k = _sgemm_operands(a, b, tb, "small_sgemm")
    dims[0], dims[1] = m, n
    if c is None:
        o = _new(2, dims, cnp.NPY_FLOAT32)
    else:
        o = _check_out(c, 2, dims, cnp.NPY_FLOAT32, "small_sgemm", "c")
        _check_disjoint("small_sgemm", o, "c", (("a", aa), ("b", ba)))
    if m == 0 or n == 0:
        return o
    cdef const float *pa = <const float *>cnp.PyArray_DATA(aa)
    cdef const float *pb = <const float *>cnp.PyArray_DATA(ba)
    cdef float *pc = <float *>cnp.PyArray_DATA(o)
    cdef int64_t lda = max(k, 1), ldb = max(k, 1) if tb else n
    with nogil:
        if plain:
            mc_sgemm_loops(tb, m, n, k, pa, lda, pb, ldb, pc, n, accumulate)
        else:
            mc_sgemm(tb, m, n, k, pa, lda, pb, ldb, pc, n, accumulate)
    return o


def layer_sgemm(a, b, trans_b=False, own=True, repeat=1):
    """a @ b, or a @ b.T when trans_b, for 2-D float32 arrays, the way the conv layers multiply:
    on minicnn's kernels (``own``) or on the BLAS, one thread, computed ``repeat`` times over
    (benchmarks/bench_gemm.py times many calls without Python between them).  Products over the
    nt kernel's size limit go to the BLAS either way, as in the layers."""
    cdef cnp.ndarray aa, ba, o
    cdef cnp.npy_intp dims[2]
    cdef int tb = 1 if trans_b else 0
    cdef int64_t m, n, k, times
    cdef mc_blas chosen
    _require_blas("layer_sgemm")
    times = _as_size(repeat, "repeat", "layer_sgemm", 1)
    aa, ba, m, n, k = _sgemm_operands(a, b, tb, "layer_sgemm")
    if not _blas.ilp64 and max(m, n, k) > LIMIT:
        raise ValueError(f"layer_sgemm: sizes {(m, n, k)} are too large for a 32-bit BLAS")
    dims[0], dims[1] = m, n
    o = _new(2, dims, cnp.NPY_FLOAT32)
    if m == 0 or n == 0:
        return o
    chosen = _blas
    chosen.own_sgemm = 1 if own else 0
    cdef const float *pa = <const float *>cnp.PyArray_DATA(aa)
    cdef const float *pb = <const float *>cnp.PyArray_DATA(ba)
    cdef float *pc = <float *>cnp.PyArray_DATA(o)
    cdef int64_t lda = max(k, 1), ldb = max(k, 1) if tb else max(n, 1)
    _blas_single_thread_enter()
    with nogil:
        mc_layer_sgemm_repeat(&chosen, tb, m, n, k, pa, lda, pb, ldb, pc, max(n, 1), times)
    _blas_single_thread_exit()
    return o


def matmul(a, b, trans_a=False, trans_b=False, out=None):
    """op(a) @ op(b) for 2-D float arrays (op: transpose when trans_*), on the kernels' threads.

    Each thread computes a panel of the result with a single-threaded BLAS call, so the BLAS's
    own thread pool stays idle (see csrc/conv_tmpl.h).  ``out``: optional C-contiguous result.
    """
    cdef cnp.ndarray aa = _float_array(a, "a", "matmul", 2)
    cdef cnp.ndarray ba = _float_array(b, "b", "matmul", 2)
    cdef cnp.ndarray o
    cdef cnp.npy_intp dims[2]
    cdef int typenum = cnp.PyArray_TYPE(aa), nt = _threads()
    cdef int ta = 1 if trans_a else 0, tb = 1 if trans_b else 0
    cdef int64_t m, n, k, kb, lda, ldb
    _require_blas("matmul")
    if cnp.PyArray_TYPE(ba) != typenum:
        raise TypeError(f"matmul: a and b must have the same dtype, got {aa.dtype} and {ba.dtype}")
    lda, ldb = cnp.PyArray_DIM(aa, 1), cnp.PyArray_DIM(ba, 1)      # row lengths
    m, k = cnp.PyArray_DIM(aa, 0), lda
    if ta:
        m, k = k, m
    kb, n = cnp.PyArray_DIM(ba, 0), ldb
    if tb:
        kb, n = n, kb
    if k != kb:
        raise ValueError(f"matmul: inner sizes differ: op(a) is {(m, k)} and op(b) is {(kb, n)} "
                         f"(a.shape={(<object>aa).shape}, b.shape={(<object>ba).shape}, "
                         f"trans_a={bool(ta)}, trans_b={bool(tb)})")
    if not _blas.ilp64 and max(m, n, k) > LIMIT:
        raise ValueError(f"matmul: sizes {(m, n, k)} are too large for a 32-bit BLAS")
    dims[0], dims[1] = m, n
    o = _result(out, 2, dims, typenum, "matmul")
    _check_disjoint("matmul", o, "out", (("a", aa), ("b", ba)))
    if m == 0 or n == 0:
        return o
    if k == 0:
        o.fill(0)
        return o
    _blas_single_thread_enter()
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            mc_matmul_f32(ta, tb, m, n, k, <const float *>cnp.PyArray_DATA(aa), max(lda, 1),
                          <const float *>cnp.PyArray_DATA(ba), max(ldb, 1),
                          <float *>cnp.PyArray_DATA(o), max(n, 1), &_blas, nt)
        else:
            mc_matmul_f64(ta, tb, m, n, k, <const double *>cnp.PyArray_DATA(aa), max(lda, 1),
                          <const double *>cnp.PyArray_DATA(ba), max(ldb, 1),
                          <double *>cnp.PyArray_DATA(o), max(n, 1), &_blas, nt)
    _blas_single_thread_exit()
    return o


# A layer's multiply-adds per image, F * K * L, at most this: then its scratch sizes (sums of a
# few such products, times at most 1024 threads) cannot overflow int64.  Real layers stay below
# 2**34.
cdef object MAX_MACS = 2 ** 44


cdef void _check_macs(int64_t f, const mc_geom *g, str op) except *:
    macs = (<object>f) * g.c * g.kh * g.kw * g.oh * g.ow
    if macs > MAX_MACS:
        raise ValueError(f"{op}: a layer of F*K*L = {macs} multiply-adds per image is too large "
                         f"(at most 2**44; F={f}, x_shape={(g.n, g.c, g.h, g.w)}, "
                         f"kernel_size={(g.kh, g.kw)})")


cdef void _conv_geom(mc_geom *g, int64_t *f, str op, cnp.ndarray x, cnp.ndarray w,
                     object stride, object padding) except *:
    """g from x (N, C, H, W), w's window and stride/padding; f = w's filter count."""
    if cnp.PyArray_DIM(w, 1) != cnp.PyArray_DIM(x, 1):
        raise ValueError(f"{op}: x has {cnp.PyArray_DIM(x, 1)} channels but w expects "
                         f"{cnp.PyArray_DIM(w, 1)} (x.shape={(<object>x).shape}, "
                         f"w.shape={(<object>w).shape})")
    if cnp.PyArray_TYPE(w) != cnp.PyArray_TYPE(x):
        raise TypeError(f"{op}: x and w must have the same dtype, got {x.dtype} and {w.dtype}")
    _window_geom(g, op, (<object>x).shape, (<object>w).shape[2:], stride, padding)
    f[0] = _as_size(cnp.PyArray_DIM(w, 0), "w.shape[0]", op, 1)
    if g.c < 1 or g.n < 1:
        raise ValueError(f"{op}: x must have at least one image and one channel, "
                         f"got x.shape={(<object>x).shape}")
    _check_macs(f[0], g, op)
    k, l = g.c * g.kh * g.kw, g.oh * g.ow
    if not _blas.ilp64 and max(k, l) > LIMIT:           # every GEMM size and stride is f, k or l
        raise ValueError(f"{op}: (K, L) = {(k, l)} is too large for a 32-bit BLAS")


cdef cnp.ndarray _check_work(object work, int typenum, int64_t elems, str op):
    """The caller's scratch: a C-contiguous, writeable 1-D array of at least ``elems`` values."""
    cdef cnp.ndarray a
    if work is None:
        return cnp.PyArray_EMPTY(1, [elems], typenum, 0)
    if not isinstance(work, cnp.ndarray):
        raise TypeError(f"{op}: work must be a numpy.ndarray, got {type(work).__name__}")
    a = <cnp.ndarray>work
    if (cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != 1
            or cnp.PyArray_DIM(a, 0) < elems or not cnp.PyArray_IS_C_CONTIGUOUS(a)
            or not cnp.PyArray_ISALIGNED(a) or not cnp.PyArray_ISWRITEABLE(a)
            or not cnp.PyArray_ISNOTSWAPPED(a)):
        raise ValueError(f"{op}: work must be a contiguous, writeable 1-D array of at least "
                         f"{elems} values of the input's dtype, got shape "
                         f"{(<object>a).shape} dtype {a.dtype}")
    return a


def conv_work_elems(x_shape, w_shape, stride, padding):
    """Scratch size (values) ``conv_forward`` / ``conv_backward`` need: [W | b], one (K+1, L)
    buffer per thread, and the backward's per-block partial sums (kept in the reused scratch: a
    fresh array each call cost its page faults every call)."""
    cdef mc_geom g
    x_shape = _shape_tuple(x_shape, "x_shape", "conv_work_elems")
    w_shape = _shape_tuple(w_shape, "w_shape", "conv_work_elems")
    if len(w_shape) != 4:
        raise ValueError(f"conv_work_elems: w_shape must be a 4-tuple (F, C, KH, KW), "
                         f"got {w_shape!r}")
    _window_geom(&g, "conv_work_elems", x_shape, w_shape[2:], stride, padding)
    f = _as_size(w_shape[0], "w_shape", "conv_work_elems", 1)
    if _as_size(w_shape[1], "w_shape", "conv_work_elems", 0) != g.c:
        raise ValueError(f"conv_work_elems: x_shape has {g.c} channels but w_shape expects "
                         f"{w_shape[1]} (x_shape={x_shape}, w_shape={w_shape})")
    _check_macs(f, &g, "conv_work_elems")
    return _conv_parts_elems(&g, f) + mc_conv_work_elems_f32(f, &g, _threads())


cdef int64_t _conv_parts_elems(const mc_geom *g, int64_t f):
    """Values of the backward's per-block partial sums [dW^T; db^T], (blocks, K+1, F)."""
    return min(g.n, CONV_BLOCKS) * (g.c * g.kh * g.kw + 1) * f


cdef cnp.ndarray _bias_array(object b, int64_t f, cnp.ndarray x, str op):
    """The bias b as an (F,) array of x's dtype, or None."""
    if b is None:
        return None
    cdef cnp.ndarray ba = _float_array(b, "b", op, 1)
    if cnp.PyArray_DIM(ba, 0) != f or cnp.PyArray_TYPE(ba) != cnp.PyArray_TYPE(x):
        raise ValueError(f"{op}: b must have shape ({f},) and dtype {x.dtype}, got "
                         f"shape {(<object>ba).shape} dtype {ba.dtype}")
    return ba


cdef cnp.ndarray _conv_result(object out, const mc_geom *g, int64_t f, int typenum, str op):
    """The (N, F, OH, OW) output of a conv layer: new, or ``out`` checked."""
    cdef cnp.npy_intp dims[4]
    dims[0], dims[1], dims[2], dims[3] = g.n, f, g.oh, g.ow
    return _result(out, 4, dims, typenum, op)


cdef void _check_dout(cnp.ndarray d, const mc_geom *g, int64_t f, cnp.ndarray x, str op) except *:
    """dout must have the conv layer's output shape (N, F, OH, OW) and x's dtype."""
    if cnp.PyArray_TYPE(d) != cnp.PyArray_TYPE(x) or (<object>d).shape != (g.n, f, g.oh, g.ow):
        raise ValueError(f"{op}: dout must have shape {(g.n, f, g.oh, g.ow)} and dtype "
                         f"{x.dtype}, got shape {(<object>d).shape} dtype {d.dtype}")


cdef cnp.ndarray _dx_result(bint need_dx, object dx_out, const mc_geom *g, int typenum, str op):
    """The (N, C, H, W) input gradient of a conv layer: new, or ``dx_out`` checked; None when
    ``need_dx`` is False."""
    cdef cnp.npy_intp dims[4]
    if not need_dx:
        if dx_out is not None:
            raise ValueError(f"{op}: dx_out was given but need_dx is False")
        return None
    _nchw_dims(dims, g, False)
    return _result(dx_out, 4, dims, typenum, op, "dx_out")


def conv_forward(x, w, b, stride, padding, out=None, work=None):
    """out (N, F, OH, OW) = conv2d(x, w) + b, image by image (see csrc/conv_tmpl.h).

    ``out``: optional C-contiguous result buffer; ``work``: optional scratch of at least
    ``conv_work_elems(...)`` values.  Raises RuntimeError without a BLAS.
    """
    cdef cnp.ndarray a = _float_array(x, "x", "conv_forward", 4)
    cdef cnp.ndarray wa = _float_array(w, "w", "conv_forward", 4)
    cdef cnp.ndarray ba = None, o, scratch
    cdef mc_geom g
    cdef int64_t f
    cdef int typenum = cnp.PyArray_TYPE(a), nt = _threads()
    cdef const void *bias = NULL
    _require_blas("conv_forward")
    _conv_geom(&g, &f, "conv_forward", a, wa, stride, padding)
    ba = _bias_array(b, f, a, "conv_forward")
    if ba is not None:
        bias = cnp.PyArray_DATA(ba)
    o = _conv_result(out, &g, f, typenum, "conv_forward")
    scratch = _check_work(work, typenum, mc_conv_work_elems_f32(f, &g, nt), "conv_forward")
    reads = (("x", a), ("w", wa), ("b", ba))
    _check_disjoint("conv_forward", o, "out", reads)
    _check_disjoint("conv_forward", scratch, "work", reads + (("out", o),))
    _blas_single_thread_enter()
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            mc_conv_forward_f32(<const float *>cnp.PyArray_DATA(a), <const float *>cnp.PyArray_DATA(wa),
                                <const float *>bias, <float *>cnp.PyArray_DATA(o),
                                <float *>cnp.PyArray_DATA(scratch), f, &g, &_blas, nt)
        else:
            mc_conv_forward_f64(<const double *>cnp.PyArray_DATA(a), <const double *>cnp.PyArray_DATA(wa),
                                <const double *>bias, <double *>cnp.PyArray_DATA(o),
                                <double *>cnp.PyArray_DATA(scratch), f, &g, &_blas, nt)
    _blas_single_thread_exit()
    return o


def conv_backward(dout, x, w, stride, padding, need_dx=True, dx_out=None, work=None):
    """(dx, dw, db) of conv_forward, image by image; dx is None when ``need_dx`` is False.

    ``dx_out``: optional C-contiguous buffer for dx; ``work``: optional scratch of at least
    ``conv_work_elems(...)`` values.
    """
    cdef cnp.ndarray a = _float_array(x, "x", "conv_backward", 4)
    cdef cnp.ndarray wa = _float_array(w, "w", "conv_backward", 4)
    cdef cnp.ndarray d = _float_array(dout, "dout", "conv_backward", 4)
    cdef cnp.ndarray dx = None, dw1t_parts, scratch
    cdef int64_t parts
    cdef mc_geom g
    cdef int64_t f, k, blocks
    cdef int typenum = cnp.PyArray_TYPE(a), nt = _threads()
    cdef void *dx_data = NULL
    _require_blas("conv_backward")
    _conv_geom(&g, &f, "conv_backward", a, wa, stride, padding)
    _check_dout(d, &g, f, a, "conv_backward")
    k = g.c * g.kh * g.kw
    blocks = min(g.n, CONV_BLOCKS)
    dx = _dx_result(need_dx, dx_out, &g, typenum, "conv_backward")
    if dx is not None:
        dx_data = cnp.PyArray_DATA(dx)
    parts = _conv_parts_elems(&g, f)
    scratch = _check_work(work, typenum, parts + mc_conv_work_elems_f32(f, &g, nt), "conv_backward")
    reads = (("x", a), ("w", wa), ("dout", d))
    if dx is not None:
        _check_disjoint("conv_backward", dx, "dx_out", reads)
    _check_disjoint("conv_backward", scratch, "work", reads + (("dx_out", dx),))
    dw1t_parts = scratch[:parts].reshape(blocks, k + 1, f)       # [dW^T; db^T] of each block
    scratch = scratch[parts:]
    _blas_single_thread_enter()
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            mc_conv_backward_f32(<const float *>cnp.PyArray_DATA(a), <const float *>cnp.PyArray_DATA(wa),
                                 <const float *>cnp.PyArray_DATA(d), <float *>dx_data,
                                 <float *>cnp.PyArray_DATA(dw1t_parts), <float *>cnp.PyArray_DATA(scratch),
                                 blocks, f, &g, &_blas, nt)
        else:
            mc_conv_backward_f64(<const double *>cnp.PyArray_DATA(a), <const double *>cnp.PyArray_DATA(wa),
                                 <const double *>cnp.PyArray_DATA(d), <double *>dx_data,
                                 <double *>cnp.PyArray_DATA(dw1t_parts), <double *>cnp.PyArray_DATA(scratch),
                                 blocks, f, &g, &_blas, nt)
    _blas_single_thread_exit()
    # the blocks' partial sums, added in block order: [dW^T; db^T], then dW as a contiguous copy
    dw1t = dw1t_parts.sum(axis=0)
    dw = np.ascontiguousarray(dw1t[:k].T).reshape((<object>wa).shape)
    return dx, dw, dw1t[k].copy()


# ------------------------------------------------------------- Winograd F(2x2, 3x3)

cdef void _winograd_geom(mc_geom *g, int64_t *f, str op, cnp.ndarray x, cnp.ndarray u,
                         object padding) except *:
    """g for a 3x3, stride-1 convolution of x (N, C, H, W); f from u (16, F, C)."""
    if (cnp.PyArray_NDIM(u) != 3 or cnp.PyArray_DIM(u, 0) != 16
            or cnp.PyArray_DIM(u, 2) != cnp.PyArray_DIM(x, 1)):
        raise ValueError(f"{op}: u must have shape (16, F, {cnp.PyArray_DIM(x, 1)}) (the "
                         f"transformed filters, C = x.shape[1]), got {(<object>u).shape}")
    if cnp.PyArray_TYPE(u) != cnp.PyArray_TYPE(x):
        raise TypeError(f"{op}: x and u must have the same dtype, got {x.dtype} and {u.dtype}")
    _window_geom(g, op, (<object>x).shape, (3, 3), 1, padding)
    f[0] = _as_size(cnp.PyArray_DIM(u, 1), "u.shape[1]", op, 1)
    if g.c < 1 or g.n < 1:
        raise ValueError(f"{op}: x must have at least one image and one channel, "
                         f"got x.shape={(<object>x).shape}")
    _check_macs(f[0], g, op)
    tiles = ((g.oh + 1) // 2) * ((g.ow + 1) // 2)
    if not _blas.ilp64 and max(f[0], g.c, tiles) > LIMIT:
        raise ValueError(f"{op}: (F, C, tiles) = {(f[0], g.c, tiles)} is too large for a 32-bit BLAS")


def winograd_work_elems(x_shape, f, padding):
    """Scratch size (values) ``winograd_forward`` / ``winograd_backward`` need (with the
    backward's per-block partial sums, as for ``conv_work_elems``)."""
    cdef mc_geom g
    x_shape = _shape_tuple(x_shape, "x_shape", "winograd_work_elems")
    _window_geom(&g, "winograd_work_elems", x_shape, (3, 3), 1, padding)
    f = _as_size(f, "f", "winograd_work_elems", 1)
    _check_macs(f, &g, "winograd_work_elems")
    return _winograd_parts_elems(&g, f) + mc_winograd_work_elems_f32(f, &g, _threads())


cdef int64_t _winograd_parts_elems(const mc_geom *g, int64_t f):
    """Values of the backward's per-block partial sums: dU (blocks, 16, F, C), db (blocks, F)."""
    return min(g.n, CONV_BLOCKS) * (16 * f * g.c + f)


def winograd_forward(x, u, b, padding, out=None, work=None):
    """out (N, F, OH, OW) = conv2d(x, w) + b for 3x3 kernels and stride 1, from the transformed
    filters u = U (16, F, C) (see csrc/winograd_tmpl.h and minicnn/functional/winograd.py)."""
    cdef cnp.ndarray a = _float_array(x, "x", "winograd_forward", 4)
    cdef cnp.ndarray ua = _float_array(u, "u", "winograd_forward", 3)
    cdef cnp.ndarray ba = None, o, scratch
    cdef mc_geom g
    cdef int64_t f
    cdef int typenum = cnp.PyArray_TYPE(a), nt = _threads()
    cdef const void *bias = NULL
    _require_blas("winograd_forward")
    _winograd_geom(&g, &f, "winograd_forward", a, ua, padding)
    ba = _bias_array(b, f, a, "winograd_forward")
    if ba is not None:
        bias = cnp.PyArray_DATA(ba)
    o = _conv_result(out, &g, f, typenum, "winograd_forward")
    scratch = _check_work(work, typenum, mc_winograd_work_elems_f32(f, &g, nt), "winograd_forward")
    reads = (("x", a), ("u", ua), ("b", ba))
    _check_disjoint("winograd_forward", o, "out", reads)
    _check_disjoint("winograd_forward", scratch, "work", reads + (("out", o),))
    _blas_single_thread_enter()
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            mc_winograd_forward_f32(<const float *>cnp.PyArray_DATA(a), <const float *>cnp.PyArray_DATA(ua),
                                    <const float *>bias, <float *>cnp.PyArray_DATA(o),
                                    <float *>cnp.PyArray_DATA(scratch), f, &g, &_blas, nt)
        else:
            mc_winograd_forward_f64(<const double *>cnp.PyArray_DATA(a), <const double *>cnp.PyArray_DATA(ua),
                                    <const double *>bias, <double *>cnp.PyArray_DATA(o),
                                    <double *>cnp.PyArray_DATA(scratch), f, &g, &_blas, nt)
    _blas_single_thread_exit()
    return o


def winograd_backward(dout, x, u, padding, need_dx=True, dx_out=None, work=None):
    """(dx, du, db) of winograd_forward: du (16, F, C) is the gradient with respect to u (the
    caller maps it back to dW); dx is None when ``need_dx`` is False."""
    cdef cnp.ndarray a = _float_array(x, "x", "winograd_backward", 4)
    cdef cnp.ndarray ua = _float_array(u, "u", "winograd_backward", 3)
    cdef cnp.ndarray d = _float_array(dout, "dout", "winograd_backward", 4)
    cdef cnp.ndarray dx = None, du_parts, db_parts, scratch, uta
    cdef mc_geom g
    cdef int64_t f, blocks, parts
    cdef int typenum = cnp.PyArray_TYPE(a), nt = _threads()
    cdef void *dx_data = NULL
    _require_blas("winograd_backward")
    _winograd_geom(&g, &f, "winograd_backward", a, ua, padding)
    _check_dout(d, &g, f, a, "winograd_backward")
    uta = np.ascontiguousarray((<object>ua).transpose(0, 2, 1))     # the U[xi]^T, (16, C, F)
    blocks = min(g.n, CONV_BLOCKS)
    dx = _dx_result(need_dx, dx_out, &g, typenum, "winograd_backward")
    if dx is not None:
        dx_data = cnp.PyArray_DATA(dx)
    parts = _winograd_parts_elems(&g, f)
    scratch = _check_work(work, typenum, parts + mc_winograd_work_elems_f32(f, &g, nt),
                          "winograd_backward")
    reads = (("x", a), ("u", uta), ("dout", d))
    if dx is not None:
        _check_disjoint("winograd_backward", dx, "dx_out", reads)
    _check_disjoint("winograd_backward", scratch, "work", reads + (("dx_out", dx),))
    du_parts = scratch[:blocks * 16 * f * g.c].reshape(blocks, 16, f, g.c)
    db_parts = scratch[blocks * 16 * f * g.c:parts].reshape(blocks, f)
    scratch = scratch[parts:]
    _blas_single_thread_enter()
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            mc_winograd_backward_f32(<const float *>cnp.PyArray_DATA(a), <const float *>cnp.PyArray_DATA(uta),
                                     <const float *>cnp.PyArray_DATA(d), <float *>dx_data,
                                     <float *>cnp.PyArray_DATA(du_parts), <float *>cnp.PyArray_DATA(db_parts),
                                     <float *>cnp.PyArray_DATA(scratch), blocks, f, &g, &_blas, nt)
        else:
            mc_winograd_backward_f64(<const double *>cnp.PyArray_DATA(a), <const double *>cnp.PyArray_DATA(uta),
                                     <const double *>cnp.PyArray_DATA(d), <double *>dx_data,
                                     <double *>cnp.PyArray_DATA(du_parts), <double *>cnp.PyArray_DATA(db_parts),
                                     <double *>cnp.PyArray_DATA(scratch), blocks, f, &g, &_blas, nt)
    _blas_single_thread_exit()
    # the blocks' partial sums, added in block order
    return dx, du_parts.sum(axis=0), db_parts.sum(axis=0)
