/* im2col / col2im and the fused convolution built on them, instantiated for float32 and
 * float64 from im2col_tmpl.h, conv_tmpl.h and winograd_tmpl.h. */
#include <string.h>
#include "mc_common.h"

#define REAL float
#define MC_FN(name) MC_CAT(name, f32)
#define MC_GEMM sgemm
#define MC_OWN_SGEMM 1
#include "im2col_tmpl.h"
#include "conv_tmpl.h"
#include "winograd_tmpl.h"
#undef REAL
#undef MC_FN
#undef MC_GEMM
#undef MC_OWN_SGEMM

#define REAL double
#define MC_FN(name) MC_CAT(name, f64)
#define MC_GEMM dgemm
#define MC_OWN_SGEMM 0
#include "im2col_tmpl.h"
#include "conv_tmpl.h"
#include "winograd_tmpl.h"
#undef REAL
#undef MC_FN
#undef MC_GEMM
#undef MC_OWN_SGEMM
