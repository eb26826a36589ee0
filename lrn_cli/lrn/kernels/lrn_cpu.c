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
 * so results do not depend on the number of threads. Compiled at first use by
 * lrn_cli/lrn/kernels/native.py (C99, pthreads, vectorized by the compiler).
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* return codes of lrn_cpu (lrn_cli/lrn/kernels/native.py reads them) */
#define LRN_OK 0
#define LRN_BAD_LAYOUT (-1)
#define LRN_NO_MEMORY (-2) /* a scratch buffer could not be allocated */

typedef struct {
    const void *x, *g;     /* input; upstream gradient (backward only) */
    void *out;             /* y (forward) or dx (backward) */
    long outer, C, inner;  /* across: (outer, C, inner) view; within: planes = outer*C, H = C?, see below */
    long H, W;             /* within only */
    int lo, hi;
    double scale, k, beta;
    int backward;
    long items;            /* units of work */
    long tile;             /* across planar: inner elements per unit */
} job_t;

/* p = d^(-beta), with the common exponents done without exp/log */
#define DEFINE_NEGPOW(T, SUF, EXP, LOG, SQRT)                                          \
    static void negpow_##SUF(T *restrict p, const T *restrict d, long n, T beta) {    \
        if (beta == (T)0.75) {                                                         \
            for (long i = 0; i < n; i++) p[i] = (T)1 / SQRT(d[i] * SQRT(d[i]));        \
        } else if (beta == (T)0.5) {                                                   \
            for (long i = 0; i < n; i++) p[i] = (T)1 / SQRT(d[i]);                     \
        } else if (beta == (T)1) {                                                     \
            for (long i = 0; i < n; i++) p[i] = (T)1 / d[i];                           \
        } else if (beta == (T)0) {                                                     \
            for (long i = 0; i < n; i++) p[i] = (T)1;                                  \
        } else {                                                                       \
            for (long i = 0; i < n; i++) p[i] = EXP(-beta * LOG(d[i]));                \
        }                                                                              \
    }

/*
 * Across channels, planar layout (N, C, inner) with inner = H*W > 1: a unit is one image and
 * one tile of `tile` pixels; rows of the tile are vectorized over pixels.
 */
#define DEFINE_ACROSS_PLANAR(T, SUF)                                                              \
    static int across_planar_##SUF(const job_t *j, long u0, long u1) {                           \
        const long C = j->C, inner = j->inner, tile = j->tile;                                   \
        const long tiles = (inner + tile - 1) / tile;                                            \
        const T scale = (T)j->scale, k = (T)j->k, beta = (T)j->beta;                             \
        const T c2 = (T)(2.0 * j->beta * j->scale);                                              \
        T *d = malloc(sizeof(T) * tile), *p = malloc(sizeof(T) * tile);                          \
        T *U = j->backward ? malloc(sizeof(T) * tile * C) : NULL;                                \
        if (!d || !p || (j->backward && !U)) {                                                   \
            free(d); free(p); free(U);                                                           \
            return LRN_NO_MEMORY;                                                                \
        }                                                                                        \
        for (long u = u0; u < u1; u++) {                                                         \
            const long o = u / tiles, i0 = (u % tiles) * tile;                                   \
            const long n = (i0 + tile <= inner) ? tile : inner - i0;                             \
            const T *x = (const T *)j->x + o * C * inner + i0;                                   \
            const T *g = j->backward ? (const T *)j->g + o * C * inner + i0 : NULL;              \
            T *out = (T *)j->out + o * C * inner + i0;                                           \
            for (long c = 0; c < C; c++) {                                                       \
                const long a = c - j->lo < 0 ? 0 : c - j->lo;                                    \
                const long b = c + j->hi > C - 1 ? C - 1 : c + j->hi;                            \
                for (long i = 0; i < n; i++) d[i] = 0;                                           \
                for (long w = a; w <= b; w++) {                                                  \
                    const T *xw = x + w * inner;                                                 \
                    for (long i = 0; i < n; i++) d[i] += xw[i] * xw[i];                          \
                }                                                                                \
                for (long i = 0; i < n; i++) d[i] = k + scale * d[i];                            \
                negpow_##SUF(p, d, n, beta);                                                     \
                const T *xc = x + c * inner;                                                     \
                T *oc = out + c * inner;                                                         \
                if (!j->backward) {                                                              \
                    for (long i = 0; i < n; i++) oc[i] = xc[i] * p[i];                           \
                } else {                                                                         \
                    const T *gc = g + c * inner;                                                 \
                    T *Uc = U + c * tile;                                                        \
                    for (long i = 0; i < n; i++) {                                               \
                        oc[i] = gc[i] * p[i];                                                    \
                        Uc[i] = gc[i] * xc[i] * p[i] / d[i];                                     \
                    }                                                                            \
                }                                                                                \
            }                                                                                    \
            if (!j->backward) continue;                                                          \
            for (long c = 0; c < C; c++) { /* transposed window: j in c-hi .. c+lo */            \
                const long a = c - j->hi < 0 ? 0 : c - j->hi;                                    \
                const long b = c + j->lo > C - 1 ? C - 1 : c + j->lo;                            \
                for (long i = 0; i < n; i++) d[i] = 0;                                           \
                for (long w = a; w <= b; w++) {                                                  \
                    const T *Uw = U + w * tile;                                                  \
                    for (long i = 0; i < n; i++) d[i] += Uw[i];                                  \
                }                                                                                \
                const T *xc = x + c * inner;                                                     \
                T *oc = out + c * inner;                                                         \
                for (long i = 0; i < n; i++) oc[i] -= c2 * xc[i] * d[i];                         \
            }                                                                                    \
        }                                                                                        \
        free(d); free(p); free(U);                                                               \
        return LRN_OK;                                                                           \
    }

