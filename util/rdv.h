/* The rendezvous store of a dlaunch job: a key-value server inside dlaunch's
 * event loop, and the wire codec it shares with the client every rank uses
 * (a dc_store_t and a job-event subscription, declared in job_store.h). Every
 * connection is authenticated with a mutual HMAC challenge-response over the
 * 32-byte job secret (auth.h). */
#ifndef DC_RDV_H
#define DC_RDV_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "job_store.h"
#include "status.h"
#include "store.h"

/* ---- Server (runs inside a caller's single-threaded event loop) ---------------- */

typedef struct dc_rdv_server dc_rdv_server_t;

/* Listens on bind_addr:port (IPv4; port 0 picks one). */
dc_status_t dc_rdv_server_create(const char *bind_addr, int port,
                                 const uint8_t secret[DC_AUTH_SECRET_LEN],
                                 dc_rdv_server_t **server_p);
void dc_rdv_server_destroy(dc_rdv_server_t *server);
int dc_rdv_server_port(const dc_rdv_server_t *server);
/* One fd (an epoll set of the listener and all connections) that polls readable
 * when dc_rdv_server_progress has work. */
int dc_rdv_server_fd(const dc_rdv_server_t *server);
/* Handles every ready socket without blocking and drops connections whose
 * handshake is overdue. Returns the number of events handled. */
int dc_rdv_server_progress(dc_rdv_server_t *server);
/* Milliseconds until the next handshake deadline (-1: none), to bound poll(). */
int dc_rdv_server_timeout_ms(const dc_rdv_server_t *server);
/* Queues text as an event to every subscribed connection. */
void dc_rdv_server_broadcast(dc_rdv_server_t *server, const char *text);
/* The job failed (text says why): broadcast it, answer every waiting get with
 * DCOMM_ERR_PEER_LOST and text, and so every later get of a key not yet set:
 * a rank still starting must not wait out its start timeout for a peer that
 * will never register. */
void dc_rdv_server_fail(dc_rdv_server_t *server, const char *text);
/* Bytes the store may hold (values, keys and a fixed overhead per key; default
 * 256 MiB); a set beyond it is refused with DCOMM_ERR_NO_MEMORY. For tests. */
void dc_rdv_server_set_store_limit(dc_rdv_server_t *server, size_t bytes);
/* Serves a connected, non-blocking stream socket (what accept gives the listener;
 * tests and fuzzers pass one end of a socketpair): sends HELLO and expects the
 * handshake, under the same budget of connections in their handshake as the
 * listener's. peer names it in log lines. The server owns fd from here on, also
 * when this fails. */
dc_status_t dc_rdv_server_add_conn(dc_rdv_server_t *server, int fd, const char *peer);
/* The store as the server's own process sees it (dlaunch's elastic driver): a
 * get that never waits (DCOMM_ERR_TIMEOUT when key is not set; at most cap
 * bytes copied, *len_p the full length) and a set that answers the ranks
 * waiting on key. */
dc_status_t dc_rdv_server_get(dc_rdv_server_t *server, const char *key, void *buf, size_t cap,
                              size_t *len_p);
dc_status_t dc_rdv_server_set(dc_rdv_server_t *server, const char *key, const void *val,
                              size_t len);
/* Part of the job failed (an elastic job's round lost a member): every waiting
 * get of a key starting with prefix, and every later get of such a key not yet
 * set, is answered DCOMM_ERR_PEER_LOST with text. One prefix at a time (the
 * latest). */
void dc_rdv_server_fail_keys(dc_rdv_server_t *server, const char *prefix, const char *text);
/* How many distinct ranks in [0, nranks) have authenticated so far. */
int dc_rdv_server_ranks_seen(const dc_rdv_server_t *server, int nranks);

/* ---- Wire format (exposed for tests and fuzzers) -------------------------------
 * A frame is a 4-byte big-endian body length, then the body: a type byte and the
 * type's fields, all big-endian. Keys are u16 length + bytes (1..256, no NUL);
 * values are u32 length + bytes (<= 1 MiB). A frame must be consumed exactly. */

