/* Max- and average-pooling for one element type.  Included by pool.c with REAL and MC_FN defined.
 *
 *   max: out[n,c,oh,ow] = max over the window's real (unpadded) cells; argmax = h*W + w of the
 *        first maximum in row-major window order.  A NaN wins over numbers (the first NaN is
 *        kept), as NumPy's argmax does.
 *   avg: out[n,c,oh,ow] = (sum of the window's real cells) / (KH*KW)   (padding counts as zero)
 *
 * All loops run over whole (n, c) planes in parallel; the backward kernels zero a plane of dx and
 * accumulate it in one thread, so sums never race and never depend on the thread count.
 */

/* v replaces best: strictly greater, or the first NaN.  As one test: v is not <= best (greater,
 * or NaN) while best is a number (once best is NaN it stays). */
#define MC_BETTER(v, best) (!((v) <= (best)) && (best) == (best))

static inline void MC_FN(max_window)(const REAL *restrict x, int64_t W, int64_t h0, int64_t h1,
                                     int64_t w0, int64_t w1, REAL *restrict out,
                                     int32_t *restrict argmax)
{
    REAL best = x[h0 * W + w0];
    int64_t best_at = h0 * W + w0;
    for (int64_t h = h0; h < h1; h++) {
        for (int64_t w = w0; w < w1; w++) {
            const REAL v = x[h * W + w];
            if (MC_BETTER(v, best)) {
                best = v;
                best_at = h * W + w;
            }
        }
    }
    *out = best;
    *argmax = (int32_t)best_at;
}

/* Interior windows (no clipping) of one output row, columns [ow_lo, ow_hi): the window offsets
 * (i, j) are walked in row-major order in the outer loops and the output columns in the inner
 * loop, which the compiler turns into branch-free vector code (compare + blend).  Each output
 * still sees its cells in window order, so ties and NaNs resolve exactly as in max_window.
 * Inlined with a constant stride sw (1 or 2) so the strided loads vectorize too. */
static MC_ALWAYS_INLINE void MC_FN(max_row_interior)(
    const REAL *restrict x, int64_t W, int64_t h0, int64_t w_start, const int64_t sw,
    int64_t ow_lo, int64_t ow_hi, int64_t KH, int64_t KW, REAL *restrict out,
    int32_t *restrict argmax)
{
    const int32_t first = (int32_t)(h0 * W + w_start);
    const REAL *restrict row0 = x + first;
    for (int64_t ow = ow_lo; ow < ow_hi; ow++) {
        out[ow] = row0[ow * sw];
        argmax[ow] = first + (int32_t)(ow * sw);
    }
    for (int64_t i = 0; i < KH; i++) {
        for (int64_t j = (i == 0 ? 1 : 0); j < KW; j++) {
            const int32_t at = first + (int32_t)(i * W + j);
            const REAL *restrict src = x + at;
            for (int64_t ow = ow_lo; ow < ow_hi; ow++) {
                const REAL v = src[ow * sw], best = out[ow];
                const int better = !(v <= best) & (best == best);
                out[ow] = better ? v : best;
                argmax[ow] = better ? at + (int32_t)(ow * sw) : argmax[ow];
            }
        }
    }
}

/* Small fixed windows (2x2): one output per iteration with the window unrolled at compile time;
 * for this shape the compiler vectorizes this form better than the offset-major loop above. */
static MC_ALWAYS_INLINE void MC_FN(max_row_unrolled)(
    const REAL *restrict x, int64_t W, int64_t h0, int64_t w_start, const int64_t sw,
    int64_t ow_lo, int64_t ow_hi, const int64_t KH, const int64_t KW, REAL *restrict out,
    int32_t *restrict argmax)
{
    for (int64_t ow = ow_lo; ow < ow_hi; ow++) {
        const int64_t w0 = ow * sw + w_start;
        const REAL *restrict win = x + h0 * W + w0;
        REAL best = win[0];
        int64_t best_k = 0;   /* offset i*W + j of the winner inside the window */
        for (int64_t i = 0; i < KH; i++) {
            for (int64_t j = 0; j < KW; j++) {
                const REAL v = win[i * W + j];
                if (MC_BETTER(v, best)) {
                    best = v;
                    best_k = i * W + j;
                }
            }
        }
        out[ow] = best;
        argmax[ow] = (int32_t)(h0 * W + w0 + best_k);
    }
}

