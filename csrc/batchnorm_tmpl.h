/* Batch normalization over x viewed as (N, C, S): per channel c, the M = N*S values
 * x[n, c, s] (S = H*W for batchnorm2d, 1 for batchnorm1d).  Included by elementwise.c with
 * REAL and MC_FN defined.  The formulas are those of minicnn/functional/normalization.py:
 *
 *   mu = (1/M) sum x,  var = (1/M) sum (x - mu)^2,  xhat = (x - mu) * inv_std,
 *   out = gamma * xhat + beta
 *   dbeta = sum dout,  dgamma = sum dout * xhat
 *   dx = gamma * inv_std / M * (M * dout - dbeta - xhat * dgamma)      (batch statistics)
 *   dx = gamma * inv_std * dout                                         (running statistics)
 *
 * Each channel is done by one thread, its M values visited a few times while they sit in the
 * core's cache (NumPy makes a pass over all of x per operation), so results do not depend on
 * the thread count.  Sums are accumulated in double. */

/* Threads for a loop over C channels of M values each. */
static int MC_FN(bn_threads)(int num_threads, int64_t N, int64_t C, int64_t S)
{
    return mc_threads(num_threads, C, N * C * S);
}

/* mean[c] and the biased variance var[c], from two passes (mean first, then squared
 * deviations), as numpy's mean and var compute them. */
void MC_FN(mc_channel_stats)(const REAL *x, int64_t N, int64_t C, int64_t S, REAL *mean,
                             REAL *var, int num_threads)
{
    const int nt = MC_FN(bn_threads)(num_threads, N, C, S);
    const double M = (double)(N * S);
    int64_t c;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (c = 0; c < C; c++) {
        double sum = 0, sq = 0;
        for (int64_t n = 0; n < N; n++) {                  /* channel c: N runs of S values */
            const REAL *xc = x + (n * C + c) * S;
            for (int64_t s = 0; s < S; s++) sum += xc[s];
        }
        const double mu = sum / M;
        for (int64_t n = 0; n < N; n++) {
            const REAL *xc = x + (n * C + c) * S;
            for (int64_t s = 0; s < S; s++) sq += (xc[s] - mu) * (xc[s] - mu);
        }
        mean[c] = (REAL)mu;
        var[c] = (REAL)(sq / M);
    }
}

/* xhat = (x - mean) * inv_std and out = gamma * xhat + beta, in REAL arithmetic with the
 * operations in NumPy's order (so bitwise equal to it for the same mean and inv_std). */
void MC_FN(mc_batchnorm_apply)(const REAL *x, const REAL *mean, const REAL *inv_std,
                               const REAL *gamma, const REAL *beta, REAL *xhat, REAL *out,
                               int64_t N, int64_t C, int64_t S, int num_threads)
{
    const int nt = MC_FN(bn_threads)(num_threads, N, C, S);
    int64_t c;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (c = 0; c < C; c++) {
        const REAL mu = mean[c], k = inv_std[c], g = gamma[c], b = beta[c];
        for (int64_t n = 0; n < N; n++) {
            const int64_t base = (n * C + c) * S;
            for (int64_t s = base; s < base + S; s++) {
                const REAL h = (x[s] - mu) * k;
                xhat[s] = h;
                out[s] = g * h + b;
            }
        }
    }
}

/* dgamma, dbeta and dx (see the formulas above); batch_stats: the forward used the batch's
 * mean and variance (training), so they depend on x too. */
void MC_FN(mc_batchnorm_backward)(const REAL *dout, const REAL *xhat, const REAL *gamma,
                                  const REAL *inv_std, int batch_stats, REAL *dx, REAL *dgamma,
                                  REAL *dbeta, int64_t N, int64_t C, int64_t S, int num_threads)
{
    const int nt = MC_FN(bn_threads)(num_threads, N, C, S);
    const REAL M = (REAL)(N * S);
    int64_t c;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (c = 0; c < C; c++) {
        double sum_d = 0, sum_dh = 0;
        for (int64_t n = 0; n < N; n++) {
            const int64_t base = (n * C + c) * S;
            for (int64_t s = base; s < base + S; s++) {
                sum_d += dout[s];
                sum_dh += (double)dout[s] * xhat[s];
            }
        }
        const REAL db = (REAL)sum_d, dg = (REAL)sum_dh;
        dbeta[c] = db;
        dgamma[c] = dg;
        /* training: dx = k * (M * dout - dbeta - xhat * dgamma), k = gamma * inv_std / M;
         * running statistics: dx = k * dout, k = gamma * inv_std */
        const REAL k = batch_stats ? gamma[c] * inv_std[c] / M : gamma[c] * inv_std[c];
        for (int64_t n = 0; n < N; n++) {
            const int64_t base = (n * C + c) * S;
            for (int64_t s = base; s < base + S; s++)
                dx[s] = batch_stats ? k * (M * dout[s] - db - xhat[s] * dg) : k * dout[s];
        }
    }
}
