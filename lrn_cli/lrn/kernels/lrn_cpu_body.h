/*
 * The LRN kernels for one storage type, included by lrn_cpu.c once per type with:
 *   S            the element type in memory (float, double, uint16_t for bfloat16, _Float16)
 *   T            the type computed in (float, or double for double)
 *   V, VL        a vector of VL values of T (GCC's vector extension, 64 bytes)
 *   VLD(p)       VL elements of S at p as a V;  VST(p, v)  a V stored as VL elements of S
 *   LD(p)        one element of S at p as T;    ST(v)      a T as an S
 *   SUF          the suffix of the functions defined here
 * See lrn_cpu.c for the formulas. Across channels (planar) every pixel block of VL lanes is held
 * in registers: the window sum, d, p and the products in one pass, no intermediate arrays; the
 * exponent's case is chosen once per call (the kernel is specialized for each).
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)
#define INLINE static inline __attribute__((always_inline))
/* return impl(j, u0, u1, mode) with the mode a constant, so each exponent's case is compiled apart */
#define BY_MODE(impl, j, u0, u1)                                   \
    switch ((j)->mode) {                                           \
    case POW_075: return impl(j, u0, u1, POW_075);                 \
    case POW_05: return impl(j, u0, u1, POW_05);                   \
    case POW_1: return impl(j, u0, u1, POW_1);                     \
    case POW_0: return impl(j, u0, u1, POW_0);                     \
    default: return impl(j, u0, u1, POW_GENERAL);                  \
    }

/* p = d^(-beta): the common exponents without exp/log */
INLINE T FN(negpow1)(T d, int mode, T beta) {
    switch (mode) {
    case POW_075: return (T)1 / SQRT_T(d * SQRT_T(d));
    case POW_05: return (T)1 / SQRT_T(d);
    case POW_1: return (T)1 / d;
    case POW_0: return (T)1;
    default: return EXP_T(-beta * LOG_T(d));
    }
}

INLINE V FN(vnegpow)(V d, int mode, T beta) {
    V p;
    for (int l = 0; l < VL; l++) p[l] = FN(negpow1)(d[l], mode, beta);
    return p;
}

static void FN(negpow)(T *restrict p, const T *restrict d, long n, int mode, T beta) {
    switch (mode) { /* one loop per case, each vectorized */
    case POW_075: for (long i = 0; i < n; i++) p[i] = FN(negpow1)(d[i], POW_075, beta); break;
    case POW_05: for (long i = 0; i < n; i++) p[i] = FN(negpow1)(d[i], POW_05, beta); break;
    case POW_1: for (long i = 0; i < n; i++) p[i] = FN(negpow1)(d[i], POW_1, beta); break;
    case POW_0: for (long i = 0; i < n; i++) p[i] = 1; break;
    default: for (long i = 0; i < n; i++) p[i] = FN(negpow1)(d[i], POW_GENERAL, beta);
    }
}

/* d = k + scale * sum over channels a..b of x^2: a block of VL pixels, or one pixel */
INLINE V FN(vwindow)(const S *x, long inner, long a, long b, T k, T scale) {
    V s = {0};
    for (long w = a; w <= b; w++) {
        const V v = VLD(x + w * inner);
        s += v * v;
    }
    return k + scale * s;
}

INLINE T FN(window1)(const S *x, long inner, long a, long b, T k, T scale) {
    T s = 0;
    for (long w = a; w <= b; w++) {
        const T v = LD(x + w * inner);
        s += v * v;
    }
    return k + scale * s;
}

/*
 * Across channels, planar layout (N, C, inner) with inner = H*W > 1: a unit is one image and
 * one tile of `tile` pixels (a multiple of VL where inner allows). The backward keeps dx's
 * first term g p and U = g x p / d for the tile's channels (2 C tile values of T) in the
 * thread's scratch, then subtracts 2 beta scale x times U's sum over the transposed window.
 */
