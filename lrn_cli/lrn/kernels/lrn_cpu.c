/*
 * Fused CPU kernels for Local Response Normalization, in the canonical form of
 * lrn_cli/lrn/conventions.py:
 *
 *     y = x * d^(-beta),   d = k + scale * sum_{window} x^2
 *
 * across: the window is channels c-lo .. c+hi; within: pixels p-lo .. p+hi along H and W.
 * Zeros outside the tensor. The backward recomputes d from x instead of saving it, so the
 * layer holds no memory for its backward beyond its input:
 *
 *     dx_c = g_c * p_c - 2 * beta * scale * x_c * sum_{j : c in window(j)} g_j * x_j * p_j / d_j
 *
 * with p = d^(-beta). Each (image, tile) or plane is computed by one thread in a fixed order,
 * so results do not depend on the number of threads. Storage float32, float64, bfloat16 or
 * float16; the half types are computed in float32 (loaded and rounded per element, no float32
 * copy of the tensor). The kernels' bodies are in lrn_cpu_body.h, instantiated once per type.
 *
 * Threads: built with OpenMP and linked against torch's own OpenMP runtime (the libgomp that
 * torch loads; lrn_cli/native.py), the kernels run on torch's thread pool, so they do not fight
 * torch's workers, which stay awake between ops. Without OpenMP they start pthreads per call.
 * Scratch buffers are per thread and kept between calls, so a call allocates nothing. Compiled
 * at first use by lrn_cli/native.py (C99, vectorized by the compiler).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
#include <pthread.h>
#endif

/* return codes of lrn_cpu (lrn_cli/lrn/kernels/native.py reads them) */
#define LRN_OK 0
#define LRN_BAD_LAYOUT (-1)
#define LRN_NO_MEMORY (-2) /* a scratch buffer could not be allocated */
#define LRN_BAD_DTYPE (-3) /* a storage type this build does not have (float16 without _Float16) */

enum { POW_GENERAL, POW_075, POW_05, POW_1, POW_0 };

typedef struct {
    const void *x, *g;     /* input; upstream gradient (backward only) */
    void *out;             /* y (forward) or dx (backward) */
    long outer, C, inner;  /* across: (outer, C, inner) */
    long H, W;             /* within: outer planes of H x W */
    int lo, hi;
    double scale, k, beta;
    int backward;
    int mode;              /* which POW_ path computes d^-beta */
    long items;            /* units of work */
    long tile;             /* across planar: inner elements per unit */
} job_t;

#include "native_scratch.h"
#include "native_pool.h" /* large outputs' memory, kept between calls (lrn_pool_*) */

/* within a channel, planes smaller than this many values go through each pass in groups, so that
   a pass does not read a buffer its predecessor stored a few instructions earlier (a load that
   spans stores still in the store buffer waits for them: 1.3-1.6x the time at 8 x 8 planes).
   16 x 16 planes and larger run one at a time: grouped, they ran up to 9% slower from cold caches */
#define WITHIN_GROUP 256
/* and while a group of planes (or one plane) of fewer than this many bytes is computed, the next
   one's input is prefetched. From cold caches, as inside a train step: 16 x 16 forward 0.49 ->
   0.42 ms and backward 0.83 -> 0.69 ms at (128,32,16,16), 8 x 8 and 27 x 27 as much, warm caches
   as before. 32 x 32 planes (4 KB) ran up to 10% slower warm with it, and larger ones gain
   nothing over the hardware prefetcher, so they are left to it */
#define WITHIN_PREFETCH 4096

