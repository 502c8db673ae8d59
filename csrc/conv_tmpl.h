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
 * The bias is a weight on a constant input: with X1_n = [X_n; 1], the columns plus a row of ones,
 * and W1 = [W | b],
 *
 *   out_n = W1 @ X1_n,   and   dW1^T = sum_n X1_n @ D_n^T = [dW^T; db^T]
 *
 * so b costs one more row in each GEMM instead of a pass over out (forward) and over dout
 * (backward); those passes took 15% of case A.  dW is computed transposed: OpenBLAS runs
 * X1_n @ D_n^T 1.2-1.5x faster than D_n @ X1_n^T for these shapes (few filters F, long rows L).
 * These products go to minicnn's own float32 kernels (small_gemm.c) where OpenBLAS would pack
 * every operand first (see layer_gemm).
 *
 * Why: the batched layer (im2col of a chunk of images, then one large multi-threaded GEMM)
 * hands the cores back and forth between the OpenMP and BLAS thread pools at every chunk,
 * and its column matrix (75 MB for case D) streams through memory twice.  Here each OpenMP
 * thread owns whole images from im2col to result, X_n never leaves the cache, and the backward
 * recomputes X_n from x instead of keeping all the columns.  The BLAS must be set to one
 * thread while this runs (the Cython wrapper does that).
 *
 * Determinism: out_n and dx_n come from one GEMM and one col2im per image, so their values do
 * not depend on the thread count.  dW1^T is accumulated per *block* of images (blocks fixed by
 * the caller, not by the thread count) into dw1t_parts, which the caller sums in block order.
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

/* small_gemm.c's nt kernel does not block for the caches: for every 4 rows of A it reads all of
 * B again, which is cheap only while both operands fit in the L2 cache together (A's and C1's
 * dW: 245 and 74 KB).  Larger products go to the BLAS, which blocks for the caches; case D's
 * direct dW (2.6 MB) ran as fast either way (benchmarks/NOTES.md, round 5), but a layer of
 * hundreds of channels would stream B from memory once per 4 rows of A. */
#define MC_OWN_NT_MAX_BYTES (512 * 1024)

/* The layer's own products: C (m, n) = A @ B, or A @ B^T when trans_b, [+ C when accumulate].
 * With blas->own_sgemm, float32 goes to minicnn's kernels (small_gemm.c), which skip the
 * packing that OpenBLAS's kernels other than SkylakeX's spend most of these products on. */
