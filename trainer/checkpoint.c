/* Checkpoint files: "DTRAINCK", a version, the header fields in host order (a
 * checkpoint is read back on the machine type that wrote it), the two vectors
 * and a 64-bit FNV-1a checksum of everything before it. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"

#define CKPT_MAGIC   "DTRAINCK"
#define CKPT_VERSION 1u

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;

    for (size_t i = 0; i < len; i++) {
        h = (h ^ p[i]) * 0x100000001b3ull;
    }
    return h;
}

static int write_all(int fd, const void *buf, size_t len, uint64_t *sum)
{
    const char *p = buf;
    size_t done = 0;

    *sum = fnv1a(*sum, buf, len);
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

int ckpt_save(const char *path, const ckpt_header_t *h, const float *params,
              const float *momentum, char *err, size_t errlen)
{
    char tmp[4096];
    uint64_t sum = 0xcbf29ce484222325ull;
    uint32_t version = CKPT_VERSION;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        return fail(err, errlen, "checkpoint path too long: %s", path);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return fail(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
    }
    size_t vec = (size_t)h->nparams * sizeof(float);
    if (write_all(fd, CKPT_MAGIC, 8, &sum) || write_all(fd, &version, sizeof(version), &sum) ||
        write_all(fd, h, sizeof(*h), &sum) || write_all(fd, params, vec, &sum) ||
        write_all(fd, momentum, vec, &sum)) {
        goto err_io;
    }
    uint64_t final = sum;
    if (write_all(fd, &final, sizeof(final), &sum) || fsync(fd) != 0) {
        goto err_io;
    }
    if (close(fd) != 0) {
        fd = -1;
        goto err_io;
    }
    if (rename(tmp, path) != 0) {
        fail(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
err_io:
    fail(err, errlen, "cannot write %s: %s", tmp, errno ? strerror(errno) : "short write");
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
    return -1;
}

static int read_all(FILE *f, void *buf, size_t len, uint64_t *sum)
{
    if (fread(buf, 1, len, f) != len) {
        return -1;
    }
    *sum = fnv1a(*sum, buf, len);
    return 0;
}

int ckpt_load(const char *path, ckpt_header_t *h, float *params, float *momentum, char *err,
              size_t errlen)
{
    char magic[8];
    uint32_t version;
    uint64_t sum = 0xcbf29ce484222325ull, stored, want = h->nparams;
    ckpt_header_t in;
    FILE *f = fopen(path, "rb");
    int rc = -1;

    if (f == NULL) {
        return fail(err, errlen, "cannot open checkpoint %s: %s", path, strerror(errno));
    }
    if (read_all(f, magic, 8, &sum) || read_all(f, &version, sizeof(version), &sum) ||
        read_all(f, &in, sizeof(in), &sum)) {
        fail(err, errlen, "%s: truncated checkpoint header", path);
        goto out;
    }
    if (memcmp(magic, CKPT_MAGIC, 8) != 0 || version != CKPT_VERSION) {
        fail(err, errlen, "%s: not a dtrain checkpoint (version %u)", path, CKPT_VERSION);
        goto out;
    }
    if (in.nparams != want) {
        fail(err, errlen, "%s: holds %llu parameters, this model has %llu", path,
             (unsigned long long)in.nparams, (unsigned long long)want);
        goto out;
    }
    size_t vec = (size_t)want * sizeof(float);
    if (read_all(f, params, vec, &sum) || read_all(f, momentum, vec, &sum) ||
        fread(&stored, sizeof(stored), 1, f) != 1) {
        fail(err, errlen, "%s: truncated checkpoint", path);
        goto out;
    }
    if (stored != sum) {
        fail(err, errlen, "%s: checksum mismatch (corrupt checkpoint)", path);
        goto out;
    }
    *h = in;
    rc = 0;
out:
    fclose(f);
    return rc;
}
