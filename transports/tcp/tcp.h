/*
 * Wire format of the tcp transport, shared by tcp.c and its tests.
 *
 * Connection set-up (the lower rank connects, the higher accepts), all integers
 * little-endian:
 *   server -> client  hello   {magic u32, version u32, server rank u32, 0 u32,
 *                              server nonce[32]}                         48 bytes
 *   client -> server  answer  {magic u32, client rank u32, server rank u32, 0 u32,
 *                              client nonce[32],
 *                              HMAC(secret, DC_TCP_LABEL_CLIENT,
 *                                   server nonce, answer[0..48))[32]}    80 bytes
 *   server -> client  proof   HMAC(secret, DC_TCP_LABEL_SERVER,
 *                                   client nonce, hello[0..48))[32]      32 bytes
 * A connection that fails any check or stalls is closed and accepting goes on.
 *
 * Data: per message a header {tag u64, len u64}, then len payload bytes.
 */
#ifndef DC_TCP_H
#define DC_TCP_H

#include <stdint.h>

#include "auth.h"

#define DC_TCP_MAGIC        0x50544344u /* "DCTP" */
#define DC_TCP_VERSION      1u
#define DC_TCP_LABEL_CLIENT "dcomm-tcp"
#define DC_TCP_LABEL_SERVER "dcomm-tcp-server"

#define DC_TCP_HELLO_LEN  (16 + DC_AUTH_NONCE_LEN)
#define DC_TCP_ANSWER_LEN (16 + DC_AUTH_NONCE_LEN + DC_AUTH_MAC_LEN)
#define DC_TCP_PROOF_LEN  DC_AUTH_MAC_LEN
#define DC_TCP_HDR_LEN    16

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