static void MC_FN(layer_gemm)(const mc_blas *blas, int trans_b, int64_t m, int64_t n, int64_t k,
                              const REAL *a, int64_t lda, const REAL *b, int64_t ldb,
                              int accumulate, REAL *c, int64_t ldc)
{
#if MC_OWN_SGEMM
    const int nt_fits = (m + n) * k * (int64_t)sizeof(REAL) <= MC_OWN_NT_MAX_BYTES;
    if (blas->own_sgemm && (!trans_b || nt_fits)) {
        mc_sgemm(trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
        return;
    }
#endif
    MC_FN(gemm)(blas, 0, trans_b, m, n, k, 1, a, lda, b, ldb, accumulate ? 1 : 0, c, ldc);
}

#if MC_OWN_SGEMM
/* C = A @ B (or A @ B^T) by layer_gemm, `repeat` times over: benchmarks/bench_gemm.py times the
 * layers' products on minicnn's kernels and on the BLAS this way, without Python between calls. */
void mc_layer_sgemm_repeat(const mc_blas *blas, int trans_b, int64_t m, int64_t n, int64_t k,
                           const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
                           int64_t ldc, int64_t repeat)
{
    for (int64_t r = 0; r < repeat; r++)
        MC_FN(layer_gemm)(blas, trans_b, m, n, k, a, lda, b, ldb, 0, c, ldc);
}
#endif

#define MC_MATMUL_MAX_PANELS 8

/* C (m, n) = op(A) @ op(B), split along its longer side into panels that the threads share,
 * each panel one single-threaded BLAS call (for the linear layers, so that no BLAS thread pool
 * runs beside the kernels' OpenMP threads).  There is one panel per processor of the machine
 * (up to MC_MATMUL_MAX_PANELS), whatever the thread count: OpenBLAS's Haswell kernel sums an
 * element in an order that depends on where it falls in the matrix it is handed, so panels cut
 * at other places (one per thread) changed the last bits of 2% of the elements between 1 and 2
 * threads (tests/test_elementwise_kernels.py).  Fixed narrow panels (at least 64 wide, 8 of
 * them) cost 20% on a linear layer's (64, 4096) @ (4096, 512): every panel repacks A. */
void MC_FN(mc_matmul)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const REAL *a,
                      int64_t lda, const REAL *b, int64_t ldb, REAL *c, int64_t ldc,
                      const mc_blas *blas, int num_threads)
{
    const int split_rows = m > n;
    const int64_t side = split_rows ? m : n;
    /* panel width: side / processors (at most MC_MATMUL_MAX_PANELS), rounded up to a multiple
     * of 16; a container may see many more processors than it may use */
    const int64_t panels_wanted = mc_min64(mc_num_procs(), MC_MATMUL_MAX_PANELS);
    const int64_t width = mc_ceil_div(mc_ceil_div(side, panels_wanted), 16) * 16;
    const int64_t panels = mc_ceil_div(side, width);
    const int nt = mc_threads(num_threads, panels, m * n * k / 64);
    int64_t p;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (p = 0; p < panels; p++) {
        /* panel [lo, hi) of the split side */
        const int64_t lo = p * width, hi = mc_min64(side, lo + width);
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

/* at (cols, rows) = a (rows, cols) transposed, eight rows of a at a time: each row of at then
 * receives eight neighbouring values per visit (2-4x faster than one value per visit). */
static void MC_FN(transpose)(const REAL *restrict a, int64_t rows, int64_t cols, REAL *restrict at)
{
    int64_t r0 = 0;
    for (; r0 + 8 <= rows; r0 += 8)
        for (int64_t c = 0; c < cols; c++)
            for (int64_t i = 0; i < 8; i++) at[c * rows + r0 + i] = a[(r0 + i) * cols + c];
    for (int64_t r = r0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) at[c * rows + r] = a[r * cols + c];
}

/* dW1^T += [X_n; 1] @ D_n^T takes D_n (F, L) as a transposed operand, which OpenBLAS packs.
 * For short rows it is faster to transpose D_n first and multiply plainly: L = 100 (case C2),
 * 122 against 92 GFLOP/s per thread; L = 256, 135 against 120.  For long rows the packing path
 * won: L = 1024 (case A), 127 against 116; L = 576 (C1), 111 against 69.  minicnn's own kernels
 * split the same way: for long rows their dot-product kernel (nt) beats transposing D_n for
 * the nn kernel (case A: 16.9 against 6.5 + 12.5 microseconds per image). */
#define MC_DW_TRANSPOSE_MAX_L 256

static int64_t MC_FN(dout_t_elems)(int64_t f, int64_t L)
{
    return L <= MC_DW_TRANSPOSE_MAX_L ? L * f : 0;
}

/* Scratch of the fused layer, in values: W1 = [W | b] (F, K+1) for the forward, W^T for the
 * backward, then per thread a (K+1, L) buffer and, for short rows, a D_n^T (L, F) buffer. */
int64_t MC_FN(mc_conv_work_elems)(int64_t f, const mc_geom *g, int num_threads)
{
    const int64_t K1 = g->c * g->kh * g->kw + 1, L = g->oh * g->ow;
    return f * K1 + (int64_t)num_threads * (K1 * L + MC_FN(dout_t_elems)(f, L));
}

/* Thread t's (K+1, L) buffer in work, with its last row set to ones: [X_n; 1]; its D_n^T buffer
 * follows it. */
static REAL *MC_FN(thread_cols)(REAL *work, int64_t f, int64_t K, int64_t L)
{
    const int64_t per_thread = (K + 1) * L + MC_FN(dout_t_elems)(f, L);
    REAL *cols = work + f * (K + 1) + (int64_t)mc_thread_id() * per_thread;
    for (int64_t l = 0; l < L; l++) cols[K * L + l] = 1;
    return cols;
}

void MC_FN(mc_conv_forward)(const REAL *x, const REAL *w, const REAL *bias, REAL *out,
                            REAL *work, int64_t f, const mc_geom *g, const mc_blas *blas,
                            int num_threads)
{
    const int64_t K = g->c * g->kh * g->kw, L = g->oh * g->ow, image_in = g->c * g->h * g->w;
    const int nt = mc_threads(num_threads, g->n, g->n * K * L);
    /* with a bias, out_n = [W | b] @ [X_n; 1]: one GEMM over K+1 rows, no separate bias pass */
    const int64_t k_used = bias ? K + 1 : K;
    REAL *w1 = work;
    if (bias)
        for (int64_t i = 0; i < f; i++) {
            memcpy(w1 + i * (K + 1), w + i * K, (size_t)K * sizeof(REAL));
            w1[i * (K + 1) + K] = bias[i];
        }
    int64_t n;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        REAL *cols = MC_FN(thread_cols)(work, f, K, L);                /* [X_n; 1], (K+1, L) */
#pragma omp for schedule(dynamic, 1)
        for (n = 0; n < g->n; n++) {
            MC_FN(image_im2col)(x + n * image_in, cols, g);
            MC_FN(layer_gemm)(blas, 0, f, L, k_used, bias ? w1 : w, k_used, cols, L, 0,
                              out + n * f * L, L);
        }
    }
}

/* Images [lo, hi) of block b: dw1t_parts[b] = sum [X_n; 1] @ D_n^T, a (K+1, F) matrix whose
 * last row is sum_n D_n @ 1 = the block's db, and dx_n = col2im(W^T @ D_n) when dx is not NULL.
 * One buffer per thread serves first W^T @ D_n (its first K rows), then [X_n; 1]: one buffer,
 * not two, competes for the core's L2 cache. */
void MC_FN(mc_conv_backward)(const REAL *x, const REAL *w, const REAL *dout, REAL *dx,
                             REAL *dw1t_parts, REAL *work, int64_t blocks, int64_t f,
                             const mc_geom *g, const mc_blas *blas, int num_threads)
{
    const int64_t K = g->c * g->kh * g->kw, L = g->oh * g->ow, image_in = g->c * g->h * g->w;
    const int nt = mc_threads(num_threads, blocks, g->n * K * L);
    /* W^T (K, F), stored transposed (in the room of W1): for a transposed operand OpenBLAS
     * packs instead of taking its small-matrix kernel (case C2: a fifth of fwd + bwd) */
    REAL *wt = work;
    MC_FN(transpose)(w, f, K, wt);
    int64_t b;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        REAL *cols = MC_FN(thread_cols)(work, f, K, L);                /* (K+1, L) */
        REAL *d_t = cols + (K + 1) * L;               /* D_n^T (L, F), when L is short */
#pragma omp for schedule(dynamic, 1)
        for (b = 0; b < blocks; b++) {
            const int64_t lo = b * g->n / blocks, hi = (b + 1) * g->n / blocks;
            REAL *dw1t_b = dw1t_parts + b * (K + 1) * f;
            for (int64_t n = lo; n < hi; n++) {
                const REAL *d_n = dout + n * f * L;                    /* D_n, (F, L) */
                if (dx) {
                    /* cols[:K] = W^T @ D_n, then dx_n = col2im(cols[:K]) */
                    MC_FN(layer_gemm)(blas, 0, K, L, f, wt, f, d_n, L, 0, cols, L);
                    MC_FN(image_col2im)(cols, dx + n * image_in, g);
                }
                /* cols[:K] = X_n, then dw1t_b = [X_n; 1] @ D_n^T + (dw1t_b, after the first image) */
                MC_FN(image_im2col)(x + n * image_in, cols, g);
                if (L <= MC_DW_TRANSPOSE_MAX_L) {
                    MC_FN(transpose)(d_n, f, L, d_t);
                    MC_FN(layer_gemm)(blas, 0, K + 1, f, L, cols, L, d_t, f, n > lo, dw1t_b, f);
                } else {
                    MC_FN(layer_gemm)(blas, 1, K + 1, f, L, cols, L, d_n, L, n > lo, dw1t_b, f);
                }
            }
            if (hi == lo)        /* only when a caller asks for more blocks than images */
                for (int64_t i = 0; i < (K + 1) * f; i++) dw1t_b[i] = 0;
        }
    }
}
