/*
 * Encoding and checked decoding of negotiation messages (see wire.h).
 * Integers are little-endian; names travel without their NUL.
 */
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WIRE_VERSION  4
#define WIRE_HDR_LEN  16 /* magic u32, version u16, kind u16, flags u32, n u32 */
#define WIRE_KIND_REQ 1
#define WIRE_KIND_RSP 2

static int dims_carried(const dc_wire_req_t *req)
{
    return req->has_shape ? DC_MIN(req->ndims, DC_WIRE_DIMS_MAX) : 0;
}

int dc_wire_same_shape(const dc_wire_req_t *a, const dc_wire_req_t *b, int from)
{
    if (a->has_shape != b->has_shape || a->ndims != b->ndims) {
        return 0;
    }
    for (int i = from; i < dims_carried(a); i++) {
        if (a->dims[i] != b->dims[i]) {
            return 0;
        }
    }
    return 1;
}

int dc_wire_shape_from(int coll)
{
    return coll == DC_COLL_ALLGATHER || coll == DC_COLL_ALLTOALL;
}

void dc_wire_shape_text(const dc_wire_req_t *req, char *buf, size_t cap)
{
    size_t len;

    if (!req->has_shape) {
        snprintf(buf, cap, "an unknown shape");
        return;
    }
    len = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < dims_carried(req) && len < cap; i++) {
        len += (size_t)snprintf(buf + len, cap - len, "%s%llu", i ? ", " : "",
                                (unsigned long long)req->dims[i]);
    }
    if (len < cap) {
        snprintf(buf + len, cap - len, "%s]", req->ndims > DC_WIRE_DIMS_MAX ? " (product of "
                                                                            "the rest)" : "");
    }
}

void dc_wire_buf_reset(dc_wire_buf_t *buf)
{
    buf->len = 0;
}

void dc_wire_buf_free(dc_wire_buf_t *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

dc_status_t dc_wire_buf_reserve(dc_wire_buf_t *buf, size_t cap)
{
    size_t ncap = buf->cap ? buf->cap : 256;
    uint8_t *data;

    if (cap <= buf->cap) {
        return DCOMM_OK;
    }
    if (cap > DC_WIRE_MSG_MAX) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG,
                            "negotiation message of %zu bytes exceeds the %u-byte limit", cap,
                            DC_WIRE_MSG_MAX);
    }
    while (ncap < cap) {
        ncap *= 2;
    }
    data = realloc(buf->data, ncap);
    if (data == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for a %zu-byte message", ncap);
    }
    buf->data = data;
    buf->cap = ncap;
    return DCOMM_OK;
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;

    for (int i = 3; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static dc_status_t put_header(dc_wire_buf_t *buf, uint16_t kind, uint32_t flags, uint32_t n)
{
    dc_status_t status = dc_wire_buf_reserve(buf, WIRE_HDR_LEN);

    if (status < 0) {
        return status;
    }
    put_u32(buf->data, DC_WIRE_MAGIC);
    put_u16(buf->data + 4, WIRE_VERSION);
    put_u16(buf->data + 6, kind);
    put_u32(buf->data + 8, flags);
    put_u32(buf->data + 12, n);
    buf->len = WIRE_HDR_LEN;
    return DCOMM_OK;
}

/* name_len u16, name, coll u8, dtype u8, op u8, device u8, root i32, comm i32, count u64 */
static dc_status_t put_req(dc_wire_buf_t *buf, const dc_wire_req_t *req)
{
    size_t nlen = strnlen(req->name, DC_WIRE_NAME_MAX);
    uint8_t *p;
    dc_status_t status;

    if (nlen >= DC_WIRE_NAME_MAX) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "tensor name longer than %d bytes",
                            DC_WIRE_NAME_MAX - 1);
    }
    status = dc_wire_buf_reserve(buf, buf->len + 2 + nlen + 21 + 8 * DC_WIRE_DIMS_MAX);
    if (status < 0) {
        return status;
    }
    p = buf->data + buf->len;
    put_u16(p, (uint16_t)nlen);
    memcpy(p + 2, req->name, nlen);
    p += 2 + nlen;
    p[0] = req->coll;
    p[1] = req->dtype;
    p[2] = req->op;
    p[3] = req->device;
    put_u32(p + 4, (uint32_t)req->root);
    put_u32(p + 8, (uint32_t)req->comm);
    put_u64(p + 12, req->count);
    p[20] = req->has_shape ? req->ndims : DC_WIRE_NDIMS_UNKNOWN;
    for (int i = 0; i < dims_carried(req); i++) {
        put_u64(p + 21 + 8 * i, req->dims[i]);
    }
    buf->len += 2 + nlen + 21 + 8 * (size_t)dims_carried(req);
    return DCOMM_OK;
}

static dc_status_t malformed(const char *what)
{
    return dc_error_set(DCOMM_ERR_TRANSPORT, "malformed negotiation message: %s", what);
}

