/* minicnn's own single-precision GEMM for the small per-image products of the conv layers
 * (conv_tmpl.h, winograd_tmpl.h), in AVX-512.
 *
 *   mc_sgemm, nn:  C (m, n) = A (m, k) @ B (k, n)      [C + when accumulate]
 *   mc_sgemm, nt:  C (m, n) = A (m, k) @ B (n, k)^T    [C + when accumulate]  (trans_b)
 *
 * all row-major with leading dimensions lda, ldb, ldc.
 *
 * Why: a layer multiplies, for every image, a few filters by a short column matrix: case A's
 * forward is (32, 28) @ (28, 1024), C2's is (16, 151) @ (151, 100), and Winograd's products in
 * case B are (64, 32) @ (32, 72).  Before its kernel runs, OpenBLAS copies ("packs") both
 * operands into its own layout, which for products this small costs about as much as the
 * product; only its AVX-512 targets (SkylakeX and later) have "direct" small-matrix kernels that
 * skip the packing.  With OPENBLAS_CORETYPE=Haswell, one core ran these products at 24-102
 * GFLOP/s; these kernels run them at 83-165, about what OpenBLAS's SkylakeX kernels reach
 * (benchmarks/NOTES.md, round 5).  minicnn.kernels turns them on where the CPU has AVX-512 and
 * NumPy's OpenBLAS has no small-matrix kernels.
 *
 * nn, in tiles of 8 rows x 32 columns of C, the tile held in 16 vector registers:
 *
 *     for p in k0..k0+256:  C[i, j:j+32] += A[i, p] * B[p, j:j+32]     for the tile's 8 rows i
 *
 * two vector loads of B's row p serve 16 fused multiply-adds.  A tile of 16 columns and masked
 * loads and stores take the edges; k goes in blocks of 256, so that the panel of B the row
 * tiles share stays in L1.  The 16 sums are named variables, spelled out by macros, not an array
 * `acc[8][2]`: GCC 12 kept such an array on the stack and stored it at every step of p (65
 * GFLOP/s instead of 111-153).
 *
 * nt, in tiles of 4 x 4 elements of C, each a dot product of a row of A and a row of B, 16
 * products at a time in one vector register per element; the 16 lanes are summed at the end.
 * For long rows: the weight gradient of cases A and C1 (k = L = 1024 or 576), where
 * transposing B for the nn kernel would cost more than the product saves.
 *
 * Each element of C is summed in an order fixed by k alone, whatever tile it falls in (nn: one
 * chain of fused multiply-adds over p, starting from C when accumulating; nt: 16 lane sums, then
 * those), so a layer's results still do not depend on the thread count.  Without AVX-512
 * (another CPU, or a compiler other than GCC or Clang on x86-64) the plain loops at the end of
 * this file serve; minicnn.kernels does not turn these kernels on there.
 */
#include "mc_common.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MC_HAVE_AVX512_GEMM 1
#include <immintrin.h>
#define MC_AVX512 __attribute__((target("avx512f")))

int mc_sgemm_avx512_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
}

