"""CuPy RawKernels: the GPU implementation of ``minicnn.kernels``.

Same signatures and index conventions as ``minicnn.kernels._numpy`` (see ``minicnn.kernels``):

    im2col           cols[n, (c*KH + i)*KW + j, oh*OW + ow] = x_pad[n, c, oh*SH + i, ow*SW + j]
    col2im           the adjoint of im2col, as a GATHER: one thread per input pixel sums the
                     columns that read it, so no atomics and the result is deterministic
    maxpool_forward  argmax = h*W + w in the unpadded plane; padded cells never win; the first
                     maximum in window (row-major) order wins (strict >), a NaN wins over numbers
    maxpool_backward deterministic (see its docstring)
    avgpool_*        zero padding counts in the divisor KH*KW; backward is a gather too

Every kernel is a C++ template over the element type T (float, double) and the index type I
(``int`` while every flat index fits in 31 bits, ``long long`` beyond), compiled once per dtype
with NVRTC on first use (``cupy.RawModule`` with ``name_expressions``) and kept in ``_modules``.
Each thread computes one output element in a grid-stride loop, so any grid size is correct.

Sums run in a fixed order: col2im and avgpool_backward add a pixel's terms in window order
(i, then j, ascending), as ``_numpy`` does, and maxpool_backward in ascending output order, as
``np.bincount`` does; so float64 results equal ``_numpy``'s to the last bit where the math is
the same, and every kernel gives bitwise the same output on every run.

Inputs were validated by ``minicnn.functional``; here they are only made C-contiguous. Arrays
are assumed to live on the current CUDA device. This module is imported lazily by
``minicnn.kernels`` when a CuPy array arrives; without CuPy it raises ImportError.
"""
import collections

import numpy as np

try:
    import cupy
except ImportError as exc:  # pragma: no cover - depends on the machine
    raise ImportError("minicnn.kernels._cupy needs CuPy and an NVIDIA GPU "
                      "(pip install 'minicnn[gpu]'); CPU arrays use the C or NumPy kernels") from exc