static dc_status_t get_header(dc_wire_reader_t *rd, const void *data, size_t len, uint16_t kind,
                              uint32_t *flags_p, uint32_t *n_p)
{
    const uint8_t *p = data;

    if (data == NULL || len < WIRE_HDR_LEN) {
        return malformed("shorter than its header");
    }
    if (len > DC_WIRE_MSG_MAX) {
        return malformed("longer than the message limit");
    }
    if (get_u32(p) != DC_WIRE_MAGIC || get_u16(p + 4) != WIRE_VERSION) {
        return malformed("bad magic or version");
    }
    if (get_u16(p + 6) != kind) {
        return malformed("unexpected message kind");
    }
    *flags_p = get_u32(p + 8);
    *n_p = get_u32(p + 12);
    /* Every entry takes at least 23 bytes: refuse counts the length cannot hold. */
    if (*n_p > (len - WIRE_HDR_LEN) / 23) {
        return malformed("entry count larger than the message");
    }
    rd->pos = p + WIRE_HDR_LEN;
    rd->end = p + len;
    return DCOMM_OK;
}

static dc_status_t get_req(dc_wire_reader_t *rd, dc_wire_req_t *req)
{
    size_t avail = (size_t)(rd->end - rd->pos);
    uint16_t nlen;
    const uint8_t *p;

    if (avail < 2) {
        return malformed("truncated entry");
    }
    nlen = get_u16(rd->pos);
    if (nlen >= DC_WIRE_NAME_MAX) {
        return malformed("name too long");
    }
    if (avail < 2u + nlen + 21u) {
        return malformed("truncated entry");
    }
    memcpy(req->name, rd->pos + 2, nlen);
    req->name[nlen] = '\0';
    if (memchr(req->name, '\0', nlen) != NULL) {
        return malformed("NUL byte inside a name");
    }
    p = rd->pos + 2 + nlen;
    req->coll = p[0];
    req->dtype = p[1];
    req->op = p[2];
    req->device = p[3];
    req->root = (int32_t)get_u32(p + 4);
    req->comm = (int32_t)get_u32(p + 8);
    req->count = get_u64(p + 12);
    if (req->coll >= DC_COLL_COUNT || req->dtype >= DCOMM_DTYPE_COUNT ||
        req->op >= DCOMM_OP_COUNT || req->device > DC_WIRE_NOBUF) {
        return malformed("unknown collective, dtype, op or buffer kind");
    }
    req->has_shape = p[20] != DC_WIRE_NDIMS_UNKNOWN;
    req->ndims = req->has_shape ? p[20] : 0;
    if (req->ndims > DC_WIRE_NDIMS_MAX) {
        return malformed("too many dimensions");
    }
    if (avail < 2u + nlen + 21u + 8u * (size_t)dims_carried(req)) {
        return malformed("truncated shape");
    }
    memset(req->dims, 0, sizeof(req->dims));
    for (int i = 0; i < dims_carried(req); i++) {
        req->dims[i] = get_u64(p + 21 + 8 * i);
    }
    rd->pos = p + 21 + 8 * (size_t)dims_carried(req);
    return DCOMM_OK;
}

dc_status_t dc_wire_reqs_encode(dc_wire_buf_t *buf, uint32_t flags, const dc_wire_req_t *const *reqs,
                                uint32_t nreqs)
{
    dc_status_t status = put_header(buf, WIRE_KIND_REQ, flags, nreqs);

    for (uint32_t i = 0; status == DCOMM_OK && i < nreqs; i++) {
        status = put_req(buf, reqs[i]);
    }
    return status;
}

dc_status_t dc_wire_reqs_begin(dc_wire_reader_t *rd, const void *data, size_t len,
                               uint32_t *flags_p, uint32_t *nreqs_p)
{
    return get_header(rd, data, len, WIRE_KIND_REQ, flags_p, nreqs_p);
}

dc_status_t dc_wire_req_next(dc_wire_reader_t *rd, dc_wire_req_t *req)
{
    return get_req(rd, req);
}

dc_status_t dc_wire_waits_encode(dc_wire_buf_t *buf, uint32_t age_ms,
                                 const dc_wire_req_t *const *reqs, const uint8_t *waited,
                                 uint32_t n)
{
    dc_status_t status;

    if (buf->len < WIRE_HDR_LEN || n > DC_WIRE_WAITS_MAX) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "wait section before the header or with "
                            "more than %d entries", DC_WIRE_WAITS_MAX);
    }
    status = dc_wire_buf_reserve(buf, buf->len + 8);
    if (status < 0) {
        return status;
    }
    put_u32(buf->data + buf->len, age_ms);
    put_u32(buf->data + buf->len + 4, n);
    buf->len += 8;
    for (uint32_t i = 0; i < n && status == DCOMM_OK; i++) {
        status = put_req(buf, reqs[i]);
        if (status == DCOMM_OK) {
            status = dc_wire_buf_reserve(buf, buf->len + 1);
        }
        if (status == DCOMM_OK) {
            buf->data[buf->len++] = waited[i] ? 1 : 0;
        }
    }
    return status;
}

