/* im2col / col2im for one element type.  Included by im2col.c with REAL and MC_FN defined.
 *
 *   cols[n, (c*KH + i)*KW + j, oh*OW + ow] = x_pad[n, c, oh*SH + i, ow*SW + j]
 *
 * cols may be laid out with any strides (in elements) between images and between rows, as long
 * as each row of L values is contiguous: row r of image n starts at n*image_stride + r*row_stride.
 * The usual (N, K, L) array has image_stride = K*L, row_stride = L; the "K-major" (K, N, L)
 * buffer that functional.conv multiplies in one GEMM has image_stride = L, row_stride = N*L.
 *
 * Both loops run over (n, c) planes in parallel: plane p = n*C + c reads x[n, c] and owns the
 * KH*KW rows (c*KH + i)*KW + j of image n, so the threads touch disjoint memory (the wrapper
 * checks that rows of different planes cannot overlap).
 */

/* Stride 1 and OW == W ("same" width, e.g. 3x3 with padding 1): row (i, j) of cols is the plane
 * shifted by (i - PH, j - PW), so its valid output rows are one contiguous block copy, after
 * which the few cells that wrapped around a row edge are zeroed.  One memcpy per (i, j) instead
 * of one per output row. */
static void MC_FN(im2col_plane_same)(const REAL *restrict x, REAL *restrict cols,
                                     int64_t row_stride, const mc_geom *g)
{
    const int64_t H = g->h, W = g->w, OH = g->oh, OW = g->ow, HW = H * W;
    for (int64_t i = 0; i < g->kh; i++) {
        int64_t oh_lo, oh_hi;
        mc_valid_range(H, OH, 1, i, g->ph, &oh_lo, &oh_hi);
        for (int64_t j = 0; j < g->kw; j++) {
            REAL *restrict row = cols + (i * g->kw + j) * row_stride;
            int64_t ow_lo, ow_hi;
            mc_valid_range(W, OW, 1, j, g->pw, &ow_lo, &ow_hi);
            if (oh_lo > 0) memset(row, 0, (size_t)(oh_lo * OW) * sizeof(REAL));
            if (oh_hi > oh_lo) {
                /* cell l = oh*OW + ow of the block reads x[l + shift]; clip to the plane */
                const int64_t shift = (i - g->ph) * W + (j - g->pw);
                const int64_t lo = oh_lo * OW, hi = oh_hi * OW;
                /* lo <= copy_lo <= copy_hi <= hi */
                const int64_t copy_lo = mc_min64(mc_max64(lo, -shift), hi);
                const int64_t copy_hi = mc_max64(mc_min64(hi, HW - shift), copy_lo);
                if (copy_hi > copy_lo)
                    memcpy(row + copy_lo, x + copy_lo + shift,
                           (size_t)(copy_hi - copy_lo) * sizeof(REAL));
                for (int64_t l = lo; l < copy_lo; l++) row[l] = 0;
                for (int64_t l = copy_hi; l < hi; l++) row[l] = 0;
                if (ow_lo > 0 || ow_hi < OW) {
                    for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                        REAL *restrict dst = row + oh * OW;
                        for (int64_t ow = 0; ow < ow_lo; ow++) dst[ow] = 0;
                        for (int64_t ow = ow_hi; ow < OW; ow++) dst[ow] = 0;
                    }
                }
            }
            if (oh_hi < OH) memset(row + oh_hi * OW, 0, (size_t)((OH - oh_hi) * OW) * sizeof(REAL));
        }
    }
}

/* dst[0..n) = src[0..n).  memcpy for long rows.  Short rows (case C2 copies rows of 10 values)
 * go 16 bytes at a time, the last 16 bytes overlapping the ones before instead of a scalar
 * tail; a call to memcpy cost more than such a copy.  (setup.py keeps GCC from turning the
 * loop for tiny rows back into a memcpy call.) */
