/* IDX loader through zlib's gz* calls, which read gzip and plain files alike;
 * every header field is checked against what the caller expects and the file's
 * actual length. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "idx.h"

#define IDX_CHUNK (1u << 20) /* first read; the buffer doubles from there */

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Reads exactly len bytes; returns the count actually read, -1 on a zlib error. */
static long read_full(gzFile f, void *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        size_t chunk = len - got > (1u << 30) ? (1u << 30) : len - got;
        int n = gzread(f, (char *)buf + got, (unsigned)chunk);
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    return (long)got;
}

static const char *gz_msg(gzFile f)
{
    int code;
    const char *msg = gzerror(f, &code);

    return code == Z_ERRNO ? strerror(errno) : msg;
}

int idx_load(const char *path, int want_dims, idx_data_t *out_p, char *err, size_t errlen)
{
    unsigned char hdr[16];
    const size_t hdr_len = 4 + 4 * (size_t)want_dims;
    uint32_t dims[3] = {1, 1, 1};
    const uint32_t want_magic = 0x800u | (uint32_t)want_dims;
    gzFile f = gzopen(path, "rb");
    int rc = -1;

    if (f == NULL) {
        return fail(err, errlen, "%s: cannot open: %s", path, strerror(errno ? errno : ENOMEM));
    }
    long n = read_full(f, hdr, hdr_len);
    if (n < 0) {
        fail(err, errlen, "%s: read error: %s", path, gz_msg(f));
        goto out;
    }
    if ((size_t)n < hdr_len) {
        fail(err, errlen, "%s: truncated header (%ld of %zu bytes)", path, n, hdr_len);
        goto out;
    }
    uint32_t magic = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (magic != want_magic) {
        fail(err, errlen, "%s: magic 0x%08x, expected 0x%08x (IDX %s of uint8)", path, magic,
             want_magic, want_dims == 3 ? "images" : "labels");
        goto out;
    }
    for (int d = 0; d < want_dims; d++) {
        const unsigned char *p = hdr + 4 + 4 * d;
        dims[d] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    }
    if (dims[0] == 0 || dims[0] > (1u << 26) || dims[1] == 0 || dims[1] > 4096 || dims[2] == 0 ||
        dims[2] > 4096) {
        fail(err, errlen, "%s: implausible dimensions %u x %u x %u", path, dims[0], dims[1],
             dims[2]);
        goto out;
    }
    size_t len = (size_t)dims[0] * dims[1] * dims[2];
    uint8_t *data = NULL;
    size_t cap = 0, got = 0;
    /* The buffer grows as the data arrives, so a header that promises more than
     * the file holds (up to 2^50 bytes) costs no more memory than the file. */
    while (got < len) {
        if (got == cap) {
            size_t ncap = cap == 0 ? (len < IDX_CHUNK ? len : IDX_CHUNK)
                                   : (cap > len / 2 ? len : 2 * cap);
            uint8_t *grown = realloc(data, ncap);
            if (grown == NULL) {
                fail(err, errlen, "%s: out of memory for %zu bytes", path, ncap);
                free(data);
                goto out;
            }
            data = grown;
            cap = ncap;
        }
        n = read_full(f, data + got, cap - got);
        if (n < 0) {
            fail(err, errlen, "%s: read error: %s", path, gz_msg(f));
            free(data);
            goto out;
        }
        got += (size_t)n;
        if (got < cap) {
            break; /* end of file */
        }
    }
    if (got != len) {
        fail(err, errlen, "%s: truncated: header promises %zu bytes of data, file has %zu",
             path, len, got);
        free(data);
        goto out;
    }
    unsigned char extra;
    if (read_full(f, &extra, 1) != 0) {
        fail(err, errlen, "%s: trailing bytes after the %zu bytes of data the header describes",
             path, len);
        free(data);
        goto out;
    }
    out_p->count = (int)dims[0];
    out_p->rows = (int)dims[1];
    out_p->cols = (int)dims[2];
    out_p->data = data;
    rc = 0;
out:
    gzclose(f);
    return rc;
}

void idx_free(idx_data_t *d)
{
    free(d->data);
    d->data = NULL;
}
