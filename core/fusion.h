/*
 * The host buffers of fused and joined work, owned here alone: the fusion
 * buffer (tensors packed for one collective, and a joined rank's throw-away
 * result), the segment list of a zero-copy group, and the zeros a joined rank
 * contributes. Persistent, grown on demand, pre-faulted (page faults are dear).
 */
#ifndef DC_FUSION_H
#define DC_FUSION_H

#include "coll.h"

typedef struct dc_fusion {
    void *buf;
    size_t size;
    dc_coll_seg_t *segs;
    size_t segs_cap;
    void *zeros;
    size_t zeros_size;
} dc_fusion_t;

/* The fusion buffer, at least bytes long. */
dc_status_t dc_fusion_buffer(dc_fusion_t *f, size_t bytes, void **buf_p);
/* Zeros, at least bytes of them (at least one). */
dc_status_t dc_fusion_zeros(dc_fusion_t *f, size_t bytes, const void **zeros_p);
/* The segment list with room for n segments; NULL when out of memory. */
dc_coll_seg_t *dc_fusion_segs(dc_fusion_t *f, size_t n);
void dc_fusion_free(dc_fusion_t *f);

#endif
