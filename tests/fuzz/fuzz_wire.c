/* libFuzzer harness: the negotiation messages (core/wire.c) as a rank decodes
 * them (format version 4: each request's shape, a request list's wait section),
 * through the sizing of results from decoded counts (core/result_size.c,
 * dc_result_size, as coord_exec sizes an allgather's result).
 *
 * Input: a byte whose low bit picks a request list (what rank 0 reads from every
 * rank) or a response list (what every rank reads from rank 0), a byte giving
 * the comm's size (1..64), then the message. Decoded requests must re-encode to
 * the same bytes; decoded responses must survive a re-encode; and the result an
 * allgather response sizes must hold every rank's block. */
#include <stdio.h>

#include "dc_reduce.h"
#include "fuzz_common.h"
#include "result_size.h"
#include "wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

static void check_shape(const dc_wire_req_t *req)
{
    char text[512];

    if (strlen(req->name) >= DC_WIRE_NAME_MAX || (!req->has_shape && req->ndims != 0) ||
        req->ndims > DC_WIRE_NDIMS_MAX) {
        abort();
    }
    dc_wire_shape_text(req, text, sizeof(text));
    if (!dc_wire_same_shape(req, req, 0)) {
        abort();
    }
}

/* The wait section after a list's requests: decoded, then re-encoded after the
 * list in out (0 when it does not decode, or has a mark other than 0 or 1). */
static int fuzz_waits(dc_wire_reader_t *rd, dc_wire_buf_t *out)
{
    uint32_t age_ms, n, i;
    dc_wire_req_t *reqs;
    const dc_wire_req_t **list;
    uint8_t *waited;
    int ok = 0;

    if (dc_wire_waits_begin(rd, &age_ms, &n) != DCOMM_OK) {
        return 0;
    }
    if (n > DC_WIRE_WAITS_MAX) {
        abort();
    }
    reqs = calloc((size_t)n + 1, sizeof(*reqs));
    list = calloc((size_t)n + 1, sizeof(*list));
    waited = calloc((size_t)n + 1, 1);
    if (reqs == NULL || list == NULL || waited == NULL) {
        abort();
    }
    for (i = 0; i < n; i++) {
        if (dc_wire_wait_next(rd, &reqs[i], &waited[i]) != DCOMM_OK) {
            break;
        }
        check_shape(&reqs[i]);
        list[i] = &reqs[i];
        if (waited[i] > 1) {
            break; /* read as "waits"; re-encodes as 1, so not byte for byte */
        }
    }
    if (i == n) {
        if (dc_wire_waits_encode(out, age_ms, list, waited, n) != DCOMM_OK) {
            abort();
        }
        ok = 1;
    }
    free(waited);
    free(list);
    free(reqs);
    return ok;
}

static void fuzz_reqs(const uint8_t *msg, size_t len)
{
    dc_wire_reader_t rd;
    dc_wire_buf_t buf = {0};
    uint32_t flags, n, i;
    dc_wire_req_t *reqs;
    const dc_wire_req_t **list;

    if (dc_wire_reqs_begin(&rd, msg, len, &flags, &n) != DCOMM_OK) {
        return;
    }
    reqs = calloc((size_t)n + 1, sizeof(*reqs));
    list = calloc((size_t)n + 1, sizeof(*list));
    if (reqs == NULL || list == NULL) {
        abort();
    }
    for (i = 0; i < n; i++) {
        if (dc_wire_req_next(&rd, &reqs[i]) != DCOMM_OK) {
            break;
        }
        check_shape(&reqs[i]);
        list[i] = &reqs[i];
    }
    if (i == n) { /* the whole list decoded: it re-encodes to the bytes it came from */
        if (dc_wire_reqs_encode(&buf, flags, list, n) != DCOMM_OK) {
            abort();
        }
        /* The wait section, re-encoded after the requests (skipped: undecodable). */
        if ((flags & DC_WIRE_FLAG_WAITING) == 0 || fuzz_waits(&rd, &buf)) {
            size_t used = (size_t)(rd.pos - msg);

            if (buf.len != used || memcmp(buf.data, msg, used) != 0) {
                fprintf(stderr, "wire: a request list of %u entries does not re-encode\n", n);
                abort();
            }
        }
    }
    dc_wire_buf_free(&buf);
    free(list);
    free(reqs);
}