_SOURCE = r"""
// Geometry arguments are ints; I is the index type (int or long long), T the element type.
// Every kernel walks its flat output index in a grid-stride loop.

#define MC_GRID_STRIDE_LOOP(idx, total) \
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < (total); \
         idx += (I)blockDim.x * gridDim.x)

// Output rows (or columns) whose window covers padded coordinate p: o*S <= p <= o*S + K - 1,
// clipped to [0, O).  Returns the range [lo, hi] (empty when lo > hi).
__device__ __forceinline__ void mc_covering(int p, int K, int S, int O, int *lo, int *hi)
{
    *lo = p < K ? 0 : (p - K) / S + 1;
    *hi = min(p / S, O - 1);
}

// cols[n, (c*KH + i)*KW + j, oh*OW + ow] = x_pad[n, c, oh*SH + i, ow*SW + j]; the flat index of
// cols is ((((n*C + c)*KH + i)*KW + j)*OH + oh)*OW + ow, so (n, c) form one "plane" index.
template <typename T, typename I>
__global__ void im2col(const T *__restrict__ x, T *__restrict__ cols, I total,
                       int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                       int OH, int OW)
{
    MC_GRID_STRIDE_LOOP(idx, total) {
        I rest = idx;
        const int ow = (int)(rest % OW); rest /= OW;
        const int oh = (int)(rest % OH); rest /= OH;
        const int j = (int)(rest % KW); rest /= KW;
        const int i = (int)(rest % KH);
        const I plane = rest / KH;
        const int h = oh * SH + i - PH, w = ow * SW + j - PW;
        cols[idx] = (h >= 0 && h < H && w >= 0 && w < W) ? x[(plane * H + h) * W + w] : T(0);
    }
}

// dx[n, c, h, w] = sum over the windows (oh, ow) covering (h, w) of cols[n, (c*KH + i)*KW + j,
// oh*OW + ow] with i = h + PH - oh*SH, j = w + PW - ow*SW.  One thread per pixel (a gather);
// terms are added with i ascending, then j ascending (oh and ow descending), as _numpy adds them.
template <typename T, typename I>
__global__ void col2im(const T *__restrict__ cols, T *__restrict__ dx, I total,
                       int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                       int OH, int OW)
{
    MC_GRID_STRIDE_LOOP(idx, total) {
        I rest = idx;
        const int w = (int)(rest % W); rest /= W;
        const int h = (int)(rest % H);
        const I plane = rest / H;
        const int hp = h + PH, wp = w + PW;
        int oh_lo, oh_hi, ow_lo, ow_hi;
        mc_covering(hp, KH, SH, OH, &oh_lo, &oh_hi);
        mc_covering(wp, KW, SW, OW, &ow_lo, &ow_hi);
        const T *plane_cols = cols + plane * ((I)KH * KW * OH * OW);
        T acc = T(0);
        for (int oh = oh_hi; oh >= oh_lo; --oh) {
            const int i = hp - oh * SH;
            for (int ow = ow_hi; ow >= ow_lo; --ow) {
                const int j = wp - ow * SW;
                acc += plane_cols[(((I)i * KW + j) * OH + oh) * OW + ow];
            }
        }
        dx[idx] = acc;
    }
}

// v replaces best: strictly greater, or the first NaN (as NumPy's argmax and the C kernels).
#define MC_BETTER(v, best) ((v) > (best) || ((v) != (v) && (best) == (best)))

// out = max over the window's real cells (padding never wins), argmax = h*W + w of the first
// maximum in row-major window order.  The functional layer guarantees padding <= kernel/2, so
// every window holds at least one real cell.
template <typename T, typename I>
__global__ void maxpool_forward(const T *__restrict__ x, T *__restrict__ out,
                                int *__restrict__ argmax, I total,
                                int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                                int OH, int OW)
{
    MC_GRID_STRIDE_LOOP(idx, total) {
        I rest = idx;
        const int ow = (int)(rest % OW); rest /= OW;
        const int oh = (int)(rest % OH);
        const I plane = rest / OH;
        const int hs = oh * SH - PH, ws = ow * SW - PW;
        const int h0 = max(hs, 0), h1 = min(hs + KH, H);
        const int w0 = max(ws, 0), w1 = min(ws + KW, W);
        const T *xp = x + plane * ((I)H * W);
        T best = xp[h0 * W + w0];
        int best_at = h0 * W + w0;
        for (int h = h0; h < h1; ++h) {
            for (int w = w0; w < w1; ++w) {
                const T v = xp[h * W + w];
                if (MC_BETTER(v, best)) {
                    best = v;
                    best_at = h * W + w;
                }
            }
        }
        out[idx] = best;
        argmax[idx] = best_at;
    }
}

// Max-pool backward knowing the window geometry: one thread per input pixel scans the windows
// covering it, adding dout where the window's winner is this pixel (ascending output order).
template <typename T, typename I>
__global__ void maxpool_backward_gather(const T *__restrict__ dout, const int *__restrict__ argmax,
                                        T *__restrict__ dx, I total,
                                        int H, int W, int KH, int KW, int SH, int SW,
                                        int PH, int PW, int OH, int OW)
{
    MC_GRID_STRIDE_LOOP(idx, total) {
        I rest = idx;
        const int w = (int)(rest % W); rest /= W;
        const int h = (int)(rest % H);
        const I plane = rest / H;
        int oh_lo, oh_hi, ow_lo, ow_hi;
        mc_covering(h + PH, KH, SH, OH, &oh_lo, &oh_hi);
        mc_covering(w + PW, KW, SW, OW, &ow_lo, &ow_hi);
        const int me = h * W + w;
        const I plane_out = plane * ((I)OH * OW);
        T acc = T(0);
        for (int oh = oh_lo; oh <= oh_hi; ++oh) {
            for (int ow = ow_lo; ow <= ow_hi; ++ow) {
                const I o = plane_out + (I)oh * OW + ow;
                if (argmax[o] == me)
                    acc += dout[o];
            }
        }
        dx[idx] = acc;
    }
}

// Max-pool backward without the window geometry, pass 1 of 2.  For every pixel p that wins at
// least one window, record the first and the last window (in output order o) it wins:
//     span[p] = max(L - o),  span[P + p] = max(o + 1)        (span zeroed; P = N*C*H*W, L = OH*OW)
// Integer atomicMax gives the same result in any order.  Winners outside the plane are skipped.
template <typename I>
__global__ void maxpool_winner_span(const int *__restrict__ argmax, int *__restrict__ span,
                                    I total, I num_pixels, int HW, int L)
{
    MC_GRID_STRIDE_LOOP(idx, total) {
        const int a = argmax[idx];
        if (a < 0 || a >= HW)
            continue;
        const I plane = idx / L;
        const int o = (int)(idx - plane * L);
        const I p = plane * HW + a;
        atomicMax(span + p, L - o);
        atomicMax(span + num_pixels + p, o + 1);
    }
}

// Pass 2: one thread per window; the FIRST window a pixel wins writes that pixel's gradient,
// adding dout over every window it wins in ascending output order.  No two threads write the
// same pixel, so no atomics on floats and the sum is deterministic.  dx is zeroed beforehand.
template <typename T, typename I>
__global__ void maxpool_backward_scatter(const T *__restrict__ dout, const int *__restrict__ argmax,
                                         const int *__restrict__ span, T *__restrict__ dx,
                                         I total, I num_pixels, int HW, int L)
{
    MC_GRID_STRIDE_LOOP(idx, total) {
        const int a = argmax[idx];
        if (a < 0 || a >= HW)
            continue;
        const I plane = idx / L;
        const int o = (int)(idx - plane * L);
        const I p = plane * HW + a;
        if (L - span[p] != o)
            continue;                       // not the first window this pixel wins
        const int end = span[num_pixels + p];
        const int *plane_argmax = argmax + plane * L;
        const T *plane_dout = dout + plane * L;
        T acc = plane_dout[o];
        for (int o2 = o + 1; o2 < end; ++o2) {
            if (plane_argmax[o2] == a)
                acc += plane_dout[o2];
        }
        dx[p] = acc;
    }
}

// out = (sum of the window's real cells) / (KH*KW): padding counts as zeros in the divisor.
template <typename T, typename I>
__global__ void avgpool_forward(const T *__restrict__ x, T *__restrict__ out, I total,
                                int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                                int OH, int OW)
{
    MC_GRID_STRIDE_LOOP(idx, total) {
        I rest = idx;
        const int ow = (int)(rest % OW); rest /= OW;
        const int oh = (int)(rest % OH);
        const I plane = rest / OH;
        const int hs = oh * SH - PH, ws = ow * SW - PW;
        const int h0 = max(hs, 0), h1 = min(hs + KH, H);
        const int w0 = max(ws, 0), w1 = min(ws + KW, W);
        const T *xp = x + plane * ((I)H * W);
        T acc = T(0);
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w)
                acc += xp[h * W + w];
        out[idx] = acc / T(KH * KW);
    }
}

// dx[n, c, h, w] = sum over the windows covering (h, w) of dout[n, c, oh, ow] / (KH*KW), in
// window order (i, then j, ascending), as _numpy adds dout / (KH*KW).  A gather.
template <typename T, typename I>
__global__ void avgpool_backward(const T *__restrict__ dout, T *__restrict__ dx, I total,
                                 int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                                 int OH, int OW)
{
    MC_GRID_STRIDE_LOOP(idx, total) {
        I rest = idx;
        const int w = (int)(rest % W); rest /= W;
        const int h = (int)(rest % H);
        const I plane = rest / H;
        int oh_lo, oh_hi, ow_lo, ow_hi;
        mc_covering(h + PH, KH, SH, OH, &oh_lo, &oh_hi);
        mc_covering(w + PW, KW, SW, OW, &ow_lo, &ow_hi);
        const T *plane_dout = dout + plane * ((I)OH * OW);
        const T area = T(KH * KW);
        T acc = T(0);
        for (int oh = oh_hi; oh >= oh_lo; --oh)
            for (int ow = ow_hi; ow >= ow_lo; --ow)
                acc += plane_dout[(I)oh * OW + ow] / area;
        dx[idx] = acc;
    }
}
"""

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_TYPED_KERNELS = ("im2col", "col2im", "maxpool_forward", "maxpool_backward_gather",
                  "maxpool_backward_scatter", "avgpool_forward", "avgpool_backward")
