/* ReLU, the SGD update and batch normalization, instantiated for float32 and float64 from
 * elementwise_tmpl.h and batchnorm_tmpl.h. */
#include "mc_common.h"

#define REAL float
#define MC_FN(name) MC_CAT(name, f32)
#include "elementwise_tmpl.h"
#include "batchnorm_tmpl.h"
#undef REAL
#undef MC_FN

#define REAL double
#define MC_FN(name) MC_CAT(name, f64)
#include "elementwise_tmpl.h"
#include "batchnorm_tmpl.h"
#undef REAL
#undef MC_FN
