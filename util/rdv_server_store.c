/* The rendezvous server's key-value store (a hash table under a byte limit)
 * and the requests on it: set, get (waiting until the key is set, or the job
 * fails) and atomic add on decimal counters. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rdv_server_int.h"

#define MAX_WAITERS_PER_CONN 256 /* a rank waits on one key at a time */
#define ENTRY_OVERHEAD    64  /* counted per key besides key and value bytes */

/* ---- Store ------------------------------------------------------------------ */

static entry_t **bucket_of(dc_rdv_server_t *s, const char *key)
{
    uint32_t h = 2166136261u;

    for (const char *c = key; *c != '\0'; c++) {
        h = (h ^ (uint8_t)*c) * 16777619u;
    }
    return &s->buckets[h % NBUCKETS];
}

static entry_t *store_find(dc_rdv_server_t *s, const char *key)
{
    for (entry_t *e = *bucket_of(s, key); e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            return e;
        }
    }
    return NULL;
}

/* What an entry costs against the store limit: a key with an empty value is not free. */
static size_t entry_cost(const char *key, size_t len)
{
    return ENTRY_OVERHEAD + strlen(key) + len;
}

static dc_status_t store_put(dc_rdv_server_t *s, const char *key, const void *val, size_t len)
{
    entry_t *e = store_find(s, key);
    size_t old = (e != NULL) ? entry_cost(key, e->len) : 0;
    uint8_t *copy;

    if (s->store_bytes - old + entry_cost(key, len) > s->store_limit) {
        return DCOMM_ERR_NO_MEMORY;
    }
    copy = malloc(len > 0 ? len : 1);
    if (copy == NULL) {
        return DCOMM_ERR_NO_MEMORY;
    }
    memcpy(copy, val, len);
    if (e == NULL) {
        entry_t **b = bucket_of(s, key);

        e = calloc(1, sizeof(*e));
        if (e == NULL || (e->key = strdup(key)) == NULL) {
            free(e);
            free(copy);
            return DCOMM_ERR_NO_MEMORY;
        }
        e->next = *b;
        *b = e;
    } else {
        free(e->val);
    }
    e->val = copy;
    e->len = len;
    s->store_bytes = s->store_bytes - old + entry_cost(key, len);
    return DCOMM_OK;
}

/* ---- Requests ------------------------------------------------------------------- */

/* Unlinks the waiters whose key matches key in its first n bytes (n past the
 * NUL: exactly) before any reply is sent: a reply can kill its connection, and
 * conn_kill frees that connection's waiters still in the list, which may
 * include the one whose next pointer a single-pass loop would hold. */
static waiter_t *take_waiters(dc_rdv_server_t *s, const char *key, size_t n)
{
    waiter_t **wp = &s->waiters, *taken = NULL;

    while (*wp != NULL) {
        waiter_t *w = *wp;

        if (strncmp(w->key, key, n) == 0) {
            *wp = w->next;
            w->next = taken;
            taken = w;
            w->conn->nwaiters--;
        } else {
            wp = &w->next;
        }
    }
    return taken;
}

/* Answers and frees the taken waiters. */
static void answer_waiters(dc_rdv_server_t *s, waiter_t *taken, dc_status_t status,
                           const void *val, size_t len)
{
    while (taken != NULL) {
        waiter_t *w = taken;

        taken = w->next;
        dc_rdv_conn_reply(s, w->conn, w->id, status, 0, val, len); /* no-op when dead */
        free(w);
    }
}

static void wake_waiters(dc_rdv_server_t *s, const char *key, const entry_t *e)
{
    answer_waiters(s, take_waiters(s, key, strlen(key) + 1), DCOMM_OK, e->val, e->len);
}

static void handle_get(dc_rdv_server_t *s, conn_t *c, const dc_rdv_msg_t *m, const char *key)
{
    entry_t *e = store_find(s, key);
    waiter_t *w;

    if (e != NULL) {
        dc_rdv_conn_reply(s, c, m->id, DCOMM_OK, 0, e->val, e->len);
        return;
    }
    if (!m->wait) {
        dc_rdv_conn_reply(s, c, m->id, DCOMM_ERR_TIMEOUT, 0, NULL, 0);
        return;
    }
    if (s->failed[0] != '\0') {
        dc_rdv_conn_reply(s, c, m->id, DCOMM_ERR_PEER_LOST, 0, s->failed, strlen(s->failed));
        return;
    }
    if (s->failed_prefix[0] != '\0' &&
        strncmp(key, s->failed_prefix, strlen(s->failed_prefix)) == 0) {
        dc_rdv_conn_reply(s, c, m->id, DCOMM_ERR_PEER_LOST, 0, s->failed_prefix_text,
                          strlen(s->failed_prefix_text));
        return;
    }
    if (c->nwaiters >= MAX_WAITERS_PER_CONN) {
        static const char why[] = "too many pending waiting gets on this connection";

        DC_WARN("rdv server: rank %d from %s: %s (%d); refusing the get of %s", (int)c->rank,
                c->peer, why, c->nwaiters, key);
        dc_rdv_conn_reply(s, c, m->id, DCOMM_ERR_NO_MEMORY, 0, why, sizeof(why) - 1);
        return;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        dc_rdv_conn_reply(s, c, m->id, DCOMM_ERR_NO_MEMORY, 0, NULL, 0);
        return;
    }
    w->conn = c;
    w->id = m->id;
    memcpy(w->key, key, strlen(key) + 1);
    w->next = s->waiters;
    s->waiters = w;
    c->nwaiters++;
}

