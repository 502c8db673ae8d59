/* minicnn C kernels: im2col / col2im, max- and average-pooling, float32 and float64.
 *
 * Plain C99 + OpenMP, no Python.h.  Layouts and index conventions (see minicnn/kernels/__init__.py):
 *   x     (N, C, H, W)            C-contiguous
 *   cols  (N, C*KH*KW, OH*OW)     cols[n, (c*KH + i)*KW + j, oh*OW + ow] = x_pad[n, c, oh*SH + i, ow*SW + j]
 *                                 at cols + n*image_stride + row*row_stride + l (elements); rows
 *                                 contiguous, image/row strides free (see im2col_tmpl.h)
 *   pool  out / argmax (N, C, OH, OW); argmax = h*W + w in the unpadded (n, c) plane
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

int mc_openmp_enabled(void);

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
    void mc_avgpool_backward_##SUF(const REAL *dout, REAL *dx, const mc_geom *g, int num_threads);

MC_DECLARE(float, f32)
MC_DECLARE(double, f64)

#undef MC_DECLARE

#endif