#define DC_RDV_MAGIC         0x44435256u /* "DCRV" */
#define DC_RDV_VERSION       1u
#define DC_RDV_HDR_LEN       4
#define DC_RDV_MAX_KEY       256
#define DC_RDV_MAX_VALUE     (1u << 20)
#define DC_RDV_MAX_EVENT     4096
#define DC_RDV_MAX_FRAME     (DC_RDV_MAX_VALUE + 512)
#define DC_RDV_MAX_AUTH_FRAME 128 /* anything larger before authentication is garbage */

typedef enum dc_rdv_msg_type {
    DC_RDV_MSG_HELLO = 1,   /* server: magic, version, nonce */
    DC_RDV_MSG_AUTH = 2,    /* client: rank, role, nonce, mac */
    DC_RDV_MSG_AUTH_OK = 3, /* server: mac */
    DC_RDV_MSG_SET = 4,     /* id, key, val */
    DC_RDV_MSG_GET = 5,     /* id, wait, key */
    DC_RDV_MSG_ADD = 6,     /* id, num (delta), key */
    DC_RDV_MSG_REPLY = 7,   /* id, status, num (ADD result), val (GET value) */
    DC_RDV_MSG_EVENT = 8    /* val (text) */
} dc_rdv_msg_type_t;

typedef enum dc_rdv_role {
    DC_RDV_ROLE_STORE = 0,
    DC_RDV_ROLE_EVENTS = 1
} dc_rdv_role_t;

/* Decoded key/val point into the decoded buffer (not NUL-terminated). */
typedef struct dc_rdv_msg {
    dc_rdv_msg_type_t type;
    uint32_t version;
    uint32_t id;
    int32_t rank;
    uint8_t role;
    uint8_t wait;
    int32_t status;
    int64_t num;
    const char *key;
    size_t key_len;
    const void *val;
    size_t val_len;
    uint8_t nonce[DC_AUTH_NONCE_LEN];
    uint8_t mac[DC_AUTH_MAC_LEN];
} dc_rdv_msg_t;

/* Size of msg's frame, 0 when msg is invalid (bad type, key or value length). */
size_t dc_rdv_msg_size(const dc_rdv_msg_t *msg);
/* Writes msg's frame into buf; returns its length, 0 when invalid or cap is short. */
size_t dc_rdv_msg_encode(const dc_rdv_msg_t *msg, uint8_t *buf, size_t cap);
/* Decodes the frame at the start of buf[0..len), refusing bodies over max_frame:
 * DCOMM_OK with *used_p set, DCOMM_INPROGRESS when more bytes are needed, or
 * DCOMM_ERR_INVALID_ARG when malformed (detail in dc_error_get). */
dc_status_t dc_rdv_msg_decode(const uint8_t *buf, size_t len, size_t max_frame,
                              dc_rdv_msg_t *msg_p, size_t *used_p);

/* MACs of the handshake: the client proves the secret over the server's nonce and
 * its own (nonce, rank, role); the server answers over the client's nonce. */
void dc_rdv_client_mac(const uint8_t secret[DC_AUTH_SECRET_LEN],
                       const uint8_t server_nonce[DC_AUTH_NONCE_LEN],
                       const uint8_t client_nonce[DC_AUTH_NONCE_LEN], int32_t rank, uint8_t role,
                       uint8_t mac[DC_AUTH_MAC_LEN]);
void dc_rdv_server_mac(const uint8_t secret[DC_AUTH_SECRET_LEN],
                       const uint8_t client_nonce[DC_AUTH_NONCE_LEN],
                       const uint8_t server_nonce[DC_AUTH_NONCE_LEN],
                       uint8_t mac[DC_AUTH_MAC_LEN]);
/* Constant-time comparison of two MACs; 1 when equal. */
int dc_rdv_mac_equal(const uint8_t a[DC_AUTH_MAC_LEN], const uint8_t b[DC_AUTH_MAC_LEN]);

#endif