static MC_ALWAYS_INLINE void MC_FN(copy_row)(REAL *restrict dst, const REAL *restrict src, int64_t n)
{
    const size_t bytes = (size_t)n * sizeof(REAL);
    char *restrict d = (char *)dst;
    const char *restrict s = (const char *)src;
    if (bytes >= 256) {
        memcpy(d, s, bytes);
    } else if (bytes >= 16) {
        for (size_t i = 0; i + 16 <= bytes; i += 16) memcpy(d + i, s + i, 16);
        memcpy(d + bytes - 16, s + bytes - 16, 16);
    } else {
        for (int64_t i = 0; i < n; i++) dst[i] = src[i];
    }
}

/* A strided block copy: dst[r*dst_stride + c] = src[r*src_stride + c], r < rows, c < n.  Its
 * own function, so that the copy loop does not compete with im2col's loop variables for
 * registers (inlined, they spilled to the stack). */
static void MC_FN(copy_block)(REAL *restrict dst, int64_t dst_stride, const REAL *restrict src,
                              int64_t src_stride, int64_t rows, int64_t n)
{
    for (int64_t r = 0; r < rows; r++)
        MC_FN(copy_row)(dst + r * dst_stride, src + r * src_stride, n);
}

/* Stride 1 and no padding ("valid", e.g. LeNet's 5x5): every window lies inside the plane, so
 * row (i, j) of cols is OH copies of OW values, with no edge cases to check. */
static void MC_FN(im2col_plane_valid)(const REAL *restrict x, REAL *restrict cols,
                                      int64_t row_stride, const mc_geom *g)
{
    const int64_t W = g->w, OH = g->oh, OW = g->ow;
    for (int64_t i = 0; i < g->kh; i++)
        for (int64_t j = 0; j < g->kw; j++)
            MC_FN(copy_block)(cols + (i * g->kw + j) * row_stride, OW, x + i * W + j, W, OH, OW);
}

static void MC_FN(im2col_plane)(const REAL *restrict x, REAL *restrict cols, int64_t row_stride,
                                const mc_geom *g)
{
    const int64_t H = g->h, W = g->w, OH = g->oh, OW = g->ow;
    if (g->sh == 1 && g->sw == 1 && OW == W) {
        MC_FN(im2col_plane_same)(x, cols, row_stride, g);
        return;
    }
    if (g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0) {
        MC_FN(im2col_plane_valid)(x, cols, row_stride, g);
        return;
    }
    for (int64_t i = 0; i < g->kh; i++) {
        int64_t oh_lo, oh_hi;
        mc_valid_range(H, OH, g->sh, i, g->ph, &oh_lo, &oh_hi);
        for (int64_t j = 0; j < g->kw; j++) {
            REAL *restrict row = cols + (i * g->kw + j) * row_stride;
            int64_t ow_lo, ow_hi;
            mc_valid_range(W, OW, g->sw, j, g->pw, &ow_lo, &ow_hi);
            if (oh_lo > 0) memset(row, 0, (size_t)(oh_lo * OW) * sizeof(REAL));
            /* output row oh reads input row oh*SH + i - PH, from column ow_lo*SW + j - PW */
            const REAL *src = x + (oh_lo * g->sh + i - g->ph) * W + (ow_lo * g->sw + j - g->pw);
            if (g->sw == 1)
                MC_FN(copy_block)(row + oh_lo * OW + ow_lo, OW, src, g->sh * W, oh_hi - oh_lo,
                                  ow_hi - ow_lo);
            for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                REAL *restrict dst = row + oh * OW;
                for (int64_t ow = 0; ow < ow_lo; ow++) dst[ow] = 0;
                if (g->sw > 1) {
                    const REAL *restrict src_row = src + (oh - oh_lo) * g->sh * W;
                    for (int64_t ow = ow_lo; ow < ow_hi; ow++) dst[ow] = src_row[(ow - ow_lo) * g->sw];
                }
                for (int64_t ow = ow_hi; ow < OW; ow++) dst[ow] = 0;
            }
            if (oh_hi < OH) memset(row + oh_hi * OW, 0, (size_t)((OH - oh_hi) * OW) * sizeof(REAL));
        }
    }
}

/* Static schedule: each thread writes one contiguous part of cols.  Into fresh memory (which
 * the OS zeroes, 2 MiB huge page by huge page, on the first write) dynamic chunks of 4.5 MiB
 * made case D's im2col on 2 threads take 6.6-10.1 ms against 6.1-6.5 with this schedule,
 * probably through the pages two threads' chunks share; into reused memory the two schedules
 * ran alike (benchmarks/NOTES.md, round 6). */
