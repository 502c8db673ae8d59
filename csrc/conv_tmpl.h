/* A whole convolution layer, image by image: im2col into a small per-thread buffer, then a
 * single-threaded GEMM of the caller's BLAS reading it while it is still in the core's cache.
 * Included by im2col.c after im2col_tmpl.h (it reuses im2col_plane / col2im_plane) with REAL,
 * MC_FN and MC_GEMM (the mc_blas field: sgemm or dgemm) defined.
 *
 * Notation as in minicnn/functional/conv.py: K = C*KH*KW, L = OH*OW, W = w as an (F, K)
 * matrix, X_n = im2col(x[n]) as a (K, L) matrix, D_n = dout[n] as (F, L).
 *
 *   forward:   out_n = W @ X_n + b
 *   backward:  dW = sum_n D_n @ X_n^T,  db = sum_{n,l} D_n[:, l],  dx_n = col2im(W^T @ D_n)
 *
 * dW is computed transposed, dW^T = sum_n X_n @ D_n^T (K, F): OpenBLAS runs that product
 * 1.2-1.5x faster than D_n @ X_n^T for these shapes (few filters F, long rows L).
 *
 * Why: the batched layer (im2col of a chunk of images, then one large multi-threaded GEMM)
 * hands the cores back and forth between the OpenMP and BLAS thread pools at every chunk,
 * and its column matrix (75 MB for case D) streams through memory twice.  Here each OpenMP
 * thread owns whole images from im2col to result, X_n never leaves the cache, and the backward
 * recomputes X_n from x instead of keeping all the columns.  The BLAS must be set to one
 * thread while this runs (the Cython wrapper does that).
 *
 * Determinism: out_n and dx_n come from one GEMM and one col2im per image, so their values do
 * not depend on the thread count.  dW^T and db are accumulated per *block* of images (blocks
 * fixed by the caller, not by the thread count) into dwt_parts / db_parts, which the caller
 * sums in block order.
 */

/* C = alpha * op(A) @ op(B) + beta * C on row-major matrices, through the BLAS's cblas_?gemm. */
static void MC_FN(gemm)(const mc_blas *blas, int trans_a, int trans_b, int64_t m, int64_t n,
                        int64_t k, REAL alpha, const REAL *a, int64_t lda, const REAL *b,
                        int64_t ldb, REAL beta, REAL *c, int64_t ldc)
{
    const int ta = trans_a ? MC_CBLAS_TRANS : MC_CBLAS_NO_TRANS;
    const int tb = trans_b ? MC_CBLAS_TRANS : MC_CBLAS_NO_TRANS;
    if (blas->ilp64) {
        typedef void (*gemm64)(int, int, int, int64_t, int64_t, int64_t, REAL, const REAL *,
                               int64_t, const REAL *, int64_t, REAL, REAL *, int64_t);
        ((gemm64)blas->MC_GEMM)(MC_CBLAS_ROW_MAJOR, ta, tb, m, n, k, alpha, a, lda, b, ldb,
                                beta, c, ldc);
    } else {
        typedef void (*gemm32)(int, int, int, int32_t, int32_t, int32_t, REAL, const REAL *,
                               int32_t, const REAL *, int32_t, REAL, REAL *, int32_t);
        ((gemm32)blas->MC_GEMM)(MC_CBLAS_ROW_MAJOR, ta, tb, (int32_t)m, (int32_t)n, (int32_t)k,
                                alpha, a, (int32_t)lda, b, (int32_t)ldb, beta, c,
                                (int32_t)ldc);
    }
}

/* C (m, n) = op(A) @ op(B), split into one panel per thread along its longer side, each panel
 * one single-threaded BLAS call (for the linear layers, so that no BLAS thread pool runs beside
 * the kernels' OpenMP threads).  The split only decides which thread computes an element, not
 * how its K-long dot product is summed, so the thread count does not change the result
 * (tests/test_elementwise_kernels.py checks 1 against 2 threads). */
void MC_FN(mc_matmul)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const REAL *a,
                      int64_t lda, const REAL *b, int64_t ldb, REAL *c, int64_t ldc,
                      const mc_blas *blas, int num_threads)
{
    const int split_rows = m > n;
    const int64_t side = split_rows ? m : n;
    const int nt = mc_threads(num_threads, (side + 15) / 16, m * n * k / 64);
    int t;
#pragma omp parallel for num_threads(nt) schedule(static, 1) if (nt > 1)
    for (t = 0; t < nt; t++) {
        /* panel [lo, hi) of the split side, in multiples of 16 */
        const int64_t lo = mc_min64(side, (side * t / nt + 15) / 16 * 16);
        const int64_t hi = t == nt - 1 ? side : mc_min64(side, (side * (t + 1) / nt + 15) / 16 * 16);
        if (hi <= lo) continue;
        if (split_rows)        /* rows lo..hi of C: rows of A, or columns of A^T */
            MC_FN(gemm)(blas, trans_a, trans_b, hi - lo, n, k, 1, a + (trans_a ? lo : lo * lda),
                        lda, b, ldb, 0, c + lo * ldc, ldc);
        else                   /* columns lo..hi of C: columns of B, or rows of B^T */
            MC_FN(gemm)(blas, trans_a, trans_b, m, hi - lo, k, 1, a, lda,
                        b + (trans_b ? lo * ldb : lo), ldb, 0, c + lo, ldc);
    }
}

