/* IDX files (the MNIST format), gzip-compressed or plain: images (magic 0x803,
 * dimensions count x rows x cols of uint8) and labels (magic 0x801, count). */
#ifndef DTRAIN_IDX_H
#define DTRAIN_IDX_H

#include <stddef.h>
#include <stdint.h>

typedef struct idx_data {
    int count;       /* images or labels */
    int rows, cols;  /* 1 x 1 for labels */
    uint8_t *data;   /* count * rows * cols bytes, malloc'd */
} idx_data_t;

/* Reads `path`, which must hold IDX data of `want_dims` dimensions (3: images,
 * 1: labels). On failure returns -1 with a message naming the file and what is
 * wrong (missing, bad magic, truncated, trailing bytes) in err. */
int idx_load(const char *path, int want_dims, idx_data_t *out_p, char *err, size_t errlen);
void idx_free(idx_data_t *d);

#endif