/*
 * Across channels, packed layout (pixels, C): channels_last, or inner == 1. A unit is one
 * pixel's channel vector; sums are vectorized over channels from a zero-padded copy.
 */
#define DEFINE_ACROSS_PACKED(T, SUF)                                                              \
    static int across_packed_##SUF(const job_t *j, long u0, long u1) {                           \
        const long C = j->C, size = j->lo + j->hi + 1, pad = C + size;                           \
        const T scale = (T)j->scale, k = (T)j->k, beta = (T)j->beta;                             \
        const T c2 = (T)(2.0 * j->beta * j->scale);                                              \
        T *sq = calloc(pad, sizeof(T)), *d = malloc(sizeof(T) * C), *p = malloc(sizeof(T) * C);  \
        if (!sq || !d || !p) {                                                                   \
            free(sq); free(d); free(p);                                                          \
            return LRN_NO_MEMORY;                                                                \
        }                                                                                        \
        for (long u = u0; u < u1; u++) {                                                         \
            const T *x = (const T *)j->x + u * C;                                                \
            T *out = (T *)j->out + u * C;                                                        \
            for (long c = 0; c < C; c++) sq[j->lo + c] = x[c] * x[c];                            \
            for (long c = 0; c < C; c++) d[c] = 0;                                               \
            for (long t = 0; t < size; t++)                                                      \
                for (long c = 0; c < C; c++) d[c] += sq[c + t];                                  \
            for (long c = 0; c < C; c++) d[c] = k + scale * d[c];                                \
            negpow_##SUF(p, d, C, beta);                                                         \
            if (!j->backward) {                                                                  \
                for (long c = 0; c < C; c++) out[c] = x[c] * p[c];                               \
                continue;                                                                        \
            }                                                                                    \
            const T *g = (const T *)j->g + u * C;                                                \
            for (long c = 0; c < pad; c++) sq[c] = 0; /* now U, padded by hi below */            \
            for (long c = 0; c < C; c++) {                                                       \
                out[c] = g[c] * p[c];                                                            \
                sq[j->hi + c] = g[c] * x[c] * p[c] / d[c];                                       \
            }                                                                                    \
            for (long c = 0; c < C; c++) d[c] = 0;                                               \
            for (long t = 0; t < size; t++)                                                      \
                for (long c = 0; c < C; c++) d[c] += sq[c + t];                                  \
            for (long c = 0; c < C; c++) out[c] -= c2 * x[c] * d[c];                             \
            for (long c = 0; c < pad; c++) sq[c] = 0;                                            \
        }                                                                                        \
        free(sq); free(d); free(p);                                                              \
        return LRN_OK;                                                                           \
    }