_INDEX_TYPES = {32: ("int", np.int32), 64: ("long long", np.int64)}

_THREADS = 256                 # threads per block
_MAX_BLOCKS = 65536            # the grid-stride loop covers the rest
# 32-bit indices while idx + gridDim*blockDim cannot overflow an int.
_INT32_LIMIT = 2 ** 31 - 1 - _THREADS * _MAX_BLOCKS

_modules = {}                  # dtype -> compiled cupy.RawModule (float32 / float64)
_kernels = {}                  # (kernel name, dtype, index bits) -> cupy.RawKernel
_launches = collections.Counter()   # kernel name -> launches since the last reset


def _name_expression(name, ctype, itype):
    if name == "maxpool_winner_span":
        return f"{name}<{itype}>"
    return f"{name}<{ctype}, {itype}>"


def _name_expressions(ctype):
    names = _TYPED_KERNELS + ("maxpool_winner_span",)
    return [_name_expression(n, ctype, itype) for n in names for itype, _ in _INDEX_TYPES.values()]


def _module(dtype):
    """The RawModule holding every kernel for ``dtype``, compiled on first use."""
    module = _modules.get(dtype)
    if module is None:
        ctype = _CTYPES.get(dtype)
        if ctype is None:
            raise TypeError(f"minicnn GPU kernels support float32 and float64, got dtype {dtype}")
        module = cupy.RawModule(code=_SOURCE, name_expressions=_name_expressions(ctype))
        module.compile()           # compile now, so a syntax error surfaces at the first call
        _modules[dtype] = module
    return module