static void MC_FN(maxpool_plane)(const REAL *restrict x, REAL *restrict out,
                                 int32_t *restrict argmax, const mc_geom *g)
{
    const int64_t W = g->w, OW = g->ow;
    int64_t ow_lo, ow_hi;
    mc_interior_range(W, OW, g->kw, g->sw, g->pw, &ow_lo, &ow_hi);
    for (int64_t oh = 0; oh < g->oh; oh++) {
        int64_t h0, h1, lo, hi;
        mc_pool_row(g, oh, ow_lo, ow_hi, &h0, &h1, &lo, &hi);
        REAL *restrict out_row = out + oh * OW;
        int32_t *restrict am_row = argmax + oh * OW;
        for (int64_t ow = 0; ow < lo; ow++) {
            const int64_t ws = ow * g->sw - g->pw;
            MC_FN(max_window)(x, W, h0, h1, mc_max64(ws, 0), mc_min64(ws + g->kw, W),
                              out_row + ow, am_row + ow);
        }
        if (hi > lo) {
            if (g->kh == 2 && g->kw == 2 && g->sw == 2)
                MC_FN(max_row_unrolled)(x, W, h0, -g->pw, 2, lo, hi, 2, 2, out_row, am_row);
            else if (g->sw == 1)
                MC_FN(max_row_interior)(x, W, h0, -g->pw, 1, lo, hi, g->kh, g->kw, out_row, am_row);
            else if (g->sw == 2)
                MC_FN(max_row_interior)(x, W, h0, -g->pw, 2, lo, hi, g->kh, g->kw, out_row, am_row);
            else
                MC_FN(max_row_interior)(x, W, h0, -g->pw, g->sw, lo, hi, g->kh, g->kw, out_row,
                                        am_row);
        }
        for (int64_t ow = hi; ow < OW; ow++) {
            const int64_t ws = ow * g->sw - g->pw;
            MC_FN(max_window)(x, W, h0, h1, mc_max64(ws, 0), mc_min64(ws + g->kw, W),
                              out_row + ow, am_row + ow);
        }
    }
}

void MC_FN(mc_maxpool_forward)(const REAL *x, REAL *out, int32_t *argmax, const mc_geom *g,
                               int num_threads)
{
    const int64_t planes = g->n * g->c, plane_in = g->h * g->w, plane_out = g->oh * g->ow;
    const int nt = mc_threads(num_threads, planes, planes * (plane_in + plane_out));
    const int64_t chunk = mc_chunk(planes, nt);
    int64_t p;
#pragma omp parallel for num_threads(nt) schedule(dynamic, chunk) if (nt > 1)
    for (p = 0; p < planes; p++)
        MC_FN(maxpool_plane)(x + p * plane_in, out + p * plane_out, argmax + p * plane_out, g);
}

/* dx[n, c, argmax] += dout[n, c, :] plane by plane.  Indices outside [0, H*W) are skipped and
 * counted; the caller raises an error when the count is not zero. */
int64_t MC_FN(mc_maxpool_backward)(const REAL *dout, const int32_t *argmax, REAL *dx,
                                   const mc_geom *g, int num_threads)
{
    const int64_t planes = g->n * g->c, plane_in = g->h * g->w, plane_out = g->oh * g->ow;
    const int nt = mc_threads(num_threads, planes, planes * (plane_in + plane_out));
    const int64_t chunk = mc_chunk(planes, nt);
    int64_t bad = 0, p;
#pragma omp parallel for num_threads(nt) schedule(dynamic, chunk) if (nt > 1) reduction(+ : bad)
    for (p = 0; p < planes; p++) {
        const REAL *restrict d = dout + p * plane_out;
        const int32_t *restrict am = argmax + p * plane_out;
        REAL *restrict plane = dx + p * plane_in;
        memset(plane, 0, (size_t)plane_in * sizeof(REAL));
        for (int64_t k = 0; k < plane_out; k++) {
            const int64_t at = am[k];
            if (at < 0 || at >= plane_in) {
                bad++;
                continue;
            }
            plane[at] += d[k];
        }
    }
    return bad;
}

/* The sum of the window's real cells at rows [h0, h1), columns [w0, w1), in row-major order. */
static inline REAL MC_FN(window_sum)(const REAL *restrict x, int64_t W, int64_t h0, int64_t h1,
                                     int64_t w0, int64_t w1)
{
    REAL sum = 0;
    for (int64_t h = h0; h < h1; h++)
        for (int64_t w = w0; w < w1; w++) sum += x[h * W + w];
    return sum;
}

/* Interior windows of one output row, columns [ow_lo, ow_hi), as in max_row_interior: window
 * offsets (i, j) in the outer loops, output columns in the vectorized inner loop.  Each output
 * still adds its cells in row-major window order, the order of window_sum and of NumPy. */