/*
 * Within a channel: a unit is a chunk of (image, channel) planes of a contiguous NCHW tensor.
 * The planes of a chunk are laid out one under the other with P = max(lo, hi) zero rows and
 * columns around each, so that both box sums (rows, then columns) are shifted adds over one
 * long flat buffer, whatever the plane size; only the interior is read back.
 */
#define DEFINE_WITHIN(T, SUF)                                                                     \
    static void box_flat_##SUF(T *restrict dst, const T *restrict src, T *restrict tmp,         \
                               long total, long Wp, long P, int lo, int hi) {                    \
        /* tmp = sum along rows, dst = sum of tmp along columns; the first and last P rows of    \
           the buffer stay out of reach of the shifts */                                         \
        const long a = P * Wp, b = total - P * Wp;                                               \
        for (long i = a - P * Wp; i < b + P * Wp; i++) tmp[i] = src[i];                          \
        for (int s = -lo; s <= hi; s++)                                                          \
            if (s) for (long i = P; i < total - P; i++) tmp[i] += src[i + s];                    \
        for (long i = a; i < b; i++) dst[i] = tmp[i];                                            \
        for (int r = -lo; r <= hi; r++) {                                                        \
            const long off = r * Wp;                                                             \
            if (r) for (long i = a; i < b; i++) dst[i] += tmp[i + off];                          \
        }                                                                                        \
    }                                                                                            \
    static int within_##SUF(const job_t *j, long u0, long u1) {                                  \
        const long H = j->H, W = j->W, HW = H * W;                                               \
        const long P = j->lo > j->hi ? j->lo : j->hi, Wp = W + 2 * P, Hp = H + 2 * P;            \
        const long per = Hp * Wp; /* one padded plane */                                         \
        long chunk = 32768 / per; /* planes per chunk: about 128 KB of floats per buffer */      \
        if (chunk < 1) chunk = 1;                                                                \
        const T scale = (T)j->scale, k = (T)j->k, beta = (T)j->beta;                             \
        const T c2 = (T)(2.0 * j->beta * j->scale);                                              \
        const long cap = chunk * per;                                                            \
        T *Q = calloc(cap, sizeof(T)), *S = malloc(sizeof(T) * cap), *tmp = malloc(sizeof(T) * cap); \
        if (!Q || !S || !tmp) {                                                                  \
            free(Q); free(S); free(tmp);                                                         \
            return LRN_NO_MEMORY;                                                                \
        }                                                                                        \
        for (long u = u0; u < u1; u += chunk) {                                                  \
            const long np = (u + chunk <= u1) ? chunk : u1 - u, total = np * per;                \
            const T *x = (const T *)j->x + u * HW;                                               \
            const T *g = j->backward ? (const T *)j->g + u * HW : NULL;                          \
            T *out = (T *)j->out + u * HW;                                                       \
            for (long q = 0; q < np; q++) /* squares into the interior; the pads stay zero */    \
                for (long h = 0; h < H; h++) {                                                   \
                    const T *xr = x + q * HW + h * W;                                            \
                    T *Qr = Q + q * per + (h + P) * Wp + P;                                      \
                    for (long w = 0; w < W; w++) Qr[w] = xr[w] * xr[w];                          \
                }                                                                                \
            box_flat_##SUF(S, Q, tmp, total, Wp, P, j->lo, j->hi);                               \
            /* d and p over the whole flat buffer (long loops; the pads cost a little extra) */  \
            const long a = P * Wp, b = total - P * Wp;                                           \
            for (long i = a; i < b; i++) S[i] = k + scale * S[i];                                \
            negpow_##SUF(tmp + a, S + a, b - a, beta);                                           \
            for (long q = 0; q < np; q++)                                                        \
                for (long h = 0; h < H; h++) {                                                   \
                    const long at = q * HW + h * W, row = q * per + (h + P) * Wp + P;            \
                    const T *pr = tmp + row, *dr = S + row;                                      \
                    if (!j->backward) {                                                          \
                        for (long w = 0; w < W; w++) out[at + w] = x[at + w] * pr[w];            \
                        continue;                                                                \
                    }                                                                            \
                    T *Ur = Q + row; /* Q now holds u = g x p / d */                             \
                    for (long w = 0; w < W; w++) {                                               \
                        out[at + w] = g[at + w] * pr[w];                                         \
                        Ur[w] = g[at + w] * x[at + w] * pr[w] / dr[w];                           \
                    }                                                                            \
                }                                                                                \
            if (!j->backward) continue;                                                          \
            box_flat_##SUF(S, Q, tmp, total, Wp, P, j->hi, j->lo); /* the transposed window */   \
            for (long q = 0; q < np; q++)                                                        \
                for (long h = 0; h < H; h++) {                                                   \
                    const long at = q * HW + h * W;                                              \
                    const T *Sr = S + q * per + (h + P) * Wp + P;                                \
                    for (long w = 0; w < W; w++) out[at + w] -= c2 * x[at + w] * Sr[w];          \
                }                                                                                \
        }                                                                                        \
        free(Q); free(S); free(tmp);                                                             \
        return LRN_OK;                                                                           \
    }