INLINE int FN(planar_impl)(const job_t *j, long u0, long u1, const int mode) {
    const long C = j->C, inner = j->inner, tile = j->tile;
    const long tiles = (inner + tile - 1) / tile;
    const T scale = (T)j->scale, k = (T)j->k, beta = (T)j->beta;
    const T c2 = (T)(2.0 * j->beta * j->scale);
    T *D = NULL, *U = NULL;
    if (j->backward) {
        size_t bytes;
        if (__builtin_mul_overflow((size_t)tile * sizeof(T), (size_t)C * 2, &bytes)) return LRN_NO_MEMORY;
        if (!(D = scratch(bytes))) return LRN_NO_MEMORY;
        U = D + C * tile;
    }
    for (long u = u0; u < u1; u++) {
        const long o = u / tiles, i0 = (u % tiles) * tile;
        const long n = (i0 + tile <= inner) ? tile : inner - i0, nv = n - n % VL;
        const S *x = (const S *)j->x + o * C * inner + i0;
        const S *g = j->backward ? (const S *)j->g + o * C * inner + i0 : NULL;
        S *out = (S *)j->out + o * C * inner + i0;
        for (long c = 0; c < C; c++) {
            const long a = c - j->lo < 0 ? 0 : c - j->lo;
            const long b = c + j->hi > C - 1 ? C - 1 : c + j->hi;
            const long at = c * inner;
            if (!j->backward) {
                for (long i = 0; i < nv; i += VL) {
                    const V p = FN(vnegpow)(FN(vwindow)(x + i, inner, a, b, k, scale), mode, beta);
                    VST(out + at + i, VLD(x + at + i) * p);
                }
                for (long i = nv; i < n; i++)
                    out[at + i] = ST(LD(x + at + i) * FN(negpow1)(FN(window1)(x + i, inner, a, b, k, scale), mode, beta));
                continue;
            }
            T *Dc = D + c * tile, *Uc = U + c * tile;
            for (long i = 0; i < nv; i += VL) {
                const V d = FN(vwindow)(x + i, inner, a, b, k, scale);
                const V gp = VLD(g + at + i) * FN(vnegpow)(d, mode, beta);
                const V uu = gp * VLD(x + at + i) / d;
                memcpy(Dc + i, &gp, sizeof gp);
                memcpy(Uc + i, &uu, sizeof uu);
            }
            for (long i = nv; i < n; i++) {
                const T d = FN(window1)(x + i, inner, a, b, k, scale);
                const T gp = LD(g + at + i) * FN(negpow1)(d, mode, beta);
                Dc[i] = gp;
                Uc[i] = gp * LD(x + at + i) / d;
            }
        }
        if (!j->backward) continue;
        for (long c = 0; c < C; c++) { /* the transposed window: j in c-hi .. c+lo */
            const long a = c - j->hi < 0 ? 0 : c - j->hi;
            const long b = c + j->lo > C - 1 ? C - 1 : c + j->lo;
            const long at = c * inner;
            const T *Dc = D + c * tile;
            for (long i = 0; i < nv; i += VL) {
                V s = {0}, dv, uw;
                for (long w = a; w <= b; w++) {
                    memcpy(&uw, U + w * tile + i, sizeof uw);
                    s += uw;
                }
                memcpy(&dv, Dc + i, sizeof dv);
                VST(out + at + i, dv - c2 * VLD(x + at + i) * s);
            }
            for (long i = nv; i < n; i++) {
                T s = 0;
                for (long w = a; w <= b; w++) s += U[w * tile + i];
                out[at + i] = ST(Dc[i] - c2 * LD(x + at + i) * s);
            }
        }
    }
    return LRN_OK;
}

static int FN(across_planar)(const job_t *j, long u0, long u1) {
    BY_MODE(FN(planar_impl), j, u0, u1);
}

/*
 * Across channels, packed layout (pixels, C): channels_last, or inner == 1. A unit is one
 * pixel's channel vector; sums are vectorized over channels from a zero-padded copy.
 */
