/*
 * 2-D max pooling of contiguous NCHW planes, as torch.nn.MaxPool2d computes it (dilation 1):
 * output (i, j) is the maximum of input rows i*sh-ph .. +kh-1 and columns j*sw-pw .. +kw-1 that
 * lie inside the plane (padding never wins), NaN if the window holds one. With indices it also
 * gives the flat position (row * W + column) of the element torch's CPU kernel picks, in
 * row-major order the first maximum, or the last NaN: the rule `v > m || isnan(v)`.
 *
 * Separable: the pick over each row window, then over the column windows of those; the rule
 * gives the same pick in two stages as in one pass in row-major order (the first maximum: the
 * first row holding it, there the first column; the last NaN likewise). Both stages are long
 * vectorized loops over a whole plane; windows clipped by the plane's border are done one by one.
 * The backward sends each output's gradient to its index. A plane is computed by one thread,
 * the backward's sums in a fixed order, so results do not depend on the thread count. OpenMP
 * on torch's pool, as lrn_cpu.c. Built without -ffast-math's finite-math assumption
 * (lrn_cli/native.py): NaN must propagate.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    long H, W, Ho, Wo;
    int kh, kw, sh, sw, ph, pw;
} geom_t;

#include "native_scratch.h"

/* the rule: take v over m when it is larger or NaN (so a NaN, once taken, stays unless another comes) */
#define TAKES(v, m) ((v) > (m) || (v) != (v))

/*
 * One window dimension over a flat buffer: for every position c of src (length n), the pick
 * over src[c + t*step], t < k, for those t with c + t*step < n (m: the maxima, at: the source
 * positions they came from, taken from src_at when given; at NULL: the maxima only). Long contiguous loops, vectorized.
 * A window that crosses a row's end mixes rows; callers use only positions whose window stays
 * inside a row (the interior) and compute the edges with `window_pick`.
 */