/* Counters are stored as decimal text, so a get of a counter reads its value. */
static void handle_add(dc_rdv_server_t *s, conn_t *c, const dc_rdv_msg_t *m, const char *key)
{
    entry_t *e = store_find(s, key);
    int64_t value = 0;
    char text[32];
    dc_status_t status;

    if (e != NULL) {
        char *end;

        if (e->len == 0 || e->len >= sizeof(text)) {
            dc_rdv_conn_reply(s, c, m->id, DCOMM_ERR_INVALID_ARG, 0, NULL, 0);
            return;
        }
        memcpy(text, e->val, e->len);
        text[e->len] = '\0';
        errno = 0;
        value = strtoll(text, &end, 10);
        if (*end != '\0' || errno != 0) {
            dc_rdv_conn_reply(s, c, m->id, DCOMM_ERR_INVALID_ARG, 0, NULL, 0);
            return;
        }
    }
    if ((m->num > 0 && value > INT64_MAX - m->num) || (m->num < 0 && value < INT64_MIN - m->num)) {
        dc_rdv_conn_reply(s, c, m->id, DCOMM_ERR_INVALID_ARG, 0, NULL, 0);
        return;
    }
    value += m->num;
    int n = snprintf(text, sizeof(text), "%" PRId64, value);
    status = store_put(s, key, text, (size_t)n);
    dc_rdv_conn_reply(s, c, m->id, status, value, NULL, 0);
    if (status == DCOMM_OK) {
        wake_waiters(s, key, store_find(s, key));
    }
}

dc_status_t dc_rdv_server_get(dc_rdv_server_t *s, const char *key, void *buf, size_t cap,
                              size_t *len_p)
{
    entry_t *e = store_find(s, key);

    if (e == NULL) {
        return DCOMM_ERR_TIMEOUT; /* what a get without waiting answers */
    }
    memcpy(buf, e->val, DC_MIN(cap, e->len));
    *len_p = e->len;
    return DCOMM_OK;
}

dc_status_t dc_rdv_server_set(dc_rdv_server_t *s, const char *key, const void *val, size_t len)
{
    dc_status_t status;

    if (key[0] == '\0' || strlen(key) > DC_RDV_MAX_KEY || len > DC_RDV_MAX_VALUE) {
        return DCOMM_ERR_INVALID_ARG;
    }
    status = store_put(s, key, val, len);
    if (status == DCOMM_OK) {
        wake_waiters(s, key, store_find(s, key));
    }
    return status;
}

void dc_rdv_server_fail_keys(dc_rdv_server_t *s, const char *prefix, const char *text)
{
    snprintf(s->failed_prefix, sizeof(s->failed_prefix), "%s", prefix);
    snprintf(s->failed_prefix_text, sizeof(s->failed_prefix_text), "%s", text);
    if (prefix[0] != '\0') {
        answer_waiters(s, take_waiters(s, prefix, strlen(prefix)), DCOMM_ERR_PEER_LOST,
                       s->failed_prefix_text, strlen(s->failed_prefix_text));
    }
}

void dc_rdv_store_handle(dc_rdv_server_t *s, conn_t *c, const dc_rdv_msg_t *m)
{
    char key[DC_RDV_MAX_KEY + 1];
    dc_status_t status;

    if (m->type != DC_RDV_MSG_SET && m->type != DC_RDV_MSG_GET && m->type != DC_RDV_MSG_ADD) {
        dc_rdv_conn_kill(s, c, "unexpected message type for a store connection");
        return;
    }
    memcpy(key, m->key, m->key_len);
    key[m->key_len] = '\0';
    switch (m->type) {
    case DC_RDV_MSG_SET:
        status = store_put(s, key, m->val, m->val_len);
        dc_rdv_conn_reply(s, c, m->id, status, 0, NULL, 0);
        if (status == DCOMM_OK) {
            wake_waiters(s, key, store_find(s, key));
        }
        break;
    case DC_RDV_MSG_GET:
        handle_get(s, c, m, key);
        break;
    default:
        handle_add(s, c, m, key);
        break;
    }
}
