/*
 * Element ranges of an allreduce's data, given as one buffer or as segments
 * (zero-copy fusion: the tensors of a fused group stay where they are and an
 * algorithm that stages data anyway, shm-direct, gathers from them directly).
 */
#include <string.h>

#include "coll.h"

/* The segment holding element off: the last one starting at or before it
 * (an empty segment shares its offset with the next, which is then taken). */
static size_t seg_find(const dc_coll_args_t *args, size_t off)
{
    size_t lo = 0, hi = args->nsegs;

    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;

        if (args->segs[mid].off <= off) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

void dc_coll_gather(const dc_coll_args_t *args, size_t esize, size_t off, size_t len, void *dst)
{
    char *d = dst;

    if (args->nsegs == 0) {
        memcpy(d, (const char *)args->sendbuf + off * esize, len * esize);
        return;
    }
    for (size_t i = seg_find(args, off); len > 0 && i < args->nsegs; i++) {
        const dc_coll_seg_t *s = &args->segs[i];
        size_t skip = off - s->off, n = s->count - skip < len ? s->count - skip : len;

        if (s->sendbuf != NULL) {
            memcpy(d, (const char *)s->sendbuf + skip * esize, n * esize);
        } else {
            memset(d, 0, n * esize);
        }
        d += n * esize;
        off += n;
        len -= n;
    }
}

void dc_coll_scatter(const dc_coll_args_t *args, size_t esize, size_t off, size_t len,
                     const void *src, void (*copy)(void *, const void *, size_t))
{
    const char *s_ = src;

    if (args->nsegs == 0) {
        copy((char *)args->recvbuf + off * esize, s_, len * esize);
        return;
    }
    for (size_t i = seg_find(args, off); len > 0 && i < args->nsegs; i++) {
        const dc_coll_seg_t *s = &args->segs[i];
        size_t skip = off - s->off, n = s->count - skip < len ? s->count - skip : len;

        if (s->recvbuf != NULL) {
            copy((char *)s->recvbuf + skip * esize, s_, n * esize);
        }
        s_ += n * esize;
        off += n;
        len -= n;
    }
}

const void *dc_coll_input(const dc_coll_args_t *args, size_t esize, size_t off, size_t len,
                          void *scratch)
{
    if (args->nsegs == 0) {
        return (const char *)args->sendbuf + off * esize;
    }
    if (len > 0) {
        const dc_coll_seg_t *s = &args->segs[seg_find(args, off)];

        if (s->sendbuf != NULL && off + len <= s->off + s->count) {
            return (const char *)s->sendbuf + (off - s->off) * esize;
        }
    }
    dc_coll_gather(args, esize, off, len, scratch);
    return scratch;
}