static int FN(across_packed)(const job_t *j, long u0, long u1) {
    const long C = j->C, size = j->lo + j->hi + 1;
    const T scale = (T)j->scale, k = (T)j->k, beta = (T)j->beta;
    const T c2 = (T)(2.0 * j->beta * j->scale);
    size_t pad, bytes;
    if (__builtin_add_overflow((size_t)C, (size_t)size, &pad) ||
        __builtin_mul_overflow(pad + 2 * (size_t)C, sizeof(T), &bytes))
        return LRN_NO_MEMORY;
    T *sq = scratch(bytes);
    if (!sq) return LRN_NO_MEMORY;
    T *d = sq + pad, *p = d + C;
    memset(sq, 0, pad * sizeof(T));
    for (long u = u0; u < u1; u++) {
        const S *x = (const S *)j->x + u * C;
        S *out = (S *)j->out + u * C;
        for (long c = 0; c < C; c++) {
            const T v = LD(x + c);
            sq[j->lo + c] = v * v;
        }
        for (long c = 0; c < C; c++) d[c] = 0;
        for (long t = 0; t < size; t++)
            for (long c = 0; c < C; c++) d[c] += sq[c + t];
        for (long c = 0; c < C; c++) d[c] = k + scale * d[c];
        FN(negpow)(p, d, C, j->mode, beta);
        if (!j->backward) {
            for (long c = 0; c < C; c++) out[c] = ST(LD(x + c) * p[c]);
            continue;
        }
        const S *g = (const S *)j->g + u * C;
        memset(sq, 0, pad * sizeof(T)); /* now U, padded by hi below */
        for (long c = 0; c < C; c++) {
            const T gp = LD(g + c) * p[c];
            sq[j->hi + c] = gp * LD(x + c) / d[c];
            p[c] = gp;
        }
        for (long c = 0; c < C; c++) d[c] = 0;
        for (long t = 0; t < size; t++)
            for (long c = 0; c < C; c++) d[c] += sq[c + t];
        for (long c = 0; c < C; c++) out[c] = ST(p[c] - c2 * LD(x + c) * d[c]);
        memset(sq, 0, pad * sizeof(T));
    }
    return LRN_OK;
}

/*
 * Within a channel: a unit is one (image, channel) plane of a contiguous NCHW tensor. A thread
 * copies a chunk of its planes into a flat buffer, one under the other, each with P = max(lo,
 * hi) zero columns on either side and P zero rows between planes (and above the first), so that
 * both box sums (along rows, then along columns) are shifted adds over one long flat buffer,
 * vectorized whatever the plane size. The forward makes four passes over a chunk (squares in;
 * sums along rows; sums along columns with d and p; y out), the backward seven (the first
 * three; g p and u = g p x / d; u's sums along rows and along columns; dx out).
 */

/* the sum of src[i + s step] for s = -lo .. hi: VL lanes from i, or one */
INLINE V FN(vshifted)(const T *src, long i, long step, int lo, int hi) {
    V acc = {0}, v;
    for (int s = -lo; s <= hi; s++) {
        memcpy(&v, src + i + s * step, sizeof v);
        acc += v;
    }
    return acc;
}

INLINE T FN(shifted1)(const T *src, long i, long step, int lo, int hi) {
    T acc = 0;
    for (int s = -lo; s <= hi; s++) acc += src[i + s * step];
    return acc;
}

/* dst[i] = sum of src[i + s step] for i in [a, b) */
INLINE void FN(shift_sum)(T *restrict dst, const T *restrict src, long a, long b, long step, int lo, int hi) {
    long i = a;
    for (; i + VL <= b; i += VL) {
        const V acc = FN(vshifted)(src, i, step, lo, hi);
        memcpy(dst + i, &acc, sizeof acc);
    }
    for (; i < b; i++) dst[i] = FN(shifted1)(src, i, step, lo, hi);
}

/* d = k + scale * (column sums of Hs) and p = d^-beta for i in [a, b) */
INLINE void FN(within_dp)(T *restrict D, T *restrict Pw, const T *restrict Hs, long a, long b, long Wp, int lo,
                          int hi, T k, T scale, int mode, T beta) {
    long i = a;
    for (; i + VL <= b; i += VL) {
        const V d = k + scale * FN(vshifted)(Hs, i, Wp, lo, hi), p = FN(vnegpow)(d, mode, beta);
        if (D) memcpy(D + i, &d, sizeof d);
        memcpy(Pw + i, &p, sizeof p);
    }
    for (; i < b; i++) {
        const T d = k + scale * FN(shifted1)(Hs, i, Wp, lo, hi);
        if (D) D[i] = d;
        Pw[i] = FN(negpow1)(d, mode, beta);
    }
}