/* lanes [0, n) of a 16-lane vector, for loads and stores at the edges */
static inline __mmask16 mc_lanes(int64_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* Row r of a tile of `rows` rows starting at `a`: rows past the edge read row 0 again, and
 * their results are not stored (it keeps the loops free of row tests). */
#define MC_TILE_ROW(a, r, rows, ld) ((a) + ((r) < (rows) ? (r) : 0) * (ld))

/* nn: one FMA step of tile row r, C[r, :32] += A[r, p] * B[p, :32] */
#define MC_NN_STEP2(r)                                                                  \
    av = _mm512_set1_ps(a##r[p]);                                                        \
    acc##r##0 = _mm512_fmadd_ps(av, b0, acc##r##0);                                      \
    acc##r##1 = _mm512_fmadd_ps(av, b1, acc##r##1);
#define MC_NN_STEP1(r)                                                                  \
    av = _mm512_set1_ps(a##r[p]);                                                        \
    acc##r##0 = _mm512_fmadd_ps(av, b0, acc##r##0);

/* the tile's rows of A and of C */
#define MC_NN_ROWS                                                                      \
    const float *a0 = MC_TILE_ROW(a, 0, rows, lda), *a1 = MC_TILE_ROW(a, 1, rows, lda),  \
                *a2 = MC_TILE_ROW(a, 2, rows, lda), *a3 = MC_TILE_ROW(a, 3, rows, lda),  \
                *a4 = MC_TILE_ROW(a, 4, rows, lda), *a5 = MC_TILE_ROW(a, 5, rows, lda),  \
                *a6 = MC_TILE_ROW(a, 6, rows, lda), *a7 = MC_TILE_ROW(a, 7, rows, lda);  \
    const float *c0 = MC_TILE_ROW(c, 0, rows, ldc), *c1 = MC_TILE_ROW(c, 1, rows, ldc),  \
                *c2 = MC_TILE_ROW(c, 2, rows, ldc), *c3 = MC_TILE_ROW(c, 3, rows, ldc),  \
                *c4 = MC_TILE_ROW(c, 4, rows, ldc), *c5 = MC_TILE_ROW(c, 5, rows, ldc),  \
                *c6 = MC_TILE_ROW(c, 6, rows, ldc), *c7 = MC_TILE_ROW(c, 7, rows, ldc);

/* tile row r's sums (vector v, at column offset) start from C when from_c, else from zero */
#define MC_NN_START(r, v, offset, lanes)                                                \
    acc##r##v = from_c ? _mm512_maskz_loadu_ps(lanes, c##r + (offset)) : _mm512_setzero_ps();

/* C[:rows, :cols] = (C[:rows, :cols] if from_c, else 0) + A[:rows, :] @ B[:, :cols], for
 * rows <= 8 and 16 < cols <= 32 */
static MC_AVX512 void mc_nn_tile_8x32(int rows, int64_t cols, int64_t k, const float *a,
                                      int64_t lda, const float *b, int64_t ldb, float *c,
                                      int64_t ldc, int from_c)
{
    MC_NN_ROWS
    const __mmask16 lanes0 = mc_lanes(cols), lanes1 = mc_lanes(cols - 16);
    __m512 acc00, acc01, acc10, acc11, acc20, acc21, acc30, acc31, acc40, acc41, acc50, acc51,
           acc60, acc61, acc70, acc71;
    MC_NN_START(0, 0, 0, lanes0) MC_NN_START(0, 1, 16, lanes1)
    MC_NN_START(1, 0, 0, lanes0) MC_NN_START(1, 1, 16, lanes1)
    MC_NN_START(2, 0, 0, lanes0) MC_NN_START(2, 1, 16, lanes1)
    MC_NN_START(3, 0, 0, lanes0) MC_NN_START(3, 1, 16, lanes1)
    MC_NN_START(4, 0, 0, lanes0) MC_NN_START(4, 1, 16, lanes1)
    MC_NN_START(5, 0, 0, lanes0) MC_NN_START(5, 1, 16, lanes1)
    MC_NN_START(6, 0, 0, lanes0) MC_NN_START(6, 1, 16, lanes1)
    MC_NN_START(7, 0, 0, lanes0) MC_NN_START(7, 1, 16, lanes1)
    for (int64_t p = 0; p < k; p++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(lanes0, b + p * ldb);
        const __m512 b1 = _mm512_maskz_loadu_ps(lanes1, b + p * ldb + 16);
        __m512 av;
        MC_NN_STEP2(0) MC_NN_STEP2(1) MC_NN_STEP2(2) MC_NN_STEP2(3)
        MC_NN_STEP2(4) MC_NN_STEP2(5) MC_NN_STEP2(6) MC_NN_STEP2(7)
    }
    const __m512 tile[8][2] = {{acc00, acc01}, {acc10, acc11}, {acc20, acc21}, {acc30, acc31},
                               {acc40, acc41}, {acc50, acc51}, {acc60, acc61}, {acc70, acc71}};
    for (int r = 0; r < rows; r++) {
        _mm512_mask_storeu_ps(c + r * ldc, lanes0, tile[r][0]);
        _mm512_mask_storeu_ps(c + r * ldc + 16, lanes1, tile[r][1]);
    }
}

/* The same for rows <= 8 and cols <= 16. */
static MC_AVX512 void mc_nn_tile_8x16(int rows, int64_t cols, int64_t k, const float *a,
                                      int64_t lda, const float *b, int64_t ldb, float *c,
                                      int64_t ldc, int from_c)
{
    MC_NN_ROWS
    const __mmask16 lanes0 = mc_lanes(cols);
    __m512 acc00, acc10, acc20, acc30, acc40, acc50, acc60, acc70;
    MC_NN_START(0, 0, 0, lanes0) MC_NN_START(1, 0, 0, lanes0)
    MC_NN_START(2, 0, 0, lanes0) MC_NN_START(3, 0, 0, lanes0)
    MC_NN_START(4, 0, 0, lanes0) MC_NN_START(5, 0, 0, lanes0)
    MC_NN_START(6, 0, 0, lanes0) MC_NN_START(7, 0, 0, lanes0)
    for (int64_t p = 0; p < k; p++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(lanes0, b + p * ldb);
        __m512 av;
        MC_NN_STEP1(0) MC_NN_STEP1(1) MC_NN_STEP1(2) MC_NN_STEP1(3)
        MC_NN_STEP1(4) MC_NN_STEP1(5) MC_NN_STEP1(6) MC_NN_STEP1(7)
    }
    const __m512 tile[8] = {acc00, acc10, acc20, acc30, acc40, acc50, acc60, acc70};
    for (int r = 0; r < rows; r++) _mm512_mask_storeu_ps(c + r * ldc, lanes0, tile[r]);
}

/* Rows of B per pass: a panel of B, MC_NN_K_BLOCK x 32 values (32 KiB), stays in L1 while the
 * row tiles pass over it.  Unblocked, k = 577 (case D's direct route) ran at 73 GFLOP/s. */
#define MC_NN_K_BLOCK 256

static MC_AVX512 void mc_sgemm_nn_avx512(int64_t m, int64_t n, int64_t k, const float *a,
                                         int64_t lda, const float *b, int64_t ldb, float *c,
                                         int64_t ldc, int accumulate)
{
    int64_t k0 = 0;
    do {        /* once at least, so that k = 0 gives C = 0 (or leaves C) */
        const int64_t kb = mc_min64(k - k0, MC_NN_K_BLOCK);
        /* later passes go on with the sums in C: each element is still one chain over p */
        const int from_c = accumulate || k0 > 0;
        for (int64_t j = 0; j < n; j += 32) {        /* one panel of B serves all row tiles */
            const int64_t cols = mc_min64(n - j, 32);
            for (int64_t i = 0; i < m; i += 8) {
                const int rows = (int)mc_min64(m - i, 8);
                if (cols > 16)
                    mc_nn_tile_8x32(rows, cols, kb, a + i * lda + k0, lda, b + k0 * ldb + j, ldb,
                                    c + i * ldc + j, ldc, from_c);
                else
                    mc_nn_tile_8x16(rows, cols, kb, a + i * lda + k0, lda, b + k0 * ldb + j, ldb,
                                    c + i * ldc + j, ldc, from_c);
            }
        }
        k0 += MC_NN_K_BLOCK;
    } while (k0 < k);
}

/* nt: c_rs += the products of 16 neighbouring values of A's row r and B's row s */
#define MC_DOT(r, s) c##r##s = _mm512_fmadd_ps(x##r, y##s, c##r##s);

/* One step of the 4 x 4 dot products: 16 values of each row from p on, read by LOAD */
#define MC_NT_STEP(LOAD)                                                                \
    {                                                                                    \
        const __m512 x0 = LOAD(a0 + p), x1 = LOAD(a1 + p), x2 = LOAD(a2 + p),            \
                     x3 = LOAD(a3 + p);                                                  \
        const __m512 y0 = LOAD(b0 + p), y1 = LOAD(b1 + p), y2 = LOAD(b2 + p),            \
                     y3 = LOAD(b3 + p);                                                  \
        MC_DOT(0, 0) MC_DOT(0, 1) MC_DOT(0, 2) MC_DOT(0, 3)                               \
        MC_DOT(1, 0) MC_DOT(1, 1) MC_DOT(1, 2) MC_DOT(1, 3)                               \
        MC_DOT(2, 0) MC_DOT(2, 1) MC_DOT(2, 2) MC_DOT(2, 3)                               \
        MC_DOT(3, 0) MC_DOT(3, 1) MC_DOT(3, 2) MC_DOT(3, 3)                               \
    }
#define MC_LOAD_ALL(ptr) _mm512_loadu_ps(ptr)
#define MC_LOAD_LAST(ptr) _mm512_maskz_loadu_ps(last, ptr)

/* C[:rows, :cols] (+)= A[:rows, :] @ B[:cols, :]^T, rows, cols <= 4 */
static MC_AVX512 void mc_nt_tile_4x4(int rows, int cols, int64_t k, const float *a, int64_t lda,
                                     const float *b, int64_t ldb, float *c, int64_t ldc,
                                     int accumulate)
{
    const float *a0 = MC_TILE_ROW(a, 0, rows, lda), *a1 = MC_TILE_ROW(a, 1, rows, lda),
                *a2 = MC_TILE_ROW(a, 2, rows, lda), *a3 = MC_TILE_ROW(a, 3, rows, lda);
    const float *b0 = MC_TILE_ROW(b, 0, cols, ldb), *b1 = MC_TILE_ROW(b, 1, cols, ldb),
                *b2 = MC_TILE_ROW(b, 2, cols, ldb), *b3 = MC_TILE_ROW(b, 3, cols, ldb);
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00,
           c12 = c00, c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00,
           c31 = c00, c32 = c00, c33 = c00;
    /* whole steps with plain loads, then the last k % 16 values with masked ones (masked loads
     * in every step ran A's dW at 104-108 GFLOP/s, plain ones at 134-140) */
    int64_t p = 0;
    for (; p + 16 <= k; p += 16) MC_NT_STEP(MC_LOAD_ALL)
    if (p < k) {
        const __mmask16 last = mc_lanes(k - p);
        MC_NT_STEP(MC_LOAD_LAST)
    }
    const __m512 tile[4][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13},
                               {c20, c21, c22, c23}, {c30, c31, c32, c33}};
    for (int r = 0; r < rows; r++)
        for (int s = 0; s < cols; s++) {
            const float dot = _mm512_reduce_add_ps(tile[r][s]);      /* the 16 lanes' sum */
            c[r * ldc + s] = accumulate ? c[r * ldc + s] + dot : dot;
        }
}

static MC_AVX512 void mc_sgemm_nt_avx512(int64_t m, int64_t n, int64_t k, const float *a,
                                         int64_t lda, const float *b, int64_t ldb, float *c,
                                         int64_t ldc, int accumulate)
{
    /* rows of A outside: a tile's 4 rows of A stay in L1 while B's rows stream past */
    for (int64_t i = 0; i < m; i += 4)
        for (int64_t j = 0; j < n; j += 4)
            mc_nt_tile_4x4((int)mc_min64(m - i, 4), (int)mc_min64(n - j, 4), k, a + i * lda, lda,
                           b + j * ldb, ldb, c + i * ldc + j, ldc, accumulate);
}

#else
#define MC_HAVE_AVX512_GEMM 0

int mc_sgemm_avx512_supported(void) { return 0; }
#endif

/* The plain loops: the formulas above, element by element, summed in the same order as the
 * kernels (nn from C, nt then added to C), and the fallback without AVX-512. */
static void mc_sgemm_nn_loops(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                              const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float sum = accumulate ? c[i * ldc + j] : 0;
            for (int64_t p = 0; p < k; p++) sum += a[i * lda + p] * b[p * ldb + j];
            c[i * ldc + j] = sum;
        }
}

static void mc_sgemm_nt_loops(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                              const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float sum = 0;
            for (int64_t p = 0; p < k; p++) sum += a[i * lda + p] * b[j * ldb + p];
            c[i * ldc + j] = accumulate ? c[i * ldc + j] + sum : sum;
        }
}

void mc_sgemm_loops(int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                    const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate)
{
    if (trans_b)
        mc_sgemm_nt_loops(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
    else
        mc_sgemm_nn_loops(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}

void mc_sgemm(int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
              const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate)
{
#if MC_HAVE_AVX512_GEMM
    if (__builtin_cpu_supports("avx512f")) {
        if (trans_b)
            mc_sgemm_nt_avx512(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
        else
            mc_sgemm_nn_avx512(m, n, k, a, lda, b, ldb, c, ldc, accumulate);
        return;
    }
#endif
    mc_sgemm_loops(trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}