DEFINE_NEGPOW(float, f32, expf, logf, sqrtf)
DEFINE_NEGPOW(double, f64, exp, log, sqrt)
DEFINE_ACROSS_PLANAR(float, f32)
DEFINE_ACROSS_PLANAR(double, f64)
DEFINE_ACROSS_PACKED(float, f32)
DEFINE_ACROSS_PACKED(double, f64)
DEFINE_WITHIN(float, f32)
DEFINE_WITHIN(double, f64)

/* a unit range's work: LRN_OK, or LRN_NO_MEMORY before it has written anything */
typedef int (*work_fn)(const job_t *, long, long);

typedef struct {
    const job_t *job;
    work_fn fn;
    long u0, u1;
    int rc;
} slice_t;

static void *run_slice(void *arg) {
    slice_t *s = (slice_t *)arg;
    s->rc = s->fn(s->job, s->u0, s->u1);
    return NULL;
}

/* Split units [0, items) into `threads` contiguous slices; run them, wait, and return the
   first slice's failure, if any. */
static int run(const job_t *job, work_fn fn, int threads) {
    if (threads > job->items) threads = (int)job->items;
    if (threads <= 1) return fn(job, 0, job->items);
    pthread_t tid[256];
    slice_t sl[256];
    if (threads > 256) threads = 256;
    for (int t = 0; t < threads; t++) {
        sl[t] = (slice_t){job, fn, job->items * t / threads, job->items * (t + 1) / threads, LRN_OK};
        if (t > 0 && pthread_create(&tid[t], NULL, run_slice, &sl[t]) != 0) sl[t].fn = NULL;
    }
    run_slice(&sl[0]);
    int rc = sl[0].rc;
    for (int t = 1; t < threads; t++) {
        if (sl[t].fn) pthread_join(tid[t], NULL);
        else sl[t].rc = fn(job, sl[t].u0, sl[t].u1); /* could not start a thread: do it here */
        if (rc == LRN_OK) rc = sl[t].rc;
    }
    return rc;
}

/*
 * Entry points. layout: 0 = across planar (outer, C, inner); 1 = across packed (outer pixels,
 * C contiguous); 2 = within (outer planes of H x W). dtype: 0 = float32, 1 = float64.
 * g == NULL: forward into out; else backward (dx) into out. Returns LRN_OK, LRN_BAD_LAYOUT, or
 * LRN_NO_MEMORY (out is then incomplete).
 */
int lrn_cpu(int layout, int dtype, const void *x, const void *g, void *out, long outer, long C,
            long inner, long H, long W, int lo, int hi, double scale, double k, double beta,
            int threads) {
    job_t job = {x, g, out, outer, C, inner, H, W, lo, hi, scale, k, beta, g != NULL, 0, 1};
    work_fn fn;
    if (layout == 0) {
        long tile = 16384 / (C > 0 ? C : 1);
        tile = tile < 64 ? 64 : (tile > 2048 ? 2048 : tile);
        if (tile > inner) tile = inner;
        job.tile = tile;
        job.items = outer * ((inner + tile - 1) / tile);
        fn = dtype ? across_planar_f64 : across_planar_f32;
    } else if (layout == 1) {
        job.items = outer;
        fn = dtype ? across_packed_f64 : across_packed_f32;
    } else if (layout == 2) {
        job.items = outer;
        fn = dtype ? within_f64 : within_f32;
    } else {
        return LRN_BAD_LAYOUT;
    }
    return job.items > 0 ? run(&job, fn, threads) : LRN_OK;
}
