/* Wire codec of the rendezvous protocol: length-prefixed big-endian frames, every
 * length checked against the bytes present and the protocol's caps before use. */
#include <sodium.h>
#include <string.h>

#include "rdv.h"

#define CLIENT_LABEL "dcomm-rdv-client-v1"
#define SERVER_LABEL "dcomm-rdv-server-v1"

/* ---- Writer ---------------------------------------------------------------- */

typedef struct writer {
    uint8_t *p;
    size_t pos;
    size_t cap;
    int overflow;
} writer_t;

static void put_bytes(writer_t *w, const void *src, size_t n)
{
    if (w->overflow || n > w->cap - w->pos) {
        w->overflow = 1;
        return;
    }
    if (n > 0) {
        memcpy(w->p + w->pos, src, n);
    }
    w->pos += n;
}

static void put_uint(writer_t *w, uint64_t v, int nbytes)
{
    uint8_t b[8];

    for (int i = 0; i < nbytes; i++) {
        b[i] = (uint8_t)(v >> (8 * (nbytes - 1 - i)));
    }
    put_bytes(w, b, (size_t)nbytes);
}

static void put_key(writer_t *w, const dc_rdv_msg_t *m)
{
    put_uint(w, m->key_len, 2);
    put_bytes(w, m->key, m->key_len);
}

static void put_val(writer_t *w, const dc_rdv_msg_t *m)
{
    put_uint(w, m->val_len, 4);
    put_bytes(w, m->val, m->val_len);
}

/* ---- Reader ---------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *p;
    size_t left;
    const char *bad; /* first problem found */
} reader_t;

static const uint8_t *get_bytes(reader_t *r, size_t n)
{
    const uint8_t *p = r->p;

    if (r->bad != NULL || n > r->left) {
        if (r->bad == NULL) {
            r->bad = "field runs past the end of the frame";
        }
        return NULL;
    }
    r->p += n;
    r->left -= n;
    return p;
}

static uint64_t get_uint(reader_t *r, int nbytes)
{
    const uint8_t *b = get_bytes(r, (size_t)nbytes);
    uint64_t v = 0;

    for (int i = 0; b != NULL && i < nbytes; i++) {
        v = (v << 8) | b[i];
    }
    return v;
}

static void get_key(reader_t *r, dc_rdv_msg_t *m)
{
    m->key_len = (size_t)get_uint(r, 2);
    if (r->bad == NULL && (m->key_len == 0 || m->key_len > DC_RDV_MAX_KEY)) {
        r->bad = "key length out of range";
        return;
    }
    m->key = (const char *)get_bytes(r, m->key_len);
    if (m->key != NULL && memchr(m->key, '\0', m->key_len) != NULL) {
        r->bad = "key contains a NUL byte";
    }
}

static void get_val(reader_t *r, dc_rdv_msg_t *m, size_t max)
{
    m->val_len = (size_t)get_uint(r, 4);
    if (r->bad == NULL && m->val_len > max) {
        r->bad = "value too long";
        return;
    }
    m->val = get_bytes(r, m->val_len);
}

static void get_fixed(reader_t *r, uint8_t *dst, size_t n)
{
    const uint8_t *src = get_bytes(r, n);

    if (src != NULL) {
        memcpy(dst, src, n);
    }
}

/* ---- Messages ---------------------------------------------------------------- */

static int key_valid(const dc_rdv_msg_t *m)
{
    return m->key != NULL && m->key_len > 0 && m->key_len <= DC_RDV_MAX_KEY &&
           memchr(m->key, '\0', m->key_len) == NULL;
}

static int val_valid(const dc_rdv_msg_t *m, size_t max)
{
    return m->val_len <= max && (m->val_len == 0 || m->val != NULL);
}

static int msg_valid(const dc_rdv_msg_t *m)
{
    switch (m->type) {
    case DC_RDV_MSG_HELLO:
    case DC_RDV_MSG_AUTH:
    case DC_RDV_MSG_AUTH_OK:
        return 1;
    case DC_RDV_MSG_SET:
        return key_valid(m) && val_valid(m, DC_RDV_MAX_VALUE);
    case DC_RDV_MSG_GET:
    case DC_RDV_MSG_ADD:
        return key_valid(m);
    case DC_RDV_MSG_REPLY:
        return val_valid(m, DC_RDV_MAX_VALUE);
    case DC_RDV_MSG_EVENT:
        return val_valid(m, DC_RDV_MAX_EVENT);
    }
    return 0;
}