static int req_equal(const dc_wire_req_t *a, const dc_wire_req_t *b)
{
    return strcmp(a->name, b->name) == 0 && a->coll == b->coll && a->dtype == b->dtype &&
           a->op == b->op && a->device == b->device && a->root == b->root &&
           a->comm == b->comm && a->count == b->count && dc_wire_same_shape(a, b, 0);
}

/* What coord_exec does with an allgather's counts before running it (its
 * result_total: dc_result_size against this host's memory). */
static void size_result(const dc_wire_resp_t *resp, int comm_size)
{
    size_t esize = dc_reduce_dtype_size((dcomm_dtype_t)resp->req.dtype), total = 0, bytes = 0;
    size_t counts[64];
    unsigned __int128 need = 0;

    if (resp->req.coll != DC_COLL_ALLGATHER || resp->error != 0 ||
        resp->ncounts != (uint32_t)comm_size) {
        return;
    }
    for (int i = 0; i < comm_size; i++) {
        counts[i] = (size_t)resp->counts[i];
    }
    if (dc_result_size("result size", counts, comm_size, esize, dc_result_size_limit(), &total,
                       &bytes) != DCOMM_OK) {
        return; /* refused: the rank fails the op with an error, fine */
    }
    for (int i = 0; i < comm_size; i++) {
        need += (unsigned __int128)resp->counts[i] * esize;
    }
    if (need > bytes || (unsigned __int128)total * esize != need) {
        fprintf(stderr, "wire: allgather counts size a %zu-byte result (%zu elements) for "
                "%llu bytes of blocks\n", bytes, total,
                (unsigned long long)(need > UINT64_MAX ? UINT64_MAX : (uint64_t)need));
        abort();
    }
}

static void fuzz_resps(const uint8_t *msg, size_t len, int comm_size)
{
    dc_wire_reader_t rd;
    dc_wire_resp_t *resp = calloc(2, sizeof(*resp));
    uint64_t *counts = calloc(2 * (size_t)comm_size, sizeof(uint64_t));
    uint32_t flags, n;

    if (resp == NULL || counts == NULL) {
        abort();
    }
    resp[0].counts = counts;
    resp[0].counts_cap = (uint32_t)comm_size;
    resp[1].counts = counts + comm_size;
    resp[1].counts_cap = (uint32_t)comm_size;
    if (dc_wire_resps_begin(&rd, msg, len, &flags, &n) == DCOMM_OK) {
        for (uint32_t i = 0; i < n; i++) {
            dc_wire_buf_t buf = {0};
            dc_wire_reader_t rd2;
            uint32_t flags2, n2;

            if (dc_wire_resp_next(&rd, &resp[0]) != DCOMM_OK) {
                break;
            }
            if (resp[0].ncounts > (uint32_t)comm_size ||
                strlen(resp[0].req.name) >= DC_WIRE_NAME_MAX) {
                abort();
            }
            size_result(&resp[0], comm_size);
            /* Re-encoded (as rank 0 would send it), it decodes to the same response. */
            if (dc_wire_resps_begin_encode(&buf, flags) != DCOMM_OK ||
                dc_wire_resp_append(&buf, &resp[0]) != DCOMM_OK ||
                dc_wire_resps_begin(&rd2, buf.data, buf.len, &flags2, &n2) != DCOMM_OK ||
                n2 != 1 || flags2 != flags || dc_wire_resp_next(&rd2, &resp[1]) != DCOMM_OK ||
                !req_equal(&resp[1].req, &resp[0].req) ||
                resp[1].error != resp[0].error || resp[1].ncounts != resp[0].ncounts ||
                memcmp(resp[1].counts, resp[0].counts, resp[0].ncounts * sizeof(uint64_t)) != 0) {
                fprintf(stderr, "wire: response %u ('%s') does not survive a re-encode\n", i,
                        resp[0].req.name);
                abort();
            }
            dc_wire_buf_free(&buf);
        }
    }
    free(counts);
    free(resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    int kind = fuzz_u8(&in) & 1;
    int comm_size = 1 + fuzz_u8(&in) % 64;
    uint8_t *msg = fuzz_dup(in.p, in.left);

    if (kind == 0) {
        fuzz_reqs(msg, in.left);
    } else {
        fuzz_resps(msg, in.left, comm_size);
    }
    free(msg);
    return 0;
}