/* bfloat16 <-> float32, rounding to nearest even as torch does (NaN stays a quiet NaN) */
static inline float bf16_load(const uint16_t *p) {
    const uint32_t u = (uint32_t)*p << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t bf16_store(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* vectors of 64 bytes (GCC's vector extension; split into halves where the CPU has 32-byte ones) */
typedef float vf32 __attribute__((vector_size(64)));
typedef double vf64 __attribute__((vector_size(64)));
typedef uint32_t vu32 __attribute__((vector_size(64)));
typedef uint64_t vu64 __attribute__((vector_size(64)));
typedef int32_t vi32 __attribute__((vector_size(64)));
typedef uint16_t vu16 __attribute__((vector_size(32)));

static inline vf32 vld_f32(const float *p) { vf32 v; memcpy(&v, p, sizeof v); return v; }
static inline void vst_f32(float *p, vf32 v) { memcpy(p, &v, sizeof v); }
static inline vf64 vld_f64(const double *p) { vf64 v; memcpy(&v, p, sizeof v); return v; }
static inline void vst_f64(double *p, vf64 v) { memcpy(p, &v, sizeof v); }

static inline vf32 vld_bf16(const uint16_t *p) {
    vu16 h;
    memcpy(&h, p, sizeof h);
    return (vf32)(__builtin_convertvector(h, vu32) << 16);
}

static inline void vst_bf16(uint16_t *p, vf32 v) { /* as bf16_store, lane by lane */
    const vu32 u = (vu32)v;
    const vu32 nan = (vu32)((vi32)(u & 0x7fffffffu) > 0x7f800000);
    const vu32 r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const vu16 h = __builtin_convertvector((r & ~nan) | (0x7fc0u & nan), vu16);
    memcpy(p, &h, sizeof h);
}

/* d^-beta for any other exponent: exp(-beta log d) with glibc's vector exp and log (libmvec, which
   the library links), on the vector's PARTS registers of type H (1 on AVX-512, 2 halves on AVX2);
   GCC's own code called the scalar functions lane by lane. It declares libmvec's EXP and LOG (H -> H) */
#define VNEGPOW_GENERAL_DEF(name, V, T, H, PARTS, EXP, LOG, MUL, SET1)             \
    H EXP(H);                                                                      \
    H LOG(H);                                                                      \
    static inline V name(V d, T beta) {                                            \
        H h[PARTS];                                                                \
        memcpy(h, &d, sizeof d);                                                   \
        for (int i = 0; i < PARTS; i++) h[i] = EXP(MUL(SET1(-beta), LOG(h[i])));  \
        memcpy(&d, h, sizeof d);                                                   \
        return d;                                                                  \
    }
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#ifdef __AVX512F__
/* d^-0.75 of 16 floats: r = 1/sqrt(d) and q = 1/sqrt(d sqrt(d)) from the 14-bit estimates with one
   Newton step each, as GCC's -ffast-math does for 1/sqrtf, in whole 64-byte registers */
static inline vf32 vnegpow075_f32(vf32 d, vf32 *inv) {
    vf32 r = (vf32)_mm512_rsqrt14_ps((__m512)d);
    r = r * ((vf32){0} + 1.5f - 0.5f * d * r * r);
    if (inv) *inv = r * r; /* 1/d */
    const vf32 e = d * (d * r); /* d^1.5 */
    vf32 q = (vf32)_mm512_rsqrt14_ps((__m512)e);
    return q * ((vf32){0} + 1.5f - 0.5f * e * q * q);
}
#define VNEGPOW075(d, inv) vnegpow075_f32(d, inv)
VNEGPOW_GENERAL_DEF(vnegpow_general_f32, vf32, float, __m512, 1, _ZGVeN16v_expf, _ZGVeN16v_logf, _mm512_mul_ps,
                    _mm512_set1_ps)
#define VNEGPOW_GENERAL(d, beta) vnegpow_general_f32(d, beta)
#elif defined(__AVX2__)
VNEGPOW_GENERAL_DEF(vnegpow_general_f32, vf32, float, __m256, 2, _ZGVdN8v_expf, _ZGVdN8v_logf, _mm256_mul_ps,
                    _mm256_set1_ps)
#define VNEGPOW_GENERAL(d, beta) vnegpow_general_f32(d, beta)
#endif
#define S float
#define T float
#define V vf32
#define VM vu32 /* a lane mask for V, lanes of MT */
#define MT uint32_t
#define VL 16
#define SUF f32
#define VLD(p) vld_f32(p)
#define VST(p, v) vst_f32(p, v)
#define LD(p) (*(p))
#define ST(v) (v)
#define SQRT_T sqrtf
#define EXP_T expf
#define LOG_T logf
#include "lrn_cpu_body.h"

#define S uint16_t
#define SUF bf16
#define VLD(p) vld_bf16(p)
#define VST(p, v) vst_bf16(p, v)
#define LD(p) bf16_load(p)
#define ST(v) bf16_store(v)
#include "lrn_cpu_body.h"

#ifdef __FLT16_MAX__
#define HAVE_F16 1
typedef _Float16 vf16 __attribute__((vector_size(32)));
static inline vf32 vld_f16(const _Float16 *p) { vf16 h; memcpy(&h, p, sizeof h); return __builtin_convertvector(h, vf32); }
static inline void vst_f16(_Float16 *p, vf32 v) { const vf16 h = __builtin_convertvector(v, vf16); memcpy(p, &h, sizeof h); }
#define S _Float16
#define SUF f16
#define VLD(p) vld_f16(p)
#define VST(p, v) vst_f16(p, v)
#define LD(p) ((float)*(p))
#define ST(v) ((_Float16)(v))
#include "lrn_cpu_body.h"
#else
#define HAVE_F16 0
#endif
#include "lrn_cpu_end_compute.h"

#define S double
#undef VNEGPOW075
#undef VNEGPOW_GENERAL
#ifdef __AVX512F__
VNEGPOW_GENERAL_DEF(vnegpow_general_f64, vf64, double, __m512d, 1, _ZGVeN8v_exp, _ZGVeN8v_log, _mm512_mul_pd,
                    _mm512_set1_pd)
#define VNEGPOW_GENERAL(d, beta) vnegpow_general_f64(d, beta)
#elif defined(__AVX2__)
VNEGPOW_GENERAL_DEF(vnegpow_general_f64, vf64, double, __m256d, 2, _ZGVdN4v_exp, _ZGVdN4v_log, _mm256_mul_pd,
                    _mm256_set1_pd)
#define VNEGPOW_GENERAL(d, beta) vnegpow_general_f64(d, beta)
#endif
#define T double
#define V vf64
#define VM vu64
#define MT uint64_t
#define VL 8
#define SUF f64
#define VLD(p) vld_f64(p)
#define VST(p, v) vst_f64(p, v)
#define LD(p) (*(p))
#define ST(v) (v)
#define SQRT_T sqrt
#define EXP_T exp
#define LOG_T log
#include "lrn_cpu_body.h"
#include "lrn_cpu_end_compute.h"

#define VL 16 /* the tile is a multiple of the widest block */

/* a unit range's work: LRN_OK, or LRN_NO_MEMORY before it has written anything */
typedef int (*work_fn)(const job_t *, long, long);

/* thread t of n takes a contiguous, balanced slice of the units */
static long slice_start(long items, int t, int n) {
    return t * (items / n) + (t < items % n ? t : items % n);
}

#ifdef _OPENMP
/* Run the units on `threads` threads of the OpenMP pool (torch's); return the first failure. */
static int run(const job_t *job, work_fn fn, int threads) {
    if (threads > job->items) threads = (int)job->items;
    if (threads <= 1 || omp_in_parallel()) return fn(job, 0, job->items);
    int rc = LRN_OK;
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        const int r = fn(job, slice_start(job->items, t, n), slice_start(job->items, t + 1, n));
        if (r != LRN_OK) {
#pragma omp critical
            if (rc == LRN_OK) rc = r;
        }
    }
    return rc;
}
#else
typedef struct {
    const job_t *job;
    work_fn fn;
    long u0, u1;
    int rc;
} slice_t;

static void *run_slice(void *arg) {
    slice_t *s = (slice_t *)arg;
    s->rc = s->fn(s->job, s->u0, s->u1);
    scratch_release(); /* the thread ends here */
    return NULL;
}

/* Split units [0, items) into `threads` slices on new pthreads; wait; return the first failure. */
static int run(const job_t *job, work_fn fn, int threads) {
    if (threads > job->items) threads = (int)job->items;
    if (threads <= 1) return fn(job, 0, job->items);
    pthread_t tid[256];
    slice_t sl[256];
    int started[256];
    if (threads > 256) threads = 256;
    for (int t = 0; t < threads; t++) {
        sl[t] = (slice_t){job, fn, slice_start(job->items, t, threads), slice_start(job->items, t + 1, threads), LRN_OK};
        started[t] = t > 0 && pthread_create(&tid[t], NULL, run_slice, &sl[t]) == 0;
    }
    int rc = fn(job, sl[0].u0, sl[0].u1);
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(tid[t], NULL);
        else sl[t].rc = fn(job, sl[t].u0, sl[t].u1); /* could not start a thread: do it here */
        if (rc == LRN_OK) rc = sl[t].rc;
    }
    return rc;
}
#endif

/* 1 where this build has the storage type (0 float32, 1 float64, 2 bfloat16, 3 float16) */
int lrn_cpu_has_dtype(int dtype) { return dtype >= 0 && dtype <= 2 ? 1 : dtype == 3 ? HAVE_F16 : 0; }

/* 1 where the kernels run on the OpenMP pool (torch's), 0 on their own pthreads */
int lrn_cpu_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/*
 * Entry point. layout: 0 = across planar (outer, C, inner); 1 = across packed (outer pixels,
 * C contiguous); 2 = within (outer planes of H x W). dtype: as lrn_cpu_has_dtype.
 * g == NULL: forward into out; else backward (dx) into out. Returns LRN_OK, LRN_BAD_LAYOUT,
 * LRN_BAD_DTYPE or LRN_NO_MEMORY (out is then incomplete).
 */
int lrn_cpu(int layout, int dtype, const void *x, const void *g, void *out, long outer, long C,
            long inner, long H, long W, int lo, int hi, double scale, double k, double beta,
            int threads) {
    job_t job = {x, g, out, outer, C, inner, H, W, lo, hi, scale, k, beta, g != NULL, POW_GENERAL, 0, 1};
    job.mode = beta == 0.75 ? POW_075 : beta == 0.5 ? POW_05 : beta == 1.0 ? POW_1 : beta == 0.0 ? POW_0 : POW_GENERAL;
    if (!lrn_cpu_has_dtype(dtype)) return LRN_BAD_DTYPE;
    static const work_fn table[3][4] = {
        {across_planar_f32, across_planar_f64, across_planar_bf16,
#if HAVE_F16
         across_planar_f16},
#else
         NULL},
#endif
        {across_packed_f32, across_packed_f64, across_packed_bf16,
#if HAVE_F16
         across_packed_f16},
#else
         NULL},
#endif
        {within_f32, within_f64, within_bf16,
#if HAVE_F16
         within_f16},
#else
         NULL},
#endif
    };
    if (layout == 0) {
        /* a tile of x: 256 KB of floats (the backward keeps 2 C tile values more: still in L2) */
        long tile = 65536 / (C > 0 ? C : 1);
        tile = tile < 64 ? 64 : (tile > 8192 ? 8192 : tile);
        tile -= tile % VL;
        if (tile > inner) tile = inner;
        job.tile = tile;
        job.items = outer * ((inner + tile - 1) / tile);
    } else if (layout == 1 || layout == 2) {
        job.items = outer;
    } else {
        return LRN_BAD_LAYOUT;
    }
    return job.items > 0 ? run(&job, table[layout][dtype], threads) : LRN_OK;
}