static void encode_body(writer_t *w, const dc_rdv_msg_t *m)
{
    put_uint(w, (uint64_t)m->type, 1);
    switch (m->type) {
    case DC_RDV_MSG_HELLO:
        put_uint(w, DC_RDV_MAGIC, 4);
        put_uint(w, m->version, 4);
        put_bytes(w, m->nonce, DC_AUTH_NONCE_LEN);
        break;
    case DC_RDV_MSG_AUTH:
        put_uint(w, (uint32_t)m->rank, 4);
        put_uint(w, m->role, 1);
        put_bytes(w, m->nonce, DC_AUTH_NONCE_LEN);
        put_bytes(w, m->mac, DC_AUTH_MAC_LEN);
        break;
    case DC_RDV_MSG_AUTH_OK:
        put_bytes(w, m->mac, DC_AUTH_MAC_LEN);
        break;
    case DC_RDV_MSG_SET:
        put_uint(w, m->id, 4);
        put_key(w, m);
        put_val(w, m);
        break;
    case DC_RDV_MSG_GET:
        put_uint(w, m->id, 4);
        put_uint(w, m->wait, 1);
        put_key(w, m);
        break;
    case DC_RDV_MSG_ADD:
        put_uint(w, m->id, 4);
        put_uint(w, (uint64_t)m->num, 8);
        put_key(w, m);
        break;
    case DC_RDV_MSG_REPLY:
        put_uint(w, m->id, 4);
        put_uint(w, (uint32_t)m->status, 4);
        put_uint(w, (uint64_t)m->num, 8);
        put_val(w, m);
        break;
    case DC_RDV_MSG_EVENT:
        put_val(w, m);
        break;
    }
}

size_t dc_rdv_msg_size(const dc_rdv_msg_t *msg)
{
    size_t body = 0;

    if (msg == NULL || !msg_valid(msg)) {
        return 0;
    }
    switch (msg->type) {
    case DC_RDV_MSG_HELLO:
        body = 1 + 4 + 4 + DC_AUTH_NONCE_LEN;
        break;
    case DC_RDV_MSG_AUTH:
        body = 1 + 4 + 1 + DC_AUTH_NONCE_LEN + DC_AUTH_MAC_LEN;
        break;
    case DC_RDV_MSG_AUTH_OK:
        body = 1 + DC_AUTH_MAC_LEN;
        break;
    case DC_RDV_MSG_SET:
        body = 1 + 4 + 2 + msg->key_len + 4 + msg->val_len;
        break;
    case DC_RDV_MSG_GET:
        body = 1 + 4 + 1 + 2 + msg->key_len;
        break;
    case DC_RDV_MSG_ADD:
        body = 1 + 4 + 8 + 2 + msg->key_len;
        break;
    case DC_RDV_MSG_REPLY:
        body = 1 + 4 + 4 + 8 + 4 + msg->val_len;
        break;
    case DC_RDV_MSG_EVENT:
        body = 1 + 4 + msg->val_len;
        break;
    }
    return DC_RDV_HDR_LEN + body;
}

size_t dc_rdv_msg_encode(const dc_rdv_msg_t *msg, uint8_t *buf, size_t cap)
{
    size_t size = dc_rdv_msg_size(msg);
    writer_t w = {.p = buf, .pos = 0, .cap = cap};

    if (size == 0 || buf == NULL || cap < size) {
        return 0;
    }
    put_uint(&w, size - DC_RDV_HDR_LEN, 4);
    encode_body(&w, msg);
    return (w.overflow || w.pos != size) ? 0 : size;
}

