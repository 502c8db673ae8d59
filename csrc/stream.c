/* The memory ceilings that the kernel benchmark (minicnn/bench.py) holds im2col, col2im and
 * pooling against: how fast the kernels' own threads can only store n words, or only load
 * them.  Each thread takes one contiguous part, as mc_im2col's static schedule gives it.
 *
 * A ceiling must not be held back by the portable build's 16-byte vectors (in cache, one core
 * stored and loaded at 37-67 GB/s with them and at 85-100 with AVX-512), so where GCC can pick
 * a clone by CPU at load time, the two passes are built for AVX-512 and AVX2 as well. */
#include "minicnn_kernels.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MC_CLONES
#endif

/* A non-zero word: on some machines (seen on an AMD EPYC guest) zero stores ran three times
 * faster than any other value, and the kernels store data. */
MC_CLONES static void store_words(uint32_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = 0x3f800000u;   /* 1.0f */
}

/* The xor of src[0..n): every word is loaded, and an integer reduction vectorizes. */
MC_CLONES static uint32_t load_words(const uint32_t *src, int64_t n)
{
    uint32_t acc = 0;
    for (int64_t i = 0; i < n; i++) acc ^= src[i];
    return acc;
}

/* Part `part` of nt near-equal contiguous parts of [0, n). */
static void part_range(int64_t n, int part, int nt, int64_t *lo, int64_t *hi)
{
    const int64_t size = n / nt, extra = n % nt;   /* the first `extra` parts get one more */
    *lo = part * size + (part < extra ? part : extra);
    *hi = *lo + size + (part < extra);
}

void mc_stream_store(uint32_t *dst, int64_t n, int num_threads)
{
    const int nt = num_threads > 1 ? num_threads : 1;
    int part;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (part = 0; part < nt; part++) {
        int64_t lo, hi;
        part_range(n, part, nt, &lo, &hi);
        store_words(dst + lo, hi - lo);
    }
}

uint32_t mc_stream_load(const uint32_t *src, int64_t n, int num_threads)
{
    const int nt = num_threads > 1 ? num_threads : 1;
    uint32_t acc = 0;
    int part;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1) reduction(^ : acc)
    for (part = 0; part < nt; part++) {
        int64_t lo, hi;
        part_range(n, part, nt, &lo, &hi);
        acc ^= load_words(src + lo, hi - lo);
    }
    return acc;
}
