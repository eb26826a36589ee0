/*
 * Output memory for large tensors that outlives torch's hold on it, handed to torch through
 * DLPack (lrn_cli/lrn/kernels/native.py wraps it with torch's from_dlpack).
 *
 * glibc's malloc serves every block above 32 MB (by default) from fresh pages of mmap and unmaps
 * it on free, so a layer that allocates a large output on every call has the OS fault in and zero
 * those pages on every call (a 74 MB float32 output: about 39 ms to allocate and fill against
 * 4.5 ms in memory already mapped). Here a block torch frees comes back to a free list, through the
 * DLPack deleter, and the next call of about the same size takes it: its pages are resident.
 * Only freed blocks are kept, at most `limit` bytes of them (a block that would pass it goes back
 * to malloc), so the memory held beyond what torch holds is bounded. The deleter may run on any
 * thread, hence the lock; a forked child starts with a fresh lock.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* DLPack's (legacy, unversioned) structs, as dlpack.h v0.8 defines them */
typedef struct { int32_t device_type, device_id; } DLDevice;
typedef struct { uint8_t code, bits; uint16_t lanes; } DLDataType;
typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape, *strides;
    uint64_t byte_offset;
} DLTensor;
typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *);
} DLManagedTensor;

#define POOL_MAX_DIMS 8
#define POOL_SLOTS 64
#define DL_CPU 1

typedef struct {
    DLManagedTensor managed;
    size_t bytes;                       /* the block's size */
    int64_t dims[2 * POOL_MAX_DIMS];    /* shape, then strides */
} pool_tensor_t;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static void *pool_data[POOL_SLOTS];
static size_t pool_bytes[POOL_SLOTS];
static int pool_count;
static size_t pool_held, pool_limit = (size_t)1 << 30;

static void pool_after_fork(void) { pthread_mutex_init(&pool_lock, NULL); }

__attribute__((constructor)) static void pool_init(void) { pthread_atfork(NULL, NULL, pool_after_fork); }

static void pool_give_back(DLManagedTensor *managed) {
    pool_tensor_t *t = (pool_tensor_t *)managed;
    void *data = managed->dl_tensor.data;
    pthread_mutex_lock(&pool_lock);
    if (pool_count < POOL_SLOTS && pool_held + t->bytes <= pool_limit) {
        pool_data[pool_count] = data;
        pool_bytes[pool_count++] = t->bytes;
        pool_held += t->bytes;
        data = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
    free(data);
    free(t);
}

/* a kept block of at least `bytes` and at most a quarter more (the smallest such), or NULL */
static void *pool_take(size_t bytes, size_t *got) {
    void *data = NULL;
    pthread_mutex_lock(&pool_lock);
    int best = -1;
    for (int i = 0; i < pool_count; i++)
        if (pool_bytes[i] >= bytes && pool_bytes[i] - bytes <= bytes / 4 && (best < 0 || pool_bytes[i] < pool_bytes[best]))
            best = i;
    if (best >= 0) {
        data = pool_data[best];
        *got = pool_bytes[best];
        pool_held -= *got;
        pool_count--;
        pool_data[best] = pool_data[pool_count];
        pool_bytes[best] = pool_bytes[pool_count];
    }
    pthread_mutex_unlock(&pool_lock);
    return data;
}

/* An uninitialized CPU tensor of `bytes` bytes with this shape and these strides (in elements)
   and DLPack type (code, bits), whose memory returns to the pool when its deleter is called;
   NULL when out of memory or ndim > POOL_MAX_DIMS. */
DLManagedTensor *lrn_pool_tensor(int ndim, const int64_t *shape, const int64_t *strides, int code, int bits,
                                 size_t bytes) {
    if (ndim < 0 || ndim > POOL_MAX_DIMS) return NULL;
    pool_tensor_t *t = calloc(1, sizeof *t);
    if (t == NULL) return NULL;
    size_t got = bytes;
    void *data = pool_take(bytes, &got);
    if (data == NULL && posix_memalign(&data, 64, bytes ? bytes : 1) != 0) {
        free(t);
        return NULL;
    }
    t->bytes = got;
    memcpy(t->dims, shape, (size_t)ndim * sizeof *shape);
    memcpy(t->dims + POOL_MAX_DIMS, strides, (size_t)ndim * sizeof *strides);
    t->managed.dl_tensor = (DLTensor){data, {DL_CPU, 0}, ndim, {(uint8_t)code, (uint8_t)bits, 1}, t->dims,
                                      t->dims + POOL_MAX_DIMS, 0};
    t->managed.deleter = pool_give_back;
    return &t->managed;
}

/* a tensor of lrn_pool_tensor that nobody took over (its memory returns to the pool) */
void lrn_pool_drop(DLManagedTensor *managed) { managed->deleter(managed); }

/* the most bytes of freed blocks to keep; blocks kept beyond a lower limit are freed now */
void lrn_pool_set_limit(size_t bytes) {
    void *drop[POOL_SLOTS];
    int n = 0;
    pthread_mutex_lock(&pool_lock);
    pool_limit = bytes;
    while (pool_count > 0 && pool_held > pool_limit) {
        pool_count--;
        pool_held -= pool_bytes[pool_count];
        drop[n++] = pool_data[pool_count];
    }
    pthread_mutex_unlock(&pool_lock);
    while (n > 0) free(drop[--n]);
}

/* bytes of freed blocks kept now */
size_t lrn_pool_held(void) {
    pthread_mutex_lock(&pool_lock);
    const size_t held = pool_held;
    pthread_mutex_unlock(&pool_lock);
    return held;
}