void MC_FN(mc_im2col)(const REAL *x, REAL *cols, int64_t image_stride, int64_t row_stride,
                      const mc_geom *g, int num_threads)
{
    const int64_t planes = g->n * g->c, plane_in = g->h * g->w;
    const int64_t kk = g->kh * g->kw, plane_cols = kk * g->oh * g->ow;
    const int nt = mc_threads(num_threads, planes, planes * plane_cols);
    int64_t p;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (p = 0; p < planes; p++)
        MC_FN(im2col_plane)(x + p * plane_in,
                            cols + (p / g->c) * image_stride + (p % g->c) * kk * row_stride,
                            row_stride, g);
}

/* dst[r*dst_stride + c] += src[r*src_stride + c], r < rows, c < n (rows of dst do not overlap).
 * Its own function for the same reason as copy_block. */
static void MC_FN(add_block)(REAL *restrict dst, int64_t dst_stride, const REAL *restrict src,
                             int64_t src_stride, int64_t rows, int64_t n)
{
    for (int64_t r = 0; r < rows; r++) {
        REAL *restrict d = dst + r * dst_stride;
        const REAL *restrict s = src + r * src_stride;
        for (int64_t c = 0; c < n; c++) d[c] += s[c];
    }
}

/* dx[n, c] = sum over (i, j) in row-major order of the windows' column values: the adjoint of
 * im2col.  Each plane of dx is zeroed and accumulated by one thread, in the same (i, j) order
 * as the NumPy kernel, so the sums are reproducible. */
static void MC_FN(col2im_plane)(const REAL *restrict cols, int64_t row_stride, REAL *restrict dx,
                                const mc_geom *g)
{
    const int64_t H = g->h, W = g->w, OH = g->oh, OW = g->ow;
    memset(dx, 0, (size_t)(H * W) * sizeof(REAL));
    for (int64_t i = 0; i < g->kh; i++) {
        int64_t oh_lo, oh_hi;
        mc_valid_range(H, OH, g->sh, i, g->ph, &oh_lo, &oh_hi);
        for (int64_t j = 0; j < g->kw; j++) {
            const REAL *restrict row = cols + (i * g->kw + j) * row_stride;
            int64_t ow_lo, ow_hi;
            mc_valid_range(W, OW, g->sw, j, g->pw, &ow_lo, &ow_hi);
            /* output row oh adds into input row oh*SH + i - PH, from column ow_lo*SW + j - PW */
            REAL *dst = dx + (oh_lo * g->sh + i - g->ph) * W + (ow_lo * g->sw + j - g->pw);
            const REAL *src = row + oh_lo * OW + ow_lo;
            if (g->sw == 1) {
                MC_FN(add_block)(dst, g->sh * W, src, OW, oh_hi - oh_lo, ow_hi - ow_lo);
                continue;
            }
            for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                REAL *restrict d = dst + (oh - oh_lo) * g->sh * W;
                const REAL *restrict s = src + (oh - oh_lo) * OW;
                for (int64_t ow = 0; ow < ow_hi - ow_lo; ow++) d[ow * g->sw] += s[ow];
            }
        }
    }
}

void MC_FN(mc_col2im)(const REAL *cols, int64_t image_stride, int64_t row_stride, REAL *dx,
                      const mc_geom *g, int num_threads)
{
    const int64_t planes = g->n * g->c, plane_in = g->h * g->w;
    const int64_t kk = g->kh * g->kw, plane_cols = kk * g->oh * g->ow;
    const int nt = mc_threads(num_threads, planes, planes * plane_cols);
    const int64_t chunk = mc_chunk(planes, nt);
    int64_t p;
#pragma omp parallel for num_threads(nt) schedule(dynamic, chunk) if (nt > 1)
    for (p = 0; p < planes; p++)
        MC_FN(col2im_plane)(cols + (p / g->c) * image_stride + (p % g->c) * kk * row_stride,
                            row_stride, dx + p * plane_in, g);
}
