/* Winograd convolution F(2x2, 3x3): 3x3 kernels, stride 1, any padding (Lavin & Gray, "Fast
 * Algorithms for Convolutional Neural Networks", CVPR 2016).  Included by im2col.c after
 * conv_tmpl.h (it reuses MC_FN(layer_gemm) and MC_FN(transpose)) with REAL, MC_FN and MC_GEMM
 * defined.
 *
 * The output is cut into 2x2 tiles t = (ty, tx), TY = ceil(OH/2) by TX = ceil(OW/2) of them.
 * Tile t of filter f needs the 4x4 input patch d_ct at rows 2ty - PH .. 2ty - PH + 3 and columns
 * 2tx - PW .. 2tx - PW + 3 of each channel c (zero outside the image), and
 *
 *     Y_ft = A^T [ sum_c U_fc (.) V_ct ] A,    U_fc = G g_fc G^T,    V_ct = B^T d_ct B
 *
 * where g_fc is the 3x3 kernel, (.) multiplies 4x4 matrices elementwise, and
 *
 *     B^T = [1  0 -1  0]     G = [ 1    0    0 ]     A^T = [1  1  1  0]
 *           [0  1  1  0]         [1/2  1/2  1/2]           [0  1 -1 -1]
 *           [0 -1  1  0]         [1/2 -1/2  1/2]
 *           [0  1  0 -1]         [ 0    0    1 ]
 *
 * For each of the 16 positions xi = 4a + b of the 4x4 matrices, the sum over c is one matrix
 * product, M[xi] (F, T) = U[xi] (F, C) @ V[xi] (C, T): 16 multiplies per tile and (f, c) pair
 * where the direct convolution needs 4 outputs x 9 = 36, so 2.25x fewer flops; the transforms
 * only add and subtract.  U is computed by the caller (functional/winograd.py), once per call.
 *
 * The backward pass is the transpose (adjoint) of each linear step, in reverse order:
 *
 *     dM_ft = A dY_ft A^T,   dV[xi] = U[xi]^T @ dM[xi],   dd_ct = B dV_ct B^T  (added into dx)
 *     dU[xi] = sum_n dM[xi] @ V[xi]^T,   and the caller forms dg_fc = G^T dU_fc G.
 *
 * Layout: the transforms run over all tiles of an image at once, as loops over contiguous
 * memory that the compiler vectorizes.  For that the zero-padded input plane is stored as its
 * four polyphase parts, P[pr][pc][k][s] = padded(2k + pr, 2s + pc): entry (i, j) of the patch
 * of tile (ty, tx) is P[i%2][j%2][ty + i/2][tx + j/2], which, with the tiles numbered
 * t = ty*TX1 + tx on rows of TX1 = TX + 1, is P[i%2][j%2] + (i/2)*TX1 + j/2 + t: every entry of
 * every patch is a fixed offset plus t.  The extra tile at tx = TX of each row is not an output:
 * its V is set to zero (so it adds nothing to dU), its dM is zero, and its outputs are dropped.
 * V[xi][c][t] and M[xi][f][t] hold T1 = TY*TX1 tiles.  Each OpenMP thread takes whole images
 * (blocks of images for dU), as in conv_tmpl.h, so the thread count never changes a result.
 */

/* sum of v[0..n) in double precision.  Eight interleaved partial sums, added in a fixed order
 * at the end, so that the compiler vectorizes the loop (a single running sum waits on each
 * add).  The order depends only on n, not on the thread count. */
static double MC_FN(sum_double)(const REAL *restrict v, int64_t n)
{
    double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t l = 0;
    for (; l + 8 <= n; l += 8)
        for (int j = 0; j < 8; j++) part[j] += v[l + j];
    double sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    for (; l < n; l++) sum += v[l];
    return sum;
}

typedef struct {
    int64_t ty, tx;             /* output tiles: TY rows of TX */
    int64_t tx1, t1;            /* TX1 = TX + 1 tiles per row as stored, T1 = TY*TX1 */
    int64_t part;               /* values in one polyphase part of the padded plane */
} MC_FN(wino_tiles);

