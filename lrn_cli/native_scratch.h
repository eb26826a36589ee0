/*
 * The calling thread's scratch memory for the C kernels, grown on demand and kept for the next
 * call (OpenMP pool threads live on, so a call allocates nothing once warm). Included by the
 * kernels' sources (lrn_cli/native.py puts this folder on the include path).
 */
#include <stdlib.h>

static __thread void *scratch_buf;
static __thread size_t scratch_cap;

/* 64-byte aligned, so that a kernel can lay out its buffers on cache lines */
static void *scratch(size_t bytes) {
    if (bytes > scratch_cap) {
        free(scratch_buf);
        if (posix_memalign(&scratch_buf, 64, bytes)) scratch_buf = NULL;
        scratch_cap = scratch_buf ? bytes : 0;
    }
    return scratch_buf;
}

/* for a thread about to end (the pthread fallback) */
static inline void scratch_release(void) {
    free(scratch_buf);
    scratch_buf = NULL;
    scratch_cap = 0;
}
