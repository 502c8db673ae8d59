/* minicnn C kernels: im2col / col2im, max- and average-pooling, float32 and float64.
 *
 * Plain C99 + OpenMP, no Python.h.  Layouts and index conventions (see minicnn/kernels/__init__.py):
 *   x     (N, C, H, W)            C-contiguous
 *   cols  (N, C*KH*KW, OH*OW)     cols[n, (c*KH + i)*KW + j, oh*OW + ow] = x_pad[n, c, oh*SH + i, ow*SW + j]
 *                                 at cols + n*image_stride + row*row_stride + l (elements); rows
 *                                 contiguous, image/row strides free (see im2col_tmpl.h)
 *   pool  out / argmax (N, C, OH, OW); argmax = h*W + w in the unpadded (n, c) plane
 *   conv  w (F, C, KH, KW), out / dout (N, F, OH, OW); see conv_tmpl.h
 *
 * Every kernel parallelises over whole (n, c) planes, so no two threads ever write the same
 * element and the result is bitwise identical for any thread count.  Callers (the Cython wrapper)
 * validate shapes; the kernels assume consistent sizes and never read or write outside them.
 */
#ifndef MINICNN_KERNELS_H
#define MINICNN_KERNELS_H

#include <stdint.h>

typedef struct {
    int64_t n, c, h, w;     /* input (N, C, H, W) */
    int64_t kh, kw;         /* window */
    int64_t sh, sw;         /* stride, >= 1 */
    int64_t ph, pw;         /* zero padding, >= 0 */
    int64_t oh, ow;         /* output size: (H + 2*PH - KH) / SH + 1, >= 1 */
} mc_geom;

/* The caller's BLAS, for the fused convolution: addresses of its row-major cblas_sgemm and
 * cblas_dgemm (the C code links no BLAS of its own; the Cython wrapper passes the ones of the
 * OpenBLAS NumPy uses).  ilp64: the BLAS takes 64-bit integers (OpenBLAS's INTERFACE64).
 * own_sgemm: the conv layers' float32 products go to mc_sgemm (small_gemm.c) instead. */
typedef struct {
    void *sgemm, *dgemm;
    int ilp64;
    int own_sgemm;
} mc_blas;

int mc_openmp_enabled(void);

/* stream.c: store-only and load-only passes, the benchmark's memory ceilings */
void mc_stream_store(uint32_t *dst, int64_t n, int num_threads);
uint32_t mc_stream_load(const uint32_t *src, int64_t n, int num_threads);

#define MC_DECLARE(REAL, SUF)                                                                    \
    void mc_im2col_##SUF(const REAL *x, REAL *cols, int64_t image_stride, int64_t row_stride,    \
                         const mc_geom *g, int num_threads);                                    \
    void mc_col2im_##SUF(const REAL *cols, int64_t image_stride, int64_t row_stride, REAL *dx,   \
                         const mc_geom *g, int num_threads);                                    \
    void mc_maxpool_forward_##SUF(const REAL *x, REAL *out, int32_t *argmax, const mc_geom *g,  \
                                  int num_threads);                                             \
    int64_t mc_maxpool_backward_##SUF(const REAL *dout, const int32_t *argmax, REAL *dx,         \
                                      const mc_geom *g, int num_threads);                        \
    void mc_avgpool_forward_##SUF(const REAL *x, REAL *out, const mc_geom *g, int num_threads); \
    void mc_avgpool_backward_##SUF(const REAL *dout, REAL *dx, const mc_geom *g, int num_threads); \
    void mc_relu_forward_##SUF(const REAL *x, REAL *out, int64_t n, int num_threads);           \
    void mc_relu_backward_##SUF(const REAL *dout, const REAL *out, REAL *dx, int64_t n,         \
                                int num_threads);                                               \
    void mc_sgd_step_##SUF(REAL *p, const REAL *g, REAL *buf, int64_t n, REAL lr, REAL momentum, \
                           REAL dampening_keep, REAL weight_decay, int nesterov, int first,      \
                           int num_threads);                                                    \
    void mc_channel_stats_##SUF(const REAL *x, int64_t n, int64_t c, int64_t s, REAL *mean,     \
                                REAL *var, int num_threads);                                    \
    void mc_batchnorm_apply_##SUF(const REAL *x, const REAL *mean, const REAL *inv_std,         \
                                  const REAL *gamma, const REAL *beta, REAL *xhat, REAL *out,    \
                                  int64_t n, int64_t c, int64_t s, int num_threads);            \
    void mc_batchnorm_backward_##SUF(const REAL *dout, const REAL *xhat, const REAL *gamma,     \
                                     const REAL *inv_std, int batch_stats, REAL *dx,            \
                                     REAL *dgamma, REAL *dbeta, int64_t n, int64_t c, int64_t s, \
                                     int num_threads);                                          \
    void mc_matmul_##SUF(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,              \
                         const REAL *a, int64_t lda, const REAL *b, int64_t ldb, REAL *c,        \
                         int64_t ldc, const mc_blas *blas, int num_threads);                    \
    void mc_conv_forward_##SUF(const REAL *x, const REAL *w, const REAL *bias, REAL *out,         \
                               REAL *work, int64_t f, const mc_geom *g, const mc_blas *blas,    \
                               int num_threads);                                                \
    void mc_conv_backward_##SUF(const REAL *x, const REAL *w, const REAL *dout, REAL *dx,         \
                                REAL *dw1t_parts, REAL *work, int64_t blocks, int64_t f,         \
                                const mc_geom *g, const mc_blas *blas, int num_threads);         \
    int64_t mc_conv_work_elems_##SUF(int64_t f, const mc_geom *g, int num_threads);            \
    void mc_winograd_forward_##SUF(const REAL *x, const REAL *u, const REAL *bias, REAL *out,     \
                                   REAL *work, int64_t f, const mc_geom *g, const mc_blas *blas, \
                                   int num_threads);                                            \
    void mc_winograd_backward_##SUF(const REAL *x, const REAL *ut, const REAL *dout, REAL *dx,   \
                                    REAL *du_parts, REAL *db_parts, REAL *work, int64_t blocks,  \
                                    int64_t f, const mc_geom *g, const mc_blas *blas,            \
                                    int num_threads);                                           \
    int64_t mc_winograd_work_elems_##SUF(int64_t f, const mc_geom *g, int num_threads);

/* small_gemm.c: float32 C (m, n) = A @ B, or A @ B^T when trans_b, row-major, [+ C when
 * accumulate]; _loops: the plain loops */
int mc_sgemm_avx512_supported(void);
void mc_sgemm(int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
              const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate);
void mc_sgemm_loops(int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                    const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate);

/* conv_tmpl.h: the conv layers' float32 product (minicnn's kernels or the BLAS, as blas says),
 * repeated, for benchmarks */
void mc_layer_sgemm_repeat(const mc_blas *blas, int trans_b, int64_t m, int64_t n, int64_t k,
                           const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
                           int64_t ldc, int64_t repeat);

MC_DECLARE(float, f32)
MC_DECLARE(double, f64)

#undef MC_DECLARE

#endif