static MC_FN(wino_tiles) MC_FN(wino_geom)(const mc_geom *g)
{
    MC_FN(wino_tiles) w;
    w.ty = (g->oh + 1) / 2;
    w.tx = (g->ow + 1) / 2;
    w.tx1 = w.tx + 1;
    w.t1 = w.ty * w.tx1;
    /* padded rows 0 .. 2TY+1 (>= H + 2*PH - 1): TY + 1 rows of TX1 per part, plus room for the
     * reads of the last row's extra tile, one row and two cells further on */
    w.part = (w.ty + 2) * w.tx1 + 2;
    return w;
}

/* Per-thread scratch: V or dV (16, C, T1), M or dM (16, F, T1), the four parts of a padded
 * plane, 10 rows of T1, and one V[xi] transposed (T1, C). */
int64_t MC_FN(mc_winograd_work_elems)(int64_t f, const mc_geom *g, int num_threads)
{
    const MC_FN(wino_tiles) w = MC_FN(wino_geom)(g);
    return (int64_t)num_threads * (16 * (g->c + f) * w.t1 + 4 * w.part + (10 + g->c) * w.t1);
}

/* parts[2*pr + pc] = the polyphase parts of channel x_c, zero-padded: padded cell (Y, X) =
 * x_c[Y - PH][X - PW] lands in part (Y%2, X%2) at (Y/2)*TX1 + X/2. */
static void MC_FN(wino_pad)(const REAL *restrict x_c, REAL *restrict parts, const mc_geom *g,
                            const MC_FN(wino_tiles) *w)
{
    const int64_t W = g->w, PW = g->pw;
    memset(parts, 0, (size_t)(4 * w->part) * sizeof(REAL));
    for (int64_t y = 0; y < g->h; y++) {
        const int64_t Y = y + g->ph;
        const REAL *restrict src = x_c + y * W;
        REAL *restrict even = parts + 2 * (Y % 2) * w->part + (Y / 2) * w->tx1;
        REAL *restrict odd = even + w->part;
        for (int64_t x = PW % 2; x < W; x += 2) even[(x + PW) / 2] = src[x];
        for (int64_t x = 1 - PW % 2; x < W; x += 2) odd[(x + PW) / 2] = src[x];
    }
}

/* The adjoint of wino_pad: dx_c = the image's cells of the polyphase parts. */
static void MC_FN(wino_unpad)(const REAL *restrict parts, REAL *restrict dx_c, const mc_geom *g,
                              const MC_FN(wino_tiles) *w)
{
    const int64_t W = g->w, PW = g->pw;
    for (int64_t y = 0; y < g->h; y++) {
        const int64_t Y = y + g->ph;
        REAL *restrict dst = dx_c + y * W;
        const REAL *restrict even = parts + 2 * (Y % 2) * w->part + (Y / 2) * w->tx1;
        const REAL *restrict odd = even + w->part;
        for (int64_t x = PW % 2; x < W; x += 2) dst[x] = even[(x + PW) / 2];
        for (int64_t x = 1 - PW % 2; x < W; x += 2) dst[x] = odd[(x + PW) / 2];
    }
}

/* Patch row i of every tile: columns 0..3 are even[t], odd[t], even[t+1], odd[t+1] from here. */
static MC_ALWAYS_INLINE const REAL *MC_FN(wino_row)(const REAL *parts, int64_t i, int64_t pc,
                                                   const MC_FN(wino_tiles) *w)
{
    return parts + (2 * (i % 2) + pc) * w->part + (i / 2) * w->tx1;
}

/* Row a of B^T, as patch row bt_first[a] + bt_sign[a] * patch row bt_second[a]:
 * r0 - r2, r1 + r2, r2 - r1, r1 - r3. */
static const int MC_FN(bt_first)[4] = {0, 1, 2, 1}, MC_FN(bt_second)[4] = {2, 2, 1, 3};
static const REAL MC_FN(bt_sign)[4] = {-1, 1, -1, -1};

/* Row a of V = (B^T d) B for all tiles: row a of B^T d is patch row i0 + sign * patch row i1
 * (see B^T; multiplying by the constant +-1 is exact and folds into an add or a subtract), and
 * V[4a + b] = its columns combined by B.  v points at V[4a][c][0]. */
