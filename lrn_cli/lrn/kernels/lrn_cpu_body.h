/*
 * The LRN kernels for one storage type, included by lrn_cpu.c once per type with:
 *   S            the element type in memory (float, double, uint16_t for bfloat16, _Float16)
 *   T            the type computed in (float, or double for double)
 *   V, VL        a vector of VL values of T (GCC's vector extension, 64 bytes)
 *   VM, MT       a lane mask for V (VL lanes of the unsigned integer MT, all ones or zero)
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
#ifdef VNEGPOW075
    if (mode == POW_075) return VNEGPOW075(d, NULL);
#endif
#ifdef VNEGPOW_GENERAL
    if (mode == POW_GENERAL) return VNEGPOW_GENERAL(d, beta);
#endif
    V p;
    for (int l = 0; l < VL; l++) p[l] = FN(negpow1)(d[l], mode, beta);
    return p;
}

/* p = d^(-beta), and 1/d in *inv (from the same estimate where the exponent allows) */
INLINE V FN(vnegpow_inv)(V d, int mode, T beta, V *inv) {
#ifdef VNEGPOW075
    if (mode == POW_075) return VNEGPOW075(d, inv);
#endif
    *inv = (T)1 / d;
    return FN(vnegpow)(d, mode, beta);
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

/* ask for the n values at x (and at g) to be brought into the cache */
INLINE void FN(prefetch_group)(const S *x, const S *g, long n) {
    const char *px = (const char *)x, *pg = (const char *)g;
    for (long b = 0; b < n * (long)sizeof(S); b += 64) {
        __builtin_prefetch(px + b);
        if (pg) __builtin_prefetch(pg + b);
    }
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
        /* the backward prefetches the next unit's x and g, channel by channel: its x was saved by
           the forward long before, so in a train step it comes from far caches; the forward's
           input is usually fresh from the op before, and there it cost 2-4% warm */
        const int ahead = j->backward && u + 1 < u1;
        const long o1 = (u + 1) / tiles, i1 = ((u + 1) % tiles) * tile;
        const long n1 = (i1 + tile <= inner) ? tile : inner - i1;
        const S *x1 = (const S *)j->x + o1 * C * inner + i1;
        const S *g1 = j->backward ? (const S *)j->g + o1 * C * inner + i1 : NULL;
        for (long c = 0; c < C; c++) {
            const long a = c - j->lo < 0 ? 0 : c - j->lo;
            const long b = c + j->hi > C - 1 ? C - 1 : c + j->hi;
            const long at = c * inner;
            if (ahead) FN(prefetch_group)(x1 + at, g1 ? g1 + at : NULL, n1);
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
                V inv;
                const V gp = VLD(g + at + i) * FN(vnegpow_inv)(d, mode, beta, &inv);
                const V uu = gp * VLD(x + at + i) * inv;
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
 * copies each plane (as T) into a flat buffer X with at least P W + P zeros on either side, P =
 * max(lo, hi), so that a vertical shift by t rows is a shift by t W along the buffer (rows
 * outside the plane read as zeros) and a horizontal shift by s is a shift by s, masked (a table
 * per call, from each element's column) where w + s leaves the row. The forward makes three
 * passes over a plane (x in; column sums of x^2; their masked row sums with d, p and y out), the
 * backward five (the same first two; u = g p x / d and g p; u's column sums over the transposed
 * window; its masked row sums with dx out). Every pass runs along the whole plane in blocks of VL,
 * whatever its width, and a plane's buffers (about 8 HW values of T) sit in L1 or L2, each
 * plane's start on a 64-byte line (the scratch is aligned), so that the column sums, the
 * loads of X and of the masks and the centre column of the row sums do not split across lines
 * (unaligned, they made 8-16% of the time). Planes of
 * fewer than WITHIN_GROUP values go through each pass in groups of planes (each with its own
 * buffers), so that no pass reads what the pass before it stored a few instructions earlier.
 */

/* v with the lanes whose mask is zero cleared */
INLINE V FN(vmasked)(V v, const MT *mask) {
    VM m;
    memcpy(&m, mask, sizeof m);
    return (V)((VM)v & m);
}

INLINE V FN(vload)(const T *p) {
    V v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* VL elements of S from p, of which only the first n exist (the rest read as zeros) */
INLINE V FN(vload_part)(const S *p, long n) {
    if (n >= VL) return VLD(p);
    V v = {0};
    for (long l = 0; l < n; l++) v[l] = LD(p + l);
    return v;
}

INLINE void FN(vstore_part)(S *p, V v, long n) {
    if (n >= VL) {
        VST(p, v);
        return;
    }
    for (long l = 0; l < n; l++) p[l] = ST(v[l]);
}

/* dst[j] = sum over t = a .. b of src[j + t W] (squared if sq), for j in [-PV, HW + P), PV = P
   rounded up to VL, so that j runs on aligned blocks */
INLINE void FN(column_sums)(T *restrict dst, const T *restrict src, long HW, long P, long PV, long W, int a, int b,
                            int sq) {
    for (long j = -PV; j < HW + P; j += VL) {
        V s = {0};
        for (int t = a; t <= b; t++) {
            const V v = FN(vload)(src + j + t * W);
            s += sq ? v * v : v;
        }
        memcpy(dst + j, &s, sizeof s);
    }
}

/* the sum over s = a .. b of cs[j + s], the lanes whose column w + s leaves the row cleared */
INLINE V FN(row_sum)(const T *cs, const MT *masks, long ML, long j, int a, int b, long P) {
    V s = FN(vload)(cs + j);
    for (int t = a; t <= b; t++)
        if (t) s += FN(vmasked)(FN(vload)(cs + j + t), masks + (t + P) * ML + j);
    return s;
}

/* a plane of x into the buffer X, as T */
INLINE void FN(copy_plane)(T *restrict X, const S *restrict x, long HW) {
    long i = 0;
    for (; i + VL <= HW; i += VL) {
        const V v = VLD(x + i);
        memcpy(X + i, &v, sizeof v);
    }
    for (; i < HW; i++) X[i] = LD(x + i);
}

INLINE int FN(within_impl)(const job_t *j, long u0, long u1, const int mode, const int lo, const int hi) {
    const long H = j->H, W = j->W, HW = H * W;
    const long P = lo > hi ? lo : hi, PV = (P + VL - 1) / VL * VL, HWV = (HW + VL - 1) / VL * VL;
    /* a padded buffer of L values, the plane at M, all three on 64-byte lines: zeros below for the
       column sums' reads from -PV - P W, above up to HW + P + VL + P W; a mask table of ML */
    const long M = (PV + P * W + VL - 1) / VL * VL, above = (P + VL + P * W + VL - 1) / VL * VL;
    const long L = M + HWV + above, ML = HWV + VL;
    const long G = HW >= WITHIN_GROUP ? 1 : (WITHIN_GROUP + HW - 1) / HW; /* planes per group */
    /* per plane: X, column sums (, U, and the backward's g p: ML more) */
    const long per = j->backward ? 3 * L + ML : 2 * L;
    size_t vals, bytes;
    if (__builtin_mul_overflow((size_t)per, (size_t)G, &vals) ||
        __builtin_mul_overflow(vals, sizeof(T), &bytes) ||
        __builtin_add_overflow(bytes, (size_t)(2 * P + 1) * (size_t)ML * sizeof(MT), &bytes))
        return LRN_NO_MEMORY;
    T *buf = scratch(bytes);
    if (!buf) return LRN_NO_MEMORY;
    memset(buf, 0, vals * sizeof(T)); /* the pads stay zero: only the planes' interiors are written */
    MT *masks = (MT *)(buf + vals); /* (2P + 1) tables: masks[(s + P) ML + i] for shift s */
    for (long s = -P; s <= P; s++)
        for (long i = 0; i < ML; i++) {
            const long w = i % W + s;
            masks[(s + P) * ML + i] = (w >= 0 && w < W) ? (MT)-1 : 0;
        }
#define X_(q) (buf + (q) * per + M)
#define CS_(q) (buf + (q) * per + L + M)
#define U_(q) (buf + (q) * per + 2 * L + M)
#define GP_(q) (buf + (q) * per + 3 * L)
    const T scale = (T)j->scale, k = (T)j->k, beta = (T)j->beta;
    const T c2 = (T)(2.0 * j->beta * j->scale);
    for (long u = u0; u < u1; u += G) {
        const long n = u1 - u < G ? u1 - u : G;
        if (u + n < u1 && G * HW * (long)sizeof(S) < WITHIN_PREFETCH) /* the next group's x (and g) */
            FN(prefetch_group)((const S *)j->x + (u + n) * HW, j->backward ? (const S *)j->g + (u + n) * HW : NULL,
                               (u1 - u - n < G ? u1 - u - n : G) * HW);
        for (long q = 0; q < n; q++) FN(copy_plane)(X_(q), (const S *)j->x + (u + q) * HW, HW);
        for (long q = 0; q < n; q++) FN(column_sums)(CS_(q), X_(q), HW, P, PV, W, -lo, hi, 1);
        for (long q = 0; q < n; q++) {
            const T *X = X_(q), *Cs = CS_(q);
            S *out = (S *)j->out + (u + q) * HW;
            const S *g = j->backward ? (const S *)j->g + (u + q) * HW : NULL;
            T *U = j->backward ? U_(q) : NULL, *GP = j->backward ? GP_(q) : NULL;
            for (long i = 0; i < HW; i += VL) {
                const V d = k + scale * FN(row_sum)(Cs, masks, ML, i, -lo, hi, P);
                V inv;
                const V p = FN(vnegpow_inv)(d, mode, beta, &inv), xv = FN(vload)(X + i);
                if (!j->backward) {
                    FN(vstore_part)(out + i, xv * p, HW - i);
                    continue;
                }
                const V gp = FN(vload_part)(g + i, HW - i) * p;
                V uu = gp * xv * inv;
                if (i + VL > HW) /* the lanes past the plane are U's pad: zeros */
                    for (long l = HW - i; l < VL; l++) uu[l] = 0;
                memcpy(GP + i, &gp, sizeof gp);
                memcpy(U + i, &uu, sizeof uu);
            }
        }
        if (!j->backward) continue;
        for (long q = 0; q < n; q++) FN(column_sums)(CS_(q), U_(q), HW, P, PV, W, -hi, lo, 0); /* the transposed window */
        for (long q = 0; q < n; q++) {
            const T *X = X_(q), *Cs = CS_(q), *GP = GP_(q);
            S *out = (S *)j->out + (u + q) * HW;
            for (long i = 0; i < HW; i += VL) {
                const V s = FN(row_sum)(Cs, masks, ML, i, -hi, lo, P);
                FN(vstore_part)(out + i, FN(vload)(GP + i) - c2 * FN(vload)(X + i) * s, HW - i);
            }
        }
    }
#undef X_
#undef CS_
#undef U_
#undef GP_
    return LRN_OK;
}

/* the common windows (3 and 5 wide, centred) compiled apart, with their loops unrolled */
#define WITHIN_BY_SIZE(j, u0, u1, mode)                                        \
    ((j)->lo == 1 && (j)->hi == 1   ? FN(within_impl)(j, u0, u1, mode, 1, 1) \
     : (j)->lo == 2 && (j)->hi == 2 ? FN(within_impl)(j, u0, u1, mode, 2, 2) \
                                    : FN(within_impl)(j, u0, u1, mode, (j)->lo, (j)->hi))

static int FN(within)(const job_t *j, long u0, long u1) {
    BY_MODE(WITHIN_BY_SIZE, j, u0, u1);
}

#undef WITHIN_BY_SIZE
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
