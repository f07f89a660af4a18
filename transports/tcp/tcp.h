/*
 * Wire format of the tcp transport, shared by its files (tcp_int.h) and its tests.
 *
 * Connection set-up (the lower rank connects, the higher accepts), all integers
 * little-endian:
 *   server -> client  hello   {magic u32, version u32, server rank u32, flags u32,
 *                              server nonce[32]}                         48 bytes
 *   client -> server  answer  {magic u32, client rank u32, server rank u32, flags u32,
 *                              client nonce[32],
 *                              HMAC(secret, DC_TCP_LABEL_CLIENT,
 *                                   server nonce, answer[0..48))[32]}    80 bytes
 *   server -> client  proof   HMAC(secret, DC_TCP_LABEL_SERVER,
 *                                   client nonce, hello[0..48))[32]      32 bytes
 * A connection that fails any check or stalls is closed and accepting goes on.
 * flags: DC_TCP_FLAG_ENCRYPT when that side has DCOMM_TCP_ENCRYPT on; both MACs
 * cover them, and ends that differ fail the handshake on both sides, naming
 * the setting (no downgrade, no garbage later).
 *
 * Data: per message a header {tag u64, len u64}, then len payload bytes.
 *
 * Encrypted streams (DC_TCP_FLAG_ENCRYPT on both ends): that byte stream is cut
 * into records {plain len u32, ciphertext[len], tag[16]}, 1 <= len <=
 * DC_TCP_REC_MAX, sealed with AES-256-GCM when both ends set DC_TCP_FLAG_AESGCM
 * (libsodium's, which needs AES-NI), else ChaCha20-Poly1305 (IETF), under a key
 * per direction, HMAC-SHA256(secret, DC_TCP_LABEL_C2S or _S2C, hello || answer),
 * with the record's number in its direction as the nonce and the length field
 * as additional data. A changed, dropped, replayed or reordered record fails
 * to open; the connection is then dead (DCOMM_ERR_AUTH naming the peer).
 */
#ifndef DC_TCP_H
#define DC_TCP_H

#include <stdint.h>

#include "auth.h"

#define DC_TCP_MAGIC        0x50544344u /* "DCTP" */
#define DC_TCP_VERSION      1u
#define DC_TCP_LABEL_CLIENT "dcomm-tcp"
#define DC_TCP_LABEL_SERVER "dcomm-tcp-server"

#define DC_TCP_LABEL_C2S    "dcomm-tcp-key-client-to-server"
#define DC_TCP_LABEL_S2C    "dcomm-tcp-key-server-to-client"
#define DC_TCP_FLAG_ENCRYPT 1u
#define DC_TCP_FLAG_AESGCM  2u /* with ENCRYPT: this end has AES-256-GCM in hardware */
#define DC_TCP_FLAGS_KNOWN  (DC_TCP_FLAG_ENCRYPT | DC_TCP_FLAG_AESGCM)

#define DC_TCP_HELLO_LEN  (16 + DC_AUTH_NONCE_LEN)
#define DC_TCP_ANSWER_LEN (16 + DC_AUTH_NONCE_LEN + DC_AUTH_MAC_LEN)
#define DC_TCP_PROOF_LEN  DC_AUTH_MAC_LEN
#define DC_TCP_HDR_LEN    16

#define DC_TCP_REC_MAX      (64u << 10) /* plaintext bytes per record */
#define DC_TCP_REC_HDR      4u
#define DC_TCP_REC_TAG      16u
#define DC_TCP_REC_OVERHEAD (DC_TCP_REC_HDR + DC_TCP_REC_TAG)

/* One direction of an encrypted stream: its cipher, key (AES: expanded) and
 * the next record's number. */
typedef struct dc_tcp_crypt {
    uint8_t key[DC_AUTH_KEY_LEN];
    uint64_t seq;
    int aes;                                   /* AES-256-GCM, else ChaCha20-Poly1305 */
    _Alignas(16) unsigned char aes_state[512]; /* crypto_aead_aes256gcm_state */
} dc_tcp_crypt_t;

/* 1 when this machine can use AES-256-GCM (libsodium needs AES-NI and CLMUL). */
int dc_tcp_aes_available(void);
/* Sets up one direction: cipher (aes only when available), key, record 0. */
void dc_tcp_crypt_init(dc_tcp_crypt_t *c, const uint8_t key[DC_AUTH_KEY_LEN], int aes);

/* Seals len plaintext bytes (1..DC_TCP_REC_MAX) into out, which has room for
 * len + DC_TCP_REC_OVERHEAD bytes; returns the record's length. */
size_t dc_tcp_record_seal(dc_tcp_crypt_t *c, const void *plain, size_t len, uint8_t *out);
/* The plaintext length of the record starting at in[0..avail): 1 and
 * *plain_len_p when its header is there, 0 when more bytes are needed, or
 * DCOMM_ERR_AUTH for a length out of range. */
int dc_tcp_record_len(const uint8_t *in, size_t avail, size_t *plain_len_p);
/* Opens the record starting at in[0..avail) into out[0..cap) (in place is
 * fine: out == in + DC_TCP_REC_HDR). Returns 1 with *plain_len_p and *used_p
 * (the record's bytes) when it opened, 0 when more bytes are needed, or
 * DCOMM_ERR_AUTH (bad length, or a record that fails authentication: changed,
 * out of order, replayed, or sealed under another key) with dcomm_last_error
 * saying which; DCOMM_ERR_INVALID_ARG when cap is too small. c->seq advances
 * only on success. Pure but for that: meant for fuzzing. */
int dc_tcp_record_open(dc_tcp_crypt_t *c, const uint8_t *in, size_t avail, void *out, size_t cap,
                       size_t *plain_len_p, size_t *used_p);

/* A handshake that has not finished within this many ms is dropped (or within
 * the job's timeout, when that is shorter). */
#define DC_TCP_HANDSHAKE_MS 2000

/* Store key under which a rank publishes "ip:port". */
#define DC_TCP_KEY_FMT "tcp/%d"

static inline void dc_tcp_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint32_t dc_tcp_get_u32(const uint8_t *p)
{
    uint32_t v = 0;

    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

static inline void dc_tcp_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint64_t dc_tcp_get_u64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

#endif