static MC_ALWAYS_INLINE void MC_FN(wino_input_row)(const REAL *restrict e1, const REAL *restrict o1,
                                                   const REAL *restrict e2, const REAL *restrict o2,
                                                   REAL sign, REAL *restrict v,
                                                   int64_t xi_stride, int64_t T1)
{
    for (int64_t t = 0; t < T1; t++) {
        const REAL q0 = e1[t] + sign * e2[t], q1 = o1[t] + sign * o2[t];
        const REAL q2 = e1[t + 1] + sign * e2[t + 1], q3 = o1[t + 1] + sign * o2[t + 1];
        v[t] = q0 - q2;
        v[xi_stride + t] = q1 + q2;
        v[2 * xi_stride + t] = q2 - q1;
        v[3 * xi_stride + t] = q1 - q3;
    }
}

/* V[xi][c][t] = (B^T d_ct B)[a][b] for every tile of one channel, from its polyphase parts.
 * v_c points at V[0][c][0]; xi_stride = C*T1 separates V[xi] from V[xi + 1]. */
static void MC_FN(wino_input)(const REAL *parts, REAL *v_c, int64_t xi_stride,
                              const MC_FN(wino_tiles) *w)
{
    for (int a = 0; a < 4; a++) {
        const int i0 = MC_FN(bt_first)[a], i1 = MC_FN(bt_second)[a];
        MC_FN(wino_input_row)(MC_FN(wino_row)(parts, i0, 0, w), MC_FN(wino_row)(parts, i0, 1, w),
                              MC_FN(wino_row)(parts, i1, 0, w), MC_FN(wino_row)(parts, i1, 1, w),
                              MC_FN(bt_sign)[a], v_c + 4 * a * xi_stride, xi_stride, w->t1);
    }
    /* the extra tile of each row: zero */
    for (int64_t xi = 0; xi < 16; xi++)
        for (int64_t ty = 0; ty < w->ty; ty++) v_c[xi * xi_stride + ty * w->tx1 + w->tx] = 0;
}

/* even[t] += sign * (sum of the contributions of tiles t and t - 1), likewise odd: the adjoint of
 * one patch row of wino_input_row.  Tile t's columns 0, 1 land in even[t], odd[t]; its columns
 * 2, 3 in even[t+1], odd[t+1].  Written as one pass over the cells, each reading dV at t and
 * t - 1, so that no loop adds twice into one cell. */
static MC_ALWAYS_INLINE void MC_FN(wino_row_adjoint)(const REAL *restrict d0, const REAL *restrict d1,
                                                     const REAL *restrict d2, const REAL *restrict d3,
                                                     REAL sign, REAL *restrict even,
                                                     REAL *restrict odd, int64_t T1)
{
    /* columns of dV B^T: (d0, d1 - d2 + d3) to tile t, (d1 + d2 - d0, -d3) one tile on */
    even[0] += sign * d0[0];
    odd[0] += sign * (d1[0] - d2[0] + d3[0]);
    for (int64_t t = 1; t < T1; t++) {
        even[t] += sign * (d0[t] + (d1[t - 1] + d2[t - 1] - d0[t - 1]));
        odd[t] += sign * ((d1[t] - d2[t] + d3[t]) - d3[t - 1]);
    }
    even[T1] += sign * (d1[T1 - 1] + d2[T1 - 1] - d0[T1 - 1]);
    odd[T1] -= sign * d3[T1 - 1];
}

/* The adjoint of wino_pad + wino_input: dx_c = the sum over tiles of B dV_ct B^T, each added at
 * its patch (neighbouring patches overlap by two rows or columns).  dv_c points at dV[0][c][0];
 * parts is scratch. */
