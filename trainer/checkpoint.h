/* dtrain checkpoints: the run's identity (seed, ranks, batch, epochs), its
 * position (epochs done, global step) and the parameter and momentum vectors,
 * with a checksum. Written atomically: a temporary file, fsync, rename. */
#ifndef DTRAIN_CHECKPOINT_H
#define DTRAIN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ckpt_header {
    uint64_t seed;
    int32_t ranks, batch, epochs_done, epochs;
    int64_t step;       /* global optimizer steps done */
    int64_t limit;      /* training images used per epoch */
    uint64_t nparams;
} ckpt_header_t;

/* Returns 0, or -1 with the reason in err. */
int ckpt_save(const char *path, const ckpt_header_t *h, const float *params,
              const float *momentum, char *err, size_t errlen);
/* Reads a checkpoint whose nparams must equal h->nparams (set by the caller);
 * fills the rest of *h. */
int ckpt_load(const char *path, ckpt_header_t *h, float *params, float *momentum, char *err,
              size_t errlen);

#endif