/* cols (K, L) = im2col of one image x_n (C, H, W). */
static void MC_FN(image_im2col)(const REAL *x_n, REAL *cols, const mc_geom *g)
{
    const int64_t plane_in = g->h * g->w, L = g->oh * g->ow, kk = g->kh * g->kw;
    for (int64_t c = 0; c < g->c; c++)
        MC_FN(im2col_plane)(x_n + c * plane_in, cols + c * kk * L, L, g);
}

/* dx_n (C, H, W) = col2im of one image's column gradient (K, L). */
static void MC_FN(image_col2im)(const REAL *cols, REAL *dx_n, const mc_geom *g)
{
    const int64_t plane_in = g->h * g->w, L = g->oh * g->ow, kk = g->kh * g->kw;
    for (int64_t c = 0; c < g->c; c++)
        MC_FN(col2im_plane)(cols + c * kk * L, L, dx_n + c * plane_in, g);
}

void MC_FN(mc_conv_forward)(const REAL *x, const REAL *w, const REAL *bias, REAL *out,
                            REAL *work, int64_t f, const mc_geom *g, const mc_blas *blas,
                            int num_threads)
{
    const int64_t K = g->c * g->kh * g->kw, L = g->oh * g->ow, image_in = g->c * g->h * g->w;
    const int nt = mc_threads(num_threads, g->n, g->n * K * L);
    int64_t n;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        REAL *cols = work + (int64_t)mc_thread_id() * K * L;           /* X_n, (K, L) */
#pragma omp for schedule(dynamic, 1)
        for (n = 0; n < g->n; n++) {
            REAL *out_n = out + n * f * L;                              /* (F, L) */
            MC_FN(image_im2col)(x + n * image_in, cols, g);
            if (bias)
                for (int64_t i = 0; i < f; i++)
                    for (int64_t l = 0; l < L; l++) out_n[i * L + l] = bias[i];
            /* out_n = W @ X_n + out_n (bias) */
            MC_FN(gemm)(blas, 0, 0, f, L, K, 1, w, K, cols, L, bias ? 1 : 0, out_n, L);
        }
    }
}

/* Images [lo, hi) of block b: dwt_parts[b] = sum X_n @ D_n^T, db_parts[b] = sum D_n rows,
 * and dx_n = col2im(W^T @ D_n) when dx is not NULL.  One (K, L) buffer per thread serves
 * first W^T @ D_n, then X_n: one buffer, not two, competes for the core's L2 cache. */
void MC_FN(mc_conv_backward)(const REAL *x, const REAL *w, const REAL *dout, REAL *dx,
                             REAL *dwt_parts, REAL *db_parts, REAL *work, int64_t blocks,
                             int64_t f, const mc_geom *g, const mc_blas *blas, int num_threads)
{
    const int64_t K = g->c * g->kh * g->kw, L = g->oh * g->ow, image_in = g->c * g->h * g->w;
    const int nt = mc_threads(num_threads, blocks, g->n * K * L);
    int64_t b;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        REAL *cols = work + (int64_t)mc_thread_id() * K * L;           /* (K, L) */
#pragma omp for schedule(dynamic, 1)
        for (b = 0; b < blocks; b++) {
            const int64_t lo = b * g->n / blocks, hi = (b + 1) * g->n / blocks;
            REAL *dwt_b = dwt_parts + b * K * f, *db_b = db_parts + b * f;
            for (int64_t i = 0; i < f; i++) db_b[i] = 0;
            for (int64_t n = lo; n < hi; n++) {
                const REAL *d_n = dout + n * f * L;                    /* D_n, (F, L) */
                if (dx) {
                    /* cols = W^T @ D_n, then dx_n = col2im(cols) */
                    MC_FN(gemm)(blas, 1, 0, K, L, f, 1, w, K, d_n, L, 0, cols, L);
                    MC_FN(image_col2im)(cols, dx + n * image_in, g);
                }
                /* cols = X_n, then dwt_b = X_n @ D_n^T + (dwt_b, after the block's first image) */
                MC_FN(image_im2col)(x + n * image_in, cols, g);
                MC_FN(gemm)(blas, 0, 1, K, f, L, 1, cols, L, d_n, L, n > lo ? 1 : 0, dwt_b, f);
                for (int64_t i = 0; i < f; i++) {
                    double row_sum = 0;
                    for (int64_t l = 0; l < L; l++) row_sum += d_n[i * L + l];
                    db_b[i] += (REAL)row_sum;
                }
            }
            if (hi == lo)        /* only when a caller asks for more blocks than images */
                for (int64_t i = 0; i < K * f; i++) dwt_b[i] = 0;
        }
    }
}