static void MC_FN(wino_input_adjoint)(const REAL *dv_c, int64_t xi_stride, REAL *dx_c,
                                      REAL *parts, const mc_geom *g, const MC_FN(wino_tiles) *w)
{
    memset(parts, 0, (size_t)(4 * w->part) * sizeof(REAL));
    for (int a = 0; a < 4; a++) {
        const REAL *d = dv_c + 4 * a * xi_stride;
        const int rows[2] = {MC_FN(bt_first)[a], MC_FN(bt_second)[a]};
        const REAL signs[2] = {1, MC_FN(bt_sign)[a]};
        for (int k = 0; k < 2; k++)      /* patch row first[a], then second[a] (one pass each) */
            MC_FN(wino_row_adjoint)(d, d + xi_stride, d + 2 * xi_stride, d + 3 * xi_stride,
                                    signs[k], (REAL *)MC_FN(wino_row)(parts, rows[k], 0, w),
                                    (REAL *)MC_FN(wino_row)(parts, rows[k], 1, w), w->t1);
    }
    MC_FN(wino_unpad)(parts, dx_c, g, w);
}

/* Y = A^T M A + bias for every tile of one filter, in one pass: m[(4a + b)*xi_stride + t] is
 * M[a][b] of tile t, y[2r + q] receives Y[r][q] (rows of T1).  With s_rb = (A^T M)[r][b] (rows
 * (1 1 1 0) and (0 1 -1 -1) of A^T), Y[r][0] = s_r0 + s_r1 + s_r2, Y[r][1] = s_r1 - s_r2 - s_r3.
 * The restrict outputs are what let the compiler vectorize the loop. */
static void MC_FN(wino_output_tiles)(const REAL *restrict m, int64_t xi_stride, REAL bias,
                                     REAL *restrict y0, REAL *restrict y1, REAL *restrict y2,
                                     REAL *restrict y3, int64_t T1)
{
    for (int64_t t = 0; t < T1; t++) {
        REAL s0[4], s1[4];
        for (int b = 0; b < 4; b++) {
            const REAL m0 = m[b * xi_stride + t], m1 = m[(4 + b) * xi_stride + t];
            const REAL m2 = m[(8 + b) * xi_stride + t], m3 = m[(12 + b) * xi_stride + t];
            s0[b] = m0 + m1 + m2;
            s1[b] = m1 - m2 - m3;
        }
        y0[t] = s0[0] + s0[1] + s0[2] + bias;
        y1[t] = s0[1] - s0[2] - s0[3] + bias;
        y2[t] = s1[0] + s1[1] + s1[2] + bias;
        y3[t] = s1[1] - s1[2] - s1[3] + bias;
    }
}

/* out_f = A^T M_ft A + bias for every tile of one filter: m_f points at M[0][f][0].  rows is
 * scratch for 4 rows of T1. */
static void MC_FN(wino_output)(const REAL *m_f, int64_t xi_stride, REAL bias, REAL *out_f,
                               REAL *rows, const mc_geom *g, const MC_FN(wino_tiles) *w)
{
    const int64_t T1 = w->t1, OW = g->ow;
    REAL *y = rows;                                 /* y[2r + q]: output (2ty + r, 2tx + q) */
    MC_FN(wino_output_tiles)(m_f, xi_stride, bias, y, y + T1, y + 2 * T1, y + 3 * T1, T1);
    for (int64_t oy = 0; oy < g->oh; oy++) {        /* interleave the tiles' columns */
        const REAL *restrict left = y + 2 * (oy % 2) * T1 + (oy / 2) * w->tx1;
        const REAL *restrict right = left + T1;
        REAL *restrict out_row = out_f + oy * OW;
        for (int64_t tx = 0; tx < OW / 2; tx++) {
            out_row[2 * tx] = left[tx];
            out_row[2 * tx + 1] = right[tx];
        }
        if (OW % 2) out_row[OW - 1] = left[OW / 2];      /* odd width: half a tile */
    }
}

/* Row a of dM = u A^T for u = row a of A dY, with columns u0 and u1: dM[4a + b] = u0, u0 + u1,
 * u0 - u1, -u1.  dm points at dM[4a][f][0].  (Fused into one loop over all 16 rows of dM, the
 * compiler no longer vectorized it.) */
static MC_ALWAYS_INLINE void MC_FN(wino_dm_row)(const REAL *restrict u0, const REAL *restrict u1,
                                                REAL *restrict dm, int64_t xi_stride, int64_t T1)
{
    for (int64_t t = 0; t < T1; t++) {
        dm[t] = u0[t];
        dm[xi_stride + t] = u0[t] + u1[t];
        dm[2 * xi_stride + t] = u0[t] - u1[t];
        dm[3 * xi_stride + t] = -u1[t];
    }
}