def _kernel(name, dtype, bits):
    key = (name, dtype, bits)
    kernel = _kernels.get(key)
    if kernel is None:
        ctype, itype = _CTYPES.get(dtype), _INDEX_TYPES[bits][0]
        kernel = _module(dtype).get_function(_name_expression(name, ctype, itype))
        _kernels[key] = kernel
    return kernel


def _launch(name, dtype, total, arrays, scalars):
    """Run kernel ``name`` over ``total`` flat output indices.

    ``arrays`` are the pointer arguments; ``scalars`` the ints after them: a 1-tuple ``(v,)``
    is passed in the index type I (``total`` first), a bare int as a 32-bit int. I is 32-bit
    when every array is small enough for its flat indices to stay below 2**31.
    """
    if total == 0:
        return
    bits = 32 if max(a.size for a in arrays) <= _INT32_LIMIT else 64
    index_type = _INDEX_TYPES[bits][1]
    args = tuple(arrays) + tuple(index_type(s[0]) if isinstance(s, tuple) else np.int32(s)
                                 for s in scalars)
    blocks = min(-(-total // _THREADS), _MAX_BLOCKS)
    _kernel(name, dtype, bits)((blocks,), (_THREADS,), args)
    _launches[name] += 1


def _out_hw(x_shape, kernel_size, stride, padding):
    h, w = x_shape[2:]
    return ((h + 2 * padding[0] - kernel_size[0]) // stride[0] + 1,
            (w + 2 * padding[1] - kernel_size[1]) // stride[1] + 1)


def _geometry(x_shape, kernel_size, stride, padding):
    """The ten ints every sliding-window kernel takes: H, W, KH, KW, SH, SW, PH, PW, OH, OW."""
    oh, ow = _out_hw(x_shape, kernel_size, stride, padding)
    return (int(x_shape[2]), int(x_shape[3]), *map(int, kernel_size), *map(int, stride),
            *map(int, padding), oh, ow)


# ---------------------------------------------------------------- the six kernels

def _result(out, shape, dtype):
    """A new array of ``shape``, or the caller's ``out`` buffer after checking it matches exactly."""
    if out is None:
        return cupy.empty(shape, dtype=dtype)
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous array of shape {tuple(shape)} and dtype "
                         f"{dtype}, got shape {tuple(out.shape)} dtype {out.dtype}")
    return out


def im2col(x, kernel_size, stride, padding, out=None):
    """x (N, C, H, W) -> cols (N, C*KH*KW, OH*OW); see ``minicnn.kernels``. ``out``: optional
    result buffer of exactly that shape and dtype."""
    x = cupy.ascontiguousarray(x)
    n, c = x.shape[:2]
    geometry = _geometry(x.shape, kernel_size, stride, padding)
    oh, ow = geometry[-2:]
    cols = _result(out, (n, c * kernel_size[0] * kernel_size[1], oh * ow), x.dtype)
    _launch("im2col", x.dtype, cols.size, (x, cols), ((cols.size,), *geometry))
    return cols


def col2im(cols, x_shape, kernel_size, stride, padding, out=None):
    """The adjoint of im2col: (N, C*KH*KW, OH*OW) -> (N, C, H, W), overlapping windows summed.
    ``out``: optional result buffer of exactly that shape and dtype."""
    cols = cupy.ascontiguousarray(cols)
    dx = _result(out, tuple(int(s) for s in x_shape), cols.dtype)
    geometry = _geometry(x_shape, kernel_size, stride, padding)
    _launch("col2im", cols.dtype, dx.size, (cols, dx), ((dx.size,), *geometry))
    return dx


def maxpool_forward(x, kernel_size, stride, padding):
    """-> (out (N, C, OH, OW), argmax int32 (N, C, OH, OW) holding h*W + w in the unpadded plane)."""
    x = cupy.ascontiguousarray(x)
    n, c = x.shape[:2]
    geometry = _geometry(x.shape, kernel_size, stride, padding)
    oh, ow = geometry[-2:]
    out = cupy.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = cupy.empty((n, c, oh, ow), dtype=np.int32)
    _launch("maxpool_forward", x.dtype, out.size, (x, out, argmax), ((out.size,), *geometry))
    return out, argmax


def maxpool_backward(dout, argmax, x_shape, kernel_size=None, stride=None, padding=None):
    """dx[n, c].flat[argmax[n, c, k]] += dout[n, c].flat[k]  -> dx (N, C, H, W), deterministic.

    The positional signature is that of every implementation (the windows' geometry is not
    part of it). Without the geometry, two passes over the windows: the first records, with
    integer atomics, the first and last window each pixel wins; in the second the first window
    a pixel wins sums dout over all the windows that pixel wins, in ascending order, and writes
    it. Given ``kernel_size``, ``stride`` and ``padding`` (the forward's), one gather pass
    instead: a thread per input pixel scans the windows covering it. Both add in ascending
    window order, like ``np.bincount``.
    """
    dout = cupy.ascontiguousarray(dout)
    argmax = cupy.ascontiguousarray(argmax, dtype=np.int32)
    x_shape = tuple(int(s) for s in x_shape)
    n, c, h, w = x_shape
    if kernel_size is not None:
        stride = kernel_size if stride is None else stride
        padding = (0, 0) if padding is None else padding
        dx = cupy.empty(x_shape, dtype=dout.dtype)
        geometry = _geometry(x_shape, kernel_size, stride, padding)
        _launch("maxpool_backward_gather", dout.dtype, dx.size, (dout, argmax, dx),
                ((dx.size,), *geometry))
        return dx
    dx = cupy.zeros(x_shape, dtype=dout.dtype)
    num_pixels, windows = n * c * h * w, int(dout.shape[2] * dout.shape[3])
    span = cupy.zeros(2 * num_pixels, dtype=np.int32)
    scalars = ((dout.size,), (num_pixels,), h * w, windows)
    _launch("maxpool_winner_span", dout.dtype, dout.size, (argmax, span), scalars)
    _launch("maxpool_backward_scatter", dout.dtype, dout.size, (dout, argmax, span, dx), scalars)
    return dx


def avgpool_forward(x, kernel_size, stride, padding):
    """-> out (N, C, OH, OW): window sums over real cells divided by KH*KW."""
    x = cupy.ascontiguousarray(x)
    n, c = x.shape[:2]
    geometry = _geometry(x.shape, kernel_size, stride, padding)
    oh, ow = geometry[-2:]
    out = cupy.empty((n, c, oh, ow), dtype=x.dtype)
    _launch("avgpool_forward", x.dtype, out.size, (x, out), ((out.size,), *geometry))
    return out


def avgpool_backward(dout, x_shape, kernel_size, stride, padding):
    """-> dx (N, C, H, W): each pixel gathers dout / (KH*KW) from the windows covering it."""
    dout = cupy.ascontiguousarray(dout)
    dx = cupy.empty(tuple(int(s) for s in x_shape), dtype=dout.dtype)
    geometry = _geometry(x_shape, kernel_size, stride, padding)
    _launch("avgpool_backward", dout.dtype, dx.size, (dout, dx), ((dx.size,), *geometry))
    return dx


# ---------------------------------------------------------------- description and counters

def compile_all():
    """Compile the kernels for float32 and float64 now (otherwise each compiles on first use)."""
    for dtype in _CTYPES:
        _module(dtype)


def kernel_info():
    """What the GPU kernels run on, for ``minicnn info``: a dict of JSON-able values."""
    info = {"cupy": cupy.__version__,
            "compiled": sorted(str(d) for d in _modules),
            "launches": dict(_launches)}
    try:
        runtime = cupy.cuda.runtime.runtimeGetVersion()
        info["cuda_runtime"] = f"{runtime // 1000}.{runtime % 1000 // 10}"
        driver = cupy.cuda.runtime.driverGetVersion()
        info["cuda_driver"] = f"{driver // 1000}.{driver % 1000 // 10}"
        major, minor = cupy.cuda.nvrtc.getVersion()
        info["nvrtc"] = f"{major}.{minor}"
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        info["device"] = name.decode() if isinstance(name, bytes) else str(name)
        info["compute_capability"] = f"{props['major']}.{props['minor']}"
    except Exception as exc:  # pragma: no cover - depends on the GPU and driver
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def launch_counts():
    """{kernel name: launches} of minicnn's own kernels since the last ``reset_launch_counts``.

    cuBLAS and CuPy's element-wise kernels are not counted here; ``benchmarks/bench_gpu.py``
    counts every kernel with a profiler.
    """
    return dict(_launches)


def reset_launch_counts():
    _launches.clear()