static void decode_body(reader_t *r, dc_rdv_msg_t *m)
{
    m->type = (dc_rdv_msg_type_t)get_uint(r, 1);
    switch (m->type) {
    case DC_RDV_MSG_HELLO:
        if (get_uint(r, 4) != DC_RDV_MAGIC && r->bad == NULL) {
            r->bad = "bad magic";
        }
        m->version = (uint32_t)get_uint(r, 4);
        get_fixed(r, m->nonce, DC_AUTH_NONCE_LEN);
        break;
    case DC_RDV_MSG_AUTH:
        m->rank = (int32_t)(uint32_t)get_uint(r, 4);
        m->role = (uint8_t)get_uint(r, 1);
        get_fixed(r, m->nonce, DC_AUTH_NONCE_LEN);
        get_fixed(r, m->mac, DC_AUTH_MAC_LEN);
        if (r->bad == NULL && m->role > DC_RDV_ROLE_EVENTS) {
            r->bad = "unknown role";
        }
        break;
    case DC_RDV_MSG_AUTH_OK:
        get_fixed(r, m->mac, DC_AUTH_MAC_LEN);
        break;
    case DC_RDV_MSG_SET:
        m->id = (uint32_t)get_uint(r, 4);
        get_key(r, m);
        get_val(r, m, DC_RDV_MAX_VALUE);
        break;
    case DC_RDV_MSG_GET:
        m->id = (uint32_t)get_uint(r, 4);
        m->wait = (uint8_t)get_uint(r, 1);
        get_key(r, m);
        break;
    case DC_RDV_MSG_ADD:
        m->id = (uint32_t)get_uint(r, 4);
        m->num = (int64_t)get_uint(r, 8);
        get_key(r, m);
        break;
    case DC_RDV_MSG_REPLY:
        m->id = (uint32_t)get_uint(r, 4);
        m->status = (int32_t)(uint32_t)get_uint(r, 4);
        m->num = (int64_t)get_uint(r, 8);
        get_val(r, m, DC_RDV_MAX_VALUE);
        break;
    case DC_RDV_MSG_EVENT:
        get_val(r, m, DC_RDV_MAX_EVENT);
        break;
    default:
        if (r->bad == NULL) {
            r->bad = "unknown message type";
        }
        break;
    }
    if (r->bad == NULL && r->left != 0) {
        r->bad = "trailing bytes after the message";
    }
}

dc_status_t dc_rdv_msg_decode(const uint8_t *buf, size_t len, size_t max_frame,
                              dc_rdv_msg_t *msg_p, size_t *used_p)
{
    dc_rdv_msg_t msg;
    reader_t r;
    size_t body;

    if (len < DC_RDV_HDR_LEN) {
        return DCOMM_INPROGRESS;
    }
    body = ((size_t)buf[0] << 24) | ((size_t)buf[1] << 16) | ((size_t)buf[2] << 8) | buf[3];
    if (body == 0 || body > max_frame || body > DC_RDV_MAX_FRAME) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rdv: frame length %zu out of range (max %zu)",
                            body, DC_MIN(max_frame, (size_t)DC_RDV_MAX_FRAME));
    }
    if (len - DC_RDV_HDR_LEN < body) {
        return DCOMM_INPROGRESS;
    }
    memset(&msg, 0, sizeof(msg));
    r.p = buf + DC_RDV_HDR_LEN;
    r.left = body;
    r.bad = NULL;
    decode_body(&r, &msg);
    if (r.bad != NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rdv: malformed message (type %d): %s",
                            (int)msg.type, r.bad);
    }
    *msg_p = msg;
    *used_p = DC_RDV_HDR_LEN + body;
    return DCOMM_OK;
}

void dc_rdv_client_mac(const uint8_t secret[DC_AUTH_SECRET_LEN],
                       const uint8_t server_nonce[DC_AUTH_NONCE_LEN],
                       const uint8_t client_nonce[DC_AUTH_NONCE_LEN], int32_t rank, uint8_t role,
                       uint8_t mac[DC_AUTH_MAC_LEN])
{
    uint8_t tail[DC_AUTH_NONCE_LEN + 5];

    memcpy(tail, client_nonce, DC_AUTH_NONCE_LEN);
    for (int i = 0; i < 4; i++) {
        tail[DC_AUTH_NONCE_LEN + i] = (uint8_t)((uint32_t)rank >> (24 - 8 * i));
    }
    tail[DC_AUTH_NONCE_LEN + 4] = role;
    dc_auth_mac(secret, CLIENT_LABEL, server_nonce, DC_AUTH_NONCE_LEN, tail, sizeof(tail), mac);
}

void dc_rdv_server_mac(const uint8_t secret[DC_AUTH_SECRET_LEN],
                       const uint8_t client_nonce[DC_AUTH_NONCE_LEN],
                       const uint8_t server_nonce[DC_AUTH_NONCE_LEN], uint8_t mac[DC_AUTH_MAC_LEN])
{
    dc_auth_mac(secret, SERVER_LABEL, client_nonce, DC_AUTH_NONCE_LEN, server_nonce,
                DC_AUTH_NONCE_LEN, mac);
}

int dc_rdv_mac_equal(const uint8_t a[DC_AUTH_MAC_LEN], const uint8_t b[DC_AUTH_MAC_LEN])
{
    return sodium_memcmp(a, b, DC_AUTH_MAC_LEN) == 0;
}
