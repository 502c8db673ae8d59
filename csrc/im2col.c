/* im2col / col2im, instantiated for float32 and float64 from im2col_tmpl.h. */
#include <string.h>
#include "mc_common.h"

#define REAL float
#define MC_FN(name) MC_CAT(name, f32)
#include "im2col_tmpl.h"
#undef REAL
#undef MC_FN

#define REAL double
#define MC_FN(name) MC_CAT(name, f64)
#include "im2col_tmpl.h"
#undef REAL
#undef MC_FN
