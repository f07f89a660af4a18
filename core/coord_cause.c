/*
 * The first cause of a failure, as this rank can best tell it: what dlaunch
 * reports of a rank's death, and the causes that failing ranks publish in the
 * store, followed from the rank we lost to the one that failed first.
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "coord.h"
#include "dc_time.h"
#include "log.h"

/* Who asks. */
typedef struct cause {
    dc_state_t *st;
    int rank, size;
} cause_t;

/* What dlaunch reported, when it did: core/bootstrap.c owns its channel. */
static int launcher_cause(cause_t *c, dc_status_t status, char *text, size_t cap)
{
    return dc_bootstrap_launcher_cause(c->st, status, text, cap);
}

#define CAUSE_WAIT_MS 250 /* for a peer's own cause, which it publishes as it fails */

/* Every rank that fails publishes why in the store, "Q|text": Q the rank it
 * waited on in vain (-1 when its cause was not a quiet peer). */
static int publish_cause(cause_t *c, int quiet, const char *text)
{
    char key[32], val[1100];
    int n;

    if (c->st->store == NULL) {
        return -1;
    }
    /* The store may be out of reach (a partition): give it half a second. */
    dc_store_set_op_timeout(c->st->store, 500);
    snprintf(key, sizeof(key), "fail/%d", c->rank);
    n = snprintf(val, sizeof(val), "%d|%s", quiet, text);
    return dc_store_set(c->st->store, key, val, (size_t)DC_MIN(n, (int)sizeof(val) - 1) + 1);
}

/* rank's published cause within CAUSE_WAIT_MS: 1 with its quiet peer and
 * text, 0 when it published none (a stopped or hung rank never does). */
static int read_cause(cause_t *c, int rank, int *quiet_p, char *text, size_t cap)
{
    char key[32], val[1100];
    size_t len;
    char *bar;

    snprintf(key, sizeof(key), "fail/%d", rank);
    if (dc_store_get(c->st->store, key, val, sizeof(val) - 1, &len, CAUSE_WAIT_MS) < 0) {
        return 0;
    }
    val[DC_MIN(len, sizeof(val) - 1)] = '\0';
    bar = strchr(val, '|');
    if (bar == NULL || sscanf(val, "%d", quiet_p) != 1) {
        return 0;
    }
    snprintf(text, cap, "%s", bar + 1);
    return 1;
}

/* Peers fail in a chain: a stopped rank S leaves rank B waiting on it, and
 * rank A waiting on B; A and B time out together, and A alone would blame B.
 * Follow the published causes from the rank we lost (it went silent, or
 * dlaunch said it exited on an error) to the first rank that published none, or to
 * one that failed for a reason of its own, and name that rank first. */
static void cause_chain(cause_t *c, int lost, char *text, size_t cap)
{
    char other[1100], path[256], seen[1024];
    int at = lost, next, hops = 0;
    size_t plen = 0;

    if (c->st->store == NULL || lost < 0 || lost == c->rank) {
        return;
    }
    path[0] = '\0';
    while (hops++ < c->size) {
        if (!read_cause(c, at, &next, other, sizeof(other))) {
            break;            /* at never said why: it is the one */
        }
        if (next == c->rank) {
            return;           /* waits in a circle: no rank to single out */
        }
        if (next < 0 || next == at) {
            /* at failed for a reason of its own: that is the first cause */
            snprintf(seen, sizeof(seen), "%s", text);
            snprintf(text, cap, "rank %d failed first: %.600s (seen here as: %.300s)", at, other,
                     seen);
            return;
        }
        plen += (size_t)snprintf(path + plen, sizeof(path) - DC_MIN(plen, sizeof(path)),
                                 ", which waited on rank %d", next);
        at = next;
    }
    if (at == lost) {
        return;               /* the rank we lost said nothing more: the text stands */
    }
    snprintf(seen, sizeof(seen), "%s", text);
    snprintf(text, cap, "rank %d went quiet (no progress for DCOMM_TIMEOUT: stopped, hung or "
             "cut off); here rank %d lost rank %d%.200s (seen here as: %.500s)", at, c->rank,
             lost, path, seen);
}

void dc_cause_explain(dc_state_t *st, dc_status_t status, int quiet, char *text, size_t cap)
{
    cause_t cs = {st, st->rank, st->size}, *c = &cs;
    int ended = launcher_cause(c, status, text, cap);

    if (publish_cause(c, quiet, text) == DCOMM_OK) {
        cause_chain(c, quiet >= 0 ? quiet : ended, text, cap);
    }
}
