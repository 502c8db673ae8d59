/* Max- and average-pooling, instantiated for float32 and float64 from pool_tmpl.h. */
#include <string.h>
#include "mc_common.h"

#define REAL float
#define MC_FN(name) MC_CAT(name, f32)
#include "pool_tmpl.h"
#undef REAL
#undef MC_FN

#define REAL double
#define MC_FN(name) MC_CAT(name, f64)
#include "pool_tmpl.h"
#undef REAL
#undef MC_FN
