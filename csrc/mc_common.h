/* Helpers shared by the kernel templates (internal). */
#ifndef MC_COMMON_H
#define MC_COMMON_H

#include <stdint.h>
#include "minicnn_kernels.h"

#if defined(_MSC_VER)
#define restrict __restrict
#define MC_ALWAYS_INLINE __forceinline
#else
#define MC_ALWAYS_INLINE inline __attribute__((always_inline))
#endif

#ifdef _OPENMP
#include <omp.h>
static inline int mc_thread_id(void) { return omp_get_thread_num(); }
static inline int mc_num_procs(void) { return omp_get_num_procs(); }   /* this process may use */
#else
static inline int mc_thread_id(void) { return 0; }
static inline int mc_num_procs(void) { return 1; }
#endif

/* MC_CAT(name, f32) -> name_f32: the per-type names of the kernels built from a template. */
#define MC_PASTE(a, b) a##_##b
#define MC_CAT(a, b) MC_PASTE(a, b)

/* Planes smaller than this many elements in total are not worth waking a second thread for. */
#define MC_MIN_PARALLEL_ELEMS 32768

/* The CBLAS enum values (cblas.h), for calling the caller's cblas_?gemm without its header. */
#define MC_CBLAS_ROW_MAJOR 101
#define MC_CBLAS_NO_TRANS 111
#define MC_CBLAS_TRANS 112

static inline int64_t mc_min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t mc_max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ceil(a / b) for b > 0 and any sign of a. */
static inline int64_t mc_ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

/* Output columns o in [lo, hi) whose input column o*s + k - p falls inside [0, size);
 * always 0 <= lo <= hi <= out, so [0, lo) and [hi, out) are the (possibly empty) padded parts. */
static inline void mc_valid_range(int64_t size, int64_t out, int64_t s, int64_t k, int64_t p,
                                  int64_t *lo, int64_t *hi)
{
    int64_t a = mc_ceil_div(p - k, s);              /* o*s + k - p >= 0    */
    int64_t b = mc_ceil_div(size + p - k, s);       /* o*s + k - p < size  */
    a = mc_min64(mc_max64(a, 0), out);
    b = mc_min64(b, out);
    if (b < a) b = a;               /* empty range, still inside [0, out] */
    *lo = a;
    *hi = b;
}

/* Output columns o in [lo, hi) whose whole window, input columns o*s - p .. o*s - p + k - 1,
 * lies inside [0, size); lo = hi = 0 when every window is clipped. */
static inline void mc_interior_range(int64_t size, int64_t out, int64_t k, int64_t s, int64_t p,
                                     int64_t *lo, int64_t *hi)
{
    int64_t a = mc_ceil_div(p, s);
    int64_t b = mc_min64(out, size + p - k >= 0 ? (size + p - k) / s + 1 : 0);
    if (b < a) a = b = 0;
    *lo = a;
    *hi = b;
}

/* Pooling, output row oh: its windows' rows [h0, h1), clipped to the plane, and the columns
 * [lo, hi) to compute as interior windows: [ow_lo, ow_hi) of mc_interior_range when no row of
 * the windows is clipped, else none (lo = hi = OW). */
static inline void mc_pool_row(const mc_geom *g, int64_t oh, int64_t ow_lo, int64_t ow_hi,
                               int64_t *h0, int64_t *h1, int64_t *lo, int64_t *hi)
{
    const int64_t hs = oh * g->sh - g->ph;
    const int full_rows = hs >= 0 && hs + g->kh <= g->h;
    *h0 = mc_max64(hs, 0);
    *h1 = mc_min64(hs + g->kh, g->h);
    *lo = full_rows ? ow_lo : g->ow;
    *hi = full_rows ? ow_hi : g->ow;
}

/* Threads for a loop over `planes` independent planes holding `elems` elements in total. */
static inline int mc_threads(int num_threads, int64_t planes, int64_t elems)
{
    if (num_threads < 1 || elems < MC_MIN_PARALLEL_ELEMS) return 1;
    if ((int64_t)num_threads > planes) return planes > 0 ? (int)planes : 1;
    return num_threads;
}

/* Planes per dynamically scheduled chunk: about 8 chunks per thread, so a thread that shares
 * its core with another process does not hold the others up at the barrier.  Which thread
 * does a plane never changes its result. */
static inline int64_t mc_chunk(int64_t planes, int nt)
{
    int64_t chunk = planes / ((int64_t)nt * 8);
    return chunk > 0 ? chunk : 1;
}

#endif