/* dM[xi][f][t] = (A dY_ft A^T)[a][b] for every tile of one filter, dY_ft being the 2x2 block of
 * dout_f at tile t (zero past the edges and for the extra tiles).  rows is scratch for 10 rows
 * of T1. */
static void MC_FN(wino_output_adjoint)(const REAL *dout_f, REAL *dm_f, int64_t xi_stride,
                                       REAL *rows, const mc_geom *g, const MC_FN(wino_tiles) *w)
{
    const int64_t T1 = w->t1, OW = g->ow;
    REAL *y = rows, *sum = rows + 4 * T1, *diff = rows + 6 * T1, *neg = rows + 8 * T1;
    memset(y, 0, (size_t)(4 * T1) * sizeof(REAL));
    for (int64_t oy = 0; oy < g->oh; oy++) {        /* y[2r + q][t] = dout_f[2ty + r][2tx + q] */
        REAL *restrict left = y + 2 * (oy % 2) * T1 + (oy / 2) * w->tx1;
        REAL *restrict right = left + T1;
        const REAL *restrict row = dout_f + oy * OW;
        for (int64_t tx = 0; tx < OW / 2; tx++) {
            left[tx] = row[2 * tx];
            right[tx] = row[2 * tx + 1];
        }
        if (OW % 2) left[OW / 2] = row[OW - 1];
    }
    /* u = A dY, A = (A^T)^T having rows (1, 0), (1, 1), (1, -1), (0, -1) */
    for (int64_t q = 0; q < 2; q++) {
        const REAL *restrict top = y + q * T1, *restrict bottom = y + (2 + q) * T1;
        REAL *restrict s = sum + q * T1, *restrict d = diff + q * T1, *restrict n = neg + q * T1;
        for (int64_t t = 0; t < T1; t++) {
            s[t] = top[t] + bottom[t];
            d[t] = top[t] - bottom[t];
            n[t] = -bottom[t];
        }
    }
    MC_FN(wino_dm_row)(y, y + T1, dm_f, xi_stride, T1);                         /* a = 0 */
    MC_FN(wino_dm_row)(sum, sum + T1, dm_f + 4 * xi_stride, xi_stride, T1);     /* a = 1 */
    MC_FN(wino_dm_row)(diff, diff + T1, dm_f + 8 * xi_stride, xi_stride, T1);   /* a = 2 */
    MC_FN(wino_dm_row)(neg, neg + T1, dm_f + 12 * xi_stride, xi_stride, T1);    /* a = 3 */
}

/* out (N, F, OH, OW) = conv2d(x, g) + bias, with u = U (16, F, C) from the caller. */
void MC_FN(mc_winograd_forward)(const REAL *x, const REAL *u, const REAL *bias, REAL *out,
                                REAL *work, int64_t f, const mc_geom *g, const mc_blas *blas,
                                int num_threads)
{
    const MC_FN(wino_tiles) w = MC_FN(wino_geom)(g);
    const int64_t C = g->c, T1 = w.t1, plane_in = g->h * g->w, L = g->oh * g->ow;
    const int64_t per_thread = MC_FN(mc_winograd_work_elems)(f, g, 1);
    const int nt = mc_threads(num_threads, g->n, g->n * 16 * (C + f) * T1);
    int64_t n;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        REAL *v = work + (int64_t)mc_thread_id() * per_thread;         /* V (16, C, T1) */
        REAL *m = v + 16 * C * T1;                                     /* M (16, F, T1) */
        REAL *parts = m + 16 * f * T1, *rows = parts + 4 * w.part;
#pragma omp for schedule(dynamic, 1)
        for (n = 0; n < g->n; n++) {
            for (int64_t c = 0; c < C; c++) {
                MC_FN(wino_pad)(x + (n * C + c) * plane_in, parts, g, &w);
                MC_FN(wino_input)(parts, v + c * T1, C * T1, &w);
            }
            for (int64_t xi = 0; xi < 16; xi++)     /* M[xi] = U[xi] @ V[xi] */
                MC_FN(layer_gemm)(blas, 0, f, T1, C, u + xi * f * C, C, v + xi * C * T1, T1, 0,
                                  m + xi * f * T1, T1);
            for (int64_t i = 0; i < f; i++)
                MC_FN(wino_output)(m + i * T1, f * T1, bias ? bias[i] : 0, out + (n * f + i) * L,
                                   rows, g, &w);
        }
    }
}

