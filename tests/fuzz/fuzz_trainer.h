/* The trainer's loaders read paths: the fuzzer's bytes go into a memfd that
 * the loader opens by its /proc/self/fd path, so the real open/read code runs. */
#ifndef DC_FUZZ_TRAINER_H
#define DC_FUZZ_TRAINER_H

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static int fuzz_memfd = -1;
static char fuzz_path[64];

/* Returns the path of a file holding exactly data[0..size). */
static inline const char *fuzz_file(const uint8_t *data, size_t size)
{
    if (fuzz_memfd < 0) {
        fuzz_memfd = memfd_create("dcomm-fuzz", MFD_CLOEXEC);
        if (fuzz_memfd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(fuzz_path, sizeof(fuzz_path), "/proc/self/fd/%d", fuzz_memfd);
    }
    if (ftruncate(fuzz_memfd, 0) != 0 || pwrite(fuzz_memfd, data, size, 0) != (ssize_t)size) {
        perror("memfd write");
        abort();
    }
    return fuzz_path;
}

#endif
