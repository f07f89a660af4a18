/*
 * dc_select_calibrate: rank 0 measures the links it is served by (ping-pong
 * with the first peer of every transport class) and its memory and reduction
 * rates, then sends every rank the same numbers for its cost model.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dc_reduce.h"
#include "dc_time.h"
#include "log.h"
#include "select.h"

#define CAL_SMALL      8
#define CAL_BIG        (1u << 20)
#define CAL_SMALL_REPS 15
#define CAL_BIG_REPS   3

/* What rank 0 sends every rank at the end; 0 means not measured. */
typedef struct cal_result {
    double alpha_us[DC_LINK_COUNT];
    double bw_gbs[DC_LINK_COUNT];
    double reduce_gbs, copy_gbs;
} cal_result_t;

/* One transfer, waited for. req lives in the calibration's heap block: a
 * failed wait may leave it posted (see dc_net_free_after_close). */
static dc_status_t cal_xfer(dc_net_t *net, int peer, void *buf, size_t len, uint64_t tag,
                            int send, dc_request_t *req)
{
    dc_request_t *preq = req;
    dc_endpoint_t *ep = dc_net_ep(net, peer);
    dc_status_t status = send ? dc_ep_isend(ep, buf, len, tag, req)
                              : dc_ep_irecv(ep, buf, len, tag, req);

    return status < 0 ? status : dc_net_wait(net, &preq, 1, NULL, NULL);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median one-way time (seconds) of reps round trips of len bytes; one
 * unmeasured warm-up first. Rank 0 sends first; the partner echoes. */
static dc_status_t cal_pingpong(dc_net_t *net, int peer, int initiator, void *buf, size_t len,
                                int reps, uint64_t tag, dc_request_t *req, double *oneway_p)
{
    double t[CAL_SMALL_REPS + 1];
    dc_status_t status = DCOMM_OK;

    for (int i = 0; i <= reps && status >= 0; i++) {
        uint64_t t0 = dc_now_ns();

        status = cal_xfer(net, peer, buf, len, tag, initiator, req);
        if (status >= 0) {
            status = cal_xfer(net, peer, buf, len, tag, !initiator, req);
        }
        t[i] = (double)(dc_now_ns() - t0) * 1e-9 / 2;
    }
    if (status >= 0 && oneway_p != NULL) {
        qsort(t + 1, (size_t)reps, sizeof(double), cmp_double);
        *oneway_p = t[1 + reps / 2];
    }
    return status;
}

/* Rank 0: median GB/s of memcpy and float sum over CAL_BIG bytes. */
static void cal_compute(char *a, char *b, double *reduce_gbs_p, double *copy_gbs_p)
{
    double tc[5], tr[5];

    for (int i = 0; i < 5; i++) {
        uint64_t t0 = dc_now_ns();

        memcpy(b, a, CAL_BIG);
        tc[i] = (double)(dc_now_ns() - t0) * 1e-9;
        t0 = dc_now_ns();
        dc_reduce(b, a, CAL_BIG / sizeof(float), DCOMM_FLOAT32, DCOMM_SUM);
        tr[i] = (double)(dc_now_ns() - t0) * 1e-9;
    }
    qsort(tc, 5, sizeof(double), cmp_double);
    qsort(tr, 5, sizeof(double), cmp_double);
    *copy_gbs_p = tc[2] > 0 ? CAL_BIG / tc[2] * 1e-9 : 0;
    *reduce_gbs_p = tr[2] > 0 ? CAL_BIG / tr[2] * 1e-9 : 0;
}

/* Rank 0: ping-pong with each partner, filling res. */
static dc_status_t cal_measure(dc_net_t *net, const int *partner, char *buf, uint64_t tag,
                               dc_request_t *req, cal_result_t *res)
{
    dc_status_t status = DCOMM_OK;

    for (int c = 0; c < DC_LINK_COUNT && status >= 0; c++) {
        double small, big;

        if (partner[c] < 0) {
            continue;
        }
        DC_CHECK_GOTO(cal_pingpong(net, partner[c], 1, buf, CAL_SMALL, CAL_SMALL_REPS, tag, req,
                                   &small), status, out);
        DC_CHECK_GOTO(cal_pingpong(net, partner[c], 1, buf, CAL_BIG, CAL_BIG_REPS, tag, req,
                                   &big), status, out);
        res->alpha_us[c] = DC_MAX(small, 1e-8) * 1e6;
        /* The big message pays alpha too; what remains is the transfer. */
        res->bw_gbs[c] = CAL_BIG / (big > small ? big - small : big) * 1e-9;
        DC_DEBUG("select: calibrated %s with rank %d: alpha %.2f us, %.2f GB/s", dc_link_class_name((dc_link_class_t)c),
                 partner[c], res->alpha_us[c], res->bw_gbs[c]);
    }
out:
    return status;
}

/* Everything a transfer of the calibration points at: on a failed wait some
 * may stay posted, so the block then goes to dc_net_free_after_close. */
typedef struct cal_block {
    cal_result_t res;
    int role;
    dc_request_t req;   /* one transfer at a time (cal_xfer) */
    int *roles;         /* rank 0: [size] */
    dc_request_t *reqs; /* rank 0: [size] */
} cal_block_t;

dc_status_t dc_select_calibrate(dc_select_t *sel, dc_net_t *net, int rank, int size, uint64_t tag)
{
    int partner[DC_LINK_COUNT];
    dc_request_t **preqs = NULL;
    cal_block_t *cb;
    cal_result_t *res;
    char *buf = NULL;
    dc_status_t status = DCOMM_OK;
    uint64_t t0 = dc_now_ns();

    if (size < 2) {
        return DCOMM_OK;
    }
    cb = calloc(1, sizeof(*cb));
    if (cb == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "select: calibrate: out of memory");
    }
    res = &cb->res;
    if (rank == 0) {
        /* The first peer of every class is its partner; roles[r] = 1 for them. */
        cb->roles = calloc((size_t)size, sizeof(int));
        cb->reqs = calloc((size_t)size, sizeof(*cb->reqs));
        preqs = calloc((size_t)size, sizeof(*preqs));
        if (cb->roles == NULL || cb->reqs == NULL || preqs == NULL) {
            status = dc_error_set(DCOMM_ERR_NO_MEMORY, "select: calibrate: out of memory");
            goto out;
        }
        for (int c = 0; c < DC_LINK_COUNT; c++) {
            partner[c] = -1;
        }
        for (int r = 1; r < size; r++) {
            int c = dc_link_class_from_name(dc_net_transport_name(net, r));

            if (c > DC_LINK_SELF && partner[c] < 0) {
                partner[c] = r;
                cb->roles[r] = 1;
            }
        }
        for (int r = 1; r < size; r++) {
            DC_CHECK_GOTO(dc_ep_isend(dc_net_ep(net, r), &cb->roles[r], sizeof(int), tag,
                                      &cb->reqs[r]), status, out);
            preqs[r - 1] = &cb->reqs[r];
        }
        DC_CHECK_GOTO(dc_net_wait(net, preqs, size - 1, NULL, NULL), status, out);
    } else {
        DC_CHECK_GOTO(cal_xfer(net, 0, &cb->role, sizeof(cb->role), tag, 0, &cb->req), status,
                      out);
    }
    if (rank == 0 || cb->role) {
        buf = malloc(2 * CAL_BIG);
        if (buf == NULL) {
            status = dc_error_set(DCOMM_ERR_NO_MEMORY, "select: calibrate: out of memory");
            goto out;
        }
        /* Touched before timing: first touch of a page costs ~12 us here. */
        memset(buf, 0, 2 * CAL_BIG);
    }
    if (rank == 0) {
        DC_CHECK_GOTO(cal_measure(net, partner, buf, tag, &cb->req, res), status, out);
        cal_compute(buf, buf + CAL_BIG, &res->reduce_gbs, &res->copy_gbs);
        for (int r = 1; r < size; r++) {
            DC_CHECK_GOTO(dc_ep_isend(dc_net_ep(net, r), res, sizeof(*res), tag, &cb->reqs[r]),
                          status, out);
        }
        DC_CHECK_GOTO(dc_net_wait(net, preqs, size - 1, NULL, NULL), status, out);
    } else {
        if (cb->role) {
            DC_CHECK_GOTO(cal_pingpong(net, 0, 0, buf, CAL_SMALL, CAL_SMALL_REPS, tag, &cb->req,
                                       NULL), status, out);
            DC_CHECK_GOTO(cal_pingpong(net, 0, 0, buf, CAL_BIG, CAL_BIG_REPS, tag, &cb->req,
                                       NULL), status, out);
        }
        DC_CHECK_GOTO(cal_xfer(net, 0, res, sizeof(*res), tag, 0, &cb->req), status, out);
    }
    for (int c = 0; c < DC_LINK_COUNT; c++) {
        dc_select_set_link(sel, (dc_link_class_t)c, res->alpha_us[c], res->bw_gbs[c]);
    }
    dc_select_set_compute(sel, res->reduce_gbs, res->copy_gbs);
    DC_DEBUG("select: calibration took %.1f ms (reduce %.2f GB/s, copy %.2f GB/s)",
             (double)(dc_now_ns() - t0) * 1e-6, res->reduce_gbs, res->copy_gbs);
out:
    free(preqs);
    if (status < 0) {
        /* Requests into cb and buf may still be posted. */
        dc_net_free_after_close(net, buf);
        dc_net_free_after_close(net, cb->roles);
        dc_net_free_after_close(net, cb->reqs);
        dc_net_free_after_close(net, cb);
        return status;
    }
    free(buf);
    free(cb->roles);
    free(cb->reqs);
    free(cb);
    return status;
}