/* Images [lo, hi) of block b: du_parts[b] (16, F, C) = sum_n dM[xi] @ V[xi]^T and db_parts[b]
 * (F,) = the sum of dout over the images; dx_n = the adjoint of the input transform of
 * dV = U^T @ dM, when dx is not NULL.  ut holds the U[xi]^T, (16, C, F), stored transposed:
 * for a transposed operand OpenBLAS packs instead of taking its small-matrix kernel.  For the
 * same reason each V[xi] is transposed (into vt) before dU's product: (64, 72) @ (72, 32) ran at
 * 144 GFLOP/s per thread that way and at 86 as dM @ V^T (case B's shapes). */
void MC_FN(mc_winograd_backward)(const REAL *x, const REAL *ut, const REAL *dout, REAL *dx,
                                 REAL *du_parts, REAL *db_parts, REAL *work, int64_t blocks,
                                 int64_t f, const mc_geom *g, const mc_blas *blas,
                                 int num_threads)
{
    const MC_FN(wino_tiles) w = MC_FN(wino_geom)(g);
    const int64_t C = g->c, T1 = w.t1, plane_in = g->h * g->w, L = g->oh * g->ow;
    const int64_t per_thread = MC_FN(mc_winograd_work_elems)(f, g, 1);
    const int nt = mc_threads(num_threads, blocks, g->n * 16 * (C + f) * T1);
    int64_t b;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        REAL *v = work + (int64_t)mc_thread_id() * per_thread;         /* dV, then V (16, C, T1) */
        REAL *dm = v + 16 * C * T1;                                    /* dM (16, F, T1) */
        REAL *parts = dm + 16 * f * T1, *rows = parts + 4 * w.part;
        REAL *vt = rows + 10 * T1;                                     /* V[xi]^T (T1, C) */
#pragma omp for schedule(dynamic, 1)
        for (b = 0; b < blocks; b++) {
            const int64_t lo = b * g->n / blocks, hi = (b + 1) * g->n / blocks;
            REAL *du_b = du_parts + b * 16 * f * C, *db_b = db_parts + b * f;
            for (int64_t i = 0; i < f; i++) db_b[i] = 0;
            for (int64_t n = lo; n < hi; n++) {
                for (int64_t i = 0; i < f; i++) {
                    const REAL *dout_f = dout + (n * f + i) * L;
                    MC_FN(wino_output_adjoint)(dout_f, dm + i * T1, f * T1, rows, g, &w);
                    db_b[i] += (REAL)MC_FN(sum_double)(dout_f, L);
                }
                if (dx) {
                    for (int64_t xi = 0; xi < 16; xi++)     /* dV[xi] = U[xi]^T @ dM[xi] */
                        MC_FN(layer_gemm)(blas, 0, C, T1, f, ut + xi * C * f, f,
                                          dm + xi * f * T1, T1, 0, v + xi * C * T1, T1);
                    for (int64_t c = 0; c < C; c++)
                        MC_FN(wino_input_adjoint)(v + c * T1, C * T1, dx + (n * C + c) * plane_in,
                                                  parts, g, &w);
                }
                for (int64_t c = 0; c < C; c++) {
                    MC_FN(wino_pad)(x + (n * C + c) * plane_in, parts, g, &w);
                    MC_FN(wino_input)(parts, v + c * T1, C * T1, &w);
                }
                for (int64_t xi = 0; xi < 16; xi++) {       /* dU[xi] += dM[xi] @ V[xi]^T */
                    MC_FN(transpose)(v + xi * C * T1, C, T1, vt);
                    MC_FN(layer_gemm)(blas, 0, f, C, T1, dm + xi * f * T1, T1, vt, C, n > lo,
                                      du_b + xi * f * C, C);
                }
            }
            if (hi == lo)        /* only when a caller asks for more blocks than images */
                for (int64_t i = 0; i < 16 * f * C; i++) du_b[i] = 0;
        }
    }
}
