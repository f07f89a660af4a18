/* A key-value store in a directory, one file per key, each written to a temp
 * name and renamed so readers never see half a value. For tests and for jobs
 * on one host started without dlaunch. The directory may hold the job secret:
 * it must be ours and writable by nobody else, and every file is created 0600. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "store.h"
#include "dc_time.h"

typedef struct filestore {
    dc_store_t super;
    char dir[PATH_MAX / 2];
} filestore_t;

/* Keys may contain '/': flatten them into one file name. */
static void key_path(const filestore_t *fs, const char *key, char *path, size_t cap)
{
    size_t n = (size_t)snprintf(path, cap, "%s/k_", fs->dir);

    for (const char *c = key; *c != '\0' && n + 1 < cap; c++, n++) {
        path[n] = (*c == '/') ? '%' : *c;
    }
    path[n < cap ? n : cap - 1] = '\0';
}

static dc_status_t filestore_set(dc_store_t *store, const char *key, const void *val, size_t len)
{
    filestore_t *fs = (filestore_t *)store;
    char path[PATH_MAX], tmp[PATH_MAX + 32];
    size_t off = 0;
    int fd;

    key_path(fs, key, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    unlink(tmp); /* a leftover of a process that had our pid */
    /* 0600 from the start (not fopen's 0666 & ~umask): values may be secrets. */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "filestore: cannot write %s: %s", tmp,
                            strerror(errno));
    }
    while (off < len) {
        ssize_t n = write(fd, (const char *)val + off, len - off);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        off += (size_t)n;
    }
    if (off != len || close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return dc_error_set(DCOMM_ERR_INTERNAL, "filestore: cannot store key %s", key);
    }
    return DCOMM_OK;
}

static dc_status_t filestore_get(dc_store_t *store, const char *key, void *buf, size_t cap,
                                 size_t *len_p, int timeout_ms)
{
    filestore_t *fs = (filestore_t *)store;
    uint64_t deadline = dc_deadline_ms(timeout_ms);
    char path[PATH_MAX];
    struct stat st;
    size_t got = 0;
    int fd;

    key_path(fs, key, path, sizeof(path));
    while ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0) {
        if (timeout_ms <= 0 || dc_now_ns() >= deadline) {
            return dc_error_set(DCOMM_ERR_TIMEOUT, "filestore: key %s not set within %d ms", key,
                                timeout_ms);
        }
        dc_sleep_ns(2000000);
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return dc_error_set(DCOMM_ERR_INTERNAL, "filestore: %s is not a readable file", path);
    }
    while (got < DC_MIN((size_t)st.st_size, cap)) {
        ssize_t n = read(fd, (char *)buf + got, DC_MIN((size_t)st.st_size, cap) - got);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    /* The length the caller checks is the file's, or what could be read of it. */
    *len_p = got < cap ? got : (size_t)st.st_size;
    return DCOMM_OK;
}

static dc_status_t filestore_add(dc_store_t *store, const char *key, int64_t delta,
                                 int64_t *value_p)
{
    filestore_t *fs = (filestore_t *)store;
    char path[PATH_MAX], text[32] = {0};
    int64_t value = 0;
    int fd;

    key_path(fs, key, path, sizeof(path));
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        return dc_error_set(DCOMM_ERR_INTERNAL, "filestore: cannot lock %s", path);
    }
    if (pread(fd, text, sizeof(text) - 1, 0) > 0) {
        value = strtoll(text, NULL, 10);
    }
    value += delta;
    int n = snprintf(text, sizeof(text), "%" PRId64, value);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != n) {
        close(fd);
        return dc_error_set(DCOMM_ERR_INTERNAL, "filestore: cannot update %s", path);
    }
    close(fd);
    *value_p = value;
    return DCOMM_OK;
}

static void filestore_close(dc_store_t *store)
{
    free(store);
}

static const dc_store_ops_t filestore_ops = {
    .set = filestore_set,
    .get = filestore_get,
    .add = filestore_add,
    .close = filestore_close,
};

dc_status_t dc_filestore_open(const char *dir, dc_store_t **store_p)
{
    filestore_t *fs;
    struct stat st;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "filestore: cannot create %s: %s", dir,
                            strerror(errno));
    }
    /* An existing directory: another user's, or one others may write into, could
     * hand us a secret of theirs or read ours. */
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "filestore: %s is not a directory", dir);
    }
    if (st.st_uid != geteuid()) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "filestore: %s belongs to uid %d, not to us "
                            "(uid %d): use a directory of your own", dir, (int)st.st_uid,
                            (int)geteuid());
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "filestore: %s is writable by %s (mode "
                            "%03o): chmod go-w it, or use a private directory", dir,
                            (st.st_mode & S_IWOTH) ? "everyone" : "its group",
                            (unsigned)(st.st_mode & 0777));
    }
    fs = calloc(1, sizeof(*fs));
    if (fs == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "filestore: out of memory");
    }
    fs->super.ops = &filestore_ops;
    snprintf(fs->dir, sizeof(fs->dir), "%s", dir);
    *store_p = &fs->super;
    return DCOMM_OK;
}

dc_status_t dc_store_barrier(dc_store_t *s, const char *name, int n, int timeout_ms)
{
    uint64_t deadline = dc_deadline_ms(timeout_ms);
    char key[256], done_key[300];
    int64_t value;
    size_t len;
    char flag;
    dc_status_t status;

    snprintf(key, sizeof(key), "barrier/%s", name);
    snprintf(done_key, sizeof(done_key), "barrier/%s/done", name);
    status = dc_store_add(s, key, 1, &value);
    if (status < 0) {
        return status;
    }
    if (value == n) {
        return dc_store_set(s, done_key, "1", 1);
    }
    int left = (int)((deadline - DC_MIN(deadline, dc_now_ns())) / 1000000ull);
    return dc_store_get(s, done_key, &flag, 1, &len, timeout_ms <= 0 ? 0 : DC_MAX(left, 1));
}