static MC_ALWAYS_INLINE void MC_FN(avg_row_interior)(
    const REAL *restrict x, int64_t W, int64_t h0, int64_t w_start, const int64_t sw,
    int64_t ow_lo, int64_t ow_hi, int64_t KH, int64_t KW, REAL area, REAL *restrict out)
{
    const REAL *restrict row0 = x + h0 * W + w_start;
    for (int64_t ow = ow_lo; ow < ow_hi; ow++) out[ow] = row0[ow * sw];
    for (int64_t i = 0; i < KH; i++) {
        for (int64_t j = (i == 0 ? 1 : 0); j < KW; j++) {
            const REAL *restrict src = row0 + i * W + j;
            for (int64_t ow = ow_lo; ow < ow_hi; ow++) out[ow] += src[ow * sw];
        }
    }
    for (int64_t ow = ow_lo; ow < ow_hi; ow++) out[ow] /= area;
}

static void MC_FN(avgpool_plane)(const REAL *restrict x, REAL *restrict out, const mc_geom *g)
{
    const int64_t W = g->w, OW = g->ow;
    const REAL area = (REAL)(g->kh * g->kw);
    int64_t ow_lo, ow_hi;
    mc_interior_range(W, OW, g->kw, g->sw, g->pw, &ow_lo, &ow_hi);
    for (int64_t oh = 0; oh < g->oh; oh++) {
        int64_t h0, h1, lo, hi;
        mc_pool_row(g, oh, ow_lo, ow_hi, &h0, &h1, &lo, &hi);
        REAL *restrict out_row = out + oh * OW;
        for (int64_t ow = 0; ow < lo; ow++) {
            const int64_t ws = ow * g->sw - g->pw;
            out_row[ow] = MC_FN(window_sum)(x, W, h0, h1, mc_max64(ws, 0),
                                            mc_min64(ws + g->kw, W)) / area;
        }
        if (hi > lo) {
            if (g->sw == 1)
                MC_FN(avg_row_interior)(x, W, h0, -g->pw, 1, lo, hi, g->kh, g->kw, area, out_row);
            else if (g->sw == 2)
                MC_FN(avg_row_interior)(x, W, h0, -g->pw, 2, lo, hi, g->kh, g->kw, area, out_row);
            else
                MC_FN(avg_row_interior)(x, W, h0, -g->pw, g->sw, lo, hi, g->kh, g->kw, area,
                                        out_row);
        }
        for (int64_t ow = hi; ow < OW; ow++) {
            const int64_t ws = ow * g->sw - g->pw;
            out_row[ow] = MC_FN(window_sum)(x, W, h0, h1, mc_max64(ws, 0),
                                            mc_min64(ws + g->kw, W)) / area;
        }
    }
}

void MC_FN(mc_avgpool_forward)(const REAL *x, REAL *out, const mc_geom *g, int num_threads)
{
    const int64_t planes = g->n * g->c, plane_in = g->h * g->w, plane_out = g->oh * g->ow;
    const int nt = mc_threads(num_threads, planes, planes * (plane_in + plane_out));
    const int64_t chunk = mc_chunk(planes, nt);
    int64_t p;
#pragma omp parallel for num_threads(nt) schedule(dynamic, chunk) if (nt > 1)
    for (p = 0; p < planes; p++)
        MC_FN(avgpool_plane)(x + p * plane_in, out + p * plane_out, g);
}

/* dx[n, c, h, w] = sum over windows covering (h, w) of dout / (KH*KW), accumulated over window
 * offsets (i, j) in row-major order (the NumPy kernel's order). */
void MC_FN(mc_avgpool_backward)(const REAL *dout, REAL *dx, const mc_geom *g, int num_threads)
{
    const int64_t planes = g->n * g->c, plane_in = g->h * g->w, plane_out = g->oh * g->ow;
    const int nt = mc_threads(num_threads, planes, planes * (plane_in + plane_out));
    const int64_t chunk = mc_chunk(planes, nt);
    const REAL area = (REAL)(g->kh * g->kw);
    const int64_t W = g->w, OW = g->ow;
    int64_t p;
#pragma omp parallel for num_threads(nt) schedule(dynamic, chunk) if (nt > 1)
    for (p = 0; p < planes; p++) {
        const REAL *restrict d = dout + p * plane_out;
        REAL *restrict plane = dx + p * plane_in;
        memset(plane, 0, (size_t)plane_in * sizeof(REAL));
        for (int64_t i = 0; i < g->kh; i++) {
            int64_t oh_lo, oh_hi;
            mc_valid_range(g->h, g->oh, g->sh, i, g->ph, &oh_lo, &oh_hi);
            for (int64_t j = 0; j < g->kw; j++) {
                int64_t ow_lo, ow_hi;
                mc_valid_range(W, OW, g->sw, j, g->pw, &ow_lo, &ow_hi);
                for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                    const REAL *restrict src = d + oh * OW;
                    REAL *restrict dst = plane + (oh * g->sh + i - g->ph) * W + (j - g->pw);
                    const int64_t sw = g->sw;
                    for (int64_t ow = ow_lo; ow < ow_hi; ow++) dst[ow * sw] += src[ow] / area;
                }
            }
        }
    }
}

#undef MC_BETTER
