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

/* dst[0..n) = src[0..n).  memcpy for long rows; a plain loop for short ones (case C2 copies rows
 * of 10 values, where the call cost more than the copy; setup.py keeps GCC from turning the loop
 * back into a memcpy call). */
static MC_ALWAYS_INLINE void MC_FN(copy_row)(REAL *restrict dst, const REAL *restrict src, int64_t n)
{
    if (n >= 64) {
        memcpy(dst, src, (size_t)n * sizeof(REAL));
        return;
    }
    for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

static void MC_FN(im2col_plane)(const REAL *restrict x, REAL *restrict cols, int64_t row_stride,
                                const mc_geom *g)
{
    const int64_t H = g->h, W = g->w, OH = g->oh, OW = g->ow;
    if (g->sh == 1 && g->sw == 1 && OW == W) {
        MC_FN(im2col_plane_same)(x, cols, row_stride, g);
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
            for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                REAL *restrict dst = row + oh * OW;
                const REAL *restrict src = x + (oh * g->sh + i - g->ph) * W + (j - g->pw);
                for (int64_t ow = 0; ow < ow_lo; ow++) dst[ow] = 0;
                if (g->sw == 1) {
                    MC_FN(copy_row)(dst + ow_lo, src + ow_lo, ow_hi - ow_lo);
                } else {
                    const int64_t sw = g->sw;
                    for (int64_t ow = ow_lo; ow < ow_hi; ow++) dst[ow] = src[ow * sw];
                }
                for (int64_t ow = ow_hi; ow < OW; ow++) dst[ow] = 0;
            }
            if (oh_hi < OH) memset(row + oh_hi * OW, 0, (size_t)((OH - oh_hi) * OW) * sizeof(REAL));
        }
    }
}

void MC_FN(mc_im2col)(const REAL *x, REAL *cols, int64_t image_stride, int64_t row_stride,
                      const mc_geom *g, int num_threads)
{
    const int64_t planes = g->n * g->c, plane_in = g->h * g->w;
    const int64_t kk = g->kh * g->kw, plane_cols = kk * g->oh * g->ow;
    const int nt = mc_threads(num_threads, planes, planes * plane_cols);
    const int64_t chunk = mc_chunk(planes, nt);
    int64_t p;
#pragma omp parallel for num_threads(nt) schedule(dynamic, chunk) if (nt > 1)
    for (p = 0; p < planes; p++)
        MC_FN(im2col_plane)(x + p * plane_in,
                            cols + (p / g->c) * image_stride + (p % g->c) * kk * row_stride,
                            row_stride, g);
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
            for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                const REAL *restrict src = row + oh * OW;
                REAL *restrict dst = dx + (oh * g->sh + i - g->ph) * W + (j - g->pw);
                if (g->sw == 1) {
                    for (int64_t ow = ow_lo; ow < ow_hi; ow++) dst[ow] += src[ow];
                } else {
                    const int64_t sw = g->sw;
                    for (int64_t ow = ow_lo; ow < ow_hi; ow++) dst[ow * sw] += src[ow];
                }
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