INLINE int FN(within_impl)(const job_t *j, long u0, long u1, const int mode) {
    const long H = j->H, W = j->W, HW = H * W;
    const int lo = j->lo, hi = j->hi;
    const long P = lo > hi ? lo : hi, Wp = W + 2 * P;
    size_t per, cap, bytes; /* a plane with its pads; a chunk's planes: about 64 KB of T a buffer */
    if (__builtin_mul_overflow((size_t)(H + P), (size_t)Wp, &per)) return LRN_NO_MEMORY;
    long chunk = per >= 16384 ? 1 : 16384 / (long)per;
    if (chunk > u1 - u0) chunk = u1 - u0;
    /* a chunk of np planes spans rows [0, P + np (H + P)) of Wp, plus a P-element margin at each end */
    if (__builtin_mul_overflow((size_t)chunk, per, &cap) || __builtin_add_overflow(cap, (size_t)(P * Wp + 2 * P), &cap) ||
        __builtin_mul_overflow(cap, (j->backward ? 4 : 3) * sizeof(T), &bytes))
        return LRN_NO_MEMORY;
    const T scale = (T)j->scale, k = (T)j->k, beta = (T)j->beta;
    const T c2 = (T)(2.0 * j->beta * j->scale);
    T *Q = scratch(bytes); /* x^2, then u = g x p / d (backward); their pads stay zero */
    if (!Q) return LRN_NO_MEMORY;
    T *Hs = Q + cap, *Pw = Hs + cap, *D = j->backward ? Pw + cap : NULL; /* row sums; p; d */
    memset(Q, 0, cap * sizeof(T));
    /* the pad rows' row sums are read as zeros: those above the first plane and below a full
       chunk's last are never written; a shorter chunk's last pad rows are a full chunk's pad rows
       between two planes, whose row sums (of zeros) are zero */
    memset(Hs, 0, cap * sizeof(T));
    Q += P, Hs += P, Pw += P; /* so that shifts by up to P stay inside the buffer */
    if (D) D += P;
    for (long u = u0; u < u1; u += chunk) {
        const long np = (u + chunk <= u1) ? chunk : u1 - u;
        const long rows = P + np * (H + P), a = P * Wp, b = (rows - P) * Wp; /* the planes' rows */
        const S *x = (const S *)j->x + u * HW;
        const S *g = j->backward ? (const S *)j->g + u * HW : NULL;
        S *out = (S *)j->out + u * HW;
#define ROW(q, h) (((q) * (H + P) + P + (h)) * Wp + P) /* interior row h of plane q in the buffer */
        for (long q = 0; q < np; q++)
            for (long h = 0; h < H; h++) {
                const S *xr = x + q * HW + h * W;
                T *Qr = Q + ROW(q, h);
                for (long w = 0; w < W; w++) {
                    const T v = LD(xr + w);
                    Qr[w] = v * v;
                }
            }
        FN(shift_sum)(Hs, Q, a, b, 1, lo, hi);
        FN(within_dp)(D, Pw, Hs, a, b, Wp, lo, hi, k, scale, mode, beta);
        if (!j->backward) {
            for (long q = 0; q < np; q++)
                for (long h = 0; h < H; h++) {
                    const S *xr = x + q * HW + h * W;
                    const T *pr = Pw + ROW(q, h);
                    S *yr = out + q * HW + h * W;
                    for (long w = 0; w < W; w++) yr[w] = ST(LD(xr + w) * pr[w]);
                }
            continue;
        }
        for (long q = 0; q < np; q++) /* Pw becomes g p; Q's interior u = g p x / d */
            for (long h = 0; h < H; h++) {
                const long at = q * HW + h * W, row = ROW(q, h);
                T *pr = Pw + row, *Qr = Q + row;
                const T *dr = D + row;
                for (long w = 0; w < W; w++) {
                    const T gp = LD(g + at + w) * pr[w];
                    pr[w] = gp;
                    Qr[w] = gp * LD(x + at + w) / dr[w];
                }
            }
        FN(shift_sum)(Hs, Q, a, b, 1, hi, lo); /* the transposed window, along rows */
        FN(shift_sum)(D, Hs, a, b, Wp, hi, lo);  /* and along columns, into D */
        for (long q = 0; q < np; q++)
            for (long h = 0; h < H; h++) {
                const long at = q * HW + h * W, row = ROW(q, h);
                const T *pr = Pw + row, *sr = D + row;
                for (long w = 0; w < W; w++) out[at + w] = ST(pr[w] - c2 * LD(x + at + w) * sr[w]);
            }
#undef ROW
    }
    return LRN_OK;
}

static int FN(within)(const job_t *j, long u0, long u1) {
    BY_MODE(FN(within_impl), j, u0, u1);
}

#undef FN
#undef INLINE
#undef BY_MODE
/* the storage type's macros: the next inclusion defines its own */
#undef S
#undef SUF
#undef VLD
#undef VST
#undef LD
#undef ST
