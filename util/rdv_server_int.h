/* The rendezvous server's state, shared by its files and by no one else:
 * rdv_server.c (listening, handshakes, reading requests, the public calls),
 * rdv_server_store.c (the key-value store and its requests) and
 * rdv_server_conn.c (replies out, dropping a connection). */
#ifndef DC_RDV_SERVER_INT_H
#define DC_RDV_SERVER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "rdv.h"

#define NBUCKETS          1024

typedef enum conn_state {
    CONN_AUTH_WAIT,
    CONN_STORE,
    CONN_EVENTS,
    CONN_DEAD
} conn_state_t;

typedef struct conn {
    int fd;
    conn_state_t state;
    int32_t rank;
    uint64_t deadline_ns;
    uint8_t nonce[DC_AUTH_NONCE_LEN];
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_off, out_len, out_cap;
    int want_out;
    int nwaiters;
    char peer[64];
    struct conn *next;
} conn_t;

typedef struct entry {
    struct entry *next;
    char *key;
    uint8_t *val;
    size_t len;
} entry_t;

typedef struct waiter {
    struct waiter *next;
    conn_t *conn;
    uint32_t id;
    char key[DC_RDV_MAX_KEY + 1];
} waiter_t;

struct dc_rdv_server {
    int listen_fd;
    int epfd;
    int port;
    uint8_t secret[DC_AUTH_SECRET_LEN];
    conn_t *conns;
    int nconns;   /* authenticated (or dead, until reaped) */
    int nunauth;  /* in their handshake */
    entry_t *buckets[NBUCKETS];
    size_t store_bytes, store_limit;
    waiter_t *waiters;
    uint64_t drop_window_ns;  /* start of the current 10 s window of drop warnings */
    int drops_logged, drops_quiet;
    uint8_t *seen;
    int seen_cap;
    char failed[DC_RDV_MAX_EVENT + 1]; /* dc_rdv_server_fail's text; "" while the job runs */
    /* dc_rdv_server_fail_keys: gets of unset keys under this prefix fail ("": none). */
    char failed_prefix[DC_RDV_MAX_KEY + 1];
    char failed_prefix_text[DC_RDV_MAX_EVENT + 1];
};

/* ---- rdv_server_conn.c ---- */

/* Queues msg on c and writes what the socket takes (drops c when it does not
 * read its replies, or on error). */
void dc_rdv_conn_send(dc_rdv_server_t *s, conn_t *c, const dc_rdv_msg_t *msg);
void dc_rdv_conn_reply(dc_rdv_server_t *s, conn_t *c, uint32_t id, dc_status_t status,
                       int64_t num, const void *val, size_t len);
/* Writes c's queued output until the socket is full. */
void dc_rdv_conn_flush(dc_rdv_server_t *s, conn_t *c);
/* Drops c with a warning saying why (NULL: quietly), with its waiters. */
void dc_rdv_conn_kill(dc_rdv_server_t *s, conn_t *c, const char *why);

/* ---- rdv_server_store.c ---- */

/* A request (set, get, add) on an authenticated store connection. */
void dc_rdv_store_handle(dc_rdv_server_t *s, conn_t *c, const dc_rdv_msg_t *m);

#endif
