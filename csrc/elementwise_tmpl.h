/* ReLU and the SGD update: one pass over memory each, where NumPy needs several passes and
 * temporaries.  Included by elementwise.c with REAL and MC_FN defined.  Each element is computed
 * by the same formula whichever thread does it, so results do not depend on the thread count,
 * and with the same float operations, in the same order, as the NumPy code they replace
 * (functional/activation.py, optim.py), so they are bitwise equal to it. */

/* Threads for an elementwise pass over n values: one per 64 KiB or so, at most num_threads. */
static int MC_FN(elementwise_threads)(int num_threads, int64_t n)
{
    return mc_threads(num_threads, n / (16384 / (int64_t)sizeof(REAL)) + 1, n);
}

/* out = max(x, 0); NaN stays NaN and -0.0 becomes 0, as with numpy.maximum(x, 0). */
void MC_FN(mc_relu_forward)(const REAL *x, REAL *out, int64_t n, int num_threads)
{
    const int nt = MC_FN(elementwise_threads)(num_threads, n);
    int64_t i;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i = 0; i < n; i++) out[i] = (x[i] > 0 || x[i] != x[i]) ? x[i] : 0;
}

/* dx = dout where out > 0, else 0 (out = relu(x), and out > 0 exactly where x > 0). */
void MC_FN(mc_relu_backward)(const REAL *dout, const REAL *out, REAL *dx, int64_t n,
                             int num_threads)
{
    const int nt = MC_FN(elementwise_threads)(num_threads, n);
    int64_t i;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i = 0; i < n; i++) {
        const REAL d = dout[i];           /* loaded unconditionally, so the select vectorizes */
        dx[i] = out[i] > 0 ? d : 0;
    }
}

/* SGD with momentum, as torch.optim.SGD (and optim.SGD._update):
 *     d = g + weight_decay * p
 *     buf = d                                  on the first step (first != 0)
 *     buf = momentum * buf + (1 - dampening) * d   after it
 *     d = d + momentum * buf  (nesterov)   or   d = buf
 *     p = p - lr * d
 * buf may be NULL when momentum is 0.  The hyperparameters come in as the REAL values NumPy
 * would use (a Python float meets a float32 array as float32). */
void MC_FN(mc_sgd_step)(REAL *p, const REAL *g, REAL *buf, int64_t n, REAL lr, REAL momentum,
                        REAL dampening_keep, REAL weight_decay, int nesterov, int first,
                        int num_threads)
{
    const int nt = MC_FN(elementwise_threads)(num_threads, n);
    int64_t i;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (i = 0; i < n; i++) {
        REAL d = g[i];
        if (weight_decay != 0) d = d + weight_decay * p[i];
        if (buf) {
            REAL b = first ? d : buf[i] * momentum + dampening_keep * d;
            buf[i] = b;
            d = nesterov ? d + momentum * b : b;
        }
        p[i] = p[i] - lr * d;
    }
}
