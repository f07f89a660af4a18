/* The fusion, segment and zeros buffers (fusion.h). */
#include <stdlib.h>
#include <sys/mman.h>

#include "fusion.h"

/* Grows a mapping in 2 MiB steps, pre-faulted. */
static dc_status_t grow(void **buf, size_t *size, size_t need, const char *what)
{
    void *p;

    if (need <= *size) {
        return DCOMM_OK;
    }
    need = (need + (1u << 21) - 1) & ~(size_t)((1u << 21) - 1);
    p = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1,
             0);
    if (p == MAP_FAILED) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "cannot map a %zu-byte %s buffer", need, what);
    }
    if (*buf != NULL) {
        munmap(*buf, *size);
    }
    *buf = p;
    *size = need;
    return DCOMM_OK;
}

dc_status_t dc_fusion_buffer(dc_fusion_t *f, size_t bytes, void **buf_p)
{
    dc_status_t status = grow(&f->buf, &f->size, bytes, "fusion");

    *buf_p = f->buf;
    return status;
}

dc_status_t dc_fusion_zeros(dc_fusion_t *f, size_t bytes, const void **zeros_p)
{
    dc_status_t status = grow(&f->zeros, &f->zeros_size, bytes ? bytes : 1, "zero");

    *zeros_p = f->zeros;
    return status;
}

dc_coll_seg_t *dc_fusion_segs(dc_fusion_t *f, size_t n)
{
    if (n > f->segs_cap) {
        size_t cap = f->segs_cap ? 2 * f->segs_cap : 64;
        dc_coll_seg_t *segs;

        cap = cap < n ? n : cap;
        segs = realloc(f->segs, cap * sizeof(*segs));
        if (segs == NULL) {
            return NULL;
        }
        f->segs = segs;
        f->segs_cap = cap;
    }
    return f->segs;
}

void dc_fusion_free(dc_fusion_t *f)
{
    if (f->buf != NULL) {
        munmap(f->buf, f->size);
    }
    free(f->segs);
    if (f->zeros != NULL) {
        munmap(f->zeros, f->zeros_size);
    }
    f->buf = f->zeros = NULL;
    f->segs = NULL;
    f->size = f->zeros_size = f->segs_cap = 0;
}