#define DEFINE_POOL(T, SUF)                                                                          \
    static void slide_##SUF(const T *restrict src, const int32_t *restrict src_at, long n, int k,  \
                            long step, T *restrict m, int32_t *restrict at) {                       \
        if (!at) { /* the maxima only */                                                            \
            memcpy(m, src, sizeof(T) * n);                                                          \
            for (int t = 1; t < k; t++)                                                             \
                for (long c = 0; c + t * step < n; c++)                                             \
                    m[c] = TAKES(src[c + t * step], m[c]) ? src[c + t * step] : m[c];               \
            return;                                                                                 \
        }                                                                                           \
        for (long c = 0; c < n; c++) m[c] = src[c], at[c] = src_at ? src_at[c] : (int32_t)c;        \
        for (int t = 1; t < k; t++) {                                                               \
            const long off = t * step;                                                              \
            for (long c = 0; c + off < n; c++) {                                                    \
                const T v = src[c + off];                                                           \
                const int take = TAKES(v, m[c]);                                                    \
                const int32_t a = src_at ? src_at[c + off] : (int32_t)(c + off);                    \
                m[c] = take ? v : m[c];                                                             \
                at[c] = take ? a : at[c];                                                           \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    /* the pick over one clipped window, in row-major order, as torch's loop does it */            \
    static void window_pick_##SUF(const geom_t *g, const T *restrict x, long i, long j, T *m_out,  \
                                  int32_t *at_out) {                                                \
        long r0 = i * g->sh - g->ph, r1 = r0 + g->kh, c0 = j * g->sw - g->pw, c1 = c0 + g->kw;     \
        if (r0 < 0) r0 = 0;                                                                         \
        if (r1 > g->H) r1 = g->H;                                                                   \
        if (c0 < 0) c0 = 0;                                                                         \
        if (c1 > g->W) c1 = g->W;                                                                   \
        T m = -INFINITY;                                                                            \
        int32_t at = (int32_t)(r0 * g->W + c0);                                                     \
        for (long r = r0; r < r1; r++)                                                              \
            for (long c = c0; c < c1; c++)                                                          \
                if (TAKES(x[r * g->W + c], m)) m = x[r * g->W + c], at = (int32_t)(r * g->W + c);   \
        *m_out = m, *at_out = at;                                                                   \
    }                                                                                               \
    /* A plane: the row stage over the flat plane (windows along W), its interior columns        \
       gathered into hm (H x Wo), the column stage over hm (windows along H), its interior rows   \
       copied out; outputs whose window is clipped come from window_pick. */                      \
    static int plane_##SUF(const geom_t *g, const T *restrict x, T *restrict y, int32_t *restrict idx) { \
        const long H = g->H, W = g->W, Ho = g->Ho, Wo = g->Wo, L = H * W, M = H * Wo;             \
        /* interior output columns [j0, j1) and rows [i0, i1): their windows lie inside */        \
        long j0 = (g->pw + g->sw - 1) / g->sw, j1 = W - g->kw + g->pw >= 0 ? (W - g->kw + g->pw) / g->sw + 1 : 0; \
        long i0 = (g->ph + g->sh - 1) / g->sh, i1 = H - g->kh + g->ph >= 0 ? (H - g->kh + g->ph) / g->sh + 1 : 0; \
        if (j1 > Wo) j1 = Wo;                                                                       \
        if (j0 > j1) j0 = j1;                                                                       \
        if (i1 > Ho) i1 = Ho;                                                                       \
        if (i0 > i1) i0 = i1;                                                                       \
        T *B = scratch((sizeof(T) + sizeof(int32_t)) * (size_t)(L + 2 * M));                         \
        if (!B) return -2;                                                                          \
        T *hm = B + L, *C2 = hm + M;                                                                \
        int32_t *Ba = (int32_t *)(C2 + M), *ha = Ba + L, *Ca = ha + M;                              \
        if (j0 < j1 && i0 < i1) {                                                                   \
            slide_##SUF(x, NULL, L, g->kw, 1, B, idx ? Ba : NULL);                                  \
            for (long r = 0; r < H; r++)                                                            \
                for (long j = j0; j < j1; j++) {                                                    \
                    const long c = r * W + j * g->sw - g->pw;                                       \
                    hm[r * Wo + j] = B[c];                                                          \
                    if (idx) ha[r * Wo + j] = Ba[c];                                                \
                }                                                                                   \
            /* columns outside [j0, j1) of hm are never read for interior outputs */                \
            slide_##SUF(hm, idx ? ha : NULL, M, g->kh, Wo, C2, idx ? Ca : NULL);                    \
            for (long i = i0; i < i1; i++) {                                                        \
                const long q = (i * g->sh - g->ph) * Wo;                                            \
                memcpy(y + i * Wo + j0, C2 + q + j0, sizeof(T) * (j1 - j0));                        \
                if (idx) memcpy(idx + i * Wo + j0, Ca + q + j0, sizeof(int32_t) * (j1 - j0));       \
            }                                                                                       \
        }                                                                                           \
        for (long i = 0; i < Ho; i++)                                                               \
            for (long j = 0; j < Wo; j++) {                                                         \
                if (i >= i0 && i < i1 && j >= j0 && j < j1) j = j1; /* done above */               \
                if (j >= Wo) break;                                                                 \
                int32_t at;                                                                         \
                window_pick_##SUF(g, x, i, j, y + i * Wo + j, &at);                                 \
                if (idx) idx[i * Wo + j] = at;                                                      \
            }                                                                                       \
        return 0;                                                                                   \
    }                                                                                               \
    static void scatter_##SUF(long in, long on, const T *restrict gy, const int32_t *restrict idx,  \
                              T *restrict gx) {                                                     \
        memset(gx, 0, sizeof(T) * in);                                                              \
        for (long o = 0; o < on; o++) gx[idx[o]] += gy[o];                                          \
    }

DEFINE_POOL(float, f32)
DEFINE_POOL(double, f64)

/*
 * dtype 0 float32, 1 float64. Forward (gy == NULL): y into out, and the indices into idx
 * unless it is NULL. Backward: gx into out from gy and idx. Returns 0, -1 for an unknown dtype,
 * -2 when a scratch row buffer cannot be allocated.
 */
int maxpool2d_cpu(int dtype, const void *x, const void *gy, void *out, int32_t *idx, long planes, long H, long W,
                  long Ho, long Wo, int kh, int kw, int sh, int sw, int ph, int pw, int threads) {
    const geom_t g = {H, W, Ho, Wo, kh, kw, sh, sw, ph, pw};
    if (dtype != 0 && dtype != 1) return -1;
    const long in = H * W, on = Ho * Wo;
    if (threads > planes) threads = (int)planes;
    if (threads < 1) threads = 1;
    int rc = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && !omp_in_parallel())
#endif
    for (long p = 0; p < planes; p++) {
        int r = 0;
        int32_t *ip = idx ? idx + p * on : NULL;
        if (gy) {
            if (dtype == 0) scatter_f32(in, on, (const float *)gy + p * on, ip, (float *)out + p * in);
            else scatter_f64(in, on, (const double *)gy + p * on, ip, (double *)out + p * in);
        } else if (dtype == 0) {
            r = plane_f32(&g, (const float *)x + p * in, (float *)out + p * on, ip);
        } else {
            r = plane_f64(&g, (const double *)x + p * in, (double *)out + p * on, ip);
        }
        if (r) {
#ifdef _OPENMP
#pragma omp critical
#endif
            rc = r;
        }
    }
    return rc;
}
