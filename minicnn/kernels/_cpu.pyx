# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""C99 + OpenMP kernels (csrc/) behind the signatures of ``minicnn.kernels``.

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
"""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t

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
    cdef int64_t n
    try:
        if isinstance(v, bool):
            raise TypeError
        n = v.__index__()
    except (TypeError, AttributeError, OverflowError):
        raise TypeError(f"{op}: {name} must hold ints, got {v!r}") from None
    if n < minimum or n > LIMIT:
        raise ValueError(f"{op}: {name} must be in [{minimum}, {LIMIT}], got {n}")
    return n


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


cdef cnp.ndarray _new(int ndim, cnp.npy_intp *dims, int typenum):
    return cnp.PyArray_EMPTY(ndim, dims, typenum, 0)


cdef void _nchw_dims(cnp.npy_intp *dims, const mc_geom *g, bint output) noexcept:
    """dims = the (N, C, H, W) input shape of g, or its (N, C, OH, OW) output shape."""
    dims[0] = g.n
    dims[1] = g.c
    dims[2] = g.oh if output else g.h
    dims[3] = g.ow if output else g.w


cdef cnp.ndarray _check_out(object out, int ndim, cnp.npy_intp *dims, int typenum, str op):
    """A caller-provided result buffer: exact shape and dtype, C-contiguous, aligned, writeable."""
    cdef cnp.ndarray o
    cdef int d
    if not isinstance(out, cnp.ndarray):
        raise TypeError(f"{op}: out must be a numpy.ndarray, got {type(out).__name__}")
    o = <cnp.ndarray>out
    want = tuple(dims[d] for d in range(ndim))
    if (cnp.PyArray_TYPE(o) != typenum or not cnp.PyArray_ISNOTSWAPPED(o)
            or cnp.PyArray_NDIM(o) != ndim or (<object>o).shape != want):
        raise ValueError(f"{op}: out must have shape {want} and dtype "
                         f"{'float32' if typenum == cnp.NPY_FLOAT32 else 'float64'}, got "
                         f"shape {(<object>o).shape} dtype {o.dtype}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(o) and cnp.PyArray_ISALIGNED(o)
            and cnp.PyArray_ISWRITEABLE(o)):
        raise ValueError(f"{op}: out must be C-contiguous, aligned and writeable "
                         f"(out.shape={(<object>o).shape})")
    return o


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
    _window_geom(&g, "col2im", tuple(x_shape), kernel_size, stride, padding)
    if (cnp.PyArray_DIM(a, 0) != g.n or cnp.PyArray_DIM(a, 1) != g.c * g.kh * g.kw
            or cnp.PyArray_DIM(a, 2) != g.oh * g.ow):
        raise ValueError(f"col2im: cols must have shape {(g.n, g.c * g.kh * g.kw, g.oh * g.ow)} "
                         f"for x_shape={tuple(x_shape)}, kernel_size={(g.kh, g.kw)}, "
                         f"stride={(g.sh, g.sw)}, padding={(g.ph, g.pw)}; got {(<object>a).shape}")
    typenum = cnp.PyArray_TYPE(a)
    item = cnp.PyArray_ITEMSIZE(a)
    img_stride = cnp.PyArray_STRIDE(a, 0) // item
    row_stride = cnp.PyArray_STRIDE(a, 1) // item
    _nchw_dims(dims, &g, False)
    dx = _new(4, dims, typenum) if out is None else _check_out(out, 4, dims, typenum, "col2im")
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
    _window_geom(&g, "avgpool_backward", tuple(x_shape), kernel_size, stride, padding)
    if (<object>d).shape != (g.n, g.c, g.oh, g.ow):
        raise ValueError(f"avgpool_backward: dout must have shape {(g.n, g.c, g.oh, g.ow)} for "
                         f"x_shape={tuple(x_shape)}, kernel_size={(g.kh, g.kw)}, "
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
