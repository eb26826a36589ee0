/*
 * Random-resized crop + horizontal flip of a uint8 batch, for the image-folder
 * pipeline (lrn_cli/data/augment.py): each output pixel is the bilinear interpolation of its
 * crop box (torch's align_corners=False convention), read from channels-last images
 * (N, H, W, C) -- image `index[b]` for output b, so the gather from the memory-mapped cache is
 * part of the same pass -- and written planar (B, C, S, S): uint8 rounded to nearest, or
 * float32 normalized with (v - mean[c]) * inv_std[c] when `mean` is given.
 * No antialiasing: the cache stores images at 8/7 of the crop size, so a crop is shrunk by at
 * most 8/7, where bilinear filtering does not alias. Images are split across pthreads; every
 * output depends only on its own image, so the result does not depend on the thread count.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

/* return codes of random_resized_crop (lrn_cli/data/augment.py reads them) */
#define CROP_OK 0
#define CROP_BAD_BOX (-1)
#define CROP_BAD_INDEX (-2)
#define CROP_NO_MEMORY (-3) /* a scratch buffer could not be allocated */

typedef struct {
    const uint8_t *src;
    const int64_t *index; /* (B,): which image of src each output is cut from */
    long H, W, C, S;
    const int64_t *boxes; /* (B, 4): top, left, height, width */
    const uint8_t *flips;
    void *out;
    const float *mean, *inv_std; /* NULL: uint8 output */
} job_t;

/* source index and weight of each output coordinate along one axis */
static void axis(long n_out, long start, long len, int *i0, int *i1, float *w, int flip) {
    const float scale = (float)len / (float)n_out;
    for (long o = 0; o < n_out; o++) {
        float f = ((float)o + 0.5f) * scale - 0.5f;
        if (f < 0) f = 0;
        long a = (long)f;
        if (a > len - 1) a = len - 1;
        const long b = a + (a < len - 1);
        const long at = flip ? n_out - 1 - o : o;
        i0[at] = (int)(start + a);
        i1[at] = (int)(start + b);
        w[at] = f - (float)a;
    }
}

/*
 * Separable: each source row of the crop is first interpolated along x into a float row per
 * channel (the taps of a pixel's channels are adjacent in the source), then every output row
 * blends two of those rows, which vectorizes.
 */
static int crop_images(const job_t *j, long b0, long b1) {
    const long S = j->S, C = j->C, W = j->W, H = j->H;
    int *x0 = malloc(sizeof(int) * S), *x1 = malloc(sizeof(int) * S);
    int *y0 = malloc(sizeof(int) * S), *y1 = malloc(sizeof(int) * S);
    float *wx = malloc(sizeof(float) * S), *wy = malloc(sizeof(float) * S);
    float *rows = malloc(sizeof(float) * H * C * S); /* (row, channel, S) */
    const int ok = x0 && x1 && y0 && y1 && wx && wy && rows;
    for (long b = b0; ok && b < b1; b++) {
        const int64_t *box = j->boxes + 4 * b;
        const long top = box[0], h = box[2];
        const uint8_t *img = j->src + j->index[b] * H * W * C;
        axis(S, box[1], box[3], x0, x1, wx, j->flips[b]);
        axis(S, top, h, y0, y1, wy, 0);
        for (long r = top; r < top + h; r++) { /* along x */
            const uint8_t *src = img + r * W * C;
            float *dst = rows + (r - top) * C * S;
            if (C == 3) { /* RGB, unrolled: the channel loop would not vectorize anyway */
                for (long ox = 0; ox < S; ox++) {
                    const uint8_t *pa = src + 3L * x0[ox], *pe = src + 3L * x1[ox];
                    const float w = wx[ox];
                    dst[ox] = pa[0] + w * (float)(pe[0] - pa[0]);
                    dst[S + ox] = pa[1] + w * (float)(pe[1] - pa[1]);
                    dst[2 * S + ox] = pa[2] + w * (float)(pe[2] - pa[2]);
                }
                continue;
            }
            for (long ox = 0; ox < S; ox++) {
                const uint8_t *pa = src + (long)x0[ox] * C, *pe = src + (long)x1[ox] * C;
                const float w = wx[ox];
                for (long c = 0; c < C; c++) dst[c * S + ox] = pa[c] + w * (float)(pe[c] - pa[c]);
            }
        }
        for (long c = 0; c < C; c++) { /* along y */
            for (long oy = 0; oy < S; oy++) {
                const float *ra = rows + ((y0[oy] - top) * C + c) * S, *re = rows + ((y1[oy] - top) * C + c) * S;
                const float w = wy[oy];
                const long at = ((b * C + c) * S + oy) * S;
                if (j->mean) {
                    const float m = j->mean[c], is = j->inv_std[c];
                    float *o = (float *)j->out + at;
                    for (long ox = 0; ox < S; ox++) o[ox] = (ra[ox] + w * (re[ox] - ra[ox]) - m) * is;
                } else {
                    uint8_t *o = (uint8_t *)j->out + at;
                    for (long ox = 0; ox < S; ox++) o[ox] = (uint8_t)(ra[ox] + w * (re[ox] - ra[ox]) + 0.5f);
                }
            }
        }
    }
    free(x0); free(x1); free(y0); free(y1); free(wx); free(wy); free(rows);
    return ok ? CROP_OK : CROP_NO_MEMORY;
}

typedef struct {
    const job_t *job;
    long b0, b1;
    int rc;
} slice_t;

static void *run_slice(void *arg) {
    slice_t *s = (slice_t *)arg;
    s->rc = crop_images(s->job, s->b0, s->b1);
    return NULL;
}

int random_resized_crop(const uint8_t *src, long N, const int64_t *index, long B, long H, long W, long C,
                        const int64_t *boxes, const uint8_t *flips, void *out, long S, const float *mean,
                        const float *inv_std, int threads) {
    for (long b = 0; b < B; b++) {
        const int64_t *box = boxes + 4 * b;
        if (box[0] < 0 || box[1] < 0 || box[2] < 1 || box[3] < 1 || box[0] + box[2] > H || box[1] + box[3] > W)
            return CROP_BAD_BOX;
        if (index[b] < 0 || index[b] >= N) return CROP_BAD_INDEX;
    }
    job_t job = {src, index, H, W, C, S, boxes, flips, out, mean, inv_std};
    if (threads > B) threads = (int)B;
    if (threads > 64) threads = 64;
    if (threads <= 1) return crop_images(&job, 0, B);
    pthread_t tid[64];
    slice_t sl[64];
    int started[64] = {0};
    for (int t = 0; t < threads; t++) {
        sl[t] = (slice_t){&job, B * t / threads, B * (t + 1) / threads, CROP_OK};
        if (t > 0) started[t] = pthread_create(&tid[t], NULL, run_slice, &sl[t]) == 0;
    }
    run_slice(&sl[0]);
    int rc = sl[0].rc;
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(tid[t], NULL);
        else run_slice(&sl[t]);
        if (rc == CROP_OK) rc = sl[t].rc;
    }
    return rc;
}
