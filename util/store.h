/* Key-value store used to exchange addresses at start-up (the rendezvous
 * server of dlaunch, or a directory on a shared file system). Transports get it
 * through the bootstrap; they never see its implementation. */
#ifndef DC_STORE_H
#define DC_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "status.h"

typedef struct dc_store dc_store_t;

typedef struct dc_store_ops {
    dc_status_t (*set)(dc_store_t *store, const char *key, const void *val, size_t len);
    /* Waits until key exists (at most timeout_ms; <= 0: no waiting), copies at most
     * cap bytes into buf and sets *len_p to the value's full length. */
    dc_status_t (*get)(dc_store_t *store, const char *key, void *buf, size_t cap, size_t *len_p,
                       int timeout_ms);
    /* Atomically adds delta to the integer at key (0 when absent); new value out. */
    dc_status_t (*add)(dc_store_t *store, const char *key, int64_t delta, int64_t *value_p);
    void (*close)(dc_store_t *store);
    /* Optional: the deadline of each later set/add/get-without-wait (a store
     * behind a network must not hold a failing rank for its start timeout). */
    void (*set_op_timeout)(dc_store_t *store, int timeout_ms);
} dc_store_ops_t;

#define DC_STORE_SCOPE_MAX 32

struct dc_store {
    const dc_store_ops_t *ops;
    /* Prefix of every key set or read through the functions below ("" none).
     * dcomm_init sets one per initialization of the process, so that an
     * init -> shutdown -> init sequence never reads the previous life's keys. */
    char scope[DC_STORE_SCOPE_MAX];
};

#define DC_STORE_KEY_CAP 320

/* The key as stored: scope/key; NULL when that does not fit in cap. */
static inline const char *dc_store_key(const dc_store_t *s, const char *key, char *buf,
                                       size_t cap)
{
    int n;

    if (s->scope[0] == '\0') {
        return key;
    }
    n = snprintf(buf, cap, "%s/%s", s->scope, key);
    return n < 0 || (size_t)n >= cap ? NULL : buf;
}

static inline dc_status_t dc_store_set(dc_store_t *s, const char *key, const void *val, size_t len)
{
    char buf[DC_STORE_KEY_CAP];
    const char *k = dc_store_key(s, key, buf, sizeof(buf));

    return k == NULL ? DCOMM_ERR_INVALID_ARG : s->ops->set(s, k, val, len);
}

static inline dc_status_t dc_store_get(dc_store_t *s, const char *key, void *buf, size_t cap,
                                       size_t *len_p, int timeout_ms)
{
    char kbuf[DC_STORE_KEY_CAP];
    const char *k = dc_store_key(s, key, kbuf, sizeof(kbuf));

    return k == NULL ? DCOMM_ERR_INVALID_ARG : s->ops->get(s, k, buf, cap, len_p, timeout_ms);
}

static inline dc_status_t dc_store_add(dc_store_t *s, const char *key, int64_t delta,
                                       int64_t *value_p)
{
    char buf[DC_STORE_KEY_CAP];
    const char *k = dc_store_key(s, key, buf, sizeof(buf));

    return k == NULL ? DCOMM_ERR_INVALID_ARG : s->ops->add(s, k, delta, value_p);
}

static inline void dc_store_set_op_timeout(dc_store_t *s, int timeout_ms)
{
    if (s->ops->set_op_timeout != NULL) {
        s->ops->set_op_timeout(s, timeout_ms);
    }
}

/* Waits until every one of n ranks has reached barrier `name` (counter at key). */
dc_status_t dc_store_barrier(dc_store_t *s, const char *name, int n, int timeout_ms);

/* A store in a directory (one file per key, written atomically). Used for tests
 * and single-host jobs started without dlaunch. dir is created mode 0700. */
dc_status_t dc_filestore_open(const char *dir, dc_store_t **store_p);

#endif
