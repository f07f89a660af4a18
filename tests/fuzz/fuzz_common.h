/* Shared by the libFuzzer harnesses: quiet logging, a deterministic random
 * source (so a crashing input replays exactly, and a harness can predict the
 * nonce a server is about to send), and a cursor over the fuzzer's bytes. */
#ifndef DC_FUZZ_COMMON_H
#define DC_FUZZ_COMMON_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Job secrets the harnesses and the seed generator share (the harness plays
 * the authenticated peer, so seeds captured from real traffic verify). */
static const uint8_t fuzz_rdv_secret[32] __attribute__((unused)) = {
    0x64, 0x63, 0x6f, 0x6d, 0x6d, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x73, 0x65, 0x63, 0x72, 0x65,
    0x74, 0x2d, 0x6f, 0x66, 0x2d, 0x74, 0x68, 0x65, 0x2d, 0x72, 0x64, 0x76, 0x2d, 0x6a, 0x6f, 0x62};
static const uint8_t fuzz_tcp_secret[32] __attribute__((unused)) = {
    0x74, 0x63, 0x70, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x21,
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10};

/* ---- deterministic randombytes: a counter through a fixed mixer ---------------- */

static uint64_t fuzz_rng_state;

static inline void fuzz_rng_reset(void)
{
    fuzz_rng_state = 0x9e3779b97f4a7c15ull;
}

static inline uint32_t fuzz_rng_random(void)
{
    uint64_t z = (fuzz_rng_state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)(z ^ (z >> 31));
}

static inline void fuzz_rng_buf(void *const buf, const size_t size)
{
    uint8_t *p = buf;

    for (size_t i = 0; i < size; i++) {
        p[i] = (uint8_t)fuzz_rng_random();
    }
}

static inline const char *fuzz_rng_name(void)
{
    return "dcomm-fuzz-deterministic";
}

static randombytes_implementation fuzz_rng_impl = {
    .implementation_name = fuzz_rng_name,
    .random = fuzz_rng_random,
    .buf = fuzz_rng_buf,
};

/* Call from LLVMFuzzerInitialize: before anything initializes libsodium. */
static inline void fuzz_setup(void)
{
    const char *lvl = getenv("DCOMM_FUZZ_LOG"); /* e.g. debug, to see why an input fails */

    randombytes_set_implementation(&fuzz_rng_impl);
    if (sodium_init() < 0) {
        abort();
    }
    fuzz_rng_reset();
    int level = lvl != NULL ? dc_log_level_parse(lvl) : -1;

    dc_log_set_level(level >= 0 ? (dc_log_level_t)level : DC_LOG_LEVEL_NONE);
}

/* ---- reading the fuzzer's bytes ------------------------------------------------- */

typedef struct fuzz_in {
    const uint8_t *p;
    size_t left;
} fuzz_in_t;

static inline uint8_t fuzz_u8(fuzz_in_t *in)
{
    if (in->left == 0) {
        return 0;
    }
    in->left--;
    return *in->p++;
}

static inline uint16_t fuzz_u16(fuzz_in_t *in)
{
    uint16_t hi = fuzz_u8(in);

    return (uint16_t)(hi << 8 | fuzz_u8(in));
}

/* Up to n bytes (fewer at the end); *got_p says how many. */
static inline const uint8_t *fuzz_bytes(fuzz_in_t *in, size_t n, size_t *got_p)
{
    const uint8_t *p = in->p;

    n = n < in->left ? n : in->left;
    in->p += n;
    in->left -= n;
    *got_p = n;
    return p;
}

/* A fresh heap copy of exactly n bytes (none for n == 0), so that ASan sees
 * any read past them. */
static inline void *fuzz_dup(const void *src, size_t n)
{
    void *p = malloc(n);

    if (p == NULL && n > 0) {
        abort();
    }
    if (n > 0) {
        memcpy(p, src, n);
    }
    return p;
}

#endif