dc_status_t dc_wire_waits_begin(dc_wire_reader_t *rd, uint32_t *age_ms_p, uint32_t *n_p)
{
    size_t avail = (size_t)(rd->end - rd->pos);

    if (avail < 8) {
        return malformed("truncated wait section");
    }
    *age_ms_p = get_u32(rd->pos);
    *n_p = get_u32(rd->pos + 4);
    rd->pos += 8;
    /* Every entry takes at least 24 bytes (a request and its mark). */
    if (*n_p > (avail - 8) / 24 || *n_p > DC_WIRE_WAITS_MAX) {
        return malformed("wait count larger than the message");
    }
    return DCOMM_OK;
}

dc_status_t dc_wire_wait_next(dc_wire_reader_t *rd, dc_wire_req_t *req, uint8_t *waited_p)
{
    dc_status_t status = get_req(rd, req);

    if (status < 0) {
        return status;
    }
    if (rd->end - rd->pos < 1) {
        return malformed("truncated wait entry");
    }
    if (rd->pos[0] > 1) {
        return malformed("wait mark neither 0 nor 1");
    }
    *waited_p = rd->pos[0];
    rd->pos++;
    return DCOMM_OK;
}

dc_status_t dc_wire_resps_begin_encode(dc_wire_buf_t *buf, uint32_t flags)
{
    return put_header(buf, WIRE_KIND_RSP, flags, 0);
}

void dc_wire_set_flags(dc_wire_buf_t *buf, uint32_t flags)
{
    if (buf->len >= WIRE_HDR_LEN) {
        put_u32(buf->data + 8, flags);
    }
}

/* A response: the request, error i32, text_len u16, text, ncounts u32, counts u64[]. */
dc_status_t dc_wire_resp_append(dc_wire_buf_t *buf, const dc_wire_resp_t *resp)
{
    size_t tlen = resp->error ? strnlen(resp->text, DC_WIRE_ERROR_MAX - 1) : 0;
    dc_status_t status;
    uint8_t *p;

    if (buf->len < WIRE_HDR_LEN) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "response appended before the header");
    }
    status = put_req(buf, &resp->req);
    if (status < 0) {
        return status;
    }
    if (resp->ncounts > 0 && resp->counts == NULL) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "response with counts but no count array");
    }
    status = dc_wire_buf_reserve(buf, buf->len + 10 + tlen + 8 * (size_t)resp->ncounts);
    if (status < 0) {
        return status;
    }
    p = buf->data + buf->len;
    put_u32(p, (uint32_t)resp->error);
    put_u16(p + 4, (uint16_t)tlen);
    memcpy(p + 6, resp->text, tlen);
    put_u32(p + 6 + tlen, resp->ncounts);
    for (uint32_t i = 0; i < resp->ncounts; i++) {
        put_u64(p + 10 + tlen + 8 * (size_t)i, resp->counts[i]);
    }
    buf->len += 10 + tlen + 8 * (size_t)resp->ncounts;
    put_u32(buf->data + 12, get_u32(buf->data + 12) + 1);
    return DCOMM_OK;
}

dc_status_t dc_wire_resps_begin(dc_wire_reader_t *rd, const void *data, size_t len,
                                uint32_t *flags_p, uint32_t *nresps_p)
{
    return get_header(rd, data, len, WIRE_KIND_RSP, flags_p, nresps_p);
}

dc_status_t dc_wire_resp_next(dc_wire_reader_t *rd, dc_wire_resp_t *resp)
{
    dc_status_t status = get_req(rd, &resp->req);
    uint16_t tlen;

    if (status < 0) {
        return status;
    }
    if (rd->end - rd->pos < 6) {
        return malformed("truncated response");
    }
    resp->error = (int32_t)get_u32(rd->pos);
    tlen = get_u16(rd->pos + 4);
    if (tlen >= DC_WIRE_ERROR_MAX || (size_t)(rd->end - rd->pos) < 6u + tlen) {
        return malformed("truncated or oversized error text");
    }
    if (resp->error > 0 || resp->error < DCOMM_ERR_INTERNAL) {
        return malformed("unknown status in a response");
    }
    memcpy(resp->text, rd->pos + 6, tlen);
    resp->text[tlen] = '\0';
    rd->pos += 6 + tlen;
    if (rd->end - rd->pos < 4) {
        return malformed("truncated response");
    }
    resp->ncounts = get_u32(rd->pos);
    rd->pos += 4;
    if (resp->ncounts > resp->counts_cap ||
        (size_t)(rd->end - rd->pos) / 8 < (size_t)resp->ncounts) {
        return malformed("truncated or oversized count list");
    }
    for (uint32_t i = 0; i < resp->ncounts; i++) {
        resp->counts[i] = get_u64(rd->pos + 8 * (size_t)i);
    }
    rd->pos += 8 * (size_t)resp->ncounts;
    return DCOMM_OK;
}
